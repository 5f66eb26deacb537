"""Retraining a derived network: the DARTS evaluation recipe, best epoch chosen on validation.

Per epoch: drop-path probability drop_path * epoch / epochs (DARTS schedules it
linearly), SGD over the augmented training split with the auxiliary loss
weighted by auxiliary_weight, gradient-norm clipping, the learning rate from
timm's scheduler, then validation. Under runtime.cuda_graphs (one process) each
training step and each validation batch is a CUDA graph replay (bionas.graphs):
the learning rate and the drop-path probability are then tensors filled per epoch. The weights of the best validation epoch
are written to model.safetensors; the test split is never looked at here.
A checkpoint after every epoch makes an interrupted run resume exactly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bionas import distributed
from bionas.analysis.alignment import alignment_record
from bionas.checkpoint import Checkpointer, load_model_state, save_state
from bionas.data import make_loader
from bionas.graphs import LearningRates, StepGraph, capturable_optimizer_args, mark_stepped
from bionas.runtime import Runtime
from bionas.seeds import stream_seed
from bionas.spec import RetrainSpec
from bionas.training import LOG_EVERY, Bar, autocast, check_finite, eval_step, evaluate_accuracy


@dataclass
class TrainResult:
    best_epoch: int
    best_val_accuracy: float
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def make_optimizer(model: torch.nn.Module, recipe: RetrainSpec, capturable: bool = False):
    """The recipe's timm optimizer and scheduler; `capturable`: an optimizer a CUDA graph can replay the step of
    (bionas.graphs.capturable_optimizer_args; None in its place when the recipe's optimizer has no such form)."""
    # timm (and torchvision under it) more than doubles the import time of torch: only a retrain pays it.
    from timm.optim import create_optimizer_v2, get_optimizer_class
    from timm.scheduler import create_scheduler_v2

    kind = {}
    if capturable:
        kind = capturable_optimizer_args(get_optimizer_class(recipe.optimizer, bind_defaults=False), True)
        if kind is None:
            return None
    # DARTS decays every weight, biases and BN included: filter_bias_and_bn=False.
    optimizer = create_optimizer_v2(model, opt=recipe.optimizer, lr=recipe.lr, weight_decay=recipe.weight_decay,
                                    momentum=recipe.momentum, filter_bias_and_bn=False, **kind)
    scheduler, _ = create_scheduler_v2(optimizer, sched=recipe.scheduler, num_epochs=recipe.epochs,
                                       min_lr=recipe.lr_min, warmup_epochs=recipe.warmup_epochs)
    return optimizer, scheduler


def train_step(model, forward, optimizer, recipe: RetrainSpec, device, amp: str, channels_last: bool = False,
               cache: bool = True) -> Callable:
    """`step(images, labels) -> (loss, logits)`, detached: forward through `forward(images) -> (logits, aux
    logits)`, the loss with the auxiliary head's, backward, norm clipping, the optimizer's step. No host read:
    a CUDA graph replays it (then `cache` False: autocast keeps no cache)."""
    params = list(model.parameters())  # clip_grad_norm_ takes those with a gradient

    def step(images: torch.Tensor, labels: torch.Tensor):
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp, cache):
            logits, aux_logits = forward(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=recipe.label_smoothing)
            if aux_logits is not None and recipe.auxiliary_weight > 0:
                loss = loss + recipe.auxiliary_weight * F.cross_entropy(
                    aux_logits.float(), labels, label_smoothing=recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)  # before a capture too: backward allocates from the graph's pool
        loss.backward()
        if recipe.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, recipe.grad_clip)
        optimizer.step()
        mark_stepped(optimizer)
        return loss.detach(), logits.detach()

    return step


def train_epoch(model, step: Callable, loader, device, bar: Bar, epoch: int) -> tuple[float, float]:
    """One epoch of `model` by `step` (train_step's); (mean loss, accuracy) read at the end, the running loss
    every LOG_EVERY steps (the only host reads)."""
    model.train()
    total_loss = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for i, (images, labels) in enumerate(loader):
        loss, logits = step(images, labels)
        total_loss += loss * len(labels)
        correct += (logits.argmax(1) == labels).sum()
        seen += len(labels)
        status = None
        if (i + 1) % LOG_EVERY == 0:
            mean_loss = total_loss.item() / seen
            check_finite(mean_loss, "retrain", epoch)
            status = f"loss {mean_loss:.3f}"
        bar.advance(1, status)
    return total_loss.item() / max(seen, 1), correct.item() / max(seen, 1)


def training_forward(model: torch.nn.Module, runtime: Runtime) -> Callable:
    """What the steps run through: `model.forward_with_aux`, or in a data-parallel run a
    DistributedDataParallel wrapper of it (DDP averages the gradients over the ranks)."""
    if runtime.world_size > 1 and distributed.active():
        return distributed.data_parallel(model, runtime.device)
    return model.forward_with_aux


def retrain(
    model: torch.nn.Module,
    dataset,
    recipe: RetrainSpec,
    runtime: Runtime,
    *,
    seed: int,
    best_path: Path,
    checkpoint: Checkpointer | None = None,
    eval_batch_size: int = 256,
    best_metadata: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `model` (a Network, or a model run's ModelNetwork) by `recipe`; the best validation epoch's weights
    go to `best_path`.

    `runtime` says where and how: the model is moved to its device (channels_last and
    torch.compile when it asks), each rank trains on its own shard through DDP, rank 0
    validates, and every epoch's record goes to `runtime.record`. `best_metadata` is stored
    beside the best weights (bionas.space.load_network reads the genotype and config from it).
    """
    device, rank, world_size = runtime.device, runtime.rank, runtime.world_size
    model.to(device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    if runtime.compile:
        model.forward_with_aux = torch.compile(model.forward_with_aux)
    forward = training_forward(model, runtime)
    # The retrain's cutout replaces the data set's (its `augment` option's is the search's); null: the data set's own.
    augment = {"cutout": dataset.retrain_cutout if recipe.cutout is None else recipe.cutout}
    train_loader = make_loader(dataset, "train", recipe.batch_size, train=True, device=device, augment=augment,
                               seed=seed, rank=rank, world_size=world_size, num_workers=runtime.workers)
    # Rank 0 alone validates: its numbers decide for every rank.
    val_loader = make_loader(dataset, "val", eval_batch_size, train=False, device=device,
                             num_workers=runtime.workers) if rank == 0 else None
    # CUDA graphs: one process (DDP's gradient hooks are not captured here), an optimizer that can be replayed
    graphs = runtime.cuda_graphs and world_size == 1
    made = make_optimizer(model, recipe, capturable=True) if graphs else None
    graphs = made is not None
    optimizer, scheduler = made or make_optimizer(model, recipe)
    learning_rates = LearningRates(optimizer, device, graphs)  # after the scheduler read the float base values
    if graphs:  # filled per epoch; read on the device by every replay
        model.drop_path_prob = torch.zeros((), device=device)
    versioned = [*model.parameters(), *model.buffers()] if graphs else []  # bionas.graphs: version counters
    step = StepGraph(train_step(model, forward, optimizer, recipe, device, runtime.amp, runtime.channels_last,
                                cache=not graphs), graphs, versioned=versioned)
    validation_step = StepGraph(eval_step(model, device, runtime.amp, cache=not graphs), graphs, versioned=versioned)
    result = TrainResult(best_epoch=-1, best_val_accuracy=-1.0)
    start = 0
    state = checkpoint.load(device) if checkpoint else None
    if state is not None:
        with checkpoint.restoring():
            load_model_state(model, state["model"], "retrain checkpoint")
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            result = TrainResult(state["best_epoch"], state["best_val_accuracy"], state["history"], state["seconds"])
            start = state["epoch"] + 1
    for epoch in range(start, recipe.epochs):
        started = time.perf_counter()
        # Drop path draws from the global generator: seeded per (seed, rank, epoch), an epoch's randomness does
        # not depend on how the run got there (resumed or not) and differs between ranks.
        torch.manual_seed(stream_seed(seed, rank, epoch))
        drop_path = recipe.drop_path * epoch / recipe.epochs
        if graphs:
            model.drop_path_prob.fill_(drop_path)
        else:
            model.drop_path_prob = drop_path
        scheduler.step(epoch)
        lr = optimizer.param_groups[0]["lr"]  # the schedule's float
        learning_rates.update()
        train_loader.set_epoch(epoch)
        with Bar(len(train_loader), f"retrain {epoch + 1}/{recipe.epochs}", runtime.quiet) as bar:
            train_loss, train_acc = train_epoch(model, step, train_loader, device, bar, epoch)
            # Every rank trains on as many images: the mean over ranks is the sum over ranks / world_size.
            train_loss, train_acc = (v / world_size for v in distributed.sum_over_ranks(train_loss, train_acc))
            check_finite(train_loss, "retrain", epoch)
            validation = None
            if rank == 0:  # `model`, never the DDP wrapper: a forward on one rank must not start a collective
                # Neither an eval forward nor alignment() advances a rule's feedback (brsf's step): the ranks
                # stay in step without doing this work.
                validation = (evaluate_accuracy(model, val_loader, device, runtime.amp, validation_step),
                              alignment_record(model))
            (val_loss, val_acc), alignment = distributed.broadcast(validation)
            bar.advance(0, f"loss {train_loss:.3f} train {train_acc:.1%} val {val_acc:.1%}")
        result.seconds += time.perf_counter() - started
        record = {"stage": "retrain", "epoch": epoch, "lr": lr, "train_loss": train_loss,
                  "train_accuracy": train_acc, "val_loss": val_loss, "val_accuracy": val_acc,
                  "drop_path": drop_path, "seconds": result.seconds, "alignment": alignment}
        if val_acc > result.best_val_accuracy:  # selection on validation only
            result.best_epoch, result.best_val_accuracy = epoch, val_acc
            if rank == 0:
                save_state(best_path, {"model": model.state_dict()},
                           {**(best_metadata or {}), "epoch": epoch, "val_accuracy": val_acc})
        record["best_epoch"] = result.best_epoch
        result.history.append(record)
        runtime.record(record)
        if checkpoint:
            checkpoint.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "best_epoch": result.best_epoch,
                             "best_val_accuracy": result.best_val_accuracy, "history": result.history,
                             "seconds": result.seconds, "epoch": epoch}, epoch)
    return result
