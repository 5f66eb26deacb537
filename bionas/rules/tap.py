"""The output tap: the error at the network output, recorded on the way back, for direct feedback.

A forward pass that runs rule layers needing the output error (dfa) opens an
`ErrorContext`; each such layer keeps a reference to it. The `OutputTap` on the
logits closes the context and puts an identity function on the graph whose
backward stores e = dL/dlogits in it before any of those layers run their
backward. Every forward pass gets its own context, so several forwards and
backwards in one step (e.g. second-order DARTS) each pair with their own e,
and no second loss pass is needed.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

_local = threading.local()


class ErrorContext:
    """The network-output error of one forward pass; `error` is None until the tap's backward ran."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: torch.Tensor | None = None


def open_error_context() -> ErrorContext:
    """The context of the forward pass now running (opened by its first caller)."""
    context = getattr(_local, "context", None)
    if context is None:
        context = _local.context = ErrorContext()
    return context


def _close_error_context() -> ErrorContext | None:
    context = getattr(_local, "context", None)
    _local.context = None
    return context


class _TapFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, context):
        ctx.context = context
        return logits.clone()

    @staticmethod
    def backward(ctx, grad):
        ctx.context.error = grad.detach()
        return grad, None


def tap(logits: torch.Tensor) -> torch.Tensor:
    """Identity on `logits` whose backward hands dL/dlogits to the rule layers of this forward pass."""
    context = _close_error_context()
    if context is None or not (torch.is_grad_enabled() and logits.requires_grad):
        return logits
    return _TapFunction.apply(logits, context)


class OutputTap(nn.Module):
    """Place on a network's logits: identity forward, records the output error for dfa layers.

    Networks built by bionas have one; `bionas.convert` installs one (as forward hooks on
    the converted model) when it creates layers that need it and the model has none.
    """

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return tap(logits)


# -- the tap convert() installs on a model's output ----------------------------------------------


def _start_forward(module, args) -> None:
    # A forward pass that ended without reaching a tap must not leak its context into this one.
    _close_error_context()


def _tap_output(module, args, output):
    if isinstance(output, torch.Tensor):
        return tap(output)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return type(output)([tap(output[0]), *output[1:]])
    return output  # nothing to tap: a dfa layer's backward will say so


def has_output_tap(model: nn.Module) -> bool:
    """Whether the model has an OutputTap module or the hooks `install_output_tap` adds."""
    return _tap_output in model._forward_hooks.values() or any(isinstance(m, OutputTap) for m in model.modules())


def install_output_tap(model: nn.Module) -> None:
    """Tap the model's output (a tensor, or the first element of a tuple/list) with forward hooks."""
    if not has_output_tap(model):
        model.register_forward_pre_hook(_start_forward)
        model.register_forward_hook(_tap_output)


def remove_output_tap(model: nn.Module) -> None:
    """Remove the hooks `install_output_tap` added (an OutputTap module stays)."""
    for hooks, fn in ((model._forward_pre_hooks, _start_forward), (model._forward_hooks, _tap_output)):
        for key in [k for k, v in hooks.items() if v is fn]:
            del hooks[key]
