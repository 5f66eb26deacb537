"""Deterministic randomness for learning rules, and the training-step clock of a rule layer.

Every random feedback tensor is a function of a seed stored in a buffer of its
layer (and, for brsf, of a step counter stored beside it), so a checkpoint
restores the identical backward and every data-parallel rank draws the same.
Draws use their own CPU generator: the global RNG is consumed only to pick a
layer's seed when the rule has no `seed` option, which keeps wrapping
reproducible under `torch.manual_seed`.

A rule that changes its feedback once per training step (brsf) asks
`new_training_step(layer)`: the layer notices its own weight changed (the
optimizer that trains it stepped), so no other optimizer (an architecture's,
another model's) moves it. Loops that change weights without stepping them
(finite differences) do so inside `hold_feedback(model)`; loops whose
optimizer updates weights without bumping their version counter (fused
optimizers) call `next_training_step(model)` after each step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from bionas.rules.layers import is_layer, rule_of

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


def draw(shape: Sequence[int], seed: int, init: str = "xavier_uniform", device=None,
         out: torch.Tensor | None = None) -> torch.Tensor:
    """A float32 tensor of `shape` drawn from `init` by a generator seeded with `seed`.

    Drawn on `device` (default CPU) with that device's generator: the same seed gives the
    same tensor on the same kind of device. `out`: a contiguous float32 tensor of `shape` on
    `device` to draw into (the same values, one operation fewer).
    """
    if init not in _INITS:
        raise ValueError(f"unknown init '{init}'; known: {', '.join(INITS)}")
    shape = tuple(int(s) for s in shape)
    device = torch.device(device if device is not None else "cpu")
    generator = torch.Generator(device=device).manual_seed(seed)
    if out is None:
        # float32 whatever the default dtype, so a seed means one tensor (and checkpoints regenerate it)
        out = torch.empty(shape, device=device, dtype=torch.float32)
    elif out.shape != shape or out.dtype != torch.float32 or out.device != device or not out.is_contiguous():
        raise ValueError("draw(out=...) needs a contiguous float32 tensor of the shape, on the device")
    return _INITS[init](out, generator=generator)


# -- the training-step clock ---------------------------------------------------------------------


def _weight_key(weight: torch.Tensor) -> tuple[int, int, int]:
    """Changes when the weight is changed in place (its version counter) or replaced."""
    return id(weight), weight.data_ptr(), weight._version


def new_training_step(layer: nn.Module) -> bool:
    """True at the first call, and at the first call after a training step of the layer's weight.

    A step is noticed as a change of the weight since the call that last returned
    True: the optimizer that trains the layer stepped it. Changes made inside
    `hold_feedback` do not count; `next_training_step` counts one explicitly.
    """
    state = layer._bionas_state
    weight = state.get("held_at") or _weight_key(layer.weight)
    key = (state.get("explicit_steps", 0), weight)
    if state.get("stepped_at") == key:
        return False
    state["stepped_at"] = key
    return True


def _rule_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if is_layer(m) and rule_of(m) is not None]


@contextlib.contextmanager
def hold_feedback(model: nn.Module) -> Iterator[nn.Module]:
    """Inside, changes of the weights are not training steps: every rule layer keeps its current step's feedback.

    For passes at perturbed weights within one step (second-order DARTS' virtual
    step and finite differences): brsf draws for the weights as the block found
    them, and the weights it leaves (restored from a copy) still belong to that step.
    """
    held = []
    for layer in _rule_layers(model):
        state = layer._bionas_state
        if "held_at" not in state:  # an enclosing hold keeps its own mark
            state["held_at"] = _weight_key(layer.weight)
            held.append(layer)
    try:
        yield model
    finally:
        for layer in held:
            state = layer._bionas_state
            mark = state.pop("held_at", None)
            stepped = state.get("stepped_at")
            if stepped is not None and stepped[1] == mark:  # this step's feedback was drawn: keep it
                state["stepped_at"] = (stepped[0], _weight_key(layer.weight))


def next_training_step(model: nn.Module) -> None:
    """Count one training step for every rule layer of `model`, whether or not its weight changed.

    Only needed after the step of an optimizer that updates the weights without
    bumping their version counter (torch's fused optimizers): every other step is
    noticed on its own.
    """
    for layer in _rule_layers(model):
        state = layer._bionas_state
        state["explicit_steps"] = state.get("explicit_steps", 0) + 1


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


def increment_buffer_ints(layers, name: str) -> None:
    """Add one to the integer buffer `name` of each layer, in one operation (no device sync)."""
    if not layers:
        return
    values = [buffer_int(layer, name) + 1 for layer in layers]
    buffers = [getattr(layer, name) for layer in layers]
    torch._foreach_add_(buffers, 1)
    for layer, buf, value in zip(layers, buffers, values):
        layer._bionas_state["ints"][name] = ((buf._version, buf.data_ptr()), value)
