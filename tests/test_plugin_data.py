"""What the engine asks plugins instead of naming them: the default search space, and surrogates."""

from __future__ import annotations

import pytest
import yaml
from pydantic import Field
from typer.testing import CliRunner

import bionas
from bionas import registry
from bionas.cli import build_app
from bionas.pipeline import Pipeline
from bionas.rules import rule_of
from bionas.space import SearchSpace, Supernet
from bionas.spec import SpaceSpec, default_exclude, default_fixed_rule, default_ops, default_rules, load_spec
from bionas_ops import DARTS_OPS

NO_SPACE = {"name": "nospace", "dataset": "digits", "search": {"name": "darts"}}


def test_the_default_space_is_the_first_party_plugins_data():
    assert default_ops() == DARTS_OPS
    assert default_rules() == ["usf", "brsf", "frsf", "fa"]
    assert default_exclude(DARTS_OPS, default_rules()) == [("skip_connect", "fa")]
    assert default_fixed_rule() == "bp"
    space = SpaceSpec()
    assert space.ops == DARTS_OPS and [r.name for r in space.rules] == ["usf", "brsf", "frsf", "fa"]
    assert space.exclude == [("skip_connect", "fa")] and space.fixed_rules.stem.name == "bp"


@pytest.mark.parametrize(("disabled", "message"), [
    ("bionas_rules", "space.rules: no installed rule is a default search candidate"),
    ("bionas_ops", "space.ops: no installed op is in the default search space"),
])
def test_a_spec_without_space_says_what_a_disabled_plugin_package_left_out(tmp_path, monkeypatch, disabled, message):
    monkeypatch.setenv(registry.DISABLE_ENV, disabled)
    registry.reset()
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(NO_SPACE))
    result = CliRunner().invoke(build_app(), ["validate", str(tmp_path / "spec.yaml")])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output


def test_without_a_backprop_rule_the_fixed_layers_stay_plain(monkeypatch, toy_plugins):
    monkeypatch.setenv(registry.DISABLE_ENV, "bionas_rules")
    registry.reset()
    registry.get_registry().register_plugin(toy_plugins.plugin, "toy-plugins")
    spec = load_spec({**NO_SPACE, "space": {"rules": ["toy_rule"], "ops": ["skip_connect", "sep_conv_3x3"],
                                            "channels": 4, "cells": 3}})
    assert spec.to_dict()["space"]["fixed_rules"] == dict.fromkeys(["stem", "preprocess", "classifier", "auxiliary"])
    assert spec.space.exclude == []  # skip_connect excludes fa, which is not listed
    supernet = Supernet(SearchSpace(spec.space), 10, 1)
    assert rule_of(supernet.stem[0]) is None and rule_of(supernet.classifier) is None  # plain: backprop
    assert {rule_of(m).name for m in supernet.cells.modules() if rule_of(m) is not None} == {"toy_rule"}


def test_the_pipeline_asks_each_attack_whether_it_needs_a_surrogate(tmp_path):
    class Crafted(bionas.Attack):
        name = "crafted"
        description = "Needs a surrogate unless it has one (a test attack)."

        class Options(bionas.PluginOptions):
            eps: float = Field(default=0.1, ge=0, description="Budget.")
            surrogate: str | None = Field(default=None, description="A saved surrogate.")

        @property
        def needs_surrogate(self):
            return self.options.surrogate is None

    class Plugin:
        @bionas.hookimpl
        def bionas_register_attacks(self, register):
            register(Crafted)

    registry.get_registry().register_plugin(Plugin(), "crafted")
    spec = {"name": "s", "dataset": "digits", "genotype": bionas.space.DARTS_V2.to_dict(),
            "evaluation": {"attacks": [{"name": "fgsm"}]}}

    def stages(attack):
        pipeline = Pipeline(load_spec({**spec, "evaluation": {"attacks": [attack]}}), tmp_path, False, True)
        return pipeline.reused_stages()

    assert stages({"name": "fgsm"}) == ["retrain"]
    assert stages({"name": "crafted"}) == ["retrain", "surrogate"]
    assert stages({"name": "crafted", "options": {"surrogate": "elsewhere"}}) == ["retrain"]
    assert not bionas.get_attack("fgsm").needs_surrogate
    assert bionas.get_attack("transfer").needs_surrogate
    assert not bionas.get_attack("transfer", surrogate="run").needs_surrogate
