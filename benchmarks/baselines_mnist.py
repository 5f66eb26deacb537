"""The MNIST baseline table: LeNet-5 with one learning rule in every layer, over several seeds.

    PYTHONPATH=.:plugins python benchmarks/baselines_mnist.py [--seeds 0,1,2] [--out runs/baselines_mnist]

Runs the pipeline once per (rule, seed) on examples/mnist-baselines.yaml (bp) and
examples/mnist-baselines/<rule>.yaml, with only the spec's seed changed, each into
OUT/<rule>/seed-<seed> (an existing run directory is resumed, so an interrupted
table continues where it stopped). Prints, per rule, the test accuracy and the
PGD robust accuracy at each of the spec's budgets (exact gradients) as mean +- std
over the seeds (std with Bessel's correction), and the CPU time of the runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

import bionas  # noqa: E402

RULES = ("bp", "fa", "usf", "brsf", "frsf", "dfa")


def spec_file(rule: str) -> Path:
    examples = ROOT / "examples"
    return examples / "mnist-baselines.yaml" if rule == "bp" else examples / "mnist-baselines" / f"{rule}.yaml"


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} +- {100 * spread:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--rules", default=",".join(RULES), help="comma-separated rules")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "baselines_mnist")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    rules = args.rules.split(",")

    rows = []
    for rule in rules:
        spec = yaml.safe_load(spec_file(rule).read_text())
        results = []
        cpu = time.process_time()
        for seed in seeds:
            run_dir = args.out / rule / f"seed-{seed}"
            results.append(bionas.run({**spec, "seed": seed}, run_dir, resume=run_dir.exists(), quiet=True))
        cpu = time.process_time() - cpu
        budgets = [row.budget_label for row in results[0].robustness.rows]
        robust = {b: [next(r.robust_accuracy for r in res.robustness.rows if r.budget_label == b) for res in results]
                  for b in budgets}
        rows.append((rule, mean_std([r.test_accuracy for r in results]), {b: mean_std(v) for b, v in robust.items()},
                     cpu))
        print(f"{rule}: done ({cpu:.0f} s CPU)", file=sys.stderr)

    budgets = list(rows[0][2])
    print(f"LeNet-5 on mnist5k, {len(seeds)} seeds ({args.seeds}); {torch.get_num_threads()} CPU threads, no GPU")
    print("| rule | test accuracy (%) | " + " | ".join(f"PGD {b} (%)" for b in budgets) + " | CPU s (all seeds) |")
    print("|---|---|" + "---|" * len(budgets) + "---|")
    for rule, test, robust, cpu in rows:
        print(f"| {rule} | {test} | " + " | ".join(robust[b] for b in budgets) + f" | {cpu:.0f} |")


if __name__ == "__main__":
    main()
