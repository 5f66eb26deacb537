"""Helpers of the search-space tests: stand-in rules while the learning-rules branch is not merged."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bionas
from bionas import registry

ALL_RULES = ["bp", "fa", "dfa", "usf", "brsf", "frsf", "hebbian", "pc"]


def _stand_in(rule_name: str) -> type:
    class StandIn(bionas.LearningRule):
        name = rule_name
        description = "Backprop stand-in: tags each Conv2d/Linear with its rule name."

        def apply(self, module: nn.Module) -> nn.Module:
            for layer in module.modules():
                if isinstance(layer, (nn.Conv2d, nn.Linear)):
                    layer.stand_in_rule = self.name
            return module

    return StandIn


class _StandIns:
    def __init__(self, names):
        self.classes = [_stand_in(n) for n in names]

    @bionas.hookimpl
    def bionas_register_rules(self, register):
        for cls in self.classes:
            register(cls)


@pytest.fixture
def rules():
    """Every rule name usable: the registered rule, or a stand-in where none is registered yet."""
    reg = registry.get_registry()
    missing = [n for n in ALL_RULES if n not in reg.names("rule")]
    name = reg.register_plugin(_StandIns(missing), "space-test-rules") if missing else None
    yield ALL_RULES
    if name:
        reg.unregister_plugin(name)


def layer_rules(module: nn.Module) -> dict[str, str]:
    """{layer name: rule name} of every Conv2d/Linear in `module` that a rule was applied to."""
    found = {}
    for name, layer in module.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)) and hasattr(layer, "stand_in_rule"):
            found[name] = layer.stand_in_rule
    return found


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: on a small shared CPU, thread contention makes these tests many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
