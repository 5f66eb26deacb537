"""Retraining throughput of the paper's found network: its mixed rules against the same network on bp.

    python benchmarks/train_throughput.py                         # GPU: the paper's setting
    python benchmarks/train_throughput.py --device cpu --cells 8 --batch 32 --rounds 3

The network is the published BioNAS-DARTS genotype (bionas.space.BIONAS_DARTS:
frsf and usf on its searched edges) at the DARTS evaluation size (20 cells, 36
channels, auxiliary head, drop path 0.2, CIFAR-sized 32x32 input, batch 96), and
the same genotype with every layer on bp. One training step = forward with the
auxiliary head, cross-entropy (+ 0.4 x auxiliary), backward, gradient clipping,
SGD step, exactly as bionas.retrain does. Rounds alternate the variants (mixed/bp
x bf16 on/off), so drifts of the machine hit all alike; the table gives median
images/second and the ratio mixed/bp measured in the same rounds.
Target (issue): mixed rules at least 0.9x of bp.
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

from bionas.space import BIONAS_DARTS, Network, with_backprop  # noqa: E402
from bionas.training import autocast  # noqa: E402


def build(genotype, args, device, channels_last: bool | None = None):
    """The network on `device`; channels_last (default: on CUDA) for the model, its inputs made so by the caller."""
    torch.manual_seed(0)
    model = Network(genotype, channels=args.channels, cells=args.cells, num_classes=10, in_channels=3,
                    auxiliary=True, image_size=32).to(device)
    model.drop_path_prob = 0.2
    if device.type == "cuda" if channels_last is None else channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def steps_per_second(model, optimizer, images, labels, device, amp: str, steps: int) -> float:
    def step():
        with autocast(device, amp):
            logits, aux = model.forward_with_aux(images)
            loss = F.cross_entropy(logits.float(), labels) + 0.4 * F.cross_entropy(aux.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    step()  # warm-up (kernel selection, allocator)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cells", type=int, default=20)
    parser.add_argument("--channels", type=int, default=36)
    parser.add_argument("--batch", type=int, default=96)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--amp", nargs="+", default=["off", "bf16"], help="bf16 autocast settings to compare")
    parser.add_argument("--layouts", action="store_true",
                        help="instead: the mixed-rule network in NCHW against channels_last (bf16 off), the "
                             "measurement behind runtime.channels_last: auto")
    args = parser.parse_args()
    device = torch.device(args.device)
    images = torch.rand(args.batch, 3, 32, 32, device=device)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (args.batch,), device=device)
    if args.layouts:
        compare_layouts(args, device, images, labels)
        return
    models = {"mixed": build(BIONAS_DARTS, args, device), "bp": build(with_backprop(BIONAS_DARTS), args, device)}
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
                  for k, m in models.items()}
    rate = {(k, amp): [] for k in models for amp in args.amp}
    for round_ in range(args.rounds):
        order = list(rate) if round_ % 2 == 0 else list(reversed(rate))
        for key in order:
            name, amp = key
            rate[key].append(args.batch * steps_per_second(models[name], optimizers[name], images, labels, device,
                                                           amp, args.steps))
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"device {device}{gpu}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
          f"{args.cells} cells, {args.channels} channels, batch {args.batch}, 32x32; "
          f"{args.rounds} rounds x {args.steps} steps")
    print(f"{'network':<10}{'bf16':<6}{'images/s':>10}{'mixed/bp':>10}")
    for amp in args.amp:
        ratios = [m / b for m, b in zip(rate["mixed", amp], rate["bp", amp])]
        for name in models:
            cell = f"{statistics.median(ratios):.3f}" if name == "mixed" else ""
            print(f"{name:<10}{amp:<6}{statistics.median(rate[name, amp]):>10.1f}{cell:>10}")
    print("target: mixed rules >= 0.9x bp")


def compare_layouts(args, device, images, labels) -> None:
    models = {layout: build(BIONAS_DARTS, args, device, layout == "channels_last") for layout in ("nchw", "channels_last")}
    inputs = {"nchw": images.contiguous(), "channels_last": images.contiguous(memory_format=torch.channels_last)}
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=0.025, momentum=0.9, weight_decay=3e-4)
                  for k, m in models.items()}
    rate = {k: [] for k in models}
    for round_ in range(args.rounds):
        for key in (list(rate) if round_ % 2 == 0 else list(reversed(rate))):
            rate[key].append(args.batch * steps_per_second(models[key], optimizers[key], inputs[key], labels, device,
                                                           "off", args.steps))
    ratios = [c / n for c, n in zip(rate["channels_last"], rate["nchw"])]
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads; mixed rules, "
          f"{args.cells} cells, {args.channels} channels, batch {args.batch}; {args.rounds} rounds x {args.steps} steps")
    for key in rate:
        print(f"{key:<14}{statistics.median(rate[key]):>10.1f} images/s")
    print(f"channels_last / nchw: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
