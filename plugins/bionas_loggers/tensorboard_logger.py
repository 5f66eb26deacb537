"""tensorboard: event files under RUN/tensorboard/, one TensorBoard run per stage.

Scalars per epoch (every number of a record: losses, accuracies, lr, seconds),
the alphas' mixing weights and the feedback-alignment angles as histograms, and
the run's PNG plots (genotype drawing, robustness curves, training curves,
alphas) as images under the run `plots`. One directory per stage, because
TensorBoard forgets events from a step on per directory: a resumed stage opens
its writer with `purge_step` set to the first epoch it logs again, and
TensorBoard hides what the killed session wrote from that epoch on.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

import torch

import bionas
from bionas.tracking import Status, scalars

PLOTS = "plots"  # the TensorBoard run holding the images


def numbers(value: Any) -> list[float]:
    """Every number in nested lists."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    return [number for item in value for number in numbers(item)] if isinstance(value, list) else []


def histograms(record: dict[str, Any]) -> dict[str, list[float]]:
    """alphas/<cell>: every mixing weight of the cell (alphas/edge_weights/<cell>: the edge normalization's
    weights); alignment_angle/<rule>: the angle of every layer of the rule."""
    found: dict[str, list[float]] = {}
    for key, value in (record.get("alphas") or {}).items():
        parts = value.items() if isinstance(value, dict) else [(None, value)]
        for cell, weights in parts:
            found["/".join(["alphas", key] + ([cell] if cell else []))] = numbers(weights)
    for layer in (record.get("alignment") or {}).values():
        if layer.get("angle") is not None and not math.isnan(layer["angle"]):
            found.setdefault(f"alignment_angle/{layer['rule']}", []).append(layer["angle"])
    return {tag: values for tag, values in found.items() if values}


class TensorBoard(bionas.Logger):
    name = "tensorboard"
    description = "TensorBoard event files in tensorboard/ of the run: scalars, alphas as histograms, plots as images."
    modules = ("tensorboard",)
    install = "bionas[tensorboard]"

    class Options(bionas.PluginOptions):
        images: bool = Field(default=True, description="Log the run's PNG plots as images at the end of the run.")
        flush_secs: int = Field(default=10, gt=0, description="Seconds between writes of the event files.")

    def start(self, run: bionas.LogRun) -> None:
        self.root = run.dir / "tensorboard"
        self.writers: dict[str, Any] = {}
        self.purge: dict[str, int] = {}  # stage -> first step a resumed stage logs again

    def writer(self, run_name: str):
        if run_name not in self.writers:
            from torch.utils.tensorboard import SummaryWriter  # imports tensorboard: only runs that use it pay

            self.writers[run_name] = SummaryWriter(str(self.root / run_name), purge_step=self.purge.pop(run_name, None),
                                                   flush_secs=self.options.flush_secs)
        return self.writers[run_name]

    def rewind(self, stage: str, after_epoch: int | None) -> None:
        run_name = self.run_name(stage)
        if run_name in self.writers:
            self.writers.pop(run_name).close()
        if (self.root / run_name).exists():  # a fresh stage has nothing to hide
            self.purge[run_name] = 0 if after_epoch is None else after_epoch + 1

    def log(self, record: dict[str, Any]) -> None:
        writer = self.writer(self.run_name(record.get("stage", "run")))
        step = int(record.get("epoch", 0))
        for tag, value in scalars(record).items():
            writer.add_scalar(tag, value, step)
        for tag, values in histograms(record).items():
            writer.add_histogram(tag, torch.tensor(values, dtype=torch.float64), step)

    def log_files(self, paths: Sequence[Path]) -> None:
        images = [path for path in paths if path.suffix == ".png"]
        if not self.options.images or not images:
            return
        from matplotlib.image import imread

        self.rewind(PLOTS, None)  # a resumed run draws its plots again: show the latest only
        writer = self.writer(PLOTS)
        for path in images:
            writer.add_image(path.stem, imread(path)[..., :3], 0, dataformats="HWC")  # RGB: the alpha is opaque

    def finish(self, status: Status) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()

    @staticmethod
    def run_name(stage: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]", "_", stage)

