"""The rule bases: LearningRule (wrap / apply a layer or module) and FeedbackRule (B in place of W)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from typing import ClassVar

import torch
from torch import nn

from bionas.errors import PluginError
from bionas.plugin import Plugin
from bionas.rules.layers import (
    RuleLayerMixin,
    attach,
    is_layer,
    release_module_rules,
    rule_forward,
    wrap_problem,
    wrappable_layers,
)

# True inside convert(..., keep_weights=True): rules wrap layers without initialising their weights.
_KEEP_WEIGHTS: ContextVar[bool] = ContextVar("bionas_keep_weights", default=False)


@contextlib.contextmanager
def keeping_weights(keep: bool = True) -> Iterator[None]:
    """Inside it (keep=True), wrapping a layer never calls the rule's `init_weights`."""
    token = _KEEP_WEIGHTS.set(keep)
    try:
        yield
    finally:
        _KEEP_WEIGHTS.reset(token)


class LearningRule(Plugin):
    """A rule decides the error a layer sends below and the update of its own parameters.

    `wrap(layer)` takes an nn.Conv2d or nn.Linear and returns it (in place) with the
    identical forward function and parameters and the rule's backward. `apply(module)`
    does that for every Conv2d/Linear inside a module. A subclass implements
    `layer_forward(layer, x)` (usually one call of `bionas.rules.rule_forward`) and,
    when it keeps state, `setup(layer)` to register buffers with `bionas.rules.add_buffer`, and
    `init_weights(layer)` when its reference initialises the layers it makes (BioTorch's do).

    Two class attributes make the default search space (a spec without `space.rules` or
    `space.fixed_rules`) data the rule plugins own: `default_candidate` puts a rule among
    the searched rules (in registration order); `backprop` marks the rule whose layers
    stay plain (the true gradient), which the fixed layers default to (plain layers when
    no such rule is installed).
    """

    kind: ClassVar[str] = "rule"
    #: True for rules that need the network-output error (an OutputTap on the logits).
    needs_output_tap: ClassVar[bool] = False
    #: A rule the default search space searches.
    default_candidate: ClassVar[bool] = False
    #: Layers learning by this rule stay plain: backprop, the fixed layers' default.
    backprop: ClassVar[bool] = False
    #: True when the layer's backward is fixed by `feedback(layer)` alone (the input gradient with it
    #: in place of the weight, ordinary local weight gradients): the supernet may then run the
    #: layer stacked with same-shaped layers of other such rules (bionas.space.stacking).
    stackable: ClassVar[bool] = False

    def wrap(self, layer: nn.Module) -> nn.Module:
        """Make `layer` (a Conv2d or Linear) learn by this rule; a rule it had is replaced.

        The rule's `init_weights` initialises the layer first (the feedback rules re-initialise
        W Xavier-uniform with zero bias unless their `weight_init` is 'keep'), except inside
        `convert(..., keep_weights=True)`.
        """
        problem = wrap_problem(layer)
        if problem:
            raise PluginError(f"rule '{self.name}' cannot wrap this {type(layer).__name__}: {problem}")
        attach(layer, self, RuleLayerMixin)
        if not _KEEP_WEIGHTS.get():
            self.init_weights(layer)
        self.setup(layer)
        return layer

    def apply(self, module: nn.Module) -> nn.Module:
        """Make every Conv2d/Linear inside `module` (itself included) learn by this rule.

        Returns the module to use (the same object: wrapping works in place). Re-applying
        replaces the rules layers had; it never wraps twice. Module-level rules inside
        `module` (pc) are released first. Each layer is initialised as `wrap` says: apply
        rules to freshly built modules, and convert trained ones with `convert`.
        """
        release_module_rules(module)
        if is_layer(module):
            return self.wrap(module)
        for name, layer in list(wrappable_layers(module)):
            new = self.wrap(layer)
            if new is not layer:
                module.set_submodule(name, new)
        return module

    # -- what subclasses implement ---------------------------------------------------------------

    def init_weights(self, layer: nn.Module) -> None:
        """Initialise the parameters of a layer this rule wraps (default: leave them as they are).

        Called by `wrap` before `setup`, except inside `convert(..., keep_weights=True)` (the
        default of convert: a converted network keeps its weights). Loading a checkpoint
        afterwards restores the saved parameters as usual.
        """

    def setup(self, layer: nn.Module) -> None:
        """Register this rule's buffers on a freshly wrapped layer (default: none)."""

    def layer_forward(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The layer's forward while autograd records (plain forward otherwise)."""
        raise NotImplementedError(f"rule '{self.name}' does not implement layer_forward")

    def module_forward(self, module: nn.Module, *args, **kwargs):
        """Forward of a module this rule works on as a whole (rules that attach to modules only)."""
        raise NotImplementedError(f"rule '{self.name}' does not attach to modules")

    def effective_feedback(self, layer: nn.Module) -> torch.Tensor | None:
        """The weight-shaped tensor the input gradient is computed with, or None if there is none.

        A pure read: alignment() calls it between an optimizer step and a checkpoint.
        """
        return None

    def load_state(self, layer: nn.Module) -> None:
        """Called after load_state_dict filled a wrapped layer: forget derived, non-persistent state."""
        layer._bionas_state.clear()


class FeedbackRule(LearningRule):
    """The feedback-alignment family: the input gradient uses `feedback(layer)` in place of the weight.

    The weight and bias gradients are the ordinary local ones. A subclass implements
    `feedback(layer)`, returning a tensor shaped like `layer.weight`. Its layers can run
    rule-batched in the supernet (`stackable`), unless the subclass overrides `layer_forward`
    without setting `stackable = True` itself.
    """

    stackable: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # A subclass with its own forward may do more than feedback(layer) says: not stacked unless it says so.
        if "layer_forward" in cls.__dict__ and "stackable" not in cls.__dict__:
            cls.stackable = False

    def feedback(self, layer: nn.Module) -> torch.Tensor:
        raise NotImplementedError

    def feedback_many(self, layers: Sequence[nn.Module]) -> list[torch.Tensor]:
        """`feedback(layer)` of each layer, in order, as if called one by one (under no_grad).

        The supernet asks for those of all its rule-batched layers of this rule at once; a rule
        can override this to make them with a few foreach operations instead of a few per layer.
        """
        return [self.feedback(layer) for layer in layers]

    def layer_forward(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            feedback = self.feedback(layer)
        return rule_forward(layer, x, send=feedback)

    def effective_feedback(self, layer: nn.Module) -> torch.Tensor:
        # A rule whose feedback() advances state (brsf) overrides this with a pure read.
        return self.feedback(layer)
