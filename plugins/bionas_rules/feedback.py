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
from bionas.errors import BionasError
from bionas.rules import add_buffer
from bionas.rules.seeding import STEP_FLAG, draw, fans, layer_seed, seeded_draws, watch_optimizer_steps


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
    """B = |R_k| * sign(W): R_k is `seeded_draws` of (feedback_seed, k) where k = feedback_step.

    k advances by one at the first use after a training step, so every forward
    pass of one step (gradient accumulation, second-order DARTS' perturbed passes)
    sees the same B. What counts as a step is the `redraw` option:
    'optimizer_step' (default) a step of an optimizer that trains this layer's
    weight (bionas.rules.seeding.watch_optimizer_steps sets a flag buffer on the
    device; other optimizers never move it), 'weight_update' any in-place change
    of this layer's weight (noticed by the host). In the default mode the whole
    decision lives on the device: k += flag, flag = 0, R a function of the
    tensors (seed, k), so a CUDA graph replay of a step advances and draws as an
    eager step does, and nothing is read back. Both persistent buffers are
    checkpointed: after load_state_dict the next use draws k + 1, exactly as the
    saved run does after its optimizer step.
    """

    name = "brsf"
    description = "Batchwise random-magnitude sign-concordant feedback: B = |R| * sign(W), R redrawn every step."
    default_candidate = True  # one of the paper's four searched rules

    class Options(RandomFeedbackOptions):
        redraw: Literal["optimizer_step", "weight_update"] = Field(
            "optimizer_step",
            description="When R is redrawn: after a step of an optimizer that trains the layer ('optimizer_step', "
            "decided on the device), or after any in-place change of the layer's weight ('weight_update', noticed "
            "by the host: not for steps a CUDA graph replays).",
        )

    def setup(self, layer: nn.Module) -> None:
        device = layer.weight.device
        add_buffer(layer, "feedback_seed", torch.tensor(layer_seed(self), dtype=torch.int64, device=device))
        add_buffer(layer, "feedback_step", torch.tensor(0, dtype=torch.int64, device=device))
        # 1: the next use draws k + 1 (the first use, and the first after a training step)
        add_buffer(layer, STEP_FLAG, torch.tensor(1, dtype=torch.int64, device=device), persistent=False)
        watch_optimizer_steps(layer)

    def load_state(self, layer: nn.Module) -> None:
        super().load_state(layer)
        with torch.no_grad():
            getattr(layer, STEP_FLAG).fill_(1)  # a checkpoint is taken after a step: the next use draws k + 1

    def feedback(self, layer: nn.Module) -> torch.Tensor:
        return self.feedback_many([layer])[0]

    def feedback_many(self, layers):
        self._advance(layers)
        return self._feedback(layers)

    def effective_feedback(self, layer: nn.Module) -> torch.Tensor:
        # The B of the current step, without advancing it: alignment() reads this between
        # a step and a checkpoint, and must not shift the draw the saved run continues with.
        return self._feedback([layer])[0]

    def _advance(self, layers) -> None:
        """k += 1 for the layers that a training step passed since their last draw."""
        with torch.no_grad():
            if self.options.redraw == "optimizer_step":
                for layer in layers:
                    watch_optimizer_steps(layer)
                flags = [getattr(layer, STEP_FLAG) for layer in layers]
                torch._foreach_add_([layer.feedback_step for layer in layers], flags)
                torch._foreach_zero_(flags)
            else:
                if torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing():  # frozen into a graph
                    raise BionasError("brsf redraw: weight_update notices a step on the host, which a CUDA graph "
                                      "replay cannot; use redraw: optimizer_step or runtime.cuda_graphs: false")
                stepped = [layer.feedback_step for layer in layers if self._weight_changed(layer)]
                if stepped:
                    torch._foreach_add_(stepped, 1)

    @staticmethod
    def _weight_changed(layer: nn.Module) -> bool:
        w = layer.weight
        state = layer._bionas_state
        clock = (id(w), w.data_ptr(), w._version)
        if state.get("clock") == clock:
            return False
        state["clock"] = clock
        return True

    def _feedback(self, layers) -> list[torch.Tensor]:
        weights = [layer.weight for layer in layers]
        draws = seeded_draws([layer.feedback_seed for layer in layers], [layer.feedback_step for layer in layers],
                             [w.shape for w in weights], self.options.init)
        magnitudes = torch._foreach_abs(draws)
        if any(m.dtype != w.dtype for m, w in zip(magnitudes, weights)):
            magnitudes = [m.to(w.dtype) for m, w in zip(magnitudes, weights)]
        return torch._foreach_mul(magnitudes, torch._foreach_sign(weights))
