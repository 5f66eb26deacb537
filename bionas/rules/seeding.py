"""Deterministic randomness for learning rules.

Every random feedback tensor is a function of a seed stored in a buffer of its
layer (and, for brsf, of a step counter stored beside it), so a checkpoint
restores the identical backward and every data-parallel rank draws the same.
Draws use their own CPU generator: the global RNG is consumed only to pick a
layer's seed when the rule has no `seed` option, which keeps wrapping
reproducible under `torch.manual_seed`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook

_INITS = {"xavier_uniform": nn.init.xavier_uniform_, "xavier_normal": nn.init.xavier_normal_}
INITS = tuple(_INITS)

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def mix(*values: int) -> int:
    """A 63-bit seed made from integers (a splitmix64 chain): equal inputs give equal seeds."""
    state = 0
    for value in values:
        state = ((state ^ (int(value) & _MASK64)) + _GOLDEN) & _MASK64
        z = ((state ^ (state >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state >> 1


def layer_seed(rule) -> int:
    """A fresh seed for one layer wrapped by `rule`.

    With `rule.options.seed` set, the n-th layer the rule instance seeds gets
    mix(seed, n) (same construction order, same feedback); without it, the seed
    is drawn from torch's global generator.
    """
    seed = getattr(rule.options, "seed", None)
    if seed is None:
        return int(torch.randint(0, 2**62, (1,)).item())
    count = rule.__dict__.get("_seeded_layers", 0)
    rule._seeded_layers = count + 1
    return mix(seed, count)


def fans(shape: Sequence[int]) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight-shaped tensor, as torch.nn.init computes them."""
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def draw(shape: Sequence[int], seed: int, init: str = "xavier_uniform", device=None) -> torch.Tensor:
    """A float32 tensor of `shape` drawn from `init` by a generator seeded with `seed`.

    Drawn on `device` (default CPU) with that device's generator: the same seed gives the
    same tensor on the same kind of device.
    """
    if init not in _INITS:
        raise ValueError(f"unknown init '{init}'; known: {', '.join(INITS)}")
    shape = tuple(int(s) for s in shape)
    device = torch.device(device if device is not None else "cpu")
    generator = torch.Generator(device=device).manual_seed(seed)
    # float32 whatever the default dtype, so a seed means one tensor (and checkpoints regenerate it)
    return _INITS[init](torch.empty(shape, device=device, dtype=torch.float32), generator=generator)


# -- the optimizer-step clock --------------------------------------------------------------------

_steps = 0
_hook = None


def _count_step(optimizer, args, kwargs) -> None:
    global _steps
    _steps += 1


def optimizer_steps() -> int:
    """How many `torch.optim.Optimizer.step()` calls this process has made since the clock started.

    The clock starts (a global optimizer step post-hook is installed) on the first call.
    """
    global _hook
    if _hook is None:
        _hook = register_optimizer_step_post_hook(_count_step)
    return _steps


# -- integers kept in buffers, read without a device sync per step --------------------------------


def buffer_int(layer, name: str) -> int:
    """The integer held by buffer `name` of a rule layer; read from the device only after it changed."""
    buf = getattr(layer, name)
    key = (buf._version, buf.data_ptr())
    cache = layer._bionas_state.setdefault("ints", {})
    hit = cache.get(name)
    if hit is None or hit[0] != key:
        hit = cache[name] = (key, int(buf.item()))
    return hit[1]


def set_buffer_int(layer, name: str, value: int) -> None:
    """Write `value` into the integer buffer `name` (no device sync)."""
    buf = getattr(layer, name)
    buf.fill_(value)
    layer._bionas_state.setdefault("ints", {})[name] = ((buf._version, buf.data_ptr()), value)
