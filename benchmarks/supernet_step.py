"""Time one supernet training step: the 8-op bp space against the paper's 22-candidate space.

    python benchmarks/supernet_step.py                  # defaults: a few minutes on 2 CPU cores
    python benchmarks/supernet_step.py --batch 64 --rounds 10 --device cuda

A step is a DARTS weight step: forward, cross-entropy, backward, gradient
clipping at 5, SGD (lr 0.025, momentum 0.9, weight decay 3e-4). Both spaces
get the same channels, cells and batch, each with and without partial
channels (PC-DARTS K), and each round runs one step of every configuration
in a rotated order, so that drifts of a shared machine hit all alike. The
table gives median wall-clock and CPU time per step (CPU time of this process
is the steadier on a shared machine; it is what the ratio uses), the ratio of
each 22-candidate configuration to the 8-op one with the same K, and the
ratio of their conv/matmul FLOPs (counted by torch's FlopCounterMode over one
step): the cost the extra candidates explain. The paper's 22 candidates hold
16 conv candidates where the 8 ops hold 4, so their FLOPs are about 3.9x, not
22/8 = 2.75x: pooling, none and the identity, which both spaces share, cost
next to nothing. Results here are CPU only (no GPU on the machine this was
written on); channels_last is on by default because it is several times
faster for these depthwise convs on CPU as well.
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
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from bionas.space import SearchSpace, Supernet  # noqa: E402

SPACES = {"8 ops, bp": {"rules": ["bp"]}, "22 candidates": {}}  # {}: the paper's default space


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=16, help="initial channels (DARTS search: 16)")
    parser.add_argument("--cells", type=int, default=5, help="cells (DARTS search: 8)")
    parser.add_argument("--batch", type=int, default=16, help="minibatch size (DARTS search: 64)")
    parser.add_argument("--image-size", type=int, default=32, help="square input size (CIFAR: 32)")
    parser.add_argument("--classes", type=int, default=10, help="number of classes")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds, after one warm-up round")
    parser.add_argument("--partial-channels", type=int, default=4, help="PC-DARTS K of the partial runs")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=True, help="channels_last memory format"
    )
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


class Config:
    """One supernet with its optimizer and a fixed batch; `step()` times one training step."""

    def __init__(self, label: str, space_spec: dict, partial: int, args: argparse.Namespace):
        self.label, self.partial, self.device = label, partial, args.device
        spec = {**space_spec, "channels": args.channels, "cells": args.cells, "partial_channels": partial}
        self.model = Supernet(SearchSpace(spec), args.classes).to(args.device)
        self.images = torch.rand(args.batch, 3, args.image_size, args.image_size, device=args.device)
        if args.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.images = self.images.contiguous(memory_format=torch.channels_last)
        self.labels = torch.randint(0, args.classes, (args.batch,), device=args.device)
        # DARTS train_search.py: SGD lr 0.025, momentum 0.9, weight decay 3e-4, gradient clip 5
        self.optimizer = torch.optim.SGD(self.model.weight_parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.flops = 0

    def _step(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(self.model(self.images), self.labels).backward()
        torch.nn.utils.clip_grad_norm_(self.model.weight_parameters(), 5.0)
        self.optimizer.step()
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def warm_up(self) -> None:
        with FlopCounterMode(display=False) as counter:
            self._step()
        self.flops = counter.get_total_flops()

    def step(self) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self._step()
        self.wall.append(time.perf_counter() - wall)
        self.cpu.append(time.process_time() - cpu)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    configs = [
        Config(label, spec, partial, args)
        for partial in (1, args.partial_channels)
        for label, spec in SPACES.items()
    ]
    for config in configs:
        config.warm_up()
    for round_ in range(args.rounds):
        shift = round_ % len(configs)
        for config in configs[shift:] + configs[:shift]:
            config.step()
    print(
        f"device {args.device}, {torch.get_num_threads()} thread(s), channels_last {args.channels_last}; "
        f"channels {args.channels}, cells {args.cells}, batch {args.batch}, "
        f"{args.image_size}x{args.image_size}, {args.rounds} interleaved rounds"
    )
    header = f"{'space':<15}{'K':>3}{'cands':>7}{'wall ms':>10}{'CPU ms':>10}{'CPU ratio':>11}{'FLOP ratio':>12}"
    print(header)
    print("-" * len(header))
    for config in configs:
        base = next(c for c in configs if c.partial == config.partial)
        cpu = statistics.median(config.cpu)
        print(
            f"{config.label:<15}{config.partial:>3}{config.model.space.num_candidates:>7}"
            f"{1e3 * statistics.median(config.wall):>10.1f}{1e3 * cpu:>10.1f}"
            f"{cpu / statistics.median(base.cpu):>10.2f}x{config.flops / base.flops:>11.2f}x"
        )


if __name__ == "__main__":
    main()
