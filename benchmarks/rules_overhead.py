"""Training-step time of each learning rule relative to bp, on one conv network, interleaved.

    python benchmarks/rules_overhead.py                 # defaults: a few minutes on 2 CPU cores
    python benchmarks/rules_overhead.py --rounds 30 --batch 128 --device cuda

Every rule converts the whole network (hebbian: every layer, error blocked as
published, and once more with error=pass; pc: the network is one pc module, run
with its T). Each round times `--steps` training steps (forward, cross-entropy,
backward, SGD step) of every rule in turn, in a rotated order, so slow drifts of
the machine hit all rules alike; the table reports the median step time and the
median over rounds of (rule step time / bp step time in the same round), both in
wall-clock time and in CPU time of this process. On a shared machine the CPU
time is the steadier of the two (it does not count time other processes take);
the target verdict uses it. One thread by default for the same reason.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]  # benchmark this checkout

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import bionas  # noqa: E402

TARGETS = {"fa": 1.10, "usf": 1.10, "brsf": 1.10, "frsf": 1.10, "dfa": 1.10, "hebbian": 1.5, "hebbian(pass)": 1.5}


def conv_net(channels: int) -> nn.Module:
    c = channels

    def block(cin, cout, stride):
        return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *block(3, c, 1),
        *block(c, 2 * c, 2),
        *block(2 * c, 2 * c, 1),
        *block(2 * c, 4 * c, 2),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4 * c, 10),
    )


def rules(pc_steps: int) -> dict[str, object]:
    return {
        "bp": "bp",
        "fa": "fa",
        "usf": "usf",
        "brsf": "brsf",
        "frsf": "frsf",
        "dfa": "dfa",
        "hebbian": "hebbian",
        "hebbian(pass)": bionas.get_rule("hebbian", error="pass"),
        **({f"pc(T={pc_steps})": bionas.get_rule("pc", T=pc_steps)} if pc_steps else {}),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image", type=int, default=32, help="input height and width")
    parser.add_argument("--channels", type=int, default=16, help="width of the first conv")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per rule per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--pc-steps", type=int, default=50, help="pc inference steps T (rule default 50; 0: leave pc out)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    x = torch.randn(args.batch, 3, args.image, args.image, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    base = conv_net(args.channels).to(device)
    runs = {}
    for label, rule in rules(args.pc_steps).items():
        model = bionas.convert(copy.deepcopy(base), rule)
        runs[label] = (model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))

    def train(label: str, steps: int) -> tuple[float, float]:
        model, opt = runs[label]
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps, (time.process_time() - start_cpu) / steps

    for label in runs:
        train(label, args.warmup)
    labels = list(runs)
    wall = {label: [] for label in labels}
    cpu = {label: [] for label in labels}
    for r in range(args.rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            w, c = train(label, args.steps)
            wall[label].append(w)
            cpu[label].append(c)

    def ratio(times: dict, label: str) -> float:
        return statistics.median(t / b for t, b in zip(times[label], times["bp"]))

    print(
        f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}; "
        f"batch {args.batch}, {args.image}x{args.image}, channels {args.channels}; "
        f"{args.rounds} rounds x {args.steps} steps, interleaved"
    )
    print()
    print("| rule | wall ms / step | x bp (wall) | CPU ms / step | x bp (CPU) | target |")
    print("|---|---|---|---|---|---|")
    for label in labels:
        target = TARGETS.get(label)
        verdict = "reported" if target is None else f"<= {target:.2f}: " + ("met" if ratio(cpu, label) <= target else "MISSED")
        print(
            f"| {label} | {1000 * statistics.median(wall[label]):.1f} | {ratio(wall, label):.3f} | "
            f"{1000 * statistics.median(cpu[label]):.1f} | {ratio(cpu, label):.3f} | {verdict} |"
        )


if __name__ == "__main__":
    main()
