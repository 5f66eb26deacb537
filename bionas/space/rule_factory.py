"""Learning-rule instances for a model bionas builds, from the references its genotype or space holds."""

from __future__ import annotations

from typing import Any

from bionas.registry import Registry, get_registry
from bionas.rules.refs import RuleRef, rule_name, rule_options


class RuleFactory:
    """Rules from references ("usf" or {"name": ..., "options": {...}}), one instance per distinct rule.

    A model built by bionas shares one instance per distinct rule among its layers.
    A reference of None gives None: the layers stay plain (backprop).
    """

    def __init__(self, registry: Registry | None = None):
        self.registry = registry
        self._made: dict[str, Any] = {}

    def __call__(self, ref: RuleRef | None):
        if ref is None:
            return None
        name, options = rule_name(ref), rule_options(ref)
        key = f"{name}:{sorted(options.items())!r}"
        if key not in self._made:
            self._made[key] = (self.registry or get_registry()).create("rule", name, **options)
        return self._made[key]
