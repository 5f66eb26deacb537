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
from bionas.analysis.random_architectures import markdown as random_architectures_markdown
from bionas.analysis.random_architectures import random_architectures
from bionas.distributed import world_from_env
from bionas.errors import BionasError, UsageError
from bionas.pipeline import print_study_summary, print_summary, run_study, write_study
from bionas.pipeline import run as run_pipeline
from bionas.pipeline.study import parse_seeds, parse_shard
from bionas.registry import get_registry
from bionas.runtime import resolve_cuda_graphs
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


def run(spec, out, resume, device, quiet, seeds, shard, compare) -> None:
    run_stages(spec, out, resume, device, quiet, seeds=seeds, shard=shard, compare=compare or ())


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
        cuda_graphs=resolve_cuda_graphs("auto", resolve_device(device)),  # as a run's attacks stage: on CUDA
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


def analyze_random_rules(run_dir, samples, epochs, seed, shard, device, quiet, data_root, trust_run_data) -> None:
    shard, device = variant_shard(shard, device)
    results = random_rules(run_dir, samples, epochs, seed, device, quiet, shard=shard,
                           progress=None if quiet else lambda m: err_console.print(m, markup=False),
                           access=data_access(data_root, trust_run_data))
    typer.echo(random_rules_markdown(results))
    report_variant_shard("random-rules", run_dir, shard, results)


def analyze_random_architectures(run_dir, samples, epochs, shard, device, quiet, data_root, trust_run_data) -> None:
    shard, device = variant_shard(shard, device)
    results = random_architectures(run_dir, samples, epochs, device, quiet, shard=shard,
                                   progress=None if quiet else lambda m: err_console.print(m, markup=False),
                                   access=data_access(data_root, trust_run_data))
    typer.echo(random_architectures_markdown(results))
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


def analyze_alignment(run_dir) -> None:
    alignment_over_training(run_dir)
    typer.echo(f"wrote {run_dir / 'analysis' / 'alignment.png'} and alignment.json")
