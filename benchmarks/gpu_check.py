"""One check of bionas's CUDA paths on one GPU, every part in its own time box, rows printed as they come.

    python benchmarks/gpu_check.py                          # one CUDA GPU; at most --budget 300 s in all
    python benchmarks/gpu_check.py --lrnas LR-NAS --biotorch biotorch   # with LR-NAS's step beside
    python benchmarks/gpu_check.py --only search-64-graphs,retrain-graphs
    python benchmarks/gpu_check.py --device cpu --tiny      # every part at toy sizes: checks the script

Each part runs as a subprocess of this script (`--part NAME`) with its own time box (seconds, BOXES;
`--box-scale` stretches them all), all within `--budget`. Its rows print the moment they are measured;
a part that fails or outlives its box prints so, and the next part starts. After the parts, the rows
that compare them (CUDA graphs vs eager, batch 256 vs 64, bionas vs LR-NAS, mixed rules vs bp).

    search-B-graphs, search-B-eager   the darts first-order search of the paper's space (22 candidates) at the
                   published size (C=16, 8 cells), batch B = 64 and 256, through bionas's own search loop
                   (benchmarks/real_steps.py) with runtime.cuda_graphs on and off (amp, channels_last, compile:
                   bionas's CUDA auto); rows: the step, the forward-only pass (validation, batch B), the first
                   step and first epoch (capture included), and the projected 50-epoch CIFAR-10 search:
                   50 x (391 steps at batch 64, or 98 at 256, + a forward pass over the 25,000 architecture images)
    lrnas          LR-NAS's published step (first order) at the published size, batch 64 (--lrnas only;
                   benchmarks/search_cost.py's)
    retrain-graphs, retrain-eager   the retrain (bionas.retrain.retrain) of the BioNAS-DARTS genotype, mixed rules
                   and all bp, C=36, 20 cells, batch 96, bf16 autocast: images/s of a steady epoch, first step
    quickstart     `bionas run examples/quickstart.yaml --device cuda`: wall seconds and its accuracies
    attacks        PGD (10 steps), APGD (10 steps) and One-Pixel (population 400, 10 generations) images/s on an
                   8-channel 5-cell bp network trained a few steps on synthetic data; on CUDA the iterations of
                   PGD and APGD replay CUDA graphs (Attack.with_cuda_graphs, as runtime.cuda_graphs does)
    torchrun       a 1-process NCCL launch (torch.distributed.run) of a tiny spec through `bionas run`:
                   search, retrain, an attack; its exit status
    loader         (only when named in --only) the GPU-resident loader vs torchvision's DataLoader

Targets (issue 23): a search step at batch 64 <= 60 ms and at batch 256 <= 3x that; the 50-epoch search
<= 30 min; the first step <= 30 s; retrain bp >= 8,000 images/s and mixed >= 0.9x bp; the quickstart
<= 30 s in all; PGD and APGD >= 5x their images/s before CUDA graphs.
"""

from __future__ import annotations

import time

START = time.perf_counter()  # --budget counts from here: imports and all

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "plugins"), str(HERE)]  # this checkout, and the benchmarks beside

import torch  # noqa: E402

from timebox import HEADER, Part, Row, emit_row, emit_values, failure, run_parts  # noqa: E402

CLOSING = 3.0  # seconds of the budget kept for the comparison rows at the end
EPOCHS, HALF = 50, 25_000  # DARTS's search: 50 epochs over CIFAR-10's training set split in two

# Time boxes (seconds) on one H200; the default order is the order below (those that decide the targets first).
BOXES = {"search-64-graphs": 50, "retrain-graphs": 35, "quickstart": 45, "attacks": 20, "search-256-graphs": 35,
         "search-64-eager": 45, "lrnas": 35, "retrain-eager": 30, "search-256-eager": 40, "torchrun": 35,
         "loader": 30}
DEFAULT_PARTS = [name for name in BOXES if name != "loader"]

# Sizes: (channels, cells, batch, steps per epoch, image size); the tiny ones check the script on a CPU.
SEARCH = {64: (16, 8, 64, {"graphs": 20, "eager": 2}, 32), 256: (16, 8, 256, {"graphs": 10, "eager": 2}, 32)}
TINY_SEARCH = {64: (4, 1, 4, {"graphs": 2, "eager": 2}, 8), 256: (4, 1, 8, {"graphs": 2, "eager": 2}, 8)}
RETRAIN = (36, 20, 96, {"graphs": 30, "eager": 8}, 32)
TINY_RETRAIN = (4, 2, 8, {"graphs": 2, "eager": 2}, 16)
# The state before CUDA graphs (issue 23, one H200): the yardstick of the attacks' target.
BEFORE_GRAPHS = {"pgd": 641.0}


def verdict(value: float | None, target: float, higher_is_better: bool = True) -> str:
    """'met' or 'not met' for a measured value against its target; '-' when it was not measured."""
    if value is None or math.isnan(value):
        return "-"
    return "met" if (value >= target if higher_is_better else value <= target) else "not met"


def format_table(rows: list[Row]) -> str:
    """The rows as a markdown table."""
    return "\n".join([HEADER, *(r.markdown() for r in rows)])


def projected_hours(step: float, forward: float, batch: int) -> float:
    """50 epochs of ceil(25,000 / batch) steps plus a forward pass over the 25,000 architecture images."""
    return EPOCHS * math.ceil(HALF / batch) * (step + forward) / 3600


def targets(args) -> bool:
    """Whether rows carry the issue's targets: on CUDA at the real sizes (toy sizes check the script only)."""
    return args.device.type == "cuda" and not args.tiny


def target_verdict(applies: bool, target: str, result: str) -> tuple[str, str]:
    return (target, result) if applies else ("", "")


def tiny_spec(out: Path, tiny: bool = False) -> dict:
    """The spec of the torchrun smoke run: a tiny search, retrain and attack on synthetic data (`tiny`: smaller)."""
    size = {"train_size": 128, "val_size": 32, "test_size": 32} if tiny else \
        {"train_size": 512, "val_size": 64, "test_size": 64}
    batch, cells = (32, 1) if tiny else (64, 3)
    return {
        "name": "gpu-check", "dataset": {"name": "synthetic", "options": {"image_size": 16 if tiny else 32,
                                                                          "channels": 3, **size}},
        "space": {"ops": ["max_pool_3x3", "skip_connect", "sep_conv_3x3"], "rules": ["brsf", "fa"],
                  "channels": 4 if tiny else 8, "cells": cells},
        "search": {"name": "darts", "options": {"epochs": 1, "batch_size": batch}},
        "retrain": {"epochs": 1, "batch_size": batch, "channels": 4 if tiny else 8, "cells": cells, "cutout": 0},
        "evaluation": {"points": 32 if tiny else 64, "attacks": [{"name": "fgsm", "eps": ["8/255"]}]},
        "output": {"dir": str(out / "run"), "plots": False},
    }


def bionas_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "bionas", *args]


def checkout_env() -> dict:
    """The environment of a child `bionas` process: this checkout first on its path."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins"),
                                                         os.environ.get("PYTHONPATH", "")])}


# -- the parts (each runs in its own process: `--part NAME`) ------------------------------------------
# Each part imports what it uses inside: its process loads only its own modules (the parent, none of them).


def search_part(args, batch: int, graphs: bool) -> None:
    import real_steps

    channels, cells, size_batch, steps, image = (TINY_SEARCH if args.tiny else SEARCH)[batch]
    mode = "graphs" if graphs else "eager"
    cuda = args.device.type == "cuda"
    space = real_steps.QUICKSTART_SPACE if args.tiny else None
    timing = real_steps.search_timing(real_steps.runtime(args.device, cuda_graphs=graphs and cuda),
                                      channels=channels, cells=cells, batch=size_batch, steps=steps[mode],
                                      space=space, image_size=image)
    hours = projected_hours(timing.step, timing.forward, size_batch)
    emit_values(**{f"search-{batch}-{mode}": {"step": timing.step, "forward": timing.forward, "hours": hours,
                                              "batch": size_batch}})
    fast = graphs and batch == 64 and targets(args)
    where = f"batch {size_batch}, {mode}" + ("" if cuda else " (no CUDA: eager)")
    emit_row(f"search step, {where}", f"{timing.step * 1000:.1f} ms/step (a steady epoch of {steps[mode]} steps)",
             *target_verdict(fast, "<= 60 ms", verdict(timing.step, 0.060, higher_is_better=False)))
    emit_row(f"forward pass (validation), {where}", f"{timing.forward * 1000:.1f} ms/batch")
    emit_row(f"first step, search {where}", f"{timing.first_step:.1f} s (first epoch of {steps[mode]} steps: "
             f"{timing.first_epoch:.1f} s), capture or compilation included",
             *target_verdict(graphs and targets(args), "<= 30 s", verdict(timing.first_step, 30, False)))
    emit_row(f"50-epoch search projected, {where}", f"{hours:.2f} h ({hours * 60:.0f} min): 50 x "
             f"({math.ceil(HALF / size_batch)} steps + forward over {HALF:,} images)",
             *target_verdict(fast, "<= 0.5 h", verdict(hours, 0.5, higher_is_better=False)))


def lrnas_part(args) -> None:
    import statistics

    import search_cost

    size = "tiny" if args.tiny else "published"
    options = search_cost.parse_args(["--device", str(args.device), "--sizes", size, "--no-counts",
                                      *(["--lrnas", str(args.lrnas)] if args.lrnas else []),
                                      *(["--biotorch", str(args.biotorch)] if args.biotorch else [])])
    modules = search_cost.lrnas_modules(options)
    if modules is None:
        emit_row("LR-NAS step (published code)", "left out: no --lrnas, or BioTorch missing")
        return
    started = time.perf_counter()
    step, evaluate = search_cost.lrnas_step(options, modules, size)
    step()
    first = time.perf_counter() - started
    seconds = statistics.median(search_cost.timed(step, args.device) for _ in range(2))
    forward = statistics.median(search_cost.timed(evaluate, args.device) for _ in range(2))
    batch = search_cost.SIZES[size][2]
    emit_values(lrnas={"step": seconds, "forward": forward})
    emit_row(f"LR-NAS step (published code), batch {batch}, fp32", f"{seconds * 1000:.0f} ms/step, forward "
             f"{forward * 1000:.0f} ms, first step {first:.1f} s; 50 epochs "
             f"{projected_hours(seconds, forward, batch):.1f} h")


def retrain_part(args, graphs: bool) -> None:
    import real_steps

    channels, cells, batch, steps, image = TINY_RETRAIN if args.tiny else RETRAIN
    mode = "graphs" if graphs else "eager"
    cuda = args.device.type == "cuda"
    run = real_steps.runtime(args.device, cuda_graphs=graphs and cuda)
    rates = {}
    for network in ("bp", "mixed"):
        label = f"retrain {network}, BioNAS-DARTS C={channels} {cells} cells batch {batch}, {mode}" + \
            ("" if cuda else " (no CUDA: eager)")
        try:
            # graphs: a third epoch, as the second runs drop path for the first time (a new capture)
            timing = real_steps.retrain_timing(run, backprop=network == "bp", channels=channels, cells=cells,
                                               batch=batch, steps=steps[mode], epochs=3 if graphs else 2,
                                               image_size=image)
        except Exception as exc:  # the other network may still run
            emit_row(label, failure(exc))
            continue
        rates[network] = timing.images_per_second
        emit_row(label, f"{rates[network]:,.0f} images/s ({timing.step * 1000:.1f} ms/step), first step "
                        f"{timing.first_step:.1f} s", *target_verdict(graphs and network == "bp" and targets(args),
                                                                     ">= 8,000 images/s", verdict(rates[network], 8000)))
    emit_values(**{f"retrain-{mode}": rates})


def quickstart_part(args) -> None:
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        spec = ROOT / "examples" / "quickstart.yaml"
        if args.tiny:
            spec = Path(tmp) / "tiny.yaml"
            spec.write_text(yaml.safe_dump(tiny_spec(Path(tmp), tiny=True)))
        out = Path(tmp) / "quickstart"
        started = time.perf_counter()
        done = subprocess.run(bionas_command("run", str(spec), "--device", str(args.device), "--out", str(out),
                                             "--quiet"), capture_output=True, text=True, env=checkout_env())
        seconds = time.perf_counter() - started
        name = "quickstart" if not args.tiny else "tiny spec"
        label = f"bionas run {name} --device {args.device}, end to end"
        if done.returncode != 0:
            emit_row(label, f"failed: exit {done.returncode}: {done.stderr.strip()[-200:]}")
            return
        results = json.loads((out / "results.json").read_text())
        names = {"search_valid_accuracy": "supernet val", "val_accuracy": "retrain val", "test_accuracy": "test"}
        accuracies = ", ".join(f"{name} {results[key]:.1%}" for key, name in names.items()
                               if results.get(key) is not None)
        emit_values(quickstart={"seconds": seconds, **{k: results.get(k) for k in ("search_seconds",
                    "search_valid_accuracy", "val_accuracy", "test_accuracy")}})
        emit_row(label, f"{seconds:.1f} s wall (search {results['search_seconds']:.1f} s); {accuracies}",
                 *target_verdict(targets(args), "<= 30 s", verdict(seconds, 30, higher_is_better=False)))


def attacks_part(args) -> None:
    import torch.nn.functional as F

    import bionas
    from bionas.space import BIONAS_DARTS, Network, with_backprop
    from real_steps import synchronize

    device = args.device
    channels, cells, image, count = (4, 2, 16, 8) if args.tiny else (8, 5, 32, 128)
    torch.manual_seed(0)
    model = Network(with_backprop(BIONAS_DARTS), channels=channels, cells=cells, num_classes=10,
                    in_channels=3).to(device)
    x = torch.rand(4 * count, 3, image, image, device=device)
    y = (x.mean((1, 2, 3)) * 10).long().clamp(0, 9)  # a label the network can learn in a few steps
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3 if args.tiny else 30):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    images, labels = x[:count], y[:count]
    budgets = (("pgd", {"eps": "8/255", "steps": 10}, count), ("apgd", {"eps": "8/255", "steps": 10}, count),
               ("onepixel", {"population": 20 if args.tiny else 400, "generations": 2 if args.tiny else 10},
                max(count // 4, 2)))
    for name, options, n in budgets:
        graphs = device.type == "cuda" and name in ("pgd", "apgd")  # runtime.cuda_graphs: iterations replay
        label = f"{name} ({', '.join(f'{k} {v}' for k, v in options.items())}; {n} images), " \
                f"{channels}-channel {cells}-cell bp network" + (", CUDA graphs" if graphs else "")
        try:
            # under graphs the warm-up's 2 images are padded to n: it warms up and captures what the timed run replays
            attack = bionas.get_attack(name, **options).with_cuda_graphs(graphs, n)
            attack.run(model, images[:2], labels[:2])  # warm-up
            synchronize(device)
            started = time.perf_counter()
            attack.run(model, images[:n], labels[:n])
            synchronize(device)
            rate = n / (time.perf_counter() - started)
        except Exception as exc:  # the next attack may still run
            emit_row(label, failure(exc))
            continue
        before = BEFORE_GRAPHS.get(name)
        emit_values(**{name: rate})
        emit_row(label, f"{rate:,.1f} images/s", *target_verdict(
            before is not None and targets(args), f">= 5x {before or 0:,.0f} images/s (before graphs)",
            verdict(rate, 5 * (before or 0))))


def torchrun_part(args) -> None:
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(tiny_spec(Path(tmp), tiny=args.tiny)))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m",
                   "bionas", "run", str(spec_path), "--device", str(args.device), "--quiet"]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=checkout_env())
        seconds = time.perf_counter() - started
        ok = done.returncode == 0 and (Path(tmp) / "run" / "robustness.json").exists()
        measured = f"exit {done.returncode} in {seconds:.0f} s" + ("" if ok else f": {done.stderr.strip()[-300:]}")
        backend = "NCCL" if args.device.type == "cuda" else "gloo"
        emit_row(f"torchrun, 1 process, {backend}: search + retrain + attack", measured, "exit 0",
                 "met" if ok else "not met")


def loader_part(args) -> None:
    import data_loading

    import bionas
    from bionas.data import AugmentSpec, make_loader

    size = 2_000 if args.tiny else 50_000
    data = bionas.get_dataset("synthetic", image_size=32, channels=3, train_size=size, val_size=10, test_size=10)
    spec = AugmentSpec(padding=4, flip=True, cutout=16)
    fast = make_loader(data, "train", 256, train=True, device=args.device, augment=spec, seed=0)
    slow = make_loader(data, "train", 256, train=True, device=args.device, augment=spec, seed=0, in_memory=False,
                       num_workers=min(8, os.cpu_count() or 1))
    batches = 4 if args.tiny else 100
    fast_ips = data_loading.images_per_second(fast, batches, 2, args.device)
    slow_ips = data_loading.images_per_second(slow, batches, 2, args.device)
    ratio = fast_ips / slow_ips
    emit_row("loader, GPU-resident vs torchvision DataLoader", f"{fast_ips:,.0f} vs {slow_ips:,.0f} img/s: "
             f"{ratio:.1f}x", *target_verdict(targets(args), ">= 3x", verdict(ratio, 3.0)))


def run_part(name: str, args) -> None:
    parts = {"search-64-graphs": lambda: search_part(args, 64, True),
             "search-64-eager": lambda: search_part(args, 64, False),
             "search-256-graphs": lambda: search_part(args, 256, True),
             "search-256-eager": lambda: search_part(args, 256, False),
             "lrnas": lambda: lrnas_part(args), "retrain-graphs": lambda: retrain_part(args, True),
             "retrain-eager": lambda: retrain_part(args, False), "quickstart": lambda: quickstart_part(args),
             "attacks": lambda: attacks_part(args), "torchrun": lambda: torchrun_part(args),
             "loader": lambda: loader_part(args)}
    parts[name]()


# -- the rows that compare the parts ------------------------------------------------------------------


def comparison_rows(values: dict, with_targets: bool = True) -> list[Row]:
    """The rows that compare parts (`values`: what the parts emitted); `with_targets`: the issue's targets."""
    rows = []

    def get(*keys):
        value = values
        for key in keys:
            value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, (int, float)) and not math.isnan(value) else None

    for batch in (64, 256):
        graphs, eager = get(f"search-{batch}-graphs", "step"), get(f"search-{batch}-eager", "step")
        if graphs and eager:
            size = get(f"search-{batch}-graphs", "batch")
            rows.append(Row(f"search step batch {size}: CUDA graphs vs eager", f"{graphs * 1000:.1f} vs "
                            f"{eager * 1000:.0f} ms: {eager / graphs:.1f}x faster"))
    small, large = get("search-64-graphs", "step"), get("search-256-graphs", "step")
    if small and large:
        sizes = get("search-256-graphs", "batch"), get("search-64-graphs", "batch")
        rows.append(Row(f"search step, batch {sizes[0]} / batch {sizes[1]} (graphs)", f"{large / small:.2f}x",
                        *target_verdict(with_targets, "<= 3x", verdict(large / small, 3.0, higher_is_better=False))))
    lrnas = get("lrnas", "step")
    for mode in ("graphs", "eager"):
        if lrnas and (mine := get(f"search-64-{mode}", "step")):
            rows.append(Row(f"search step batch 64, bionas {mode} / LR-NAS", f"{mine / lrnas:.3f}x "
                            f"({mine * 1000:.1f} vs {lrnas * 1000:.0f} ms)"))
    for mode in ("graphs", "eager"):
        mixed, bp = get(f"retrain-{mode}", "mixed"), get(f"retrain-{mode}", "bp")
        if mixed and bp:
            rows.append(Row(f"retrain mixed rules / bp, {mode}", f"{mixed / bp:.2f}x ({mixed:,.0f} vs {bp:,.0f} "
                            "images/s)", *target_verdict(with_targets, ">= 0.9x", verdict(mixed / bp, 0.9))))
    for network in ("bp", "mixed"):
        graphs, eager = get("retrain-graphs", network), get("retrain-eager", network)
        if graphs and eager:
            rows.append(Row(f"retrain {network}: CUDA graphs vs eager", f"{graphs / eager:.1f}x images/s"))
    return rows


# -- main ---------------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(DEFAULT_PARTS), help="comma-separated parts, in this order: "
                        + ", ".join(BOXES))
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for the whole check, from its start "
                        "(the parts get what is left after the imports, less a few seconds for the last rows)")
    parser.add_argument("--box-scale", type=float, default=1.0, help="multiplies every part's time box")
    parser.add_argument("--device", default="cuda", help="cuda (the check), or cpu with --tiny (checks the script)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes: every part in seconds (checks the script)")
    parser.add_argument("--lrnas", type=Path, default=None, help="a checkout of github imanehmz/LR-NAS")
    parser.add_argument("--biotorch", type=Path, default=None, help="a checkout of github jsalbert/biotorch")
    parser.add_argument("--part", default=None, help=argparse.SUPPRESS)  # inside a part's process
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    args.parts = [p.strip() for p in args.only.split(",") if p.strip()]
    if unknown := [p for p in args.parts if p not in BOXES]:
        parser.error(f"--only: unknown {', '.join(unknown)} (known: {', '.join(BOXES)})")
    if "lrnas" in args.parts and args.lrnas is None and args.only == ",".join(DEFAULT_PARTS):
        args.parts.remove("lrnas")  # by default only with --lrnas
    return args


def child_command(args, name: str) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--device", str(args.device)]
    command += ["--tiny"] if args.tiny else []
    command += ["--lrnas", str(args.lrnas)] if args.lrnas else []
    command += ["--biotorch", str(args.biotorch)] if args.biotorch else []
    return command


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.part is not None:  # inside a part's process
        if args.device.type == "cpu":
            torch.set_num_threads(1)  # a shared machine's cores: the toy sizes run no faster on more
        try:
            run_part(args.part, args)
        except Exception as exc:  # reported as the part's row; the parent goes on with the next part
            emit_row(args.part, failure(exc))
            return 1
        return 0
    if args.device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); it checks the CUDA paths "
              "and needs one GPU (or: --device cpu --tiny, which checks this script)", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else "cpu"
    print(f"gpu_check: device {name}, torch {torch.__version__}, parts {', '.join(args.parts)}; budget "
          f"{args.budget:.0f} s{', tiny sizes' if args.tiny else ''}", flush=True)
    print(HEADER, flush=True)
    parts = [Part(p, child_command(args, p), BOXES.get(p, 10) * args.box_scale) for p in args.parts]
    outcomes = run_parts(parts, args.budget - (time.perf_counter() - START) - CLOSING)
    values = {}
    for outcome in outcomes.values():
        values.update(outcome.values)
    for row in comparison_rows(values, with_targets=targets(args)):
        print(row.markdown(), flush=True)
    statuses = ", ".join(f"{n} {o.status} {o.seconds:.0f} s" for n, o in outcomes.items())
    print(f"\ngpu_check: {time.perf_counter() - START:.0f} s in all ({statuses})", flush=True)
    print("values: " + json.dumps(values), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
