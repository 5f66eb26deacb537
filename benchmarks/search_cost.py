"""The search's cost: a DARTS first-order step of the paper's space, rule-batched or one candidate at
a time, beside the published LR-NAS code's step.

    python benchmarks/search_cost.py                       # CPU, 1 thread, C=8, 5 cells, batch 32, K=1 and 4
    python benchmarks/search_cost.py --sizes published      # C=16, 8 cells, batch 64 (slow on a CPU)
    python benchmarks/search_cost.py --lrnas PATH           # with a checkout of github imanehmz/LR-NAS
    python benchmarks/search_cost.py --device cuda          # bf16, channels_last, torch.compile off and on
    python benchmarks/search_cost.py --batch 8              # less memory (batch 32: ~6.5 GB per step on a CPU)
    python benchmarks/search_cost.py --device cuda --sizes published --modes batched --no-compile --budget 40
                                                            # a GPU run that fits a short loan

A step is what `darts` (order: first) does per batch: an architecture step (Adam on the alphas,
the loss on an architecture batch back-propagated to the alphas only) and a weight step (SGD with
momentum and weight decay, gradient clipping at 5), DARTS's settings. The variants:

    before       one candidate at a time, weight gradients computed in the architecture step,
                 per-tensor SGD: the search step as it was before rule batching
    one by one   rule batching off (bionas.space.stacking.set_rule_batching), nothing else
    batched      the product: rule-batched candidates, no weight gradients in the architecture
                 step (bionas.rules.no_weight_gradients), gradients stored by
                 bionas.search.epochs.backward_to (also one by one), foreach SGD
    LR-NAS       the published code (BioNAS-DARTS/model_search.py Network, architect.py's
                 first-order Architect.step, train_search.py's weight step), imported from --lrnas
                 (it needs BioTorch importable: pip install --no-deps biotorch, or --biotorch PATH
                 to a checkout); without it the row is left out. Nothing of it is in bionas.

Each round runs one step of every configuration, in an order rotated every round, so drifts of a
shared machine hit all alike. Columns: the median seconds per step (CPU time of this process on a
CPU, which a shared machine disturbs least; wall time with synchronisation on a GPU), its ratio to
`before` and to LR-NAS; the seconds of one forward-only pass in eval mode without gradients (what
EG-NAS's population scoring and every validation pass cost per batch); ATen operators dispatched
in one step (a TorchDispatchMode; autograd's backward included), and of those the ones that compute
(views, aliases and allocations left out: what a GPU launches kernels for), both counted as a GPU
runs the step: on a CPU with bionas.space.stacking.CPU_REWRITES off (the rewrites of torch's slow
CPU kernels that a CPU step makes: dilated convolutions as undilated ones on pixel phases; it
adds views and copies that a GPU step does not run); on a CPU also the same
two counts as the CPU runs the step by default, rewrites on (`CPU ops`, `CPU comp.`); on a GPU the
CUDA kernels the profiler records; the peak
memory the step adds (CPU: growth of the peak resident set, Linux; GPU: max_memory_allocated);
and the projected time of the published search: 50 epochs of ceil(25,000 / batch) steps (the
weights half of CIFAR-10's training set) plus, per epoch, a forward pass over the 25,000 images
of the architecture half (timed too), data loading not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import math
import statistics
import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]  # benchmark this checkout

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

from bionas.rules import no_weight_gradients  # noqa: E402
from bionas.search.epochs import backward_to  # noqa: E402
from bionas.space import SearchSpace, Supernet  # noqa: E402
from bionas.space import stacking  # noqa: E402
from bionas.space.stacking import set_rule_batching  # noqa: E402

# channels, cells, batch (published: DARTS's and BioNAS's search; tiny: a quick check of this script)
SIZES = {"small": (8, 5, 32), "published": (16, 8, 64), "tiny": (4, 3, 4)}
EPOCHS, HALF = 50, 25_000  # DARTS's search: 50 epochs, CIFAR-10's 50,000 training images split in two
MODES = ("before", "one by one", "batched")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda: bf16 autocast, channels_last)")
    parser.add_argument("--sizes", default="small", help="comma-separated: small (C=8, 5 cells, batch 32), "
                        "published (C=16, 8 cells, batch 64)")
    parser.add_argument("--partial-channels", default="1,4", help="comma-separated PC-DARTS K values")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated: " + ", ".join(MODES))
    parser.add_argument("--layouts", default=None, help="comma-separated: nchw, channels_last "
                        "(default: both on a CPU, channels_last on a GPU)")
    parser.add_argument("--compile", action="store_true", default=None,
                        help="also the batched step under torch.compile (default: on a GPU)")
    parser.add_argument("--no-compile", dest="compile", action="store_false", help="not under torch.compile")
    parser.add_argument("--batch", type=int, default=None, help="override every size's batch (a machine with "
                        "little memory: the small size's step holds about 6.5 GB at batch 32 on a CPU)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds, after one warm-up step each")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--lrnas", type=Path, default=None, help="a checkout of github imanehmz/LR-NAS")
    parser.add_argument("--biotorch", type=Path, default=None, help="a checkout of github jsalbert/biotorch "
                        "(if biotorch is not installed)")
    parser.add_argument("--no-counts", dest="counts", action="store_false", help="skip the operator counts")
    parser.add_argument("--budget", type=float, default=None, help="seconds for the measuring: configurations "
                        "not warmed up by then are skipped, and the rounds stop (after at least one) when it is spent")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here")
    if args.device.type not in ("cpu", "cuda"):
        parser.error(f"--device {args.device}: cpu or cuda")
    args.sizes = [s for s in args.sizes.split(",") if s]
    if args.batch is not None:
        SIZES.update({name: (*SIZES[name][:2], args.batch) for name in SIZES})
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.partial_channels = [int(k) for k in args.partial_channels.split(",")]
    gpu = args.device.type == "cuda"
    args.layouts = (args.layouts or ("channels_last" if gpu else "nchw,channels_last")).split(",")
    args.compile = gpu if args.compile is None else args.compile
    for name, values, known in (("--sizes", args.sizes, SIZES), ("--modes", args.modes, MODES),
                                ("--layouts", args.layouts, ("nchw", "channels_last"))):
        if unknown := [v for v in values if v not in known]:
            parser.error(f"{name}: unknown {', '.join(unknown)} (known: {', '.join(known)})")
    return args


# -- measuring --------------------------------------------------------------------------------------


class OperatorCounter(TorchDispatchMode):
    """ATen operators dispatched below autograd; `computing` leaves out views, aliases and allocations."""

    def __init__(self):
        super().__init__()
        self.total = self.computing = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.total += 1
        aliases = any(r.alias_info is not None and not r.alias_info.is_write for r in func._schema.returns)
        if not aliases and not func.__name__.startswith(("empty", "lift_fresh")):
            self.computing += 1
        return func(*args, **(kwargs or {}))


def operator_counts(step, cpu_rewrites: bool) -> tuple[int, int]:
    """(dispatched, computing) operators of one call of `step`, after a warm-up one, with
    stacking.CPU_REWRITES set to `cpu_rewrites` (restored afterwards)."""
    saved, stacking.CPU_REWRITES = stacking.CPU_REWRITES, cpu_rewrites
    try:
        step()
        with OperatorCounter() as counter:
            step()
    finally:
        stacking.CPU_REWRITES = saved
    return counter.total, counter.computing


def cuda_kernels(step) -> int:
    """CUDA kernels the profiler records in one call of `step`."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def peak_memory(step, device: torch.device) -> float | None:
    """Bytes the step adds at its peak: CUDA max_memory_allocated, or the growth of the peak resident set (Linux)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand the allocator's free memory back: RSS = live memory
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak resident set size (VmHWM)
        before = _resident("VmRSS")
        if _resident("VmHWM") > 1.05 * before:  # the kernel did not reset it (a container may not)
            return None
        step()
        return _resident("VmHWM") - before
    except (OSError, AttributeError):  # not Linux with glibc
        return None


def _resident(field_name: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return float(line.split()[1]) * 1024
    raise OSError(field_name)


# -- configurations ---------------------------------------------------------------------------------


@dataclass
class Config:
    label: str
    size: str
    k: int
    layout: str
    channels: int
    batch: int
    step: object = None
    evaluate: object = None
    times: list[float] = field(default_factory=list)
    eval_times: list[float] = field(default_factory=list)
    eval_time: float = math.nan
    ops: tuple[int, int] | None = None  # (dispatched, computing) as a GPU runs the step
    cpu_ops: tuple[int, int] | None = None  # the same as the CPU runs it by default (on a CPU)
    kernels: int | None = None
    memory: float | None = None
    note: str = ""


def batches(args, batch: int, layout: str):
    gen = torch.Generator().manual_seed(args.seed)
    made = []
    for _ in range(2):  # a weights batch and an architecture batch, CIFAR-shaped
        x = torch.rand(batch, 3, 32, 32, generator=gen).to(args.device)
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        made.append((x, torch.randint(0, 10, (batch,), generator=gen).to(args.device)))
    return made


def bionas_step(args, mode: str, size: str, k: int, layout: str, compiled: str | None):
    """(step, evaluate) of a bionas supernet in `mode`."""
    channels, cells, batch = SIZES[size]
    torch.manual_seed(args.seed)
    net = Supernet(SearchSpace({"channels": channels, "cells": cells, "partial_channels": k}), 10)
    set_rule_batching(net, mode == "batched")
    net = net.to(args.device)
    if layout == "channels_last":
        net = net.to(memory_format=torch.channels_last)
    arch, weights = net.arch_parameters(), net.weight_parameters()
    arch_optimizer = torch.optim.Adam(arch, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)
    optimizer = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4, foreach=mode != "before")
    (x, y), (x_arch, y_arch) = batches(args, batch, layout)
    forward = net if compiled is None else torch.compile(net, mode=compiled)
    amp = (torch.autocast("cuda", dtype=torch.bfloat16) if args.device.type == "cuda"
           else contextlib.nullcontext())
    skip_weight_gradients = no_weight_gradients if mode != "before" else contextlib.nullcontext

    def loss(images, labels):
        with amp:
            logits = forward(images)
        return F.cross_entropy(logits.float(), labels)

    def backward(value, params):  # the product's (bionas.search.epochs), or as before it
        backward_to(value, params) if mode != "before" else value.backward(inputs=params)

    def arch_step():  # its graph is gone when the weight step starts, as in darts's Darts.arch_step
        arch_optimizer.zero_grad(set_to_none=True)
        with skip_weight_gradients():
            arch_loss = loss(x_arch, y_arch)
        backward(arch_loss, arch)
        arch_optimizer.step()

    def step():
        arch_step()
        optimizer.zero_grad(set_to_none=True)
        backward(loss(x, y), weights)
        torch.nn.utils.clip_grad_norm_(weights, 5.0)
        optimizer.step()

    @torch.no_grad()
    def evaluate():
        net.eval()
        try:
            loss(x_arch, y_arch)
        finally:
            net.train()

    return step, evaluate


def lrnas_modules(args):
    """LR-NAS's model_search and architect modules, or None (with the reason printed)."""
    if args.lrnas is None:
        return None
    root = args.lrnas / "BioNAS-DARTS" if (args.lrnas / "BioNAS-DARTS").is_dir() else args.lrnas
    if not (root / "model_search.py").is_file():
        sys.exit(f"--lrnas {args.lrnas}: no BioNAS-DARTS/model_search.py there (a checkout of imanehmz/LR-NAS?)")
    sys.path[:0] = [str(root)] + ([str(args.biotorch)] if args.biotorch else [])
    try:
        importlib.import_module("biotorch.layers.utils")
    except ImportError as exc:
        print(f"LR-NAS left out: its code needs BioTorch ({exc}); pip install --no-deps biotorch, or --biotorch PATH")
        return None
    return importlib.import_module("model_search"), importlib.import_module("architect")


def lrnas_step(args, modules, size: str):
    """(step, evaluate) of the published code, as its train_search.py runs it (first order)."""
    model_search, architect = modules
    channels, cells, batch = SIZES[size]
    torch.manual_seed(args.seed)
    criterion = torch.nn.CrossEntropyLoss()
    cuda = torch.Tensor.cuda
    if args.device.type == "cpu":  # its alphas are made with .cuda()
        torch.Tensor.cuda = lambda self, *a, **kw: self
    try:
        model = model_search.Network(channels, 10, cells, criterion).to(args.device)
    finally:
        torch.Tensor.cuda = cuda
    options = types.SimpleNamespace(momentum=0.9, weight_decay=3e-4, arch_learning_rate=3e-4, arch_weight_decay=1e-3)
    arch = architect.Architect(model, options)
    optimizer = torch.optim.SGD(model.parameters(), 0.025, momentum=0.9, weight_decay=3e-4)
    (x, y), (x_arch, y_arch) = batches(args, batch, "nchw")

    def step():
        arch.step(x, y, x_arch, y_arch, 0.025, optimizer, unrolled=False)
        optimizer.zero_grad()
        criterion(model(x), y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()

    @torch.no_grad()
    def evaluate():
        model.eval()
        try:
            model(x_arch)
        finally:
            model.train()

    return step, evaluate


def configurations(args, deadline: float = math.inf) -> list[Config]:
    """Every configuration to measure, its step built (none after `deadline`: skipped)."""
    configs = []
    modules = lrnas_modules(args)
    for size in args.sizes:
        channels, _, batch = SIZES[size]
        if modules is not None:
            config = Config("LR-NAS", size, 1, "nchw", channels, batch)
            config.step, config.evaluate = lrnas_step(args, modules, size)
            configs.append(config)
        for k in args.partial_channels:
            for layout in args.layouts:
                variants = [(m, None) for m in args.modes]
                if args.compile and "batched" in args.modes:
                    variants += [("batched", "default"), ("batched", "reduce-overhead")]
                for mode, compiled in variants:
                    label = mode if compiled is None else f"batched, compile {compiled}"
                    config = Config(label, size, k, layout, channels, batch)
                    if time.perf_counter() > deadline:
                        config.note = f"skipped: --budget {args.budget:g} s spent"
                        configs.append(config)
                        continue
                    try:
                        config.step, config.evaluate = bionas_step(args, mode, size, k, layout, compiled)
                    except Exception as exc:  # a compile mode that cannot take this model
                        config.note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
                    configs.append(config)
    return configs


def timed(call, device: torch.device) -> float:
    """Seconds of one call: wall time with synchronisation on a GPU, this process's CPU time on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        torch.cuda.synchronize()
        return time.perf_counter() - start
    start = time.process_time()
    call()
    return time.process_time() - start


def measure(args, configs: list[Config], deadline: float = math.inf) -> None:
    """Warm up, count and time the configurations; from `deadline` (time.perf_counter()) on, no
    configuration is warmed up and no further round starts."""
    live = [c for c in configs if c.step is not None]
    for config in live:
        if time.perf_counter() > deadline:
            config.note, config.step = f"skipped: --budget {args.budget:g} s spent", None
            continue
        try:
            config.step()  # warm-up (and compilation)
            config.memory = peak_memory(config.step, args.device)
            if args.counts:
                config.ops = operator_counts(config.step, cpu_rewrites=False)  # as a GPU runs it
                if args.device.type == "cpu":
                    config.cpu_ops = operator_counts(config.step, cpu_rewrites=True)
                if args.device.type == "cuda":
                    config.kernels = cuda_kernels(config.step)
            config.evaluate()  # warm-up
            print(f"warmed up: {config.size} K={config.k} {config.layout} {config.label}", file=sys.stderr,
                  flush=True)  # a run cut short shows how far it got
        except Exception as exc:
            config.note, config.step = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}", None
    live = [c for c in live if c.step is not None]
    args.rounds_done = 0
    for round_ in range(args.rounds):
        if round_ and time.perf_counter() > deadline:
            break
        args.rounds_done += 1
        shift = round_ % max(len(live), 1)
        for config in live[shift:] + live[:shift]:
            config.times.append(timed(config.step, args.device))
            config.eval_times.append(timed(config.evaluate, args.device))
    for config in live:
        config.eval_time = statistics.median(config.eval_times) if config.eval_times else math.nan


def report(args, configs: list[Config]) -> None:
    gpu = args.device.type == "cuda"
    name = torch.cuda.get_device_name(args.device) if gpu else "cpu"
    print(f"device {name}, torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s), "
          f"{'bf16 autocast, ' if gpu else ''}{getattr(args, 'rounds_done', args.rounds)} rotated rounds; the paper's space (22 candidates), "
          "darts first order: one architecture step + one weight step; "
          + "; ".join(f"{n}: C={SIZES[n][0]}, {SIZES[n][1]} cells, batch {SIZES[n][2]}" for n in args.sizes))
    clock = "wall" if gpu else "CPU"
    header = (f"{'size':<10}{'K':>2} {'layout':<14}{'variant':<26}{clock + ' s/step':>12}{'/before':>9}{'/LR-NAS':>9}"
              f"{'fwd s':>8}{'ATen ops':>10}{'computing':>11}" +
              (f"{'kernels':>9}" if gpu else f"{'CPU ops':>9}{'CPU comp.':>10}") +
              f"{'peak MB':>9}{'50 epochs':>11}")
    print(header)
    print("-" * len(header))
    for config in configs:
        if not config.times:
            print(f"{config.size:<10}{config.k:>2} {config.layout:<14}{config.label:<26}  {config.note}")
            continue
        seconds = statistics.median(config.times)
        base = next((c for c in configs if c.label == "before" and c.times and (c.size, c.k, c.layout) ==
                     (config.size, config.k, config.layout)), None)
        lrnas = next((c for c in configs if c.label == "LR-NAS" and c.times and c.size == config.size), None)
        ratio = f"{seconds / statistics.median(base.times):.2f}x" if base else "-"
        vs_lrnas = f"{seconds / statistics.median(lrnas.times):.2f}x" if lrnas else "-"
        ops, computing = config.ops if config.ops else ("-", "-")
        cpu_ops, cpu_computing = config.cpu_ops if config.cpu_ops else ("-", "-")
        kernels = config.kernels if config.kernels is not None else "-"  # not counted: --no-counts
        memory = f"{config.memory / 2**20:.0f}" if config.memory is not None else "n/a"
        steps = math.ceil(HALF / config.batch)
        hours = EPOCHS * steps * (seconds + config.eval_time) / 3600
        print(f"{config.size:<10}{config.k:>2} {config.layout:<14}{config.label:<26}{seconds:>12.3f}{ratio:>9}"
              f"{vs_lrnas:>9}{config.eval_time:>8.3f}{ops:>10}{computing:>11}" +
              (f"{kernels:>9}" if gpu else f"{cpu_ops:>9}{cpu_computing:>10}") +
              f"{memory:>9}{hours:>9.1f} h" + (f"  {config.note}" if config.note else ""))
    print(f"50 epochs: {EPOCHS} x ceil({HALF:,} / batch) steps at the median step time, plus per epoch a forward "
          f"pass over the {HALF:,} architecture images (batch-size forward passes, timed); data loading not counted.")
    if args.counts:
        print("ATen ops, computing: operators dispatched per step as a GPU runs it"
              + (" (here on the CPU with stacking.CPU_REWRITES off); CPU ops, CPU comp.: as the CPU runs it by "
                 "default (CPU_REWRITES on)." if not gpu else "."))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    deadline = time.perf_counter() + args.budget if args.budget else math.inf
    configs = configurations(args, deadline)
    measure(args, configs, deadline)
    report(args, configs)


if __name__ == "__main__":
    main()
