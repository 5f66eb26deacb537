"""The feedback-alignment family: the input gradient is B^T g with B in place of W.

For y = W x and g = dL/dy every rule here keeps the ordinary weight gradient
g x^T (and bias gradient) and sends B^T g below (Sanfiz & Akrout 2021, BioTorch):

    fa    B fixed random (Xavier-uniform), independent of W  (Lillicrap et al. 2016)
    usf   B = s * sign(W), s = sqrt(2 / (fan_in + fan_out)), recomputed from W
    brsf  B = |R| * sign(W), R Xavier-uniform redrawn once per training step
    frsf  B = |R0| * sign(W), R0 Xavier-uniform drawn once      (Moskovitz et al. 2018)

A layer these rules wrap is re-initialised as BioTorch's layers are (option `weight_init`):
W Xavier-uniform and the bias zero, so W and B start at the same scale (|B| / |W| near 1).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from bionas import FeedbackRule, PluginOptions
from bionas.rules import add_buffer
from bionas.rules.seeding import (
    buffer_int,
    draw,
    fans,
    increment_buffer_ints,
    layer_seed,
    mix,
    new_training_step,
    set_buffer_int,
)


class WeightInitOptions(PluginOptions):
    """The option of the rules that initialise the layers they wrap as BioTorch does."""

    weight_init: Literal["xavier_uniform", "keep"] = Field(
        "xavier_uniform",
        description="How a layer the rule wraps starts: 'xavier_uniform' re-initialises W Xavier-uniform and "
        "zeroes the bias, as BioTorch's layers do (W and the feedback then have the same scale); 'keep' leaves "
        "W and the bias as they are. bionas.convert keeps the weights unless called with keep_weights=False.",
    )


class ReferenceInit:
    """`init_weights` of BioTorch's layers (its fa_constructor and dfa `init_parameters`, init 'xavier')."""

    def init_weights(self, layer: nn.Module) -> None:
        if self.options.weight_init == "xavier_uniform":
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class RandomFeedbackOptions(WeightInitOptions):
    """Options of the rules whose feedback is random: its distribution and its seed (and weight_init)."""

    init: Literal["xavier_uniform", "xavier_normal"] = Field(
        "xavier_uniform", description="Distribution of the random feedback (BioTorch: Xavier-uniform)."
    )
    seed: int | None = Field(
        None,
        description="Seed of the random feedback; the n-th layer this rule wraps uses mix(seed, n). Unset: each "
        "layer's seed is drawn from torch's global generator (reproducible under torch.manual_seed).",
    )


def fixed_draw(rule, layer: nn.Module) -> torch.Tensor:
    """A weight-shaped random tensor for `layer`, from a fresh per-layer seed of `rule`."""
    w = layer.weight
    return draw(w.shape, layer_seed(rule), rule.options.init).to(w.device, w.dtype)


class FeedbackAlignment(ReferenceInit, FeedbackRule):
    name = "fa"
    description = "Feedback alignment: errors go down through a fixed random matrix B (a buffer)."
    default_candidate = True  # one of the paper's four searched rules

    class Options(RandomFeedbackOptions):
        pass

    def setup(self, layer: nn.Module) -> None:
        add_buffer(layer, "feedback", fixed_draw(self, layer))

    def feedback(self, layer: nn.Module) -> torch.Tensor:
        return layer.feedback


class UniformSignFeedback(ReferenceInit, FeedbackRule):
    name = "usf"
    description = "Uniform sign-concordant feedback: B = s * sign(W), s = sqrt(2 / (fan_in + fan_out))."
    default_candidate = True  # one of the paper's four searched rules

    class Options(WeightInitOptions):
        scale: Literal["xavier", "unit"] = Field(
            "xavier", description="s: 'xavier' = sqrt(2 / (fan_in + fan_out)) (BioTorch's scaling), 'unit' = 1."
        )

    def feedback(self, layer: nn.Module) -> torch.Tensor:
        w = layer.weight
        if self.options.scale == "unit":
            return torch.sign(w)
        return torch.sign(w) * self._scale(w)

    def feedback_many(self, layers):
        signs = torch._foreach_sign([layer.weight for layer in layers])
        if self.options.scale == "unit":
            return signs
        return torch._foreach_mul(signs, [self._scale(layer.weight) for layer in layers])

    @staticmethod
    def _scale(w: torch.Tensor) -> float:
        fan_in, fan_out = fans(w.shape)
        return math.sqrt(2.0 / (fan_in + fan_out))


class FixedRandomSignFeedback(ReferenceInit, FeedbackRule):
    name = "frsf"
    description = "Fixed random-magnitude sign-concordant feedback: B = |R0| * sign(W), R0 drawn once."
    default_candidate = True  # one of the paper's four searched rules

    class Options(RandomFeedbackOptions):
        pass

    def setup(self, layer: nn.Module) -> None:
        add_buffer(layer, "feedback_magnitude", fixed_draw(self, layer).abs())

    def feedback(self, layer: nn.Module) -> torch.Tensor:
        return layer.feedback_magnitude * torch.sign(layer.weight)

    def feedback_many(self, layers):
        signs = torch._foreach_sign([layer.weight for layer in layers])
        return torch._foreach_mul([layer.feedback_magnitude for layer in layers], signs)


class BatchRandomSignFeedback(ReferenceInit, FeedbackRule):
    """B = |R_k| * sign(W): R_k is drawn from mix(feedback_seed, k) where k = feedback_step.

    k advances by one at the first use after a training step, so every forward
    pass of one step (gradient accumulation, second-order DARTS' perturbed passes)
    sees the same B. What counts as a step is the `redraw` option:
    'optimizer_step' (default) a step of the optimizer that trains this layer,
    noticed as a change of its weight (bionas.rules.new_training_step: changes inside
    hold_feedback do not count, other optimizers never move it), 'weight_update'
    any in-place change of this layer's weight. Both
    buffers are checkpointed: after load_state_dict the next use draws k + 1,
    exactly as the saved run does after its optimizer step. R is drawn on the
    weight's device (no host-to-device copy per step).
    """

    name = "brsf"
    description = "Batchwise random-magnitude sign-concordant feedback: B = |R| * sign(W), R redrawn every step."
    default_candidate = True  # one of the paper's four searched rules

    class Options(RandomFeedbackOptions):
        redraw: Literal["optimizer_step", "weight_update"] = Field(
            "optimizer_step",
            description="When R is redrawn: after a step of the optimizer that trains the layer ('optimizer_step': "
            "a change of its weight, perturbations inside bionas.rules.hold_feedback excepted), or after any "
            "in-place change of the layer's weight ('weight_update').",
        )

    def setup(self, layer: nn.Module) -> None:
        device = layer.weight.device
        add_buffer(layer, "feedback_seed", torch.tensor(layer_seed(self), dtype=torch.int64, device=device))
        add_buffer(layer, "feedback_step", torch.tensor(0, dtype=torch.int64, device=device))

    def _new_step(self, layer: nn.Module) -> bool:
        if self.options.redraw == "optimizer_step":
            return new_training_step(layer)
        w = layer.weight
        state = layer._bionas_state
        clock = (id(w), w.data_ptr(), w._version)
        if state.get("clock") == clock:
            return False
        state["clock"] = clock
        return True

    def feedback(self, layer: nn.Module) -> torch.Tensor:
        if self._new_step(layer):
            set_buffer_int(layer, "feedback_step", buffer_int(layer, "feedback_step") + 1)
        return self.effective_feedback(layer)

    def feedback_many(self, layers):
        # As feedback() per layer, with one operation (not one per layer) where it can.
        increment_buffer_ints([layer for layer in layers if self._new_step(layer)], "feedback_step")
        magnitudes = [self._magnitude(layer, fresh_abs=False) for layer in layers]
        fresh = [m for m, done in magnitudes if not done]
        if fresh:
            torch._foreach_abs_(fresh)  # |R| of this step's new draws
        signs = torch._foreach_sign([layer.weight for layer in layers])
        return torch._foreach_mul([m for m, _ in magnitudes], signs)

    def effective_feedback(self, layer: nn.Module) -> torch.Tensor:
        # The B of the current step, without advancing it: alignment() reads this between
        # a step and a checkpoint, and must not shift the draw the saved run continues with.
        return self._magnitude(layer)[0] * torch.sign(layer.weight)

    def _magnitude(self, layer: nn.Module, fresh_abs: bool = True) -> tuple[torch.Tensor, bool]:
        """(|R| of the current step, cached in the layer's state; whether it is final). A fresh draw
        with fresh_abs=False is R itself, which the caller turns into |R| in place."""
        w = layer.weight
        state = layer._bionas_state
        step = buffer_int(layer, "feedback_step")
        cached = state.get("magnitude")
        if cached is not None and cached[0] == step and cached[1].device == w.device and cached[1].dtype == w.dtype:
            return cached[1], True
        seed = mix(buffer_int(layer, "feedback_seed"), step)
        reuse = cached is not None and cached[1].device == w.device and cached[1].dtype == torch.float32 == w.dtype
        # the last step's |R| is only read through products made from it: draw the new R into it
        magnitude = draw(w.shape, seed, self.options.init, w.device, out=cached[1] if reuse else None)
        magnitude = magnitude.to(w.device, w.dtype)
        if fresh_abs:
            magnitude.abs_()
        state["magnitude"] = (step, magnitude)
        return magnitude, fresh_abs
