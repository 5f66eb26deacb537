"""Learning rules, engine side: the LearningRule / FeedbackRule bases, layer wrapping, the shared
autograd function, the output tap, convert(), exact_gradients() and alignment().

The engine knows no concrete rule: `convert` resolves names through the registry
(`bionas.get_rule`); the rules themselves are plugins (first-party: plugins/bionas_rules).

    layers.py    class swapping (RuleConv2d(nn.Conv2d), ...), rule buffers, rule_forward()
    base.py      LearningRule, FeedbackRule
    tap.py       OutputTap and the per-forward error context (direct feedback)
    seeding.py   per-layer seeds, seeded draws, the optimizer-step clock
    convert.py   convert(), exact_gradients(), alignment()
"""

from bionas.rules.base import FeedbackRule, LearningRule
from bionas.rules.convert import LayerAlignment, alignment, assign_rules, convert, exact_gradients
from bionas.rules.layers import (
    RuleLayerMixin,
    RuleModuleMixin,
    add_buffer,
    attach,
    conv_geometry,
    is_layer,
    local_gradients,
    plain_forward,
    release,
    release_module_rules,
    rule_forward,
    rule_of,
    weight_gradient,
    wrappable_layers,
)
from bionas.rules.tap import ErrorContext, OutputTap, open_error_context, tap

__all__ = [
    "LearningRule",
    "FeedbackRule",
    "convert",
    "assign_rules",
    "exact_gradients",
    "alignment",
    "LayerAlignment",
    "OutputTap",
    "ErrorContext",
    "open_error_context",
    "tap",
    "RuleLayerMixin",
    "RuleModuleMixin",
    "add_buffer",
    "attach",
    "release",
    "release_module_rules",
    "rule_forward",
    "rule_of",
    "is_layer",
    "plain_forward",
    "conv_geometry",
    "local_gradients",
    "weight_gradient",
    "wrappable_layers",
]
