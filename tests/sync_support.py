"""What a CPU can show about a step that a CUDA graph will replay.

A CUDA graph replays a fixed list of kernels with fixed shapes. On the CPU we cannot capture, but we
can check the two things that break a capture or make a replay compute something else:

* a host read: an operator whose result the host must see before it can go on (`.item()`, `bool()`
  of a tensor, a data-dependent output shape). `forbid_host_syncs()` raises on the first one.
* Python deciding what runs: `record_ops()` lists the ATen operators a piece of code dispatches, so a
  test can compare the list of one step with the next (with other data) and demand the same list.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode

# Operators whose result the host reads, or whose output shape depends on the data.
SYNC_OPS = frozenset(
    {
        "aten::_local_scalar_dense",  # .item(), float(t), bool(t), int(t)
        "aten::is_nonzero",
        "aten::nonzero",
        "aten::nonzero_static",  # no host read, but listed to keep the check simple; nothing uses it
        "aten::masked_select",
        "aten::unique_dim",
        "aten::_unique2",
        "aten::unique_consecutive",
        "aten::equal",
        "aten::allclose",
    }
)


class HostSyncError(AssertionError):
    """A step read a tensor's value on the host, which a CUDA graph replay cannot do."""


class _Forbid(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name in SYNC_OPS:
            raise HostSyncError(f"host read inside the step: {name}")
        return func(*args, **(kwargs or {}))


class _Record(TorchDispatchMode):
    def __init__(self, names: list[str]):
        super().__init__()
        self.names = names

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func._schema.name)
        return func(*args, **(kwargs or {}))


@contextlib.contextmanager
def forbid_host_syncs():
    """Raise HostSyncError at the first operator that reads a tensor's value on the host."""
    with _Forbid():
        yield


@contextlib.contextmanager
def record_ops():
    """Yield a list that fills with the name of every ATen operator dispatched inside the block."""
    names: list[str] = []
    with _Record(names):
        yield names
