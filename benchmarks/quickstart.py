"""The quickstart (`make run`) stage by stage: CPU seconds, wall seconds and its numbers, for several seeds.

    python benchmarks/quickstart.py                        # seed 0, torch's default threads
    python benchmarks/quickstart.py --seeds 0 1 2 --threads 1
    python benchmarks/quickstart.py --spec examples/quickstart.yaml --set retrain.epochs=4

Each seed is one whole `bionas.run` of the spec (search, retrain, test, attacks,
plots and report) in a fresh temporary run directory. Per stage it prints the
process's CPU seconds (user + system; on a machine shared with other work these
are what the run itself costs, its wall time is not) and the wall seconds, then
the supernet's validation accuracy when the genotype was taken, the retrained
network's validation and test accuracy. The import of bionas and the data set
is counted in `total` (the `bionas` command pays it too).
"""

from __future__ import annotations

import argparse
import importlib
import resource
import sys
import tempfile
import time
from pathlib import Path

START_CPU, START_WALL = time.process_time(), time.perf_counter()
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]  # benchmark this checkout

import torch  # noqa: E402
import yaml  # noqa: E402

import bionas  # noqa: E402
from bionas.pipeline import evaluate_stage, search_stage, train_stage  # noqa: E402

STAGES = [(search_stage.SearchStage, "run", "search"), (train_stage.TrainStage, "run", None),
          (evaluate_stage.AccuracyStage, "run", "test"), (evaluate_stage.AttackStage, "run", "attacks"),
          (importlib.import_module("bionas.pipeline.run").Pipeline, "write_outputs", "plots, report")]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # every thread of this process
    return usage.ru_utime + usage.ru_stime


def time_stages(seconds: dict[str, list[float]]) -> None:
    """Wrap each stage's method to add its CPU and wall seconds to `seconds` (TrainStage under its stage name)."""
    for cls, method, label in STAGES:
        original = getattr(cls, method)

        def timed(self, *args, _original=original, _label=label, **kwargs):
            cpu, wall = cpu_seconds(), time.perf_counter()
            try:
                return _original(self, *args, **kwargs)
            finally:
                totals = seconds.setdefault(_label or self.stage, [0.0, 0.0])
                totals[0] += cpu_seconds() - cpu
                totals[1] += time.perf_counter() - wall

        setattr(cls, method, timed)


def with_settings(spec: dict, settings: list[str]) -> dict:
    """`--set a.b=value` (value in YAML) applied to the spec dict."""
    for setting in settings:
        key, value = setting.split("=", 1)
        *parents, leaf = key.split(".")
        node = spec
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = yaml.safe_load(value)
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", default=str(ROOT / "examples" / "quickstart.yaml"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a spec field")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import_cpu, import_wall = time.process_time() - START_CPU, time.perf_counter() - START_WALL
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; imports {import_cpu:.1f} CPU s")
    print("| seed | stage | CPU s | wall s |")
    print("|---|---|---|---|")
    rows = []
    seconds: dict[str, list[float]] = {}
    time_stages(seconds)
    for seed in args.seeds:
        spec = with_settings(yaml.safe_load(Path(args.spec).read_text()), [*args.set, f"seed={seed}"])
        seconds.clear()
        cpu, wall = cpu_seconds(), time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = bionas.run(spec, Path(tmp) / "run", quiet=True)
        for stage, (stage_cpu, stage_wall) in seconds.items():
            print(f"| {seed} | {stage} | {stage_cpu:.1f} | {stage_wall:.1f} |")
        total_cpu = cpu_seconds() - cpu + (import_cpu if seed == args.seeds[0] else 0)
        print(f"| {seed} | total | {total_cpu:.1f} | {time.perf_counter() - wall:.1f} |")
        rows.append((seed, result))
    print("\n| seed | supernet val | retrain val | test |")
    print("|---|---|---|---|")
    for seed, result in rows:
        supernet = "-" if result.search_valid_accuracy is None else f"{result.search_valid_accuracy:.1%}"
        print(f"| {seed} | {supernet} | {result.val_accuracy:.1%} | {result.test_accuracy:.1%} |")


if __name__ == "__main__":
    main()
