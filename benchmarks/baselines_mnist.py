"""The MNIST baseline table: LeNet-5 with one learning rule in every layer, a study over seeds per rule.

    PYTHONPATH=.:plugins python benchmarks/baselines_mnist.py [--seeds 0,1,2] [--out runs/baselines_mnist]

For each rule, what `bionas run SPEC --seeds 0,1,2 --out OUT/<rule>` does, on
examples/mnist-baselines.yaml (bp) and examples/mnist-baselines/<rule>.yaml: the
pipeline once per seed in OUT/<rule>/seed-N/ (resumed where a directory exists),
then the study's aggregate (OUT/<rule>/study.md). Prints one table of the
aggregates: test accuracy and robust accuracy of each attack and budget, mean ±
sample std over the seeds, and the CPU time of each rule's runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

import bionas  # noqa: E402
from bionas.analysis.aggregate import Spread  # noqa: E402

RULES = ("bp", "fa", "usf", "brsf", "frsf", "dfa")


def spec_file(rule: str) -> Path:
    examples = ROOT / "examples"
    return examples / "mnist-baselines.yaml" if rule == "bp" else examples / "mnist-baselines" / f"{rule}.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--rules", default=",".join(RULES), help="comma-separated rules")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "baselines_mnist")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]

    rows = []
    for rule in args.rules.split(","):
        spec = {**yaml.safe_load(spec_file(rule).read_text()), "seeds": seeds}
        spec.pop("seed", None)
        root = args.out / rule
        cpu = time.process_time()
        aggregate = bionas.run_study(spec, root, resume=root.exists(), quiet=True)
        rows.append((rule, aggregate["summary"], time.process_time() - cpu))
        print(f"{rule}: done, {root / 'study.md'}", file=sys.stderr)

    attacks = list(rows[0][1]["robust"])
    print(f"LeNet-5 on mnist5k, seeds {args.seeds}; {torch.get_num_threads()} CPU threads, no GPU")
    print("| rule | test accuracy | " + " | ".join(attacks) + " | CPU s (all seeds) |")
    print("|---|---|" + "---|" * len(attacks) + "---|")
    for rule, summary, cpu in rows:
        cells = [Spread(**summary["test_accuracy"]).text()] + [Spread(**summary["robust"][a]).text() for a in attacks]
        print(f"| {rule} | " + " | ".join(cells) + f" | {cpu:.0f} |")


if __name__ == "__main__":
    main()
