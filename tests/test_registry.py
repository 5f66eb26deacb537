"""The plugin engine: registration, lookup errors, broken and conflicting plugins, env switches."""

import pytest
import torch
from pydantic import Field

import bionas
from bionas import registry
from bionas.errors import PluginError, SpecError


def test_in_process_plugin_is_listed_and_made_with_options(toy_plugins):
    names = {(info.kind, info.name) for info in bionas.list_plugins()}
    assert {("rule", "toy_rule"), ("op", "toy_op"), ("search", "toy_search")} <= names
    rule = bionas.get_rule("toy_rule", scale=2.0)
    assert isinstance(rule, bionas.FeedbackRule) and rule.options.scale == 2.0
    layer = torch.nn.Linear(2, 2)
    assert torch.equal(rule.feedback(layer), 2.0 * layer.weight.detach())
    [info] = [i for i in bionas.list_plugins("attack") if i.name == "toy_attack"]
    assert info.distribution == "(in-process)" and info.plugin == "toy-plugins"


def test_unknown_name_suggests_close_names_and_lists_the_kind(toy_plugins):
    with pytest.raises(PluginError) as err:
        bionas.get_rule("toy_rul")
    message = str(err.value)
    assert "unknown rule 'toy_rul'" in message
    assert "Did you mean: toy_rule?" in message
    assert "Known rules:" in message and "toy_rule" in message


def test_unknown_kind_is_an_error():
    with pytest.raises(PluginError, match="unknown plugin kind 'rulez'.*Did you mean: rule"):
        bionas.list_plugins("rulez")


def test_bad_options_name_the_field(toy_plugins):
    with pytest.raises(SpecError) as err:
        bionas.get_rule("toy_rule", scale=-1, colour="red")
    assert "scale: Input should be greater than 0" in str(err.value)
    assert "colour: unknown field" in str(err.value)


@pytest.mark.parametrize(
    "attrs, reason",
    [
        ({"name": "Bad Name"}, "lowercase"),
        ({"description": ""}, "no description"),
        ({"Options": type("Options", (bionas.PluginOptions,), {"__annotations__": {"x": int}, "x": 1})}, "x"),
    ],
)
def test_malformed_class_is_refused_and_its_siblings_kept(attrs, reason):
    good = type("Good", (bionas.FeedbackRule,), {"name": "good", "description": "Fine."})
    bad = type("Bad", (bionas.FeedbackRule,), {"name": "bad", "description": "Not fine.", **attrs})

    class Plugin:
        @bionas.hookimpl
        def bionas_register_rules(self, register):
            register(bad)
            register(good)

    reg = registry.get_registry()
    reg.register_plugin(Plugin(), "mixed")
    assert "good" in reg.names("rule") and "bad" not in reg.names("rule")
    [problem] = reg.problems
    assert problem.plugin == "mixed" and reason in problem.reason


def test_options_must_forbid_unknown_keys():
    class Loose(bionas.FeedbackRule):
        name = "loose"
        description = "Options that accept anything."

        class Options(bionas.PluginOptions):
            model_config = {"extra": "allow"}
            x: int = Field(default=1, description="x")

    class Plugin:
        @bionas.hookimpl
        def bionas_register_rules(self, register):
            register(Loose)

    reg = registry.get_registry()
    reg.register_plugin(Plugin(), "loose")
    assert "loose" not in reg.names("rule")
    assert "extra='forbid'" in reg.problems[0].reason


def test_broken_plugin_is_reported_and_the_rest_work(make_distribution, toy_rule_source):
    make_distribution("good-dist", {"good_mod": toy_rule_source.format(name="good_rule")}, {"good": "good_mod"})
    make_distribution("broken-dist", {"broken_mod": "raise RuntimeError('no GPU driver')\n"}, {"broken": "broken_mod"})
    registry.reset()
    reg = registry.get_registry()
    assert "good_rule" in reg.names("rule")
    [problem] = [p for p in reg.problems if p.plugin == "broken"]
    assert problem.distribution == "broken-dist" and problem.version == "1.0"
    assert "RuntimeError: no GPU driver" in problem.reason
    assert "broken" in str(problem) and "broken-dist" in str(problem)


def test_strict_mode_makes_a_broken_plugin_fatal(make_distribution, monkeypatch):
    make_distribution("broken-dist", {"broken_mod": "import not_a_module_anywhere\n"}, {"broken": "broken_mod"})
    monkeypatch.setenv(registry.STRICT_ENV, "1")
    registry.reset()
    with pytest.raises(PluginError, match="broken.*ModuleNotFoundError"):
        registry.get_registry()


def test_disabled_entry_points_are_not_loaded(make_distribution, monkeypatch):
    make_distribution("broken-dist", {"broken_mod": "raise RuntimeError('boom')\n"}, {"broken": "broken_mod"})
    monkeypatch.setenv(registry.DISABLE_ENV, "broken, other")
    registry.reset()
    assert not [p for p in registry.get_registry().problems if p.plugin == "broken"]


def test_one_name_from_two_distributions_names_both(make_distribution, toy_rule_source):
    source = toy_rule_source.format(name="twin")
    make_distribution("first-dist", {"first_mod": source}, {"first": "first_mod"})
    make_distribution("second-dist", {"second_mod": source}, {"second": "second_mod"})
    registry.reset()
    with pytest.raises(PluginError) as err:
        bionas.get_rule("twin")
    assert "first-dist" in str(err.value) and "second-dist" in str(err.value)
    assert any("twin" in c for c in registry.get_registry().conflicts())


def test_one_entry_point_name_from_two_distributions_is_a_problem_naming_both(
    make_distribution, toy_rule_source, monkeypatch
):
    make_distribution("first-dist", {"first_mod": toy_rule_source.format(name="first_rule")}, {"twin": "first_mod"})
    make_distribution("second-dist", {"second_mod": toy_rule_source.format(name="second_rule")}, {"twin": "second_mod"})
    registry.reset()
    reg = registry.get_registry()
    [problem] = [p for p in reg.problems if p.plugin == "twin"]
    assert len({"first_rule", "second_rule"} & set(reg.names("rule"))) == 1  # the first found is kept
    assert "first-dist" in str(problem) and "second-dist" in str(problem)
    monkeypatch.setenv(registry.STRICT_ENV, "1")
    registry.reset()
    with pytest.raises(PluginError, match="first-dist|second-dist"):
        registry.get_registry()


def test_strict_mode_names_a_refused_class_once_and_keeps_the_registry_whole(monkeypatch):
    monkeypatch.setenv(registry.STRICT_ENV, "1")
    registry.reset()
    reg = registry.get_registry()
    before = reg.names("rule")
    bad = type("Bad", (bionas.FeedbackRule,), {"name": "Bad Name", "description": "Not fine."})

    class Plugin:
        @bionas.hookimpl
        def bionas_register_rules(self, register):
            register(bad)

    with pytest.raises(PluginError) as err:
        reg.register_plugin(Plugin(), "bad")
    message = str(err.value)
    assert "lowercase" in message and message.count("lowercase") == 1
    assert message.count(registry.STRICT_ENV) == 1
    assert reg.names("rule") == before and not reg.problems and not reg.pm.has_plugin("bad")


def test_strict_mode_with_a_failing_hook_reports_it_once(make_distribution, monkeypatch):
    source = "import bionas\n\n@bionas.hookimpl\ndef bionas_register_rules(register):\n    raise ValueError('bad')\n"
    make_distribution("hooky-dist", {"hooky_mod": source}, {"hooky": "hooky_mod"})
    monkeypatch.setenv(registry.STRICT_ENV, "1")
    registry.reset()
    with pytest.raises(PluginError) as err:
        registry.get_registry()
    message = str(err.value)
    assert "hooky-dist" in message and "ValueError: bad" in message
    assert message.count(registry.STRICT_ENV) == 1 and message.count("ValueError") == 1
