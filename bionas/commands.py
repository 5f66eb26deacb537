"""What each `bionas` command does, with the imports it needs (torch, the plugins).

bionas.cli declares the commands (names, options, help) and imports this module only
when one of them runs, so `bionas --help` and `bionas --version` never import torch.
Each function here takes the arguments of the command of the same name in bionas.cli.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from bionas import robustness, rundir
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
from bionas.registry import get_registry
from bionas.space.genotype import spec_genotype
from bionas.spec import load_spec, spec_json_schema
from bionas.terminal import console, err_console, warn
from bionas.training import resolve_device
from bionas.typer_adapter import add_plugin_commands


def report_plugin_problems() -> None:
    """Before a command runs: plugins that failed to load, classes refused, names registered twice."""
    registry = get_registry()
    for notice in registry.notices:
        warn(notice)
    for problem in registry.problems:
        warn(str(problem))
    for conflict in registry.conflicts():
        warn(conflict)


def plugin_commands(app: typer.Typer, builtin: set[str]) -> typer.Typer:
    """`app` with the commands plugins add (none may take a name of `builtin`)."""
    add_plugin_commands(app, get_registry(), warn, builtin)
    return app


def plugins_commands(ctx) -> None:
    added = ctx.find_root().command.plugin_commands(ctx)
    names = added.list_commands(ctx)
    if not names:
        typer.echo("No installed plugin adds a command.")
        return
    table = Table("command", "description")
    for name in names:
        table.add_row(name, added.get_command(ctx, name).get_short_help_str(limit=80))
    console.print(table)


def data_access(data_root: Optional[Path], trust_run_data: bool) -> robustness.DataAccess:
    if data_root is not None and trust_run_data:
        raise BionasError("give --data-root or --trust-run-data, not both")
    return robustness.DataAccess(root=data_root, trust=trust_run_data)


def plugins_list(kind, as_json) -> None:
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


def validate(spec) -> None:
    genotype = spec_genotype(load_spec(spec), str(spec))
    for note in genotype.notes if genotype is not None else []:
        warn(note)
    typer.echo("valid")


def schema() -> None:
    typer.echo(json.dumps(spec_json_schema(), indent=2))


def run_stages(spec: Path, out, resume: bool, device, quiet: bool, stages=None, overrides=None, seeds=None,
               shard=None) -> None:
    overrides = {**(overrides or {}), **({"device": device} if device else {})}
    if seeds is not None:
        listed = parse_seeds(seeds)
        overrides.update(seeds=listed, seed=listed[0])
    shard = parse_shard(shard) if shard is not None else None
    loaded = load_spec(spec, overrides=overrides)
    main = world_from_env().is_main  # under torchrun, rank 0 reports
    if loaded.seeds is None:
        if shard is not None:
            raise UsageError("--shard splits the seeds of a study: give --seeds, or seeds in the spec")
        result = run_pipeline(loaded, out, resume=resume, quiet=quiet, stages=stages)
        if main:
            print_summary(result, console)
        return
    aggregate = run_study(loaded, out, resume=resume, quiet=quiet, stages=stages, shard=shard)
    if main:
        print_study_summary(aggregate, console)


def run(spec, out, resume, device, quiet, seeds, shard) -> None:
    run_stages(spec, out, resume, device, quiet, seeds=seeds, shard=shard)


def search(spec, out, resume, device, quiet, seeds, shard) -> None:
    run_stages(spec, out, resume, device, quiet, stages=["search"], seeds=seeds, shard=shard)


def train(spec, genotype, out, resume, device, quiet, seeds, shard) -> None:
    overrides = {"genotype": str(genotype), "search": None, "model": None, "rules": None} if genotype else None
    run_stages(spec, out, resume, device, quiet, stages=["retrain", "attacks"], overrides=overrides, seeds=seeds,
               shard=shard)


def study(run_dir) -> None:
    print_study_summary(write_study(run_dir), console)


def attack(target, attacks, eps, points, batch_size, gradient, surrogate, seed, out, device, data_root,
           trust_run_data) -> None:
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


def analyze_gradvar(run_dir, batches, batch_size, seed, device, data_root, trust_run_data) -> None:
    access = data_access(data_root, trust_run_data)
    typer.echo(gradvar_markdown(gradvar(run_dir, batches, batch_size, seed, device, access)))


def analyze_random_rules(run_dir, samples, epochs, seed, device, quiet, data_root, trust_run_data) -> None:
    # Under torchrun each rank retrains every N-th assignment on its own GPU, with no process group:
    # the retrains are independent, and a later plain run collects them from their checkpoints.
    world = world_from_env()
    if world.distributed and resolve_device(device).type == "cuda":
        device = f"cuda:{world.local_rank}"
    results = random_rules(run_dir, samples, epochs, seed, device, quiet, rank=world.rank,
                           world_size=world.world_size,
                           progress=None if quiet else lambda m: err_console.print(m, markup=False),
                           access=data_access(data_root, trust_run_data))
    if world.distributed:
        done = ", ".join(row["assignment"] for row in results["rows"]) or "nothing"
        typer.echo(f"rank {world.rank} of {world.world_size} retrained: {done}. To collect the table, run "
                   f"`bionas analyze random-rules {run_dir}` with the same options without torchrun.")
        return
    typer.echo(random_rules_markdown(results))


def analyze_alignment(run_dir) -> None:
    alignment_over_training(run_dir)
    typer.echo(f"wrote {run_dir / 'analysis' / 'alignment.png'} and alignment.json")
