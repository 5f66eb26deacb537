"""The `bionas` command (Typer): its commands declared at module level, assembled by `build_app`.

Every command reports bionas errors as a message and an exit code. This module imports
neither torch nor the plugins: a command's work is in bionas.commands, imported when the
command runs, so `--version` and `--help` (the root's and each command's) answer at once.
Plugins add commands through bionas.typer_adapter, which keeps them from replacing
built-ins; they are loaded when a name that is no built-in command is asked for, so the
root's --help lists the built-in commands only (`bionas plugins commands` lists the others).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from bionas.__about__ import PROJECT, __version__
from bionas.errors import BionasError
from bionas.terminal import fail

# The plugin kinds (bionas.registry.KINDS, which imports torch; tests/test_cli.py checks they agree).
KIND_NAMES = ("rule", "op", "search", "dataset", "attack", "logger", "model")


def _do(command: str, arguments: dict[str, Any]) -> None:
    """Run bionas.commands.<command> with the arguments Typer parsed, after reporting plugin problems."""
    from bionas import commands  # torch and the plugins: only a command that runs pays for them

    commands.report_plugin_problems()
    getattr(commands, command)(**arguments)


class _Group(TyperGroup):
    """Root group: a BionasError from any command, plugin commands included, becomes message + exit code;
    a name that is no built-in command loads the plugins and looks among the commands they add."""

    plugin_group: Any = None

    def get_command(self, ctx, cmd_name):
        found = super().get_command(ctx, cmd_name)
        if found is not None:
            return found
        try:
            return self.plugin_commands(ctx).get_command(ctx, cmd_name)
        except BionasError as error:  # e.g. a broken plugin under BIONAS_STRICT_PLUGINS=1
            raise fail(error) from None

    def plugin_commands(self, ctx: typer.Context) -> Any:
        """The commands plugins add, as a command group (made once: loading the plugins imports torch)."""
        if self.plugin_group is None:
            from bionas import commands

            added = commands.plugin_commands(typer.Typer(), set(super().list_commands(ctx)))
            self.plugin_group = typer.main.get_group(added)
        return self.plugin_group

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BionasError as error:
            raise fail(error) from None
        except OSError as error:  # a file a command needs is missing or unreadable: its name, not a traceback
            where = f"{error.filename}: " if error.filename else ""
            raise fail(BionasError(f"{where}{error.strerror or error}")) from None


# Parameters shared by several commands, declared once (defaults go in each signature).
SpecFile = Annotated[Path, typer.Argument(help="Spec file (YAML or JSON).")]
OutDir = Annotated[Optional[Path], typer.Option("--out", help="Run directory (default: the spec's output.dir).")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from its checkpoints.")]
SpecDevice = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N (overrides the spec).")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress bars.")]
RunDir = Annotated[Path, typer.Argument(help="Run directory of a finished run.")]
# A run directory may come from someone else: the data location it records is followed only when the user says.
DataRoot = Annotated[Optional[Path], typer.Option(
    "--data-root", help="Directory of the data set's files (replaces the location the run directory records).")]
TrustRunData = Annotated[bool, typer.Option(
    "--trust-run-data", help="Read the data from the location the run directory records (only for runs you trust).")]

Seeds = Annotated[Optional[str], typer.Option(
    "--seeds", help="A study: the pipeline once per seed (e.g. 0,1,2), in seed-N/ of the run directory, then "
    "study.md with mean ± std. Replaces the spec's seed and seeds.")]
Shard = Annotated[Optional[str], typer.Option(
    "--shard", help="i/n: as job i of n, run only the seeds at positions i, i+n, i+2n, ... of the study's list "
    "(i from 0).")]


Compare = Annotated[Optional[list[str]], typer.Option(
    "--compare", help="A study only: also run its seeds with this baseline beside the strategy, in "
    "compare-<name>/, and pair them in study.md. random: one genotype drawn uniformly from the space, no search.")]
VariantShard = Annotated[Optional[str], typer.Option(
    "--shard", help="i/n: as job i of n, retrain only the variants at positions i, i+n, ... (the searched one is "
    "position 0); every job then collects the ones finished so far.")]


class GradientSource(str, Enum):
    exact = "exact"
    rule = "rule"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"{PROJECT} {__version__}")
        raise typer.Exit()


# -- the commands ---------------------------------------------------------------------------------


def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Neural architecture search over (operation, learning rule) edges."""
    # Nothing else: each command reports plugin problems as it runs (bionas.commands.report_plugin_problems).


def plugins_list(
    kind: Optional[str] = typer.Option(None, "--kind", help=f"Only one kind: {', '.join(KIND_NAMES)}."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List registered plugins: name, kind, description, distribution, version."""
    _do("plugins_list", locals())


def validate(spec: SpecFile) -> None:
    """Validate a spec: exit 0 and 'valid', or exit 2 and one line per error."""
    _do("validate", locals())


def schema() -> None:
    """Print the JSON schema of a spec, with the options of every installed plugin."""
    _do("schema", locals())


def plugins_commands(ctx: typer.Context) -> None:
    """List the commands plugins add (`bionas --help` lists the built-in ones: it loads no plugin)."""
    _do("plugins_commands", locals())


def run(spec: SpecFile, out: OutDir = None, resume: Resume = False, device: SpecDevice = None,
        quiet: Quiet = False, seeds: Seeds = None, shard: Shard = None, compare: Compare = None) -> None:
    """Run a spec: search -> genotype -> retrain -> test -> attacks -> report (once per seed for a study)."""
    _do("run", locals())


def search(spec: SpecFile, out: OutDir = None, resume: Resume = False, device: SpecDevice = None,
           quiet: Quiet = False, seeds: Seeds = None, shard: Shard = None) -> None:
    """Run only the search stage of a spec; writes genotype.json."""
    _do("search", locals())


def train(
    spec: SpecFile,
    genotype: Optional[Path] = typer.Option(
        None, "--genotype", help="genotype.json to retrain (replaces the spec's search, genotype or model)."
    ),
    out: OutDir = None,
    resume: Resume = False,
    device: SpecDevice = None,
    quiet: Quiet = False,
    seeds: Seeds = None,
    shard: Shard = None,
) -> None:
    """Retrain a genotype, or train the spec's model, then test it (and attack it, if the spec says so)."""
    _do("train", locals())


def study(run_dir: Annotated[Path, typer.Argument(help="Directory of a study (the one holding seed-N/).")]) -> None:
    """Rebuild study.json, study.md and study.png from the seed directories that exist (missing or unfinished
    seeds are listed)."""
    _do("study", locals())


def attack(
    target: Path = typer.Argument(..., help="Checkpoint or run directory of the model to attack."),
    attacks: list[str] = typer.Option(
        ..., "--attack", help="Attack name, repeatable: fgsm, pgd, apgd, square, onepixel, transfer, or a plugin's."
    ),
    eps: list[str] = typer.Option(
        [], "--eps", help="Budget such as 8/255 or 0.3; repeat for a sweep. Default: each attack's own."
    ),
    points: int = typer.Option(1000, "--points", min=0, help="Attack the first N test points; 0 = all."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Batch size of the attacks."),
    gradient: GradientSource = typer.Option(
        GradientSource.exact,
        "--gradient",
        help="Gradient source of gradient attacks: exact (true gradient) or rule (the learning rules' "
        "feedback path: a separate threat model, not a robustness claim).",
    ),
    surrogate: Optional[Path] = typer.Option(
        None, "--surrogate", help="Checkpoint or run directory of the surrogate, for attacks that take one "
        "(transfer)."
    ),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of every random choice of the attacks."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Where robustness.json and robustness.png go (default: TARGET's attacks/ folder)."
    ),
    device: Device = "auto",
    data_root: DataRoot = None,
    trust_run_data: TrustRunData = False,
) -> None:
    """Attack a trained model: print the robustness table, write it as JSON and a PNG curve."""
    _do("attack", locals())


def analyze_gradvar(
    run_dir: RunDir,
    batches: int = typer.Option(16, "--batches", min=2, help="Minibatches the variance is taken across."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Default: the retrain batch."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the minibatch draw."),
    device: Device = "auto",
    data_root: DataRoot = None,
    trust_run_data: TrustRunData = False,
) -> None:
    """Gradient variance of the searched rules against each single rule, on the same batches."""
    _do("analyze_gradvar", locals())


def analyze_random_rules(
    run_dir: RunDir,
    samples: int = typer.Option(10, "--samples", min=1, help="Random rule assignments to retrain."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Retrain budget (default: the run's)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Seed of the assignments."),
    shard: VariantShard = None,
    device: Device = "auto",
    quiet: Quiet = False,
    data_root: DataRoot = None,
    trust_run_data: TrustRunData = False,
) -> None:
    """Retrain the searched operations with random rule assignments; compare with the searched rules."""
    _do("analyze_random_rules", locals())


def analyze_random_architectures(
    run_dir: RunDir,
    samples: int = typer.Option(10, "--samples", min=1, help="Genotypes drawn uniformly from the run's space."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Retrain budget (default: the run's)."),
    shard: VariantShard = None,
    device: Device = "auto",
    quiet: Quiet = False,
    data_root: DataRoot = None,
    trust_run_data: TrustRunData = False,
) -> None:
    """Retrain random genotypes of the run's space beside the searched one: does the search beat random?"""
    _do("analyze_random_architectures", locals())


def analyze_alignment(run_dir: RunDir) -> None:
    """Plot each rule layer's feedback alignment over the retrain epochs (from metrics.jsonl)."""
    _do("analyze_alignment", locals())


# -- the app --------------------------------------------------------------------------------------


def build_app() -> typer.Typer:
    """The root app with the built-in commands, then the commands plugins add."""
    app = typer.Typer(
        name=PROJECT,
        cls=_Group,
        help="Neural architecture search over (operation, learning rule) edges.",
        epilog="Plugins may add commands: `bionas plugins commands` lists them.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode="rich",
    )
    app.callback()(root)
    plugins_app = typer.Typer(help="Inspect the installed plugins.", no_args_is_help=True)
    plugins_app.command("list")(plugins_list)
    plugins_app.command("commands")(plugins_commands)
    app.add_typer(plugins_app, name="plugins")
    for command in (validate, schema, run, search, train, study, attack):
        app.command()(command)
    analyze_app = typer.Typer(help="The paper's studies on a finished run directory.", no_args_is_help=True)
    analyze_app.command("gradvar")(analyze_gradvar)
    analyze_app.command("random-rules")(analyze_random_rules)
    analyze_app.command("random-architectures")(analyze_random_architectures)
    analyze_app.command("alignment")(analyze_alignment)
    app.add_typer(analyze_app, name="analyze")
    return app  # plugin commands join when asked for (_Group.get_command)


def main() -> None:
    build_app()()
