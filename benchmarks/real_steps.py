"""Steps timed through the product's own loops: a darts search (bionas.search.epochs.EpochSearch.search) and
the retrain (bionas.retrain.retrain), on synthetic CIFAR-shaped data, with a bionas.Runtime the caller sets.

Whatever the Runtime changes inside those loops (bf16 autocast, channels_last, torch.compile, CUDA graphs)
is what gets timed: nothing here rebuilds a step by hand. The loops' progress bar (`Bar`, advanced once per
step, then once more after the epoch's validation) is replaced by `StepClock`, which reads the clock there:

    first step      wall seconds from the call to the end of the first step (build of the optimizers and
                    loaders, warm-up, capture or compilation included)
    first epoch     the same to the end of the first epoch's steps
    step            the last epoch's wall seconds from its start to the end of its last step / its steps
    forward         the last epoch's validation (a forward-only pass in eval mode) / its batches

The clock synchronises the device at those points only (and after every step of the first epoch), so a
steady epoch's steps run as they do in a real run. The supernet or network is built before the clock starts.
Seconds are wall seconds on a GPU, and this process's CPU seconds on a CPU (which a machine shared with
other work disturbs least; the loops' loaders hold their data in memory, in this process).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

import torch

import bionas
from bionas import Runtime
from bionas import retrain as retrain_module
from bionas.runtime import resolve_channels_last, resolve_compile, resolve_cuda_graphs
from bionas.search import SearchData
from bionas.search import epochs as search_epochs
from bionas.space import BIONAS_DARTS, Network, SearchSpace, Supernet, with_backprop
from bionas.spec import RetrainSpec

# The paper's space (22 candidates) at the sizes of benchmarks/search_cost.py; "tiny" checks the scripts.
QUICKSTART_SPACE = {"ops": ["max_pool_3x3", "skip_connect", "sep_conv_3x3"], "rules": ["usf", "frsf", "fa"]}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_clock(device: torch.device):
    """The clock of `device`: wall time on a GPU, this process's CPU time on a CPU."""
    return time.perf_counter if device.type == "cuda" else time.process_time


class StepClock:
    """Stands in for bionas.training.Bar in one loop: records when each epoch starts, when its steps end
    (`advance(1)` per step) and when its validation ends (`advance(0)` with the epoch's summary)."""

    def __init__(self, device: torch.device, started: float | None = None):
        self.device, self.now = device, device_clock(device)
        self.started = self.now() if started is None else started
        self.epochs: list[dict[str, float]] = []

    def bar(self, total: int, description: str = "", quiet: bool = True):
        clock = self

        class Epoch:
            def __enter__(self):
                synchronize(clock.device)
                self.record = {"start": clock.now(), "steps": 0, "total": total}
                clock.epochs.append(self.record)
                return self

            def __exit__(self, *exc):
                return None

            def advance(self, steps: int = 1, status: str | None = None) -> None:
                record = self.record
                if steps:
                    record["steps"] += steps
                    # every step of the first epoch (where capture or compilation happens); the last of each
                    first_epoch = len(clock.epochs) == 1
                    if first_epoch or record["steps"] >= total:
                        synchronize(clock.device)
                        record["steps_end"] = clock.now()
                        if first_epoch:
                            record.setdefault("first_step_end", record["steps_end"])
                elif "steps_end" in record:  # the epoch's summary, after its validation
                    synchronize(clock.device)
                    record["validated"] = clock.now()

        return Epoch()

    @contextlib.contextmanager
    def installed(self, module) -> Iterator[None]:
        """`module.Bar` replaced by this clock inside the block."""
        saved = module.Bar
        module.Bar = self.bar
        try:
            yield
        finally:
            module.Bar = saved


@dataclass
class Timing:
    """What StepClock measured over a run of `epochs` epochs of `steps` steps each (NaN: not measured)."""

    steps: int
    batch: int
    first_step: float = math.nan
    first_epoch: float = math.nan
    step: float = math.nan
    forward: float = math.nan
    extra: dict = field(default_factory=dict)

    def checked(self) -> Timing:
        """This timing, or an error when the loop's bar saw no steady epoch (the loop no longer advances a
        `Bar` once per step, and this module needs to follow it)."""
        if math.isnan(self.step):
            raise RuntimeError("the loop's progress bar saw no steady epoch: no step time (benchmarks/real_steps.py "
                               "expects Bar.advance(1) per step and an epoch after the first)")
        return self

    @property
    def images_per_second(self) -> float:
        return self.batch / self.step

    @classmethod
    def from_clock(cls, clock: StepClock, steps: int, batch: int, validation_batches: int) -> Timing:
        timing = cls(steps, batch)
        done = [e for e in clock.epochs if "steps_end" in e and e["steps"] >= e["total"]]
        if not done:
            return timing
        first, last = clock.epochs[0], done[-1]
        timing.first_step = first.get("first_step_end", math.nan) - clock.started
        timing.first_epoch = first.get("steps_end", math.nan) - clock.started
        if last is not first:  # a steady epoch after the first
            timing.step = (last["steps_end"] - last["start"]) / last["steps"]
            if "validated" in last and validation_batches:
                timing.forward = (last["validated"] - last["steps_end"]) / validation_batches
        return timing


def runtime(device: torch.device, **settings) -> Runtime:
    """A quiet Runtime on `device` with bionas's `auto` choices for it, then `settings` (amp="off",
    channels_last=False, compile=True, cuda_graphs=False, ...) on top."""
    auto = {"amp": "auto", "channels_last": resolve_channels_last("auto", device),
            "compile": resolve_compile("auto", device), "cuda_graphs": resolve_cuda_graphs("auto", device)}
    return Runtime(device=device, quiet=True, **{**auto, **settings})


def search_timing(run: Runtime, *, channels: int, cells: int, batch: int, steps: int, space: dict | None = None,
                  image_size: int = 32, in_channels: int = 3, partial_channels: int = 1, epochs: int = 2,
                  seed: int = 0) -> Timing:
    """A darts first-order search (DARTS's settings, no warm-up epochs) of `epochs` epochs of `steps` weight
    steps at `batch`, each epoch validated over `steps` batches of `batch` architecture images (eval_batch_size =
    batch), on the paper's space (or `space`) at `channels` and `cells`."""
    data = bionas.get_dataset("synthetic", image_size=image_size, channels=in_channels, train_size=2 * steps * batch,
                              val_size=batch, test_size=batch, seed=seed)
    search_data = SearchData.split(data, arch_fraction=0.5, device=run.device, seed=seed)
    torch.manual_seed(seed)
    supernet = Supernet(SearchSpace({**(space or {}), "channels": channels, "cells": cells,
                                     "partial_channels": partial_channels}), 10, in_channels=in_channels)
    strategy = bionas.get_search("darts", epochs=epochs, batch_size=batch, eval_batch_size=batch, warmup_epochs=0)
    clock = StepClock(run.device)
    with clock.installed(search_epochs):
        strategy.search(supernet, search_data, run)
    return Timing.from_clock(clock, steps, batch, validation_batches=steps).checked()


def retrain_timing(run: Runtime, *, backprop: bool, channels: int, cells: int, batch: int, steps: int,
                   epochs: int = 2, image_size: int = 32, seed: int = 0) -> Timing:
    """`bionas.retrain.retrain` of the BioNAS-DARTS genotype (its mixed rules, or every layer on bp) at the
    DARTS recipe (auxiliary head, drop path 0.2, cutout 16 (at most half the image), clipping 5) for `epochs`
    epochs of `steps` steps;
    the last epoch is timed (drop path is 0 in the first epoch and on after it: the first epoch runs other
    kernels than the later ones, so `epochs` 3 times an epoch after the first with drop path). Validation: one
    batch."""
    data = bionas.get_dataset("synthetic", image_size=image_size, channels=3, train_size=steps * batch,
                              val_size=batch, test_size=batch, seed=seed)
    torch.manual_seed(seed)
    genotype = with_backprop(BIONAS_DARTS) if backprop else BIONAS_DARTS
    model = Network(genotype, channels=channels, cells=cells, num_classes=10, in_channels=3, auxiliary=True,
                    image_size=image_size)
    recipe = RetrainSpec(epochs=epochs, batch_size=batch, channels=channels, cells=cells,
                         cutout=min(16, image_size // 2))
    clock = StepClock(run.device)
    with TemporaryDirectory() as tmp, clock.installed(retrain_module):
        retrain_module.retrain(model, data, recipe, run, seed=seed, best_path=Path(tmp) / "model.safetensors",
                               eval_batch_size=batch)
    return Timing.from_clock(clock, steps, batch, validation_batches=1).checked()
