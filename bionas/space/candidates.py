"""The joint space: the flat list of (operation, rule) candidates every searched edge chooses from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from torch import nn

from bionas.errors import PluginError, SpecError, format_pydantic_errors
from bionas.ops import Operation
from bionas.registry import Registry, get_registry
from bionas.rules.refs import RuleRef, rule_ref
from bionas.space.rule_factory import RuleFactory
from bionas.spec import SpaceSpec

FIXED_LAYERS = ("stem", "preprocess", "classifier", "auxiliary")


@dataclass(frozen=True)
class Candidate:
    """One entry of an edge's candidate list: an op, and its rule (None for a parameter-free op).

    `rule_options` holds only the options that differ from the rule's defaults.
    """

    op: str
    rule: str | None
    rule_options: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def label(self) -> str:
        """`sep_conv_3x3/usf`, `sep_conv_3x3/fa{'seed': 1}`, or `max_pool_3x3` for a parameter-free op."""
        if self.rule is None:
            return self.op
        return f"{self.op}/{self.rule}" + (f"{self.rule_options}" if self.rule_options else "")

    @property
    def rule_ref(self) -> str | dict[str, Any] | None:
        """The rule as a genotype records it."""
        return None if self.rule is None else rule_ref(self.rule, self.rule_options)


class SearchSpace:
    """The candidates of a validated SpaceSpec, with the op and rule plugins that build them.

    Order (stable, documented): ops in the order of `spec.ops`; a parameter-free
    op once, a parametric op once per rule in the order of `spec.rules`, minus
    `spec.exclude`. A rule listed twice with different options gives two
    candidates per parametric op; an excluded (op, rule) pair removes both.
    The paper's default space has 22 candidates; the 8 DARTS ops with
    `rules: [bp]` have the 8 DARTS candidates.
    """

    def __init__(self, spec=None, registry: Registry | None = None):
        """`spec`: a SpaceSpec, its dict form, or None for the default space; `registry`: default the global one."""
        if not isinstance(spec, SpaceSpec):
            try:
                spec = SpaceSpec.model_validate(spec or {})
            except ValidationError as err:
                raise SpecError(format_pydantic_errors(err, prefix="space")) from None
        self.spec = spec
        self.registry = registry or get_registry()
        errors: list[str] = []
        self.ops: dict[str, Operation] = {}
        for i, name in enumerate(spec.ops):
            try:
                self.ops[name] = self.registry.create("op", name)
            except PluginError as exc:
                errors.append(f"space.ops[{i}]: {exc}")
        self.rule_refs: list[tuple[str, dict[str, Any]]] = []  # (name, non-default options), in spec order
        for i, ref in enumerate(spec.rules):
            rule = (ref.name, self._non_default_options(ref, f"space.rules[{i}]", errors))
            if rule in self.rule_refs:
                errors.append(f"space.rules[{i}]: rule '{ref.name}' is listed twice (options equal after defaults)")
            self.rule_refs.append(rule)
        self.fixed_rules: dict[str, RuleRef | None] = {}  # None: plain layers
        for layer in FIXED_LAYERS:
            ref = getattr(spec.fixed_rules, layer)
            if ref is None:
                self.fixed_rules[layer] = None
                continue
            options = self._non_default_options(ref, f"space.fixed_rules.{layer}", errors)
            self.fixed_rules[layer] = rule_ref(ref.name, options)
        for i, (op, _rule) in enumerate(spec.exclude):
            if op in self.ops and not self.ops[op].parametric:
                errors.append(f"space.exclude[{i}]: op '{op}' is parameter-free: it has no rule variants to exclude")
        if errors:
            raise SpecError(errors)
        self.candidates = self._candidates()
        if not self.candidates:
            raise SpecError(["space.exclude: every candidate is excluded"])
        self.rules = RuleFactory(self.registry)

    def _non_default_options(self, ref, path: str, errors: list[str]) -> dict[str, Any]:
        try:
            options_model = self.registry.get_class("rule", ref.name).Options
        except PluginError as exc:
            errors.append(f"{path}.name: {exc}")
            return {}
        try:
            return options_model.model_validate(ref.options).model_dump(mode="json", exclude_defaults=True)
        except ValidationError as err:
            errors.extend(format_pydantic_errors(err, prefix=f"{path}.options"))
            return {}

    def _candidates(self) -> list[Candidate]:
        excluded = set(self.spec.exclude)
        candidates = []
        for name, op in self.ops.items():
            if not op.parametric:
                candidates.append(Candidate(name, None))
                continue
            candidates += [
                Candidate(name, rule, options) for rule, options in self.rule_refs if (name, rule) not in excluded
            ]
        return candidates

    @property
    def num_candidates(self) -> int:
        return len(self.candidates)

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.candidates]

    def index(self, op: str, rule: str | None = None, rule_options: dict[str, Any] | None = None) -> int:
        """The position of (op, rule) in `candidates` (`rule_options`: the non-default ones, if any)."""
        for i, c in enumerate(self.candidates):
            if c.op == op and c.rule == rule and c.rule_options == (rule_options or {}):
                return i
        raise KeyError(f"({op}, {rule}) is not a candidate of this space: {', '.join(self.labels)}")

    def is_zero(self, index: int) -> bool:
        """The candidate outputs zeros (DARTS 'none')."""
        return self.ops[self.candidates[index].op].zero

    def build_candidate(self, index: int, channels: int, stride: int, affine: bool = False) -> nn.Module:
        """The module of candidate `index` on one edge (affine=False: for the supernet, as DARTS)."""
        candidate = self.candidates[index]
        return self.ops[candidate.op].build(channels, stride, self.rules(candidate.rule_ref), affine)

    def fixed_rule(self, layer: str):
        """The LearningRule of a non-searched layer group: stem, preprocess, classifier or auxiliary."""
        return self.rules(self.fixed_rules[layer])

    def __repr__(self) -> str:
        return f"SearchSpace({self.num_candidates} candidates: {', '.join(self.labels)})"
