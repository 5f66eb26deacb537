"""pc: predictive coding over the layers of a module (Millidge, Tschantz & Buckley 2020).

Applied to a module, pc makes the output of every Conv2d/Linear inside it a value
node v_l. The forward pass runs the module once and records, for each node, its
prediction mu_l = f_l(v_parents) (the layer and whatever ops lie between it and
the nodes it reads: BN, ReLU, additions, ...). The predictions stay fixed
(the fixed-prediction assumption), so with eps_l = v_l - mu_l and the module's
output error g = dL/d(out) coming from above, inference descends the energy
F = sum_l 1/2 |eps_l|^2 + L(out):

    v_l  +=  eta * (-eps_l + sum_children J^T eps_child - J_out^T g)     T times

starting from v = mu (eps = 0). Each step is one vector-Jacobian product through
the recorded graph, so the node structure can be anything (residual additions,
branches). The weights (and every other parameter of the module) then get the
gradient of their predictions with the converged errors, -eps_l in place of
dL/dmu_l, and the module's input gets the error those predictions send down.
With eta = 1 and T at least the number of nodes on the longest path this equals
backprop exactly; cost is about T backward passes of the module.
"""

from __future__ import annotations

import threading

import torch
from pydantic import Field, PositiveFloat, PositiveInt
from torch import nn

from bionas import LearningRule, PluginOptions
from bionas.rules import RuleModuleMixin, attach, is_layer, plain_forward, weight_gradients_enabled

_local = threading.local()


class _Recording:
    """Value nodes of one forward pass of a pc module: predictions mu and detached values v."""

    def __init__(self) -> None:
        self.mus: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def node(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        mu = plain_forward(layer, x)
        value = mu.detach().requires_grad_()
        self.mus.append(mu)
        self.values.append(value)
        return value


class _Inference(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, rule, body, *params):
        recording = _Recording()
        outer, _local.recording = getattr(_local, "recording", None), recording
        try:
            with torch.enable_grad():
                x_in = x.detach().requires_grad_(x.requires_grad)
                out = body(x_in, recording)
        finally:
            _local.recording = outer
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"pc needs a module that returns one tensor, got {type(out).__name__}")
        ctx.rule, ctx.recording, ctx.x_in, ctx.out, ctx.params = rule, recording, x_in, out, params
        return out.detach().clone()  # a later in-place op must not touch the recorded graph

    @staticmethod
    def backward(ctx, grad):
        rec = ctx.recording
        steps, eta = ctx.rule.options.T, ctx.rule.options.eta
        outputs = [*rec.mus, ctx.out]
        errors = [torch.zeros_like(v) for v in rec.values]
        for _ in range(steps if rec.values else 0):
            # every node at once: sum over children of J^T eps_child, minus J_out^T g
            pulls = _vjp(outputs, [*errors, -grad], rec.values)
            errors = [(1 - eta) * e if p is None else e + eta * (p - e) for e, p in zip(errors, pulls)]
        needs = [ctx.needs_input_grad[0], *ctx.needs_input_grad[3:]]
        inputs = [t for t, need in zip((ctx.x_in, *ctx.params), needs) if need]
        grads = iter(_vjp(outputs, [*(-e for e in errors), grad], inputs))
        result = [next(grads) if need else None for need in needs]
        return (result[0], None, None, *result[1:])


def _vjp(outputs, grad_outputs, inputs):
    """sum_i J_i^T grad_outputs_i with respect to each of `inputs` (None where unused)."""
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs) if o.requires_grad]
    if not inputs or not pairs:
        return [None] * len(inputs)
    outs, grads = zip(*pairs)
    return torch.autograd.grad(outs, inputs, grads, retain_graph=True, allow_unused=True)


class PredictiveCoding(LearningRule):
    name = "pc"
    description = "Predictive coding: T steps of inference over the module's layers; updates from converged errors."

    class Options(PluginOptions):
        T: PositiveInt = Field(
            50,
            description="Inference steps per backward pass (50: the CNN default of the reference code, "
            "BerenMillidge/PredictiveCodingBackprop cnn.py). T >= depth with eta = 1 equals backprop.",
        )
        eta: PositiveFloat = Field(
            0.1, description="Inference rate of v += eta (-eps + J^T eps) (0.1: the reference code's default)."
        )

    def apply(self, module: nn.Module) -> nn.Module:
        """Every Conv2d/Linear inside `module` becomes a value node of one pc network over `module`."""
        module = super().apply(module)
        if not is_layer(module):
            attach(module, self, RuleModuleMixin)
        return module

    def layer_forward(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        recording = getattr(_local, "recording", None)
        if recording is not None:  # a node of the pc module now running
            return recording.node(layer, x)
        return self._infer(layer, x, lambda x_in, rec: rec.node(layer, x_in))  # a pc network of one layer

    def module_forward(self, module: nn.Module, *args, **kwargs):
        if len(args) != 1 or kwargs or not isinstance(args[0], torch.Tensor):
            raise TypeError("pc needs a module whose forward takes one tensor")
        return self._infer(module, args[0], lambda x_in, rec: plain_forward(module, x_in))

    def _infer(self, root: nn.Module, x: torch.Tensor, body) -> torch.Tensor:
        # Under no_weight_gradients() the inference sends the module's input error only.
        params = [p for p in root.parameters() if p.requires_grad] if weight_gradients_enabled() else []
        return _Inference.apply(x, self, body, *params)

    def effective_feedback(self, layer: nn.Module) -> torch.Tensor:
        return layer.weight  # inference uses the true Jacobians
