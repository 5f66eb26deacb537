"""Images per second of the in-memory loader against a torchvision DataLoader with the same augmentation.

    python benchmarks/data_loading.py [--root DIR] [--batch-size 512] [--batches 200] [--workers N] [--cutout 16]

Data: CIFAR-10's training split if its files are under --root (default: the
cifar10 plugin's default root), else the `synthetic` dataset with 50,000
CIFAR-sized 32x32x3 images (the output says which). Augmentation: CIFAR's
(random crop with 4 pixels of padding, horizontal flip; cutout with --cutout).
Both loaders come from `bionas.data.make_loader` (the DataLoader path is forced
with in_memory=False: torch DataLoader workers applying torchvision v2
transforms to each uint8 image, pinned memory on CUDA), and both deliver
float32 batches on the device. Runs on the CPU and, when present, on CUDA.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[1] / "plugins")]

import bionas  # noqa: E402
from bionas.data import AugmentSpec, make_loader  # noqa: E402
from bionas.errors import DataError  # noqa: E402


def dataset(root: str | None):
    options = {"root": root} if root else {}
    cifar = bionas.get_dataset("cifar10", **options)
    try:
        cifar.tensors("train")
        return cifar, "cifar10 (real files)"
    except DataError:
        synthetic = bionas.get_dataset("synthetic", image_size=32, channels=3, train_size=50_000, val_size=10,
                                       test_size=10)
        return synthetic, "synthetic, 50,000 CIFAR-sized 32x32x3 images (no CIFAR-10 files found)"


def images_per_second(loader, batches: int, warmup: int, device: torch.device) -> float:
    """Warm up with `warmup` batches, then time `batches` batches (across epochs if needed)."""

    def run(n: int) -> int:
        seen = 0
        while n > 0:
            for images, labels in loader:
                seen += len(labels)
                n -= 1
                if n == 0:
                    break
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return seen

    run(warmup)
    start = time.perf_counter()
    seen = run(batches)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="CIFAR-10 root (holding cifar-10-batches-py/)")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--batches", type=int, default=200, help="timed batches per loader")
    parser.add_argument("--warmup", type=int, default=20, help="untimed batches first")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader workers")
    parser.add_argument("--cutout", type=int, default=0, help="cutout length (0: off)")
    args = parser.parse_args()

    ds, what = dataset(args.root)
    spec = AugmentSpec(padding=4, flip=True, cutout=args.cutout)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"data: {what}; train split {len(ds.split('train'))} images")
    print(f"augmentation: {spec.model_dump()}; batch {args.batch_size}; {args.batches} timed batches; "
          f"DataLoader workers {args.workers}; torch {torch.__version__}, {os.cpu_count()} CPUs")
    rows = []
    for device in devices:
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        fast = make_loader(ds, "train", args.batch_size, train=True, device=device, augment=spec, seed=0)
        slow = make_loader(ds, "train", args.batch_size, train=True, device=device, augment=spec, seed=0,
                           in_memory=False, num_workers=args.workers)
        fast_ips = images_per_second(fast, args.batches, args.warmup, device)
        slow_ips = images_per_second(slow, args.batches, args.warmup, device)
        rows.append((name, fast_ips, slow_ips))
    print()
    print(f"| device | in-memory loader (img/s) | DataLoader + v2 transforms (img/s) | ratio |")
    print(f"|---|---:|---:|---:|")
    for name, fast_ips, slow_ips in rows:
        print(f"| {name} | {fast_ips:,.0f} | {slow_ips:,.0f} | {fast_ips / slow_ips:.1f}x |")


if __name__ == "__main__":
    main()
