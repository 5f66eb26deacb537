"""Rule-batched candidates: the rule variants of one op on an edge, run as one computation.

The candidates of an edge that share an operation and differ only in a feedback
rule (fa, usf, brsf, frsf, bp, a plugin FeedbackRule) have the same shapes and
the same input. Each layer of them runs once for all G of them: the weights
concatenated on the output axis (a depthwise conv becomes one with groups over
the stacked channels, a 1x1 conv a grouped one), the feedback tensors
concatenated likewise (each from its own rule's `feedback(layer)`, so every
input gradient goes through its own rule's B, all in one transposed
convolution), one BatchNorm over the stacked channels whose running statistics
go back to each candidate's own buffers. The output is the G candidates'
outputs side by side on the channel axis; the edge mixes them with one weighted
reduction.

Nothing about the candidates changes: their modules, parameters, buffers and
state_dict stay as they are (the stacked tensors are concatenated at each
forward, one torch.cat per stacked layer, so no cache decides what a pass
computes and a CUDA graph replays the same kernels on the updated weights), so
a derived network loads the same weights, and outputs and gradients equal the
per-candidate ones to float rounding. An op opts in with `Operation.stacking`
(a StackedForm); a rule with `LearningRule.stackable` (true for FeedbackRule,
whose whole contract is `feedback(layer)`, and for bp, whose layers stay plain).
Candidates of another rule (dfa, hebbian, pc) or op run one by one, as does a
group with fewer than MIN_STACK active candidates.

Within one `batched_pass()` (a supernet's forward is one) the feedback tensors
of all stacked layers are made together when the pass starts
(`prepare_feedback`, each rule's at once with `FeedbackRule.feedback_many`),
and the BatchNorm statistics are written back in one operation when it ends: a
few kernels per pass instead of a few per layer. Every stacked conv receives its
feedback as a tensor before it runs, so its backward is a function of what its
forward saw (what torch.compile traces). Each rule sees the state it would have
seen at the layer: nothing steps an optimizer inside a forward pass.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Hashable, Iterable, Iterator, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bionas.rules.layers import (
    conv_geometry,
    local_gradients,
    recorded_parameter,
    rule_of,
    weight_gradients_enabled,
    wrap_problem,
)
from bionas.ops import FactorizedReduce

# The rewrite of torch's slow CPU kernels for dilated convolutions (_undilated): it changes no value.
# False runs the CPU as a GPU runs (benchmarks/search_cost.py counts a GPU's operators that way).
# (Stacked layers run in their input's memory format. Earlier versions also moved an NCHW supernet's
# stacked layers to channels_last on the CPU; with 8 channels that made its step ten times slower (2
# threads on 2 cores; torch's CPU BatchNorm over few channels is slow in channels_last, and the mixed
# formats slower still): a model that is faster in channels_last is now made channels_last as a whole,
# runtime.channels_last.)
CPU_REWRITES = True

# The fewest active candidates of a group that run stacked: one alone runs as it is (a one-hot
# row runs one candidate); two already halve the kernels (benchmarks/search_cost.py).
MIN_STACK = 2

# Forward-only passes (no gradient: EG-NAS's population scoring, validation) run stacked on the CPU too
# (True) or one candidate at a time there (False). Measured on the CPU (benchmarks/search_cost.py, its
# forward-only column), stacking such passes was no cheaper; with gradients it was (there the backward,
# twice the forward, is batched too). Off the CPU forward-only passes stack: a GPU pays per kernel launch.
STACK_FORWARD_ONLY_ON_CPU = False

_local = threading.local()

ConvGroup = Sequence[nn.Conv2d]  # same-shaped convs that run as one stacked convolution


class _Pass:
    """What the stacked layers of one forward pass share: the feedback made when it starts, and the
    BatchNorm statistics to write back when it ends."""

    def __init__(self) -> None:
        self.feedback: dict[int, torch.Tensor] = {}  # id(first conv of a group) -> its stacked feedback
        self.counters: list[torch.Tensor] = []  # BatchNorm num_batches_tracked to advance by one
        self.targets: list[torch.Tensor] = []  # BatchNorm running statistics ...
        self.sources: list[torch.Tensor] = []  # ... and their updated concatenations, in the same order

    def finish(self) -> None:
        with torch.no_grad():
            if self.counters:
                torch._foreach_add_(self.counters, 1)
            if self.targets:  # one concatenation split once, not a split per BatchNorm
                parts = torch.cat(self.sources).split([t.shape[0] for t in self.targets])
                torch._foreach_copy_(self.targets, parts)


@contextlib.contextmanager
def batched_pass() -> Iterator[bool]:
    """One forward pass of stacked layers: their BatchNorm statistics are written when it ends. Nests
    (the outermost pass collects); yields whether this is the outermost (the one to call
    `prepare_feedback`). Supernet.forward opens one."""
    if getattr(_local, "current", None) is not None:
        yield False
        return
    current = _local.current = _Pass()
    try:
        yield True
        current.finish()
    finally:
        _local.current = None


def _pending() -> _Pass | None:
    return getattr(_local, "current", None)


def prepare_feedback(groups: Iterable[ConvGroup]) -> None:
    """Make the stacked feedback of these conv groups for the pass now open (each rule's for all its
    layers at once); a stacked conv the pass runs reads its group's. Outside a pass, or while
    autograd does not record, nothing is made (a group it has none for makes its own)."""
    pending = _pending()
    if pending is None or not torch.is_grad_enabled():
        return
    todo = []
    for layers in groups:
        ruled = [_ruled(layer) for layer in layers]
        if any(ruled) and id(layers[0]) not in pending.feedback:
            todo.append((layers, ruled))
    with torch.no_grad():
        for (layers, _), stacked in zip(todo, _make_feedback(todo)):
            pending.feedback[id(layers[0])] = stacked


def _make_feedback(groups: Sequence[tuple[ConvGroup, Sequence[bool]]]) -> list[torch.Tensor]:
    """Per group its stacked feedback: each rule's feedback for all its layers at once, a plain
    layer's weight, concatenated on the output axis."""
    by_rule: dict[int, tuple[object, dict[int, nn.Module]]] = {}
    for layers, ruled in groups:
        for layer, r in zip(layers, ruled):
            if r:
                rule = rule_of(layer)
                by_rule.setdefault(id(rule), (rule, {}))[1][id(layer)] = layer
    made = {}
    for rule, layers in by_rule.values():
        made.update(zip(layers, rule.feedback_many(list(layers.values()))))
    return [torch.cat([made[id(l)] if r else l.weight for l, r in zip(layers, ruled)]) for layers, ruled in groups]


class _StackedConv(torch.autograd.Function):
    """F.conv2d with the weights concatenated; the input gradient through the stacked feedback, the
    weights' local gradients split back to each weight (one split, not one slice per weight)."""

    @staticmethod
    def forward(ctx, x, bias, geometry, feedback, keep, *weights):
        weight = torch.cat(weights)
        ctx.geometry, ctx.keep, ctx.has_bias = geometry, keep, bias is not None
        ctx.sizes = [w.shape[0] for w in weights]
        ctx.save_for_backward(x, weight if feedback is None else feedback)
        return F.conv2d(x, weight, bias, *geometry)

    @staticmethod
    def backward(ctx, grad):
        x, send = ctx.saved_tensors
        need_x, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_w = [need and keep for need, keep in zip(ctx.needs_input_grad[5:], ctx.keep)]
        if grad.dtype != x.dtype:  # autocast: compute in the input's precision, as rule layers do
            grad = grad.to(x.dtype)
        if _channels_last(x) and not grad.is_contiguous(memory_format=torch.channels_last):
            # convolution_backward on the CPU corrupts memory when these two differ (torch 2.x, oneDNN)
            grad = grad.contiguous(memory_format=torch.channels_last)
        if send.dtype != x.dtype:
            send = send.to(x.dtype)
        gx, gw, gb = local_gradients(grad, x, send, ctx.geometry, ctx.has_bias, (need_x, any(need_w), need_b))
        gws = gw.split(ctx.sizes) if gw is not None else [None] * len(need_w)
        return gx, gb, None, None, None, *(g if need else None for g, need in zip(gws, need_w))


def _ruled(layer: nn.Module) -> bool:
    """The layer's forward goes through its rule now (not plain, not inside exact_gradients)."""
    return rule_of(layer) is not None and not layer.__dict__.get("_bionas_exact", 0)


def stackable_rule(module: nn.Module) -> bool:
    """The module's rule (None: plain, i.e. bp) lets it run in a stacked group."""
    rule = rule_of(module)
    return rule is None or bool(getattr(rule, "stackable", False))


def _channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def repeat_channels(x: torch.Tensor, times: int, memory_format: torch.memory_format | None = None) -> torch.Tensor:
    """`times` copies of x side by side on the channel axis, in `memory_format` (default x's)."""
    return _RepeatChannels.apply(x, times, memory_format or _format_of(x))


def scale_candidates(stacked: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """`stacked` times one factor per channel (for a form whose last layer cannot apply them)."""
    return stacked * factors.view(1, -1, 1, 1)


def sum_candidates(stacked: torch.Tensor, count: int, like: torch.Tensor) -> torch.Tensor:
    """The sum of the `count` candidates' outputs side by side in `stacked`, in `like`'s memory format."""
    out = _SumCandidates.apply(stacked, count)
    return out if _channels_last(like) or not _channels_last(out) else out.contiguous()


# repeat_channels and sum_candidates are each other's backward. As autograd Functions each way is one
# operation or two (a chain of views costs a dispatched operator per view, forward and backward: a
# few thousand per step of the paper's space), with the same values bit for bit.


class _RepeatChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, times, memory_format):
        ctx.times = times
        return _repeat(x, times, memory_format)

    @staticmethod
    def backward(ctx, grad):
        return _sum_blocks(grad, ctx.times), None, None


class _SumCandidates(torch.autograd.Function):
    @staticmethod
    def forward(ctx, stacked, count):
        ctx.count, ctx.memory_format = count, _format_of(stacked)
        return _sum_blocks(stacked, count)

    @staticmethod
    def backward(ctx, grad):  # in the candidates' memory format, as their own backward runs in
        return _repeat(grad, ctx.count, ctx.memory_format), None


def _repeat(x: torch.Tensor, times: int, memory_format: torch.memory_format) -> torch.Tensor:
    if _format_of(x) is memory_format:
        return torch.cat([x] * times, 1)
    if memory_format is torch.channels_last:  # on the CPU faster than one cat into channels_last
        return torch.cat([x.contiguous(memory_format=memory_format)] * times, 1)
    return x.repeat(1, times, 1, 1)


def _sum_blocks(stacked: torch.Tensor, count: int) -> torch.Tensor:
    """The sum of `stacked`'s `count` equal blocks of channels, in its memory format, by one reduction."""
    n, c, h, w = stacked.shape
    if not _channels_last(stacked):
        return stacked.reshape(n, count, c // count, h, w).sum(1)
    out = torch.empty((n, c // count, h, w), dtype=stacked.dtype, device=stacked.device,
                      memory_format=torch.channels_last)
    return torch.sum(stacked.unflatten(1, (count, c // count)), 1, out=out)


def _format_of(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if _channels_last(x) else torch.contiguous_format


def stacked_conv(layers: Sequence[nn.Conv2d], x: torch.Tensor, shared: bool, subsampled: bool = False) -> torch.Tensor:
    """The outputs of same-shaped convs side by side on the channel axis, by one convolution.

    `x` is the layers' common input (`shared`; only for groups=1 convs) or their inputs side
    by side; `subsampled`: 1x1 convs without padding whose input was already taken at their
    stride (x[:, :, ::s, ::s]), run at stride 1. A layer with a rule sends its input gradient
    through its rule's feedback(layer), a plain one through its weight; weights and biases get
    their ordinary local gradients (a rule layer's none under `no_weight_gradients()`).
    """
    first, count = layers[0], len(layers)
    x, (stride, padding, dilation, groups) = conv_geometry(first, x)
    if subsampled:
        if first.kernel_size != (1, 1) or padding != (0, 0):
            raise ValueError("subsampled=True is for 1x1 convs without padding")
        stride = (1, 1)
    if not shared:
        groups *= count
    elif groups != 1:
        raise ValueError("a shared input stacks only convs with groups=1: repeat it first")
    geometry = (stride, padding, dilation, groups)
    undilated = _undilated(x, first.kernel_size, geometry)
    if undilated is not None:
        x, geometry, finish = undilated
        return finish(_stacked_conv(layers, x, geometry))
    return _stacked_conv(layers, x, geometry)


def _stacked_conv(layers: Sequence[nn.Conv2d], x: torch.Tensor, geometry) -> torch.Tensor:
    first, count = layers[0], len(layers)
    if not torch.is_grad_enabled():
        bias = torch.cat([l.bias for l in layers]) if first.bias is not None else None
        return F.conv2d(x, torch.cat([l.weight for l in layers]), bias, *geometry)
    ruled = [_ruled(layer) for layer in layers]
    # which weights get a gradient: a rule layer's none under no_weight_gradients() (as rule_forward's
    # detached weight, without a detach per weight)
    keep = (True,) * count if weight_gradients_enabled() else tuple(not r for r in ruled)
    bias = None
    if first.bias is not None:
        bias = torch.cat([recorded_parameter(l.bias) if r else l.bias for l, r in zip(layers, ruled)])
    feedback = None
    if any(ruled):
        pending = _pending()
        feedback = pending.feedback.get(id(first)) if pending is not None else None
        if feedback is None:  # not prepared (a form that lists no conv groups, an edge run on its own)
            with torch.no_grad():
                feedback = _make_feedback([(layers, ruled)])[0]
    return _StackedConv.apply(x, bias, geometry, feedback, keep, *(layer.weight for layer in layers))


def _undilated(x: torch.Tensor, kernel: tuple[int, int], geometry):
    """On the CPU, a dilated convolution as an undilated one, or None: (input, geometry, what turns
    the output into the dilated convolution's). torch's CPU backward of dilated depthwise
    convolutions is several times slower than the undilated one. Dilation d with stride d is the
    undilated convolution of every d-th pixel; with stride 1, of each of the d x d pixel phases
    (moved into the batch) separately. Other cases, and other devices, return None."""
    (sh, sw), (ph, pw), (dh, dw), groups = geometry
    n, _, h, w = x.shape
    if x.device.type != "cpu" or not CPU_REWRITES or dh != dw or dh == 1 or ph % dh or pw % dw:
        return None
    d = dh
    inner = ((1, 1), (ph // d, pw // d), (1, 1), groups)
    if (sh, sw) == (d, d):
        out = [(size + 2 * pad - d * (k - 1) - 1) // d + 1 for size, pad, k in zip((h, w), (ph, pw), kernel)]
        inside = [-(-size // d) + 2 * (pad // d) - (k - 1) for size, pad, k in zip((h, w), (ph, pw), kernel)]
        return (x[:, :, ::d, ::d], inner, lambda y: y) if out == inside else None
    if (sh, sw) == (1, 1) and h % d == 0 and w % d == 0:
        return _to_phases(x, d), inner, lambda y: _from_phases(y, d, n)
    return None


def _to_phases(x: torch.Tensor, d: int) -> torch.Tensor:
    """(N, C, H, W) -> (d d N, C, H/d, W/d), phase (a, b) holding x[:, :, a::d, b::d]; channels_last."""
    n, c, h, w = x.shape
    phases = x.permute(0, 2, 3, 1).reshape(n, h // d, d, w // d, d, c).permute(2, 4, 0, 1, 3, 5)
    return phases.reshape(d * d * n, h // d, w // d, c).permute(0, 3, 1, 2)


def _from_phases(y: torch.Tensor, d: int, n: int) -> torch.Tensor:
    """The inverse of _to_phases."""
    _, c, h, w = y.shape
    pixels = y.permute(0, 2, 3, 1).reshape(d, d, n, h, w, c).permute(2, 3, 0, 4, 1, 5)
    return pixels.reshape(n, h * d, w * d, c).permute(0, 3, 1, 2)


def stacked_batch_norm(norms: Sequence[nn.BatchNorm2d], x: torch.Tensor,
                       factors: torch.Tensor | None = None) -> torch.Tensor:
    """Same-shaped BatchNorm2d layers over their inputs side by side, by one batch_norm call.

    As each layer's own forward: training mode normalizes by batch statistics and updates each
    layer's running statistics and batch count; eval mode uses the running statistics.
    `factors`: the output times one factor per channel, folded into the normalization's affine
    weight (their gradient comes from batch_norm's own backward).
    """
    first, count = norms[0], len(norms)
    if first.momentum is None:  # a cumulative average: each layer's factor is its own batch count
        y = torch.cat([bn(part) for bn, part in zip(norms, x.chunk(count, 1))], 1)
        return y if factors is None else scale_candidates(y, factors)
    pending = _pending() or _Pass()
    if first.training and first.track_running_stats and first.num_batches_tracked is not None:
        pending.counters += [bn.num_batches_tracked for bn in norms]
    stats = first.running_mean is not None and (not first.training or first.track_running_stats)
    mean = var = None
    if stats:  # one concatenation of every layer's statistics, the means first
        buffers = [*(bn.running_mean for bn in norms), *(bn.running_var for bn in norms)]
        concatenated = torch.cat(buffers)
        mean, var = concatenated.chunk(2)
    weight = torch.cat([bn.weight for bn in norms]) if first.weight is not None else None
    bias = torch.cat([bn.bias for bn in norms]) if first.bias is not None else None
    if factors is not None:  # f (a x^ + b) = (f a) x^ + f b
        weight = factors if weight is None else weight * factors
        bias = None if bias is None else bias * factors
    batch_stats = first.training or first.running_mean is None
    y = F.batch_norm(x, mean, var, weight, bias, batch_stats, first.momentum, first.eps)
    if stats and batch_stats:  # batch_norm updated the concatenation: back to each layer's buffers
        pending.targets += buffers
        pending.sources.append(concatenated)
    if pending is not _pending():
        pending.finish()
    return y


class StackedForm:
    """How same-shaped candidate modules of one op run as one computation (see the module docstring).

    A subclass implements `key(module)`: None when the module cannot take part, else a hashable
    equal for modules that stack together (their structure, shapes and settings); and
    `forward(modules, x, from_relu, factors)`: the modules' outputs side by side on the channel
    axis, candidate g in channels [g C, (g + 1) C), each equal to modules[g](x), times `factors`,
    one per channel (candidate g's mixing weight on its C channels: the edge then sums the
    candidates' parts; a form folds them into its last BatchNorm, or calls `scale_candidates`). With `from_relu` (only asked of forms that set
    `starts_with_relu`, for modules that start with a ReLU), x has been through that ReLU
    already (the edge shares it among its candidates). Build it from `stacked_conv`,
    `stacked_batch_norm` and `repeat_channels`.
    """

    starts_with_relu: ClassVar[bool] = False

    @classmethod
    def key(cls, module: nn.Module) -> Hashable | None:
        raise NotImplementedError

    @classmethod
    def forward(cls, modules: Sequence[nn.Module], x: torch.Tensor, from_relu: bool,
                factors: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def conv_groups(cls, modules: Sequence[nn.Module]) -> list[ConvGroup]:
        """The groups of convs `forward` runs through `stacked_conv`, each as it passes them: their
        feedback is made when the pass starts (`prepare_feedback`). A form that lists none still
        works: each of its stacked convs makes its own."""
        return []


def _conv_key(layer: nn.Module) -> Hashable | None:
    if not isinstance(layer, nn.Conv2d) or wrap_problem(layer) is not None or not stackable_rule(layer):
        return None
    return ("conv", tuple(layer.weight.shape), layer.bias is None, layer.stride, layer.padding, layer.dilation,
            layer.groups, layer.padding_mode)


def _norm_key(layer: nn.Module) -> Hashable | None:
    if type(layer) is not nn.BatchNorm2d:
        return None
    return ("bn", layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats)


class SequentialStack(StackedForm):
    """nn.Sequential modules (ReLUFirst included) of nn.ReLU, nn.Conv2d and nn.BatchNorm2d only:
    sep_conv and dil_conv. A leading grouped conv (depthwise) gets the input repeated G times;
    every later conv is grouped over the stacked channels."""

    starts_with_relu = True

    @classmethod
    def key(cls, module: nn.Module) -> Hashable | None:
        if not isinstance(module, nn.Sequential) or type(module).forward is not nn.Sequential.forward:
            return None
        if rule_of(module) is not None:  # a module-level rule (pc) runs the module as a whole
            return None
        parts = []
        for layer in module:
            part = ("relu",) if type(layer) is nn.ReLU else _conv_key(layer) or _norm_key(layer)
            if part is None:
                return None
            parts.append(part)
        return tuple(parts)

    @classmethod
    def forward(cls, modules, x, from_relu, factors):
        count, shared, positions = len(modules), True, list(zip(*modules))
        for i, position in enumerate(positions):
            layer = position[0]
            if isinstance(layer, nn.ReLU):
                if not (i == 0 and from_relu):
                    x = F.relu(x)
                continue
            if shared and not (isinstance(layer, nn.Conv2d) and layer.groups == 1):
                x = repeat_channels(x, count)
                shared = False
            if isinstance(layer, nn.Conv2d):
                x = stacked_conv(position, x, shared)
            elif i == len(positions) - 1:  # the last BatchNorm applies the factors
                return stacked_batch_norm(position, x, factors)
            else:
                x = stacked_batch_norm(position, x)
            shared = False
        return scale_candidates(repeat_channels(x, count) if shared else x, factors)

    @classmethod
    def conv_groups(cls, modules):
        return [position for position in zip(*modules) if isinstance(position[0], nn.Conv2d)]


class FactorizedReduceStack(StackedForm):
    """bionas.space.FactorizedReduce (skip_connect at stride 2): both convs read the shared input."""

    starts_with_relu = True

    @classmethod
    def key(cls, module: nn.Module) -> Hashable | None:
        if type(module) is not FactorizedReduce or rule_of(module) is not None or type(module.relu) is not nn.ReLU:
            return None
        parts = (_conv_key(module.conv_1), _conv_key(module.conv_2), _norm_key(module.bn))
        return None if None in parts else parts

    @classmethod
    def forward(cls, modules, x, from_relu, factors):
        if not from_relu:
            x = F.relu(x)
        count = len(modules)
        # Its 1x1 convs run at stride 1 on every other pixel, as FactorizedReduce runs them (bionas.ops).
        first = stacked_conv([m.conv_1 for m in modules], x[:, :, ::2, ::2], shared=True, subsampled=True)
        shifted = FactorizedReduce.shift(x)[:, :, ::2, ::2]
        second = stacked_conv([m.conv_2 for m in modules], shifted, shared=True, subsampled=True)
        return stacked_batch_norm([m.bn for m in modules], interleave(first, second, count), factors)

    @classmethod
    def conv_groups(cls, modules):
        return [[m.conv_1 for m in modules], [m.conv_2 for m in modules]]


def interleave(a: torch.Tensor, b: torch.Tensor, count: int) -> torch.Tensor:
    """Channels [a_1 b_1 a_2 b_2 ...] of a = [a_1 ... a_count] and b likewise, in a's memory format."""
    if _channels_last(a):
        nhwc = torch.cat([a.permute(0, 2, 3, 1).unflatten(3, (count, -1)),
                          b.permute(0, 2, 3, 1).unflatten(3, (count, -1))], dim=4)
        return nhwc.flatten(3).permute(0, 3, 1, 2)
    return torch.cat([a.unflatten(1, (count, -1)), b.unflatten(1, (count, -1))], dim=2).flatten(1, 2)


Stack = tuple[type[StackedForm], list[int], bool]  # (form, candidate indices, from a shared ReLU)


def stack_groups(modules: dict[int, nn.Module], forms: dict[int, type[StackedForm] | None],
                 relu_first: dict[int, bool]) -> list[Stack]:
    """The stacks among candidates (index -> module, its op's form, whether it starts with a ReLU):
    candidates whose form accepts them with equal keys, MIN_STACK or more of them, in index order."""
    groups: dict[tuple, list[int]] = {}
    for i, module in modules.items():
        form = forms.get(i)
        key = form.key(module) if form is not None else None
        if key is not None:
            groups.setdefault((form, key), []).append(i)
    stacks = []
    for (form, _), members in groups.items():
        if len(members) >= MIN_STACK:
            stacks.append((form, members, form.starts_with_relu and all(relu_first[i] for i in members)))
    return stacks


def stacks_pay(device: torch.device) -> bool:
    """Whether the pass now running on `device` is one that runs rule variants stacked (STACK_FORWARD_ONLY_ON_CPU)."""
    return torch.is_grad_enabled() or device.type != "cpu" or STACK_FORWARD_ONLY_ON_CPU


def set_rule_batching(module: nn.Module, enabled: bool) -> nn.Module:
    """Run the rule variants of every mixed edge inside `module` stacked (True, the default) or
    one candidate at a time (False: as before rule batching; for comparisons). Returns `module`."""
    for edge in module.modules():
        if hasattr(edge, "rule_batching"):  # a MixedEdge (bionas.space.supernet imports this module)
            edge.rule_batching = enabled
    return module
