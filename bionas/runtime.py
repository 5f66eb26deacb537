"""Runtime: how a stage runs, apart from what it computes.

One frozen value the pipeline builds from the spec's `runtime` section, the
device and the torchrun world, and hands to the search and the retrain stage;
code that calls a strategy or `bionas.retrain.retrain` directly makes one:

    runtime = Runtime(device=torch.device("cuda"), quiet=True, log=records.append)
    strategy.search(supernet, data, runtime)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch

from bionas.errors import SpecError

Amp = Literal["auto", "bf16", "off"]

# What `auto` means for each runtime setting on each device type (a device type not listed: off).
# Measured on the CPU (2 cores, torch 2.14.1, one thread; the 1.27x on AVX-512 with bf16 instructions; docs/search.md,
# "Speed" and "Search cost"): channels_last made the paper space's supernet step 0.77x and the retrained
# network's step 1/1.6 of their NCHW time; bf16 autocast made the quickstart's search step 1.27x slower,
# and its compiled search had not finished 8 steps after 1,200 s (benchmarks/runtime_auto.py). CUDA:
# channels_last and bf16 autocast are the layout and precision cuDNN's fastest convolution kernels use;
# compile stays off until it is measured there (benchmarks/runtime_auto.py --device cuda: not yet run).
AUTO_CHANNELS_LAST = {"cpu": True, "cuda": True}
AUTO_AMP = {"cpu": False, "cuda": True}
AUTO_COMPILE = {"cpu": False, "cuda": False}
# CUDA graphs replay a whole step's kernels with one launch (docs/scaling.md); they exist on CUDA only.
AUTO_CUDA_GRAPHS = {"cpu": False, "cuda": True}


def resolve_auto(setting: bool | str, device: torch.device, table: dict[str, bool]) -> bool:
    """A runtime setting (True, False or "auto") on `device`: "auto" looks up the device type in `table`."""
    if setting == "auto":
        return table.get(torch.device(device).type, False)
    return bool(setting)


def resolve_channels_last(setting: bool | str, device: torch.device) -> bool:
    """The spec's `runtime.channels_last` (True, False or "auto") on `device`."""
    return resolve_auto(setting, device, AUTO_CHANNELS_LAST)


def resolve_compile(setting: bool | str, device: torch.device) -> bool:
    """The spec's `runtime.compile` (True, False or "auto") on `device`."""
    return resolve_auto(setting, device, AUTO_COMPILE)


def resolve_cuda_graphs(setting: bool | str, device: torch.device) -> bool:
    """The spec's `runtime.cuda_graphs` (True, False or "auto") on `device`; True off CUDA is an error."""
    if setting is True and torch.device(device).type != "cuda":
        raise SpecError([f"runtime.cuda_graphs: true needs a CUDA device; the run's device is "
                         f"{torch.device(device).type} (use auto or false)"])
    return resolve_auto(setting, device, AUTO_CUDA_GRAPHS)


@contextlib.contextmanager
def cpu_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to `count` inside the block (None: left as they are), restored after.

    The thread count changes the order of float sums, hence a run's numbers: a spec that fixes it gives
    the same numbers on machines with different core counts and the same CPU kernels (AVX2 and AVX-512
    kernels round differently: docs/pipeline.md, Reproducibility)."""
    if count is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Runtime:
    """Where and how fast a stage runs, in how many processes, and what it reports.

    * `device`: where the model and batches live.
    * `amp`: bf16 autocast: `auto` per device type (AUTO_AMP: on CUDA only), `bf16` always, `off` never.
    * `channels_last`: the model and its inputs in channels_last memory format, in the search
      and the retrain (the pipeline resolves the spec's runtime.channels_last: resolve_channels_last).
    * `compile`: torch.compile the training forward: the retrained network's, the supernet's (the pipeline
      resolves the spec's runtime.compile: resolve_compile).
    * `cuda_graphs`: each training step, forward-only pass and attack iteration runs as a CUDA graph replay
      (CUDA only; the pipeline resolves the spec's runtime.cuda_graphs: resolve_cuda_graphs).
    * `rank`, `world_size`: this process in a torchrun launch (0 and 1 without one).
    * `workers`: DataLoader workers for data sets not held in memory (None: make_loader's default).
    * `quiet`: no progress bars.
    * `log`: receives one JSON-ready record per epoch (the pipeline writes them to metrics.jsonl).
    """

    device: torch.device = torch.device("cpu")
    amp: Amp = "auto"
    channels_last: bool = False
    compile: bool = False
    cuda_graphs: bool = False
    rank: int = 0
    world_size: int = 1
    workers: int | None = None
    quiet: bool = False
    log: Callable[[dict[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "device", torch.device(self.device))  # "cpu" and torch.device("cpu") alike

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and talks."""
        return self.rank == 0

    def record(self, record: dict[str, Any]) -> None:
        """Hand one record to `log`, if there is one."""
        if self.log is not None:
            self.log(record)

    def with_changes(self, **changes: Any) -> Runtime:
        """A copy with some fields changed (e.g. another `log`)."""
        return replace(self, **changes)
