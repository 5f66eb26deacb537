"""One check of bionas's CUDA paths on one GPU, on synthetic CIFAR-shaped data, printed as one table.

    python benchmarks/gpu_check.py              # needs a CUDA GPU; about 3-5 minutes on one
    python benchmarks/gpu_check.py --only search,retrain

Rows (each measured side by side in this one run; a part that fails prints its error in its row):

    search         the paper's space (22 candidates) at the published size (C=16, 8 cells, batch 64), a darts
                   first-order step (benchmarks/search_cost.py's), bf16 autocast and channels_last: one candidate
                   at a time vs rule-batched, torch.compile off and on; the projected 50-epoch CIFAR-10 search
                   (target: <= 2 hours on one H200)
    retrain        training images/s of the BioNAS-DARTS network (mixed rules) vs the same network on bp, bf16,
                   20 cells, C=36, batch 96 (benchmarks/train_throughput.py's step; target: >= 0.9x)
    loader         the GPU-resident loader vs torchvision's DataLoader with v2 transforms, 50,000 synthetic
                   32x32x3 images, batch 256 (benchmarks/data_loading.py's; target: >= 3x)
    pgd, onepixel  images/s of the attacks on a small bp network trained a few steps on synthetic data
    torchrun       a 1-process NCCL launch (torch.distributed.run) of a tiny spec through `bionas run`:
                   search, retrain, an attack; its exit status
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(HERE)]  # this checkout, and the benchmarks beside

import torch  # noqa: E402

PARTS = ("retrain", "loader", "attacks", "torchrun", "search")  # the slowest (compilation) last


@dataclass
class Row:
    check: str
    measured: str
    target: str = ""
    verdict: str = ""


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    """'met' or 'not met' for a measured value against its target; '-' when it was not measured."""
    if value is None or math.isnan(value):
        return "-"
    return "met" if (value >= target if higher_is_better else value <= target) else "not met"


def format_table(rows: list[Row]) -> str:
    """The rows as a markdown table."""
    lines = ["| check | measured | target | verdict |", "|---|---|---|---|"]
    lines += [f"| {r.check} | {r.measured} | {r.target} | {r.verdict} |" for r in rows]
    return "\n".join(lines)


def tiny_spec(out: Path) -> dict:
    """The spec of the torchrun smoke run: a tiny search, retrain and attack on synthetic data."""
    return {
        "name": "gpu-check", "dataset": {"name": "synthetic", "options": {"image_size": 32, "channels": 3,
                                                                          "train_size": 512, "val_size": 64,
                                                                          "test_size": 64}},
        "space": {"ops": ["max_pool_3x3", "skip_connect", "sep_conv_3x3"], "rules": ["brsf", "fa"],
                  "channels": 8, "cells": 3},
        "search": {"name": "darts", "options": {"epochs": 1, "batch_size": 64}},
        "retrain": {"epochs": 1, "batch_size": 64, "channels": 8, "cells": 3, "cutout": 0},
        "evaluation": {"points": 64, "attacks": [{"name": "fgsm", "eps": ["8/255"]}]},
        "output": {"dir": str(out / "run"), "plots": False},
    }


def _failed(check: str, exc: BaseException) -> Row:
    return Row(check, f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}")


# -- the parts ----------------------------------------------------------------------------------------


def search_rows(device: torch.device, rounds: int) -> list[Row]:
    import search_cost

    args = search_cost.parse_args(["--device", str(device), "--sizes", "published", "--rounds", str(rounds)])
    variants = [("before", None), ("batched", None), ("batched", "default")]
    rows, base = [], None
    for mode, compiled in variants:
        label = f"search step, {'one by one' if mode == 'before' else 'rule-batched'}, compile {compiled or 'off'}"
        try:
            step, evaluate = search_cost.bionas_step(args, mode, "published", 1, "channels_last", compiled)
            started = time.perf_counter()
            step()  # warm-up (and compilation)
            warm = time.perf_counter() - started
            seconds = statistics.median(search_cost.timed(step, device) for _ in range(rounds))
            forward = statistics.median(search_cost.timed(evaluate, device) for _ in range(rounds))
        except Exception as exc:  # a compile that cannot take the model: reported, the rest goes on
            rows.append(_failed(label, exc))
            continue
        base = seconds if mode == "before" else base
        _, _, batch = search_cost.SIZES["published"]
        hours = search_cost.EPOCHS * math.ceil(search_cost.HALF / batch) * (seconds + forward) / 3600
        ratio = f", {seconds / base:.2f}x one by one" if base and mode != "before" else ""
        rows.append(Row(label, f"{seconds * 1000:.0f} ms/step{ratio}; 50 epochs {hours:.2f} h "
                               f"(first step {warm:.0f} s)", "<= 2 h", verdict(hours, 2.0, higher_is_better=False)))
    return rows


def retrain_rows(device: torch.device, rounds: int) -> list[Row]:
    import train_throughput

    from bionas.space import BIONAS_DARTS, with_backprop

    args = argparse.Namespace(channels=36, cells=20)
    batch = 96
    images = torch.rand(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)
    models = {"mixed": train_throughput.build(BIONAS_DARTS, args, device),
              "bp": train_throughput.build(with_backprop(BIONAS_DARTS), args, device)}
    optimizers = {k: torch.optim.SGD(m.parameters(), lr=0.025, momentum=0.9) for k, m in models.items()}
    ratios, rates = [], {"mixed": [], "bp": []}
    for _ in range(rounds):
        for name in models:
            rates[name].append(batch * train_throughput.steps_per_second(models[name], optimizers[name], images,
                                                                         labels, device, "bf16", 10))
        ratios.append(rates["mixed"][-1] / rates["bp"][-1])
    ratio = statistics.median(ratios)
    return [Row("retrain, BioNAS-DARTS mixed rules vs bp (bf16)",
                f"{statistics.median(rates['mixed']):,.0f} vs {statistics.median(rates['bp']):,.0f} img/s: "
                f"{ratio:.2f}x", ">= 0.9x", verdict(ratio, 0.9))]


def loader_rows(device: torch.device) -> list[Row]:
    import data_loading

    import bionas
    from bionas.data import AugmentSpec, make_loader

    data = bionas.get_dataset("synthetic", image_size=32, channels=3, train_size=50_000, val_size=10, test_size=10)
    spec = AugmentSpec(padding=4, flip=True, cutout=16)
    fast = make_loader(data, "train", 256, train=True, device=device, augment=spec, seed=0)
    slow = make_loader(data, "train", 256, train=True, device=device, augment=spec, seed=0, in_memory=False,
                       num_workers=min(8, os.cpu_count() or 1))
    fast_ips = data_loading.images_per_second(fast, 100, 10, device)
    slow_ips = data_loading.images_per_second(slow, 100, 10, device)
    ratio = fast_ips / slow_ips
    return [Row("loader, GPU-resident vs torchvision DataLoader", f"{fast_ips:,.0f} vs {slow_ips:,.0f} img/s: "
                f"{ratio:.1f}x", ">= 3x", verdict(ratio, 3.0))]


def attack_rows(device: torch.device) -> list[Row]:
    import torch.nn.functional as F

    import bionas
    from bionas.space import BIONAS_DARTS, Network, with_backprop

    torch.manual_seed(0)
    model = Network(with_backprop(BIONAS_DARTS), channels=8, cells=5, num_classes=10, in_channels=3).to(device)
    x = torch.rand(512, 3, 32, 32, device=device)
    y = (x.mean((1, 2, 3)) * 10).long().clamp(0, 9)  # a label the network can learn in a few steps
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(30):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    images, labels = x[:128], y[:128]
    rows = []
    for name, options, count in (("pgd", {"eps": "8/255", "steps": 10}, 128),
                                 ("onepixel", {"population": 400, "generations": 10}, 32)):
        attack = bionas.get_attack(name, **options)
        attack.run(model, images[:4], labels[:4])  # warm-up
        torch.cuda.synchronize(device)
        started = time.perf_counter()
        attack.run(model, images[:count], labels[:count])
        torch.cuda.synchronize(device)
        rate = count / (time.perf_counter() - started)
        budget = ", ".join(f"{k} {v}" for k, v in options.items())
        rows.append(Row(f"{name} ({budget}; {count} images), 8-channel 5-cell bp network", f"{rate:,.1f} images/s"))
    return rows


def torchrun_rows(device: torch.device) -> list[Row]:
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(tiny_spec(Path(tmp))))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m",
                   "bionas", "run", str(spec_path), "--device", str(device), "--quiet"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"),
                                                            os.environ.get("PYTHONPATH", "")])}
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
        seconds = time.perf_counter() - started
        report = Path(tmp) / "run" / "robustness.json"
        ok = done.returncode == 0 and report.exists()
        measured = f"exit {done.returncode} in {seconds:.0f} s" + ("" if ok else f": {done.stderr.strip()[-300:]}")
        return [Row("torchrun, 1 process, NCCL: search + retrain + attack", measured, "exit 0",
                    "met" if ok else "not met")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(PARTS), help="comma-separated: " + ", ".join(PARTS))
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of the search and retrain parts")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if unknown := [p for p in parts if p not in PARTS]:
        parser.error(f"--only: unknown {', '.join(unknown)} (known: {', '.join(PARTS)})")
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); it checks the CUDA paths "
              "and needs one GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    runs: dict[str, Callable[[], list[Row]]] = {
        "search": lambda: search_rows(device, args.rounds), "retrain": lambda: retrain_rows(device, args.rounds),
        "loader": lambda: loader_rows(device), "attacks": lambda: attack_rows(device),
        "torchrun": lambda: torchrun_rows(device),
    }
    rows = []
    started = time.perf_counter()
    for part in parts:
        try:
            done = runs[part]()
        except Exception as exc:  # one broken path must not hide the others
            done = [_failed(part, exc)]
        rows += done
        for row in done:  # as it comes, in case the run is cut short
            print(f"[{time.perf_counter() - started:.0f} s] {row.check}: {row.measured}", file=sys.stderr, flush=True)
    print(f"device {torch.cuda.get_device_name(device)}, torch {torch.__version__}; "
          f"{time.perf_counter() - started:.0f} s in all")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
