"""Rule layers: a Conv2d/Linear keeps its object, parameters and forward; its backward is its rule's.

Wrapping swaps the layer's class for a dynamically made subclass of it
(`RuleConv2d(nn.Conv2d)`, `RuleLinear(nn.Linear)`, ...) whose forward routes
through the layer's rule. The parameters stay the same Parameter objects, the
state_dict keys stay those of the original layer plus the rule's own buffers
(`add_buffer`), and `isinstance(layer, nn.Conv2d)` stays true. A rule that
works on a whole module (pc) swaps that module's class the same way
(`RuleModuleMixin`). `release` undoes either.

The hot path is one function, `rule_forward`: the layer's own F.linear /
F.conv2d forward, and a backward that computes the ordinary local weight and
bias gradients together with an input gradient chosen by the rule (a tensor in
place of the weight, nothing, or a callable), in one
`aten.convolution_backward` call for convolutions. Under `no_weight_gradients()`
the forward hands the function a detached weight and bias, so its backward
computes the input gradient alone (a custom autograd function learns what to
compute from what required a gradient at forward time, not from what a
backward pass asks for).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

LAYER_TYPES = (nn.Conv2d, nn.Linear)
_STOCK_FORWARDS = (nn.Conv2d.forward, nn.Linear.forward)
# Subclasses whose forward overrides compute exactly F.linear / F.conv2d in eager mode.
_EQUIVALENT_FORWARDS = {"timm.layers.linear.Linear"}

# Per-object attributes a rule module carries (plain attributes, not state_dict entries).
_ATTRS = ("_bionas_rule", "_bionas_exact", "_bionas_buffers", "_bionas_state")

Geometry = tuple[tuple[int, int], tuple[int, int], tuple[int, int], int] | None

_local = threading.local()  # per thread, as torch.no_grad: the depth of no_weight_gradients()


@contextlib.contextmanager
def no_weight_gradients() -> Iterator[None]:
    """Graphs recorded inside it compute no gradient for the parameters of rule layers.

    For a backward pass that wants other gradients only (DARTS's architecture step:
    the alphas): every rule layer and module (and the supernet's rule-batched
    candidates) records its weight and bias as constants, so its backward computes the
    input gradient alone, and a pseudo-gradient rule (hebbian) skips its forward-time
    update. Their `.grad` stays as it was. Plain (bp) layers need nothing: autograd
    already skips their weight gradient when `backward(inputs=...)` leaves it out.
    Thread-local, like torch.no_grad; nests.
    """
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        yield
    finally:
        _local.depth -= 1


def weight_gradients_enabled() -> bool:
    """False inside `no_weight_gradients()`."""
    return not getattr(_local, "depth", 0)


def recorded_parameter(p: torch.Tensor | None) -> torch.Tensor | None:
    """`p` as a rule layer's forward records it: detached inside `no_weight_gradients()`."""
    return p if p is None or weight_gradients_enabled() else p.detach()


def is_layer(module: nn.Module) -> bool:
    """True for the layers rules work on: nn.Conv2d and nn.Linear (subclasses included)."""
    return isinstance(module, LAYER_TYPES)


def rule_of(module: nn.Module):
    """The LearningRule a layer or module was given, or None (a plain module learns by backprop)."""
    return module.__dict__.get("_bionas_rule")


def base_class(module: nn.Module) -> type:
    """The module's class before any rule wrapped it."""
    return type(module).__dict__.get("_bionas_base", type(module)) if rule_of(module) else type(module)


def wrap_problem(layer: nn.Module) -> str | None:
    """Why `layer` cannot learn by a rule, or None when it can."""
    if not is_layer(layer):
        return f"{type(layer).__name__} is neither an nn.Conv2d nor an nn.Linear"
    base = base_class(layer)
    if base.forward not in _STOCK_FORWARDS and f"{base.__module__}.{base.__qualname__}" not in _EQUIVALENT_FORWARDS:
        return f"{base.__qualname__} overrides forward(), so its computation is not the stock Conv2d/Linear one"
    if isinstance(layer.weight, nn.parameter.UninitializedParameter):
        return "it is a lazy layer that has not been initialized yet (run one forward first)"
    return None


def wrappable_layers(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """(name, layer) for every Conv2d/Linear inside `module` (itself included) a rule can wrap.

    Skipped: layers whose forward is not the stock one, and the output projection of
    nn.MultiheadAttention (its parent uses the weight directly, never calling the layer).
    """
    owned = {id(m.out_proj) for m in module.modules() if isinstance(m, nn.MultiheadAttention)}
    for name, layer in module.named_modules():
        if is_layer(layer) and id(layer) not in owned and wrap_problem(layer) is None:
            yield name, layer


def plain_forward(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """The module's original forward (no rule), without running its hooks again."""
    return base_class(module).forward(module, *args, **kwargs)


# -- class swapping -------------------------------------------------------------------------------


class _RuleMixin:
    """What rule layers and rule modules share: pickling, checkpoint loading, repr."""

    _bionas_base: type
    _bionas_rule: Any
    _bionas_exact: int

    def __reduce_ex__(self, protocol):
        # The dynamic class is not importable; rebuild it from (mixin, base), which are.
        parts = super().__reduce_ex__(protocol)
        return (_new_rule_object, (type(self).__bases__[0], type(self)._bionas_base), *parts[2:])

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing, unexpected, errors)
        # A checkpoint of the unconverted model (e.g. pretrained weights) lacks the rule's buffers:
        # they keep their values. A checkpoint of the converted model restores them.
        own = {prefix + name for name in self._bionas_buffers}
        missing[:] = [key for key in missing if key not in own]
        self._bionas_rule.load_state(self)

    def extra_repr(self) -> str:
        text = super().extra_repr()
        rule = f"rule={describe(self._bionas_rule)}"
        return f"{text}, {rule}" if text else rule


class RuleLayerMixin(_RuleMixin):
    """Forward of a rule layer: the rule's path while recording a graph, the plain one otherwise."""

    def forward(self, input):
        if self._bionas_exact or not torch.is_grad_enabled():
            return self._bionas_base.forward(self, input)
        return self._bionas_rule.layer_forward(self, input)


class RuleModuleMixin(_RuleMixin):
    """Forward of a module a rule works on as a whole (pc)."""

    def forward(self, *args, **kwargs):
        if self._bionas_exact or not torch.is_grad_enabled():
            return self._bionas_base.forward(self, *args, **kwargs)
        return self._bionas_rule.module_forward(self, *args, **kwargs)


_CLASSES: dict[tuple[type, type], type] = {}


def _rule_class(mixin: type, base: type) -> type:
    key = (mixin, base)
    if key not in _CLASSES:
        _CLASSES[key] = type(f"Rule{base.__name__}", (mixin, base), {"_bionas_base": base, "__module__": __name__})
    return _CLASSES[key]


def _new_rule_object(mixin: type, base: type):
    cls = _rule_class(mixin, base)
    return cls.__new__(cls)


def attach(module: nn.Module, rule, mixin: type = RuleLayerMixin) -> nn.Module:
    """Make `module` (in place) forward through `rule`; a rule it had before is released first."""
    exact = module.__dict__.get("_bionas_exact", 0)  # keep an enclosing exact_gradients() balanced
    release(module)
    module.__class__ = _rule_class(mixin, type(module))
    module._bionas_rule = rule
    module._bionas_exact = exact
    module._bionas_buffers = []
    module._bionas_state = {}
    return module


def release(module: nn.Module) -> nn.Module:
    """Undo `attach`: the original class, no rule buffers, no rule state. A plain module is left as is."""
    if rule_of(module) is None:
        return module
    for name in module._bionas_buffers:
        module._buffers.pop(name, None)
        module._non_persistent_buffers_set.discard(name)
    module.__class__ = module._bionas_base
    for attr in _ATTRS:
        module.__dict__.pop(attr, None)
    return module


def release_module_rules(module: nn.Module) -> None:
    """Release every module-level rule (not layers) inside `module`, itself included."""
    for sub in module.modules():
        if isinstance(sub, RuleModuleMixin):
            release(sub)


def add_buffer(layer: nn.Module, name: str, tensor: torch.Tensor, persistent: bool = True) -> None:
    """Register a rule buffer on a wrapped layer; `release` (or another rule) removes it again."""
    layer.register_buffer(name, tensor, persistent=persistent)
    layer._bionas_buffers.append(name)


def describe(rule) -> str:
    """`fa`, or `pc(T=5, eta=1.0)` when options differ from their defaults."""
    changed = rule.options.model_dump(exclude_defaults=True)
    return rule.name + (f"({', '.join(f'{k}={v!r}' for k, v in changed.items())})" if changed else "")


# -- the shared autograd function -----------------------------------------------------------------


def _explicit_padding(layer: nn.Conv2d) -> tuple[list[int] | None, str, tuple[int, int]]:
    """(F.pad amounts applied before the convolution or None, their mode, the convolution's own padding)."""
    if layer.padding_mode != "zeros":
        return list(layer._reversed_padding_repeated_twice), layer.padding_mode, (0, 0)
    if layer.padding == "valid":
        return None, "constant", (0, 0)
    if layer.padding == "same":
        totals = [d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size)]
        extra = [t % 2 for t in totals]
        return ([0, extra[1], 0, extra[0]] if any(extra) else None), "constant", tuple(t // 2 for t in totals)
    return None, "constant", tuple(layer.padding)


def conv_geometry(layer: nn.Conv2d, x: torch.Tensor) -> tuple[torch.Tensor, Geometry]:
    """(input padded as the layer pads it, (stride, padding, dilation, groups)) with numeric padding.

    Mirrors nn.Conv2d: non-zero padding modes pad explicitly; 'same' with an odd total
    padding pads the extra row/column on the right/bottom, as ATen does.
    """
    pad, mode, padding = _explicit_padding(layer)
    if pad is not None:
        x = F.pad(x, pad, mode=mode)
    return x, (tuple(layer.stride), padding, tuple(layer.dilation), layer.groups)


def _unpadded_send(send: Callable, pad: list[int]) -> Callable:
    """`send` for an input padded by F.pad(x, pad): it sees x itself and its result is zero-padded,
    so F.pad's backward hands it to x unchanged (a dfa B spans the layer's input, not the padding)."""
    left, right, top, bottom = pad

    def padded_send(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        x = x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]
        return F.pad(send(grad, x), pad)

    return padded_send


def local_gradients(
    grad: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    geometry: Geometry,
    has_bias: bool,
    mask: tuple[bool, bool, bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """(input, weight, bias) gradients of y = layer(x) for output gradient `grad`, as `mask` asks.

    The input gradient is computed with `weight` (pass a feedback tensor to get B^T g);
    the weight and bias gradients do not depend on it. geometry None means Linear.
    """
    want_x, want_w, want_b = mask
    if geometry is None:
        gx = grad @ weight if want_x else None
        flat = grad.reshape(-1, grad.shape[-1]) if (want_w or want_b) else None
        gw = flat.t() @ x.reshape(-1, x.shape[-1]) if want_w else None
        gb = flat.sum(0) if want_b else None
        return gx, gw, gb
    if not (want_x or want_w or want_b):
        return None, None, None
    stride, padding, dilation, groups = geometry
    bias_sizes = [weight.shape[0]] if (has_bias and want_b) else None
    return torch.ops.aten.convolution_backward(
        grad, x, weight, bias_sizes, stride, padding, dilation, False, [0, 0], groups, [want_x, want_w, want_b]
    )


def weight_gradient(x: torch.Tensor, grad: torch.Tensor, weight: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """The local weight gradient sum(grad ⊗ input) of a layer (e.g. a Hebbian y ⊗ x term)."""
    return local_gradients(grad, x, weight, geometry, False, (False, True, False))[1]


Send = torch.Tensor | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None
PseudoGrad = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Geometry], torch.Tensor] | None


class _RuleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, geometry, send, pseudo_grad):
        if geometry is None:
            y = F.linear(x, weight, bias)
        else:
            y = F.conv2d(x, weight, bias, *geometry)
        ctx.geometry = geometry
        ctx.send = send
        ctx.has_bias = bias is not None
        ctx.local = pseudo_grad is None
        ctx.pseudo = pseudo_grad(x, y, weight, geometry) if not ctx.local and ctx.needs_input_grad[1] else None
        ctx.save_for_backward(x, weight)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        send, local, pseudo = ctx.send, ctx.local, ctx.pseudo
        if grad.dtype != x.dtype:  # autocast: compute in the input's precision
            grad = grad.to(x.dtype)
        feedback = send if isinstance(send, torch.Tensor) else None
        if feedback is not None and feedback.dtype != x.dtype:
            feedback = feedback.to(x.dtype)
        mask = (need_x and feedback is not None, need_w and local, need_b and local)
        gx, gw, gb = local_gradients(grad, x, weight if feedback is None else feedback, ctx.geometry, ctx.has_bias, mask)
        if need_x and callable(send):
            gx = send(grad, x)
        if pseudo is not None:
            gw = pseudo.to(weight.dtype)
        return gx, gw, gb, None, None, None


def rule_forward(layer: nn.Module, x: torch.Tensor, send: Send, pseudo_grad: PseudoGrad = None) -> torch.Tensor:
    """The layer's own forward, with a backward the rule chooses.

    send: a tensor shaped like the weight -> the input gradient is computed with it in
          place of the weight (B^T g); None -> no input gradient (the error is blocked);
          a callable (grad_output, input) -> the input gradient it returns (a conv's
          input as it came, before the padding the layer applies).
    pseudo_grad: None -> the ordinary local weight and bias gradients; a callable
          (input, output, weight, geometry) -> called in the forward pass, its result
          (a tensor, or None for no update) is returned as the weight's gradient and the
          bias gets none.
    """
    if isinstance(layer, nn.Conv2d):
        if x.dim() == 3:  # unbatched input, as nn.Conv2d accepts it
            return rule_forward(layer, x.unsqueeze(0), send, pseudo_grad).squeeze(0)
        pad = _explicit_padding(layer)[0]
        if pad is not None and callable(send):
            send = _unpadded_send(send, pad)
        x, geometry = conv_geometry(layer, x)
    else:
        geometry = None
    return _RuleFunction.apply(
        x, recorded_parameter(layer.weight), recorded_parameter(layer.bias), geometry, send, pseudo_grad
    )

