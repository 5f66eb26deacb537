"""Helpers of the search-space tests."""

from __future__ import annotations

import pytest
from torch import nn

from bionas import registry
from bionas.rules import rule_of

ALL_RULES = ["bp", "fa", "dfa", "usf", "brsf", "frsf", "hebbian", "pc"]


@pytest.fixture
def rules() -> list[str]:
    """Every first-party rule name (checked to be registered)."""
    assert set(ALL_RULES) <= set(registry.get_registry().names("rule"))
    return ALL_RULES


def layer_rules(module: nn.Module) -> dict[str, str]:
    """{layer name: rule name} of every Conv2d/Linear in `module`; bp leaves layers plain."""
    found = {}
    for name, layer in module.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            rule = rule_of(layer)
            found[name] = "bp" if rule is None else rule.name
    return found
