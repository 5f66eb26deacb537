"""convert(), exact_gradients() and alignment(): rules over a whole network."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Union

import torch
from torch import nn

from bionas.rules.base import LearningRule
from bionas.rules.layers import is_layer, release, release_module_rules, rule_of, wrappable_layers
from bionas.rules.tap import has_output_tap, install_output_tap, remove_output_tap

RuleLike = Union[str, LearningRule, None]
RuleSpec = Union[str, LearningRule, Mapping[str, RuleLike]]


def _resolve(value: RuleLike) -> LearningRule | None:
    if value is None or isinstance(value, LearningRule):
        return value
    if isinstance(value, str):
        from bionas.registry import get_rule  # the registry imports this package

        return get_rule(value)
    raise TypeError(f"a rule is a name, a bionas.LearningRule or None, not {type(value).__name__}")


def _candidates(name: str) -> list[str]:
    """The layer's name and its ancestors' names: 'a.b.c', 'a.b', 'a'."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


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
    entries = [(glob, _resolve(value)) for glob, value in rule.items()]
    assignment = {}
    for name in layers:
        names = _candidates(name)
        assignment[name] = next((r for glob, r in entries if any(fnmatchcase(n, glob) for n in names)), None)
    return assignment


def convert(model: nn.Module, rule: RuleSpec) -> nn.Module:
    """Make the Conv2d/Linear layers of `model` learn by `rule`, in place; returns the model.

    `rule` is a name (`"fa"`), a LearningRule, or a mapping {module-name glob: name or rule}
    (first matching glob wins, see `assign_rules`); layers not matched learn by backprop
    (plain layers). Each rule's `apply` gets the largest modules whose layers all share it,
    so a module-level rule (pc) runs over the layers it was given together. When rules
    that need the network-output error (dfa) are created and the model has no OutputTap,
    one is installed on the model's output.
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
    model = place(model, "")
    if any(getattr(rule_of(m), "needs_output_tap", False) for m in model.modules()):
        install_output_tap(model)
    elif has_output_tap(model):
        remove_output_tap(model)
    return model


@contextlib.contextmanager
def exact_gradients(model: nn.Module) -> Iterator[nn.Module]:
    """Inside it, every rule layer and module of `model` back-propagates the true gradient.

    Graphs recorded inside the context (the forward pass decides) give the exact input and
    weight gradients, as if no layer had a rule. Nests, and restores on exceptions.
    """
    modules = [m for m in model.modules() if rule_of(m) is not None]
    for module in modules:
        module._bionas_exact += 1
    try:
        yield model
    finally:
        for module in modules:
            if "_bionas_exact" in module.__dict__:
                module._bionas_exact -= 1


@dataclass(frozen=True)
class LayerAlignment:
    """How the feedback a layer sends errors with compares with its weight."""

    rule: str
    angle_deg: float  # arccos(<B, W> / (|B| |W|)) in degrees; NaN when the rule has no weight-shaped B
    norm_ratio: float  # |B| / |W|; NaN likewise


def alignment(model: nn.Module) -> dict[str, LayerAlignment]:
    """Per Conv2d/Linear (by module name): the rule, the angle between its effective feedback and
    its weight, and their norm ratio.

    Plain layers (backprop) send with W itself: 0 degrees, ratio 1. Rules without a
    weight-shaped feedback (dfa, hebbian with error=block) report NaN; pc (its inference uses
    the true Jacobians) and hebbian with error=pass report W.
    """
    report = {}
    with torch.no_grad():
        for name, layer in model.named_modules():
            if not is_layer(layer):
                continue
            rule = rule_of(layer)
            feedback = layer.weight if rule is None else rule.effective_feedback(layer)
            report[name] = _compare("bp" if rule is None else rule.name, feedback, layer.weight)
    return report


def _compare(rule: str, feedback: torch.Tensor | None, weight: torch.Tensor) -> LayerAlignment:
    if feedback is None:
        return LayerAlignment(rule, math.nan, math.nan)
    b = feedback.detach().double().flatten()
    w = weight.detach().double().flatten()
    nb, nw = b.norm().item(), w.norm().item()
    if nb == 0 or nw == 0:
        return LayerAlignment(rule, math.nan, nb / nw if nw else math.nan)
    cos = max(-1.0, min(1.0, (b @ w).item() / (nb * nw)))
    return LayerAlignment(rule, math.degrees(math.acos(cos)), nb / nw)
