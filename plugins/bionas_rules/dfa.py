"""dfa: direct feedback alignment (Nøkland 2016), per layer and mixable.

A dfa layer trains its own weight on the ordinary local gradient of the error it
receives, and sends to its input, instead of W^T g, the network-output error
e = dL/dlogits projected by a fixed random matrix B (num_outputs x the layer's
whole per-sample input before any padding, dense: every input position gets its
own weights):

    sent = B^T e        (shaped like the layer's input)

Through autograd the layer below receives (B^T e) ⊙ f'(a), which is DFA's
delta_l = (F_l e) ⊙ f'(a_l) with F_l the B of the dfa layer above. Hence the
output layer (if dfa) trains on its true gradient, and bp/fa/... layers mix
freely: whatever a layer receives, a dfa layer above it sends B^T e.

e comes from the OutputTap on the logits (see bionas.rules.tap) of the same
forward pass. B is not stored: it is regenerated from the `feedback_seed`
buffer and its shape (known at the first backward), and cached.

A wrapped layer is re-initialised as BioTorch's dfa layers are (option `weight_init`: W
Xavier-uniform, bias zero), as the feedback rules' are: B does not scale with W here, but
a dfa layer then starts as the reference's does.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from bionas import LearningRule
from bionas.rules import ErrorContext, add_buffer, open_error_context, rule_forward
from bionas.rules.seeding import draw, layer_seed, mix
from bionas_rules.feedback import RandomFeedbackOptions, ReferenceInit


class DirectFeedbackAlignment(ReferenceInit, LearningRule):
    name = "dfa"
    description = "Direct feedback alignment: the output error reaches the layer through a fixed random matrix."
    needs_output_tap = True

    class Options(RandomFeedbackOptions):
        pass

    def setup(self, layer: nn.Module) -> None:
        seed = torch.tensor(layer_seed(self), dtype=torch.int64, device=layer.weight.device)
        add_buffer(layer, "feedback_seed", seed)

    def layer_forward(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return rule_forward(layer, x, send=partial(self._send, layer, open_error_context()))

    def matrix(self, layer: nn.Module, num_outputs: int, num_inputs: int, dtype=None, device=None) -> torch.Tensor:
        """B (num_outputs x num_inputs) of this layer: a function of its seed buffer and the shape."""
        dtype = dtype or layer.weight.dtype
        device = torch.device(device) if device is not None else layer.weight.device
        # B depends on the seed, which only load_state_dict changes (load_state then clears this cache),
        # and on the shape: the seed is read once per B (at warm-up), never per step.
        key = (num_outputs, num_inputs, dtype, device)
        cached = layer._bionas_state.get("matrix")
        if cached is None or cached[0] != key:
            seed = int(layer.feedback_seed)
            b = draw((num_outputs, num_inputs), mix(seed, num_outputs, num_inputs), self.options.init)
            cached = layer._bionas_state["matrix"] = (key, b.to(device, dtype))
        return cached[1]

    def _send(self, layer: nn.Module, context: ErrorContext, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        e = context.error
        if e is None:
            raise RuntimeError(
                f"dfa layer {type(layer).__name__}: no network-output error reached it. A dfa layer needs an "
                "OutputTap on the network's logits (bionas.convert installs one; networks built by bionas "
                "have one), and its output must reach those logits in the same forward pass."
            )
        if e.shape[0] != x.shape[0]:
            raise RuntimeError(
                f"dfa layer {type(layer).__name__}: the output error has batch size {e.shape[0]} but the "
                f"layer's input has {x.shape[0]}; dfa needs the batch as the first dimension of both"
            )
        e = e.reshape(e.shape[0], -1).to(x.dtype)
        b = self.matrix(layer, e.shape[1], x[0].numel(), x.dtype, x.device)
        return (e @ b).view(x.shape)
