"""A study: the pipeline once per seed, each in its own run directory, then their aggregate.

    RUN/
      study_spec.json          the study's spec (its seeds)
      seed-0/, seed-1/, ...    one run directory per seed, exactly a single run's (resumable as one)
      study.json, study.md, study.png   the aggregate (bionas.pipeline.study_report)

A shard `i/n` runs the seeds at positions i, i + n, i + 2n, ... of the list
(`seeds[i::n]`, i from 0), so n jobs of a cluster scheduler, each with its own
i, run every seed once between them. Every invocation ends by rebuilding the
aggregate from the seed directories that exist; written atomically, so shards
finishing together leave a complete file, and the last to finish sees them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from bionas import distributed
from bionas.distributed import world_from_env
from bionas.errors import BionasError, UsageError
from bionas.pipeline.result import Interrupted
from bionas.pipeline.run import Pipeline, execute
from bionas.pipeline.study_compare import PREFIX, baseline_spec
from bionas.pipeline.study_report import STUDY_SPEC, seed_dir, write_study
from bionas.rundir import read_json, write_json
from bionas.space.genotype import spec_genotype
from bionas.spec import Spec, load_spec


def parse_seeds(text: str) -> list[int]:
    """`0,1,2` -> [0, 1, 2]: distinct non-negative integers."""
    seeds = []
    for part in text.split(","):
        part = part.strip()
        if not (part.isascii() and part.isdigit()):
            raise UsageError(f"--seeds: '{part}' is not a non-negative integer; give a comma-separated list such "
                             "as --seeds 0,1,2")
        if int(part) in seeds:
            raise UsageError(f"--seeds: seed {int(part)} is listed twice")
        seeds.append(int(part))
    return seeds


def parse_shard(text: str) -> tuple[int, int]:
    """`i/n` -> (i, n) with 0 <= i < n: this job runs seeds[i::n]."""
    index, _, count = text.partition("/")
    numbers = (index.strip(), count.strip())
    if not all(n.isascii() and n.isdigit() for n in numbers) or not 0 <= int(index) < int(count):
        raise UsageError(f"--shard: '{text}' is not i/n with 0 <= i < n (e.g. --shard 0/4 for the first of four "
                         "jobs, each running every 4th seed)")
    return int(index), int(count)


def shard_seeds(seeds: Sequence[int], shard: tuple[int, int] | None) -> list[int]:
    """The seeds a shard runs: seeds[i::n]; all of them without a shard."""
    if shard is None:
        return list(seeds)
    index, count = shard
    return list(seeds)[index::count]


def prepare_study(root: Path, spec: Spec, seeds: list[int], resume: bool, main: bool) -> None:
    """Refuse what a study cannot run into, and write study_spec.json (the study's seeds so far). Rank 0 alone
    does, as it alone prepares a run directory: its error ends the launch."""
    if not main:
        return
    if (root / "resolved_spec.json").exists():
        raise BionasError(f"{root} holds a single run; a study of several seeds needs a directory of its own "
                          "(choose one with --out)")
    used = [seed_dir(root, s).name for s in seeds if seed_dir(root, s).is_dir() and any(seed_dir(root, s).iterdir())]
    if used and not resume:
        verb = "holds" if len(used) == 1 else "hold"
        raise BionasError(f"{', '.join(used)} in {root} already {verb} a run; continue the study with --resume, or "
                          "choose another directory with --out")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BionasError(f"cannot create the study directory {root}: {exc.strerror or exc}") from None
    spec_dict = spec.to_dict()
    previous = root / STUDY_SPEC
    if previous.exists():  # a study grown by another invocation (more seeds) keeps listing the earlier ones
        spec_dict["seeds"] = list(dict.fromkeys([*read_json(previous).get("seeds", []), *spec.seeds]))
    write_json(previous, spec_dict)


def run_study(
    spec: Spec | str | Path | dict,
    out_dir: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    stages: Sequence[str] | None = None,
    shard: tuple[int, int] | None = None,
    compare: Sequence[str] = (),
) -> dict[str, Any] | None:
    """Run every seed of a study (`spec.seeds`; with `shard` (i, n), seeds[i::n]), each as a single run in
    RUN/seed-N/, then write the aggregate. Returns it (study.json's content) on rank 0, None on other ranks.

    `compare` names baselines (bionas/pipeline/study_compare.py: "random") run on the same seeds (and shard)
    after the strategy, each as a study in RUN/compare-<name>/; study.md pairs them seed by seed.

    A seed that fails does not stop the others; the failures are raised together at the end, after the
    aggregate of the seeds that finished. Ctrl-C stops at once, with the command that continues.
    """
    spec = load_spec(spec)
    spec_genotype(spec)  # before the first seed: each seed's run reads it again
    if spec.seeds is None:
        raise BionasError("the spec lists no seeds: give seeds (a study) in the spec or --seeds 0,1,2")
    baselines = {name: load_spec(baseline_spec(spec.to_dict(), name)) for name in dict.fromkeys(compare)}
    root = Path(out_dir) if out_dir else spec.run_dir()
    mine = shard_seeds(spec.seeds, shard)
    main = world_from_env().is_main
    console = Console(stderr=True, quiet=quiet or not main)
    studies = {root: spec, **{root / f"{PREFIX}{name}": baseline for name, baseline in baselines.items()}}
    for directory, each in studies.items():
        prepare_study(directory, each, mine, resume, main)
    options = (f" --shard {shard[0]}/{shard[1]}" if shard else "") + "".join(f" --compare {b}" for b in baselines)
    resume_command = f"bionas run SPEC --resume --out {root} --seeds {','.join(map(str, spec.seeds))}{options}"
    if not mine:
        console.print(f"study: shard {shard[0]}/{shard[1]} of seeds {spec.seeds} has no seed to run")
    failures = {}
    try:
        # The baselines run the same seeds (and shard) after the strategy's, each a study of its own.
        for directory, each in studies.items():
            for position, seed in enumerate(mine):
                label = f"seed {seed}" if directory == root else f"{directory.name}/seed {seed}"
                console.print(f"[bold]study[/bold] '{each.name}': seed {seed} ({position + 1} of {len(mine)}"
                              f"{' in this shard' if shard else ''})")
                pipeline = Pipeline(each.for_seed(seed), seed_dir(directory, seed), resume, quiet, stages)
                try:
                    execute(pipeline, resume_command)
                except Interrupted:
                    raise
                except BionasError as error:  # the other seeds are independent runs: they still run
                    failures[label] = str(error)
                    console.print(f"[red]{label} failed:[/red] {escape(str(error))}")
    finally:
        distributed.shutdown()
    aggregate = write_study(root) if main else None  # the baselines' aggregates with it
    if failures:
        raise BionasError("\n".join(f"{label} failed: {message}" for label, message in failures.items())
                          + f"\nthe other seeds ran; {root / 'study.md'} aggregates the finished ones")
    return aggregate
