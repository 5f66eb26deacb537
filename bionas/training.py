"""What every training loop of bionas shares: device, seeds, bf16 autocast, progress, divergence checks,
eval mode, accuracy."""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from bionas.errors import BionasError
from bionas.runtime import AUTO_AMP

LOG_EVERY = 20  # steps between reading the running loss on the host (the only sync in a training loop)


class TrainingDiverged(BionasError):
    """A NaN or exploding loss: the stage stops, its last good checkpoint stays intact."""


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` is CUDA when there is a GPU, else the CPU. Asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise BionasError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BionasError(f"device '{name}' was asked for, but torch sees no CUDA GPU (use --device cpu)")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device, amp: str = "auto", cache: bool = True):
    """bf16 autocast: `auto` per device type (bionas.runtime.AUTO_AMP: CUDA only); `off` never; `bf16` always.

    `cache` False: no cache of the weights' bf16 copies, as a step captured in a CUDA graph needs (the
    PyTorch docs: autocast's cache must be off for capture)."""
    enabled = amp == "bf16" or (amp == "auto" and AUTO_AMP.get(device.type, False))
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=cache)


def check_finite(loss: float, stage: str, epoch: int, limit: float = 1e4) -> None:
    """Called where the loss is read anyway (logging): no extra host-device synchronisation."""
    if not math.isfinite(loss) or abs(loss) > limit:
        raise TrainingDiverged(
            f"{stage}: the loss became {loss:.4g} in epoch {epoch}; stopping. The last good checkpoint is kept. "
            "Lower the learning rate, turn on gradient clipping, or check the rule's hyperparameters."
        )


class Bar:
    """A rich progress bar over one loop (an epoch), silent when quiet."""

    def __init__(self, total: int, description: str, quiet: bool = False):
        self.quiet = quiet
        self._progress = None
        if not quiet:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                transient=False,
            )
            self._task = self._progress.add_task(description, total=total, status="")

    def __enter__(self) -> Bar:
        if self._progress:
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress:
            self._progress.stop()

    def advance(self, steps: int = 1, status: str | None = None) -> None:
        if self._progress:
            fields = {"status": status} if status is not None else {}
            self._progress.update(self._task, advance=steps, **fields)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """model.eval() inside; afterwards (also on errors) every module is back in its own previous mode."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def eval_step(model: torch.nn.Module, device: torch.device, amp: str = "auto", cache: bool = True):
    """`step(images, labels) -> (summed cross-entropy, correct predictions)` of `model` as it is (call it in
    eval mode, without gradients): what evaluate_accuracy runs per batch, a CUDA graph replays."""

    def step(images: torch.Tensor, labels: torch.Tensor):
        with autocast(device, amp, cache):
            logits = model(images)
        return (torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum"),
                (logits.argmax(1) == labels).sum())

    return step


@torch.no_grad()
def evaluate_accuracy(model: torch.nn.Module, loader, device: torch.device, amp: str = "auto",
                      step=None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over a loader of (images, labels); one sync at the end.

    `step`: what runs per batch (default eval_step(model, device, amp); the retrain passes a StepGraph of it)."""
    step = step or eval_step(model, device, amp)
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    count = 0
    with eval_mode(model):
        for images, labels in loader:
            images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
            loss, right = step(images, labels)
            total_loss += loss
            correct += right
            count += len(labels)
    return (total_loss / max(count, 1)).item(), (correct.float() / max(count, 1)).item()
