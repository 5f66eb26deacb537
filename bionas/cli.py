"""The `bionas` command (Typer). Every command reports bionas errors as a message and an exit code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from bionas.__about__ import PROJECT, __version__
from bionas.errors import BionasError
from bionas.registry import KINDS, command_name, get_registry

console = Console()
err_console = Console(stderr=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {message}", highlight=False, soft_wrap=True)


def fail(error: BionasError) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
    return typer.Exit(error.exit_code)


class _Group(TyperGroup):
    """Root group: a BionasError from any command, plugin commands included, becomes message + exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BionasError as error:
            raise fail(error) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"{PROJECT} {__version__}")
        raise typer.Exit()


def _report_plugin_problems() -> None:
    registry = get_registry()
    for problem in registry.problems:
        warn(str(problem))
    for conflict in registry.conflicts():
        warn(conflict)


def build_app() -> typer.Typer:
    """The root app with the built-in commands, then the commands plugins add."""
    app = typer.Typer(
        name=PROJECT,
        cls=_Group,
        help="Neural architecture search over (operation, learning rule) edges.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",
    )

    @app.callback()
    def root(
        version: bool = typer.Option(
            False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ) -> None:
        _report_plugin_problems()

    plugins_app = typer.Typer(help="Inspect the installed plugins.", no_args_is_help=True)
    app.add_typer(plugins_app, name="plugins")

    @plugins_app.command("list")
    def plugins_list(
        kind: Optional[str] = typer.Option(None, "--kind", help=f"Only one kind: {', '.join(KINDS)}."),
        as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    ) -> None:
        """List registered plugins: name, kind, description, distribution, version."""
        registry = get_registry()
        infos = registry.list(kind)
        if as_json:
            payload = {
                "plugins": [info.as_dict() for info in infos],
                "problems": [vars(problem) for problem in registry.problems],
                "conflicts": registry.conflicts(),
            }
            typer.echo(json.dumps(payload, indent=2))
            return
        table = Table("name", "kind", "description", "distribution", "version")
        for info in infos:
            table.add_row(info.name, info.kind, info.description, info.distribution, info.version)
        console.print(table)

    @app.command()
    def validate(spec: Path = typer.Argument(..., help="Spec file (YAML or JSON).")) -> None:
        """Validate a spec: exit 0 and 'valid', or exit 2 and one line per error."""
        from bionas.spec import load_spec

        load_spec(spec)
        typer.echo("valid")

    @app.command()
    def schema() -> None:
        """Print the JSON schema of a spec, with the options of every installed plugin."""
        from bionas.spec import spec_json_schema

        typer.echo(json.dumps(spec_json_schema(), indent=2))

    @app.command()
    def run(
        spec: Path = typer.Argument(..., help="Spec file (YAML or JSON)."),
        out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default: the spec's output.dir)."),
        resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from its checkpoints."),
        device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N (overrides the spec)."),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    ) -> None:
        """Run a spec: search -> genotype -> retrain -> test -> attacks -> report."""
        from bionas.pipeline import run as run_pipeline
        from bionas.spec import load_spec

        loaded = load_spec(spec, overrides={"device": device} if device else None)
        run_pipeline(loaded, out, resume=resume, quiet=quiet)

    builtin = {command_name(item) for item in app.registered_commands + app.registered_groups}
    get_registry().add_commands(app, builtin, warn)
    return app


def main() -> None:
    try:
        app = build_app()
    except BionasError as error:  # e.g. a broken plugin under BIONAS_STRICT_PLUGINS=1
        raise SystemExit(fail(error).exit_code) from None
    app()
