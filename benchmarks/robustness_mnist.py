"""Robustness of a bp-trained and an fa-trained MLP on the embedded MNIST digits.

    PYTHONPATH=.:plugins python benchmarks/robustness_mnist.py [--points 500] [--out runs/robustness_mnist]

Both networks are the same 784-256-256-10 MLP, trained identically (Adam, lr
1e-3, 5 epochs on 4,000 shuffled digits); the fa one has every Linear wrapped
with `bionas.convert(model, "fa")`. The first `--points` of the 1,000 held-out
digits are attacked with, at eps 0.05, 0.1, 0.2, 0.3 (linf):
* fgsm and pgd (10 steps, alpha 2.5 eps / steps, random start) through exact gradients;
* pgd through the rules' own gradients (a separate threat model: for fa, the
  backward pass uses the fixed random feedback matrices, not the weights);
* square (5000 queries, p_init 0.8), black-box;
* transfer: pgd on a surrogate, a third MLP of the same architecture trained
  with bp from another seed.
Prints one markdown table per network; writes the reports as JSON and PNG to --out.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]

import bionas  # noqa: E402
from mnist_mlp import mlp, mnist, train  # noqa: E402
from bionas.robustness import evaluate_robustness  # noqa: E402

SWEEP = [0.05, 0.1, 0.2, 0.3]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "robustness_mnist")
    args = parser.parse_args()

    train_x, train_y, test_x, test_y = mnist()
    start = time.perf_counter()
    networks = {"bp": train(mlp(0), train_x, train_y), "fa": train(mlp(0, "fa"), train_x, train_y)}
    surrogate = train(mlp(1), train_x, train_y, seed=1)
    print(f"trained 3 MLPs in {time.perf_counter() - start:.0f} s; {torch.get_num_threads()} CPU threads, no GPU")

    for rule, model in networks.items():
        transfer = bionas.get_attack("transfer", attack="pgd").with_surrogate(surrogate, label="bp MLP, another seed")
        attacks = ["fgsm", "pgd", ("pgd", {"gradient": "rule"}), "square", transfer]
        start = time.perf_counter()
        report = evaluate_robustness(
            model,
            test_x,
            test_y,
            attacks,
            eps_sweep=SWEEP,
            points=args.points,
            batch_size=args.batch_size,
            seed=args.seed,
            name=f"{rule} MLP 784-256-256-10",
        )
        print(f"\n### {rule}-trained MLP ({time.perf_counter() - start:.0f} s)\n")
        print(report.markdown())
        report.save_json(args.out / f"{rule}.json")
        report.plot(args.out / f"{rule}.png")
    print(f"wrote {args.out}/{{bp,fa}}.json and .png")


if __name__ == "__main__":
    main()
