"""Learning rules, engine side: the LearningRule / FeedbackRule bases, layer wrapping, the shared
autograd function, the output tap, the training-step clock, exact_gradients() and alignment().

This package names no rule and imports no registry: the registry imports its bases.
`bionas.convert`, which resolves rule names, lives above the registry (bionas/conversion.py);
the rules themselves are plugins (first-party: plugins/bionas_rules).

    layers.py     class swapping (RuleConv2d(nn.Conv2d), ...), rule buffers, rule_forward(),
                  no_weight_gradients()
    base.py       LearningRule, FeedbackRule
    tap.py        OutputTap and the per-forward error context (direct feedback)
    seeding.py    per-layer seeds, seeded draws, the training-step clock and hold_feedback()
    gradients.py  exact_gradients(), alignment()
    refs.py       rule references as specs and genotypes write them
    globs.py      which glob of a {module-name glob: rule} mapping gives each layer its rule
"""

from bionas.rules.base import FeedbackRule, LearningRule
from bionas.rules.gradients import LayerAlignment, alignment, exact_gradients
from bionas.rules.layers import (
    RuleLayerMixin,
    RuleModuleMixin,
    add_buffer,
    attach,
    conv_geometry,
    is_layer,
    local_gradients,
    no_weight_gradients,
    plain_forward,
    release,
    release_module_rules,
    rule_forward,
    rule_of,
    weight_gradient,
    weight_gradients_enabled,
    wrappable_layers,
)
from bionas.rules.refs import RuleRef, rule_name, rule_options, rule_ref
from bionas.rules.seeding import hold_feedback, new_training_step, next_training_step
from bionas.rules.tap import (
    ErrorContext,
    OutputTap,
    has_output_tap,
    install_output_tap,
    open_error_context,
    remove_output_tap,
    tap,
)

__all__ = [
    "LearningRule",
    "FeedbackRule",
    "exact_gradients",
    "no_weight_gradients",
    "weight_gradients_enabled",
    "alignment",
    "LayerAlignment",
    "hold_feedback",
    "new_training_step",
    "next_training_step",
    "OutputTap",
    "ErrorContext",
    "open_error_context",
    "tap",
    "has_output_tap",
    "install_output_tap",
    "remove_output_tap",
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
    "RuleRef",
    "rule_name",
    "rule_options",
    "rule_ref",
]
