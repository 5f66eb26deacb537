"""What `runtime: auto` should mean on this device: a supernet weight step in float32, under bf16
autocast, and under torch.compile, side by side (bionas.runtime.AUTO_AMP, AUTO_COMPILE).

    python benchmarks/runtime_auto.py                      # CPU, 1 thread, the quickstart's supernet
    python benchmarks/runtime_auto.py --device cuda --channels 16 --cells 8 --batch 64 --image-size 32

The supernet is the quickstart's by default (max_pool_3x3, skip_connect and sep_conv_3x3 under usf,
frsf and fa; 4 channels, 3 cells, batches of 32 MNIST-sized images), channels_last. A step is a
darts weight step: forward, cross-entropy in float32, backward to the weights, SGD. Each round runs
one step of every variant in a rotated order, after `--warmup` untimed steps of each; the table gives
the median seconds per step (CPU time of this process on a CPU, wall time with synchronisation on a
GPU), its ratio to float32, and the wall seconds of the warm-up steps (compilation included).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]  # benchmark this checkout

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bionas.space import SearchSpace, Supernet  # noqa: E402
from search_cost import timed  # noqa: E402  (this directory is on sys.path when run as a script)

QUICKSTART_SPACE = {"ops": ["max_pool_3x3", "skip_connect", "sep_conv_3x3"], "rules": ["usf", "frsf", "fa"]}
VARIANTS = ("float32", "bf16 autocast", "compile")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--cells", type=int, default=3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps of each variant first (torch.compile "
                        "compiles, and recompiles for a few steps, before it runs steady)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    return parser.parse_args(argv)


def variant_step(name: str, args: argparse.Namespace):
    torch.manual_seed(0)
    space = SearchSpace({**QUICKSTART_SPACE, "channels": args.channels, "cells": args.cells})
    net = Supernet(space, 10, in_channels=args.in_channels).to(args.device, memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, foreach=True)
    forward = torch.compile(net) if name == "compile" else net
    x = torch.rand(args.batch, args.in_channels, args.image_size, args.image_size, device=args.device)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,), device=args.device)
    device_type = torch.device(args.device).type

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=name == "bf16 autocast"):
            logits = forward(x)
        F.cross_entropy(logits.float(), y).backward(inputs=net.weight_parameters())
        optimizer.step()

    return step


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    steps, first, times = {}, {}, {name: [] for name in VARIANTS}
    for name in VARIANTS:
        steps[name] = variant_step(name, args)
        start = time.perf_counter()
        for _ in range(args.warmup):
            steps[name]()
        first[name] = time.perf_counter() - start
    for round_ in range(args.rounds):
        order = VARIANTS[round_ % len(VARIANTS):] + VARIANTS[:round_ % len(VARIANTS)]
        for name in order:
            times[name].append(timed(steps[name], torch.device(args.device)))
    clock = "wall" if args.device.startswith("cuda") else "CPU"
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} thread(s); supernet C="
          f"{args.channels}, {args.cells} cells, batch {args.batch}, {args.image_size}x{args.image_size}, "
          f"channels_last, {args.rounds} rotated rounds")
    print(f"| variant | {clock} s/step | / float32 | first {args.warmup} steps, wall s |")
    print("|---|---|---|---|")
    base = statistics.median(times["float32"])
    for name in VARIANTS:
        median = statistics.median(times[name])
        print(f"| {name} | {median:.3f} | {median / base:.2f}x | {first[name]:.1f} |")


if __name__ == "__main__":
    main()
