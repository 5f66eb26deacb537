"""Data-parallel runs on torch.distributed, launched by torchrun: one process per GPU (or CPU process).

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK (and the rendezvous address); a
plain `bionas run` has none of them and runs as a world of one. NCCL on GPUs,
gloo on CPUs. Rank 0 alone writes files; every rank trains on its own shard.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from bionas.training import resolve_device


@dataclass(frozen=True)
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_from_env() -> World:
    """The world torchrun describes in the environment (a world of one without it)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def init(device: str = "auto") -> tuple[World, torch.device]:
    """Join the process group torchrun set up (once per process) and pick this rank's device."""
    world = world_from_env()
    if not world.distributed:
        return world, resolve_device(device)
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", world.local_rank)  # one process per GPU
        torch.cuda.set_device(resolved)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return world, resolved


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(value: Any, src: int = 0) -> Any:
    """Rank `src`'s value on every rank (any picklable object in flight, never on disk)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather(value: Any) -> list[Any]:
    """Every rank's value, in rank order, on every rank."""
    if not active():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def average_gradients(params) -> None:
    """Average the gradients of `params` over the ranks (those that have one), as DDP's reducer does.

    For steps DDP's reducer cannot follow: gradients of a subset of the parameters
    (DARTS's weight and architecture steps), several backward passes per forward.
    """
    if not active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def sum_over_ranks(*values: torch.Tensor | float) -> list[float]:
    """Each value summed over the ranks (one all-reduce for all of them)."""
    if not active():
        return [float(v) for v in values]
    tensor = torch.stack([torch.as_tensor(v, dtype=torch.float64).reshape(()).cpu() for v in values])
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


class TrainForward(torch.nn.Module):
    """DDP synchronises through a module's forward: this one's forward is the network's forward_with_aux."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor):
        return self.network.forward_with_aux(images)

    def forward_with_aux(self, images: torch.Tensor):
        return self(images)


def data_parallel(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The module the training steps go through: DDP around `network` in a distributed run, else itself.

    find_unused_parameters: a rule may send no error below it (hebbian with
    error: block), leaving earlier layers without gradient in that step.
    broadcast_buffers keeps BatchNorm statistics and rule buffers equal to rank 0's.
    """
    if not active():
        return network
    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(TrainForward(network), device_ids=ids, find_unused_parameters=True,
                                   broadcast_buffers=True)
