"""The `bionas` command (Typer): its commands at module level, assembled by `build_app`.

Every command reports bionas errors as a message and an exit code. Plugins add
commands through bionas.typer_adapter, which keeps them from replacing built-ins.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from bionas import robustness, rundir
from bionas.__about__ import PROJECT, __version__
from bionas.analysis.study import (
    alignment_over_training,
    gradvar,
    gradvar_markdown,
    random_rules,
    random_rules_markdown,
)
from bionas.distributed import world_from_env
from bionas.errors import BionasError, UsageError
from bionas.pipeline import print_study_summary, print_summary, run_study, write_study
from bionas.pipeline import run as run_pipeline
from bionas.pipeline.study import parse_seeds, parse_shard
from bionas.registry import KINDS, get_registry
from bionas.space.genotype import spec_genotype
from bionas.spec import load_spec, spec_json_schema
from bionas.training import resolve_device
from bionas.typer_adapter import add_plugin_commands

console = Console()
err_console = Console(stderr=True)


def warn(message: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)


def fail(error: BionasError) -> typer.Exit:
    # Escaped: a message may hold brackets (pip install 'bionas[mlflow]') that rich would take for markup.
    err_console.print(f"[red]error:[/red] {escape(str(error))}", highlight=False, soft_wrap=True)
    return typer.Exit(error.exit_code)


class _Group(TyperGroup):
    """Root group: a BionasError from any command, plugin commands included, becomes message + exit code."""

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


def data_access(data_root: Optional[Path], trust_run_data: bool) -> robustness.DataAccess:
    if data_root is not None and trust_run_data:
        raise BionasError("give --data-root or --trust-run-data, not both")
    return robustness.DataAccess(root=data_root, trust=trust_run_data)
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


def _report_plugin_problems() -> None:
    registry = get_registry()
    for notice in registry.notices:
        warn(notice)
    for problem in registry.problems:
        warn(str(problem))
    for conflict in registry.conflicts():
        warn(conflict)


# -- the commands ---------------------------------------------------------------------------------


def root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    _report_plugin_problems()


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


def validate(spec: SpecFile) -> None:
    """Validate a spec: exit 0 and 'valid', or exit 2 and one line per error."""
    spec_genotype(load_spec(spec), str(spec))
    typer.echo("valid")


def schema() -> None:
    """Print the JSON schema of a spec, with the options of every installed plugin."""
    typer.echo(json.dumps(spec_json_schema(), indent=2))


def _run_stages(spec: Path, out, resume: bool, device, quiet: bool, stages=None, overrides=None, seeds=None,
                shard=None, compare=()) -> None:
    overrides = {**(overrides or {}), **({"device": device} if device else {})}
    if seeds is not None:
        listed = parse_seeds(seeds)
        overrides.update(seeds=listed, seed=listed[0])
    shard = parse_shard(shard) if shard is not None else None
    loaded = load_spec(spec, overrides=overrides)
    main = world_from_env().is_main  # under torchrun, rank 0 reports
    if loaded.seeds is None:
        if shard is not None or compare:
            raise UsageError(f"{'--shard splits' if shard is not None else '--compare pairs'} the seeds of a study: "
                             "give --seeds, or seeds in the spec")
        result = run_pipeline(loaded, out, resume=resume, quiet=quiet, stages=stages)
        if main:
            print_summary(result, console)
        return
    aggregate = run_study(loaded, out, resume=resume, quiet=quiet, stages=stages, shard=shard, compare=compare)
    if main:
        print_study_summary(aggregate, console)


def run(spec: SpecFile, out: OutDir = None, resume: Resume = False, device: SpecDevice = None,
        quiet: Quiet = False, seeds: Seeds = None, shard: Shard = None, compare: Compare = None) -> None:
    """Run a spec: search -> genotype -> retrain -> test -> attacks -> report (once per seed for a study)."""
    _run_stages(spec, out, resume, device, quiet, seeds=seeds, shard=shard, compare=compare or ())


def search(spec: SpecFile, out: OutDir = None, resume: Resume = False, device: SpecDevice = None,
           quiet: Quiet = False, seeds: Seeds = None, shard: Shard = None) -> None:
    """Run only the search stage of a spec; writes genotype.json."""
    _run_stages(spec, out, resume, device, quiet, stages=["search"], seeds=seeds, shard=shard)


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
    overrides = {"genotype": str(genotype), "search": None, "model": None, "rules": None} if genotype else None
    _run_stages(spec, out, resume, device, quiet, stages=["retrain", "attacks"], overrides=overrides, seeds=seeds,
                shard=shard)


def study(run_dir: Annotated[Path, typer.Argument(help="Directory of a study (the one holding seed-N/).")]) -> None:
    """Rebuild study.json, study.md and study.png from the seed directories that exist (missing or unfinished
    seeds are listed)."""
    print_study_summary(write_study(run_dir), console)


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
    loaded = robustness.load_target(target, data_access(data_root, trust_run_data))
    items, without_eps = [], []
    for name in attacks:
        cls = get_registry().get_class("attack", name)
        if cls.budget != "eps":
            without_eps.append(f"{name} (its budget is {cls.budget})")
        options = {}
        if "gradient" in cls.Options.model_fields:
            options["gradient"] = gradient.value
        if surrogate is not None and "surrogate" in cls.Options.model_fields:
            options["surrogate"] = str(surrogate)
        items.append((name, options))
    if eps and len(without_eps) == len(attacks):
        raise BionasError(f"--eps: no attack given has an eps budget: {', '.join(without_eps)}; set their budget "
                          "with their own options, or drop --eps")
    if eps and without_eps:
        warn(f"--eps is ignored by {', '.join(without_eps)}")
    if surrogate is not None and not any("surrogate" in options for _, options in items):
        warn(f"--surrogate is ignored: none of the attacks ({', '.join(attacks)}) takes a surrogate")
    data = loaded.data
    images, labels = data if isinstance(data, tuple) else (data, None)
    report = robustness.evaluate_robustness(
        loaded.model,
        images,
        labels,
        items,
        eps_sweep=eps or None,
        points=points or None,
        batch_size=batch_size,
        device=device,
        seed=seed,
        name=loaded.name,
        progress=lambda message: err_console.print(f"attacking: {message}", highlight=False),
    )
    if out is None:  # inside the run directory: checked to lead nowhere out of it
        out = rundir.RunDir(target if target.is_dir() else target.parent).path("attacks")
    json_path = report.save_json(out / "robustness.json")
    png_path = report.plot(out / "robustness.png")
    typer.echo(report.markdown())
    for flag in report.flags:
        if flag.claim:  # rule-gradient flags are findings about that threat model, listed in the table
            warn(f"possible gradient masking: {flag.message}")
    typer.echo(f"wrote {json_path} and {png_path}")


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
    access = data_access(data_root, trust_run_data)
    typer.echo(gradvar_markdown(gradvar(run_dir, batches, batch_size, seed, device, access)))


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
    shard, device = variant_shard(shard, device)
    results = random_rules(run_dir, samples, epochs, seed, device, quiet, shard=shard,
                           progress=None if quiet else lambda m: err_console.print(m, markup=False),
                           access=data_access(data_root, trust_run_data))
    typer.echo(random_rules_markdown(results))
    report_variant_shard("random-rules", run_dir, shard, results)


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
    from bionas.analysis.random_architectures import markdown, random_architectures

    shard, device = variant_shard(shard, device)
    results = random_architectures(run_dir, samples, epochs, device, quiet, shard=shard,
                                   progress=None if quiet else lambda m: err_console.print(m, markup=False),
                                   access=data_access(data_root, trust_run_data))
    typer.echo(markdown(results))
    report_variant_shard("random-architectures", run_dir, shard, results)


def variant_shard(shard: Optional[str], device: str) -> tuple[Optional[tuple[int, int]], str]:
    """The share of an analysis' retrains this process takes: --shard i/n, or under torchrun its rank of the
    world, each rank on its own GPU with no process group (the retrains are independent)."""
    world = world_from_env()
    if world.distributed:
        if shard is not None:
            raise UsageError("--shard: under torchrun each rank already takes its share; give one or the other")
        if resolve_device(device).type == "cuda":
            device = f"cuda:{world.local_rank}"
        return (world.rank, world.world_size), device
    return (parse_shard(shard) if shard is not None else None), device


def report_variant_shard(name: str, run_dir: Path, shard, results) -> None:
    if shard is None:
        return
    done = ", ".join(results["retrained"]) or "nothing"
    rest = (f" {len(results['missing'])} not finished yet: the shard that finishes last writes the whole table (or "
            f"run `bionas analyze {name} {run_dir}` with the same options)." if results["missing"] else "")
    typer.echo(f"shard {shard[0]} of {shard[1]} retrained: {done}.{rest}")


def analyze_alignment(run_dir: RunDir) -> None:
    """Plot each rule layer's feedback alignment over the retrain epochs (from metrics.jsonl)."""
    alignment_over_training(run_dir)
    typer.echo(f"wrote {run_dir / 'analysis' / 'alignment.png'} and alignment.json")


# -- the app --------------------------------------------------------------------------------------


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
    app.callback()(root)
    plugins_app = typer.Typer(help="Inspect the installed plugins.", no_args_is_help=True)
    plugins_app.command("list")(plugins_list)
    app.add_typer(plugins_app, name="plugins")
    for command in (validate, schema, run, search, train, study, attack):
        app.command()(command)
    analyze_app = typer.Typer(help="The paper's studies on a finished run directory.", no_args_is_help=True)
    analyze_app.command("gradvar")(analyze_gradvar)
    analyze_app.command("random-rules")(analyze_random_rules)
    analyze_app.command("random-architectures")(analyze_random_architectures)
    analyze_app.command("alignment")(analyze_alignment)
    app.add_typer(analyze_app, name="analyze")
    add_plugin_commands(app, get_registry(), warn)
    return app


def main() -> None:
    if sys.argv[1:] == ["--version"]:  # needs no plugin: printed even when strict mode refuses a broken one
        typer.echo(f"{PROJECT} {__version__}")
        return
    try:
        app = build_app()
    except BionasError as error:  # e.g. a broken plugin under BIONAS_STRICT_PLUGINS=1
        raise SystemExit(fail(error).exit_code) from None
    app()
