"""Deterministic randomness for learning rules, and the training-step clocks of a rule layer.

Every random feedback tensor is a function of a seed stored in a buffer of its
layer (and, for brsf, of a step counter stored beside it), so a checkpoint
restores the identical backward and every data-parallel rank draws the same.
Fixed draws (fa, frsf, dfa) use their own CPU generator, once; per-step draws
(brsf) are `seeded_draws`, a counter-based hash computed on the device from the
seed and step tensors. The global RNG is consumed only to pick a layer's seed
when the rule has no `seed` option, which keeps wrapping reproducible under
`torch.manual_seed`.

Two clocks tell a rule that changes its feedback once per training step when
a step happened. On the device (brsf's default): `watch_optimizer_steps(layer)`
has every step of an optimizer that holds the layer's weight set a flag buffer
of the layer to 1, which the rule consumes on the device, so no other optimizer
(an architecture's, another model's) moves it, and a CUDA graph replay of a
step advances it as an eager step does. On the host: `new_training_step(layer)`
notices that the layer's own weight changed; loops that change weights without
stepping them (finite differences) do so inside `hold_feedback(model)`.
`next_training_step(model)` counts a step on both by hand.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterator, Sequence

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.weak import WeakIdKeyDictionary

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
    _flag_steps(model)


# -- draws on the device, as functions of tensors (a CUDA graph replays them with new steps) ---------

_M32 = 0xFFFFFFFF


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """x * c mod 2**32 for x in [0, 2**32) held in int64, by 16-bit halves of c (no product leaves int64)."""
    return (x * (c & 0xFFFF) + ((x * (c >> 16)) & 0xFFFF) * 0x10000) & _M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """lowbias32 (C. Wellons' hash prospector): a bijection of [0, 2**32) with full avalanche."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _unit(h: torch.Tensor) -> torch.Tensor:
    """float32 in (0, 1) from hashed bits: the top 23 and a half (exact in float32)."""
    return ((h >> 9).to(torch.float32) + 0.5) * 2.0**-23


def seeded_draws(seeds: Sequence[torch.Tensor], steps: Sequence[torch.Tensor], shapes: Sequence[Sequence[int]],
                 init: str = "xavier_uniform") -> list[torch.Tensor]:
    """Per (seed, step, shape): a float32 tensor of `shape` from `init`, computed from the int64 scalar
    tensors `seed` and `step` on their device by a counter-based hash, with no host read.

    Each is a function of its own seed, step and shape alone (not of the others drawn with it), the
    same on every device kind; the ones of a shape are computed together. What a CUDA graph
    replays after `step` advanced on the device are the draws of the new step, as an eager step's.
    """
    if init not in _INITS:
        raise ValueError(f"unknown init '{init}'; known: {', '.join(INITS)}")
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, shape in enumerate(shapes):
        by_shape.setdefault(tuple(int(s) for s in shape), []).append(i)
    order = [i for members in by_shape.values() for i in members]  # each shape's draws side by side
    seed, step = torch.stack([seeds[i] for i in order]), torch.stack([steps[i] for i in order])
    key = _hash32((seed & _M32) ^ _hash32(((seed >> 32) & _M32) ^ _hash32(step & _M32)))
    second = _hash32(key ^ 0x9E3779B9)
    out: list[torch.Tensor | None] = [None] * len(shapes)
    start = 0
    for shape, members in by_shape.items():
        n, end = math.prod(shape), start + len(members)
        a, b = key[start:end].view(-1, 1), second[start:end].view(-1, 1)
        start = end
        index = torch.arange(n, device=seed.device, dtype=torch.int64).view(1, -1)
        first = _hash32(_hash32(index ^ a) ^ b)
        fan_in, fan_out = fans(shape)
        if init == "xavier_uniform":  # U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (torch.nn.init, gain 1)
            values = (_unit(first) * 2.0 - 1.0) * math.sqrt(6.0 / (fan_in + fan_out))
        else:  # N(0, 2 / (fan_in + fan_out)) by Box-Muller from two hashed uniforms
            other = _hash32(first ^ a)
            radius = torch.sqrt(-2.0 * torch.log(_unit(first)))
            values = radius * torch.cos(2.0 * math.pi * _unit(other)) * math.sqrt(2.0 / (fan_in + fan_out))
        for i, draw_i in zip(members, values.view(len(members), *shape).unbind(0)):
            out[i] = draw_i
    return out


# -- the training-step clock on the device --------------------------------------------------------

STEP_FLAG = "training_step_due"  # the non-persistent int64 buffer watch_optimizer_steps sets to 1
_watched = WeakIdKeyDictionary()  # a watched layer's weight -> a weakref to the layer
_generation = [0]  # advances when a weight is first watched: the optimizers' lists are made again
_per_optimizer: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # optimizer -> (signature, layers)
_hook = None


def watch_optimizer_steps(layer: nn.Module) -> None:
    """After each step of an optimizer whose parameters hold `layer.weight`, set the layer's int64
    buffer STEP_FLAG to 1, on the device (a CUDA graph that captures the step captures that too).

    Steps of other optimizers (an architecture's, another model's) leave it as it is. Cheap to
    call again: a layer calls it whenever it uses the flag, so copies of it (deepcopy) are watched
    from their first use.
    """
    global _hook
    if torch.compiler.is_compiling():  # bookkeeping of the host: the eager warm-up step registered it
        return
    if _hook is None:
        _hook = register_optimizer_step_post_hook(_after_optimizer_step)
    ref = _watched.get(layer.weight)
    if ref is None or ref() is not layer:
        _watched[layer.weight] = weakref.ref(layer)
        _generation[0] += 1


def _after_optimizer_step(optimizer: torch.optim.Optimizer, args, kwargs) -> None:
    # The watched layers among the optimizer's parameters, looked up again only when its parameters
    # or the watched weights changed (a lookup per parameter costs milliseconds per step).
    params = [p for group in optimizer.param_groups for p in group["params"]]
    signature = (_generation[0], len(params), *map(id, params))
    cached = _per_optimizer.get(optimizer)
    if cached is None or cached[0] != signature:
        layers = []
        for p in params:
            ref = _watched.get(p)
            if ref is not None and ref() is not None and ref().weight is p:
                layers.append(ref)
        cached = _per_optimizer[optimizer] = (signature, layers)
    flags = [getattr(layer, STEP_FLAG) for layer in (ref() for ref in cached[1]) if layer is not None]
    if flags:
        with torch.no_grad():
            torch._foreach_clamp_min_(flags, 1)


def _flag_steps(model: nn.Module) -> None:
    """Set the STEP_FLAG buffer of every rule layer of `model` that has one to 1."""
    flags = [getattr(m, STEP_FLAG) for m in _rule_layers(model) if hasattr(m, STEP_FLAG)]
    if flags:
        with torch.no_grad():
            torch._foreach_clamp_min_(flags, 1)
