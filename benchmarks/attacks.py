"""Images per second of every first-party attack at its published budget, on one small model.

    PYTHONPATH=.:plugins python benchmarks/attacks.py [--device cpu] [--batch 100] [--eps 0.3] [--only pgd,square]

The model is a 784-256-256-10 MLP trained with backprop for a few seconds on the
embedded MNIST digits; the batch is `--batch` test digits it classifies
correctly. Budgets (REFERENCES.md): fgsm one step; pgd 10 steps, alpha
2.5 eps / steps, random start; apgd 100 steps; square 5000 queries (p_init
0.8); onepixel population 400 x up to 100 generations, F = 0.5; transfer = pgd
on a second, separately trained MLP. eps defaults to the MNIST standard 0.3.

Black-box attacks stop on an image once it is fooled, so their speed depends on
how robust the model is: the table shows the mean work per image beside the
rate. "model calls" counts forward passes of the target model and "images/call"
their mean batch size: onepixel scores the whole population of every image
still being attacked in a few big batches per generation (no Python loop over
images or candidates).
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

BUDGETS = {
    "fgsm": {},
    "pgd": {"steps": 10},
    "apgd": {"steps": 100},
    "square": {"queries": 5000, "p_init": 0.8},
    "onepixel": {"population": 400, "generations": 100, "mutation": 0.5},
    "transfer": {"attack": "pgd", "attack_options": {"steps": 10}},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=100, help="images attacked at once")
    parser.add_argument("--eps", default="0.3", help="linf budget (MNIST standard: 0.3)")
    parser.add_argument("--only", default=",".join(BUDGETS), help="comma-separated attacks")
    args = parser.parse_args()
    device = torch.device(args.device)

    train_x, train_y, test_x, test_y = mnist()
    model = train(mlp(0), train_x, train_y, epochs=3).to(device)
    surrogate = train(mlp(1), train_x, train_y, epochs=3, seed=1).to(device)
    x, y = test_x.to(device), test_y.to(device)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    x, y = x[correct][: args.batch], y[correct][: args.batch]

    calls: list[int] = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    threads = torch.get_num_threads()
    print(
        f"device {device} ({'no GPU in this run' if device.type == 'cpu' else torch.cuda.get_device_name(device)}), "
        f"{threads} CPU threads, torch {torch.__version__}; model 784-256-256-10 MLP, clean accuracy "
        f"{correct.float().mean():.1%}; batch of {len(x)} correctly classified test digits; eps {args.eps}"
    )
    print()
    print(
        "| attack | budget | seconds | images/s | mean work per image | robust in batch | model calls | images/call |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in args.only.split(","):
        options = dict(BUDGETS[name])
        if name != "onepixel":
            options["eps"] = args.eps
        attack = bionas.get_attack(name, **options)
        if name == "transfer":
            attack = attack.with_surrogate(surrogate, label="second bp MLP")
        calls.clear()
        start = time.perf_counter()
        result = attack.run(model, x, y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
        attack.check_result(x, result.adversarial)
        attack_calls = len(calls)
        with torch.no_grad():
            robust = (model(result.adversarial).argmax(1) == y).float().mean().item()
        budget = ", ".join(f"{k} {v}" for k, v in BUDGETS[name].items()) or "1 step"
        per_call = f"{sum(calls[:attack_calls]) / attack_calls:.0f}" if attack_calls else "-"
        print(
            f"| {name} | {budget} | {seconds:.2f} | {len(x) / seconds:.1f} | {result.work.mean():.1f} {result.unit} "
            f"| {robust:.0%} | {attack_calls} | {per_call} |"
        )


if __name__ == "__main__":
    main()
