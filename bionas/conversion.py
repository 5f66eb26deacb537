"""convert(): make the Conv2d/Linear layers of any model learn by rules, given by name or by instance.

The rule machinery (bionas.rules) knows no rule by name; this module resolves
names through the registry, so it sits above it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Union

from torch import nn

from bionas.registry import get_rule
from bionas.rules import (
    LearningRule,
    has_output_tap,
    install_output_tap,
    release,
    release_module_rules,
    remove_output_tap,
    rule_of,
    wrappable_layers,
)
from bionas.rules.globs import first_match
from bionas.rules.base import keeping_weights

RuleLike = Union[str, LearningRule, None]
RuleSpec = Union[str, LearningRule, Mapping[str, RuleLike]]


def _resolve(value: RuleLike) -> LearningRule | None:
    if value is None or isinstance(value, LearningRule):
        return value
    if isinstance(value, str):
        return get_rule(value)
    raise TypeError(f"a rule is a name, a bionas.LearningRule or None, not {type(value).__name__}")


def assign_rules(model: nn.Module, rule: RuleSpec) -> dict[str, LearningRule | None]:
    """layer name -> the rule `convert(model, rule)` gives it (None: unmatched, keeps bp).

    With a mapping, each layer takes the rule of the first glob (in mapping order) that
    matches its name or the name of one of its ancestors (fnmatch, case-sensitive, names as
    in model.named_modules(); '*' also matches dots). Each name in the mapping makes one rule.
    """
    layers = [name for name, _ in wrappable_layers(model)]
    if not isinstance(rule, Mapping):
        resolved = _resolve(rule)
        return {name: resolved for name in layers}
    globs = list(rule)
    resolved = [_resolve(value) for value in rule.values()]
    assignment = {}
    for name in layers:
        index = first_match(name, globs)
        assignment[name] = None if index is None else resolved[index]
    return assignment


def convert(model: nn.Module, rule: RuleSpec, *, keep_weights: bool = True) -> nn.Module:
    """Make the Conv2d/Linear layers of `model` learn by `rule`, in place; returns the model.

    `rule` is a name (`"fa"`), a LearningRule, or a mapping {module-name glob: name or rule}
    (first matching glob wins, see `assign_rules`); layers not matched learn by backprop
    (plain layers). Each rule's `apply` gets the largest modules whose layers all share it,
    so a module-level rule (pc) runs over the layers it was given together. When rules
    that need the network-output error (dfa) are created and the model has no OutputTap,
    one is installed on the model's output.

    keep_weights=True (default) leaves every weight and bias as it is, as BioTorch's
    converter does by default (`copy_weights=True`): the model may be a trained one.
    keep_weights=False lets each rule initialise the layers it wraps (`init_weights`: the
    feedback rules' `weight_init` option, Xavier-uniform W and zero bias by default), as
    BioTorch does for the layers it makes (`copy_weights=False`): for a fresh network.
    """
    assignment = assign_rules(model, rule)
    rules = {id(r): r for r in assignment.values()}
    below: dict[str, set[int]] = {}

    def collect(module: nn.Module, prefix: str) -> set[int]:
        ids = {id(assignment[prefix])} if prefix in assignment else set()
        for name, child in module.named_children():
            ids |= collect(child, f"{prefix}.{name}" if prefix else name)
        below[prefix] = ids
        return ids

    def place(module: nn.Module, prefix: str) -> nn.Module:
        ids = below[prefix]
        if len(ids) == 1:
            chosen = rules[next(iter(ids))]
            if chosen is None:
                for _, layer in wrappable_layers(module):
                    release(layer)
                return module
            return chosen.apply(module)
        for name, child in list(module.named_children()):
            new = place(child, f"{prefix}.{name}" if prefix else name)
            if new is not child:
                setattr(module, name, new)
        return module

    collect(model, "")
    release_module_rules(model)
    with keeping_weights(keep_weights):
        model = place(model, "")
    if any(getattr(rule_of(m), "needs_output_tap", False) for m in model.modules()):
        install_output_tap(model)
    elif has_output_tap(model):
        remove_output_tap(model)
    return model
