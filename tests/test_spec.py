"""The run spec: two-phase validation with field paths, fractions, and the JSON schema."""

import json

import pytest

import bionas
from bionas.errors import SpecError
from bionas.spec import load_spec, spec_json_schema


def errors_of(data) -> list[str]:
    with pytest.raises(SpecError) as err:
        load_spec(data)
    return err.value.errors


def test_valid_spec_fills_plugin_defaults(toy_plugins):
    spec = load_spec(toy_plugins.spec())
    assert spec.search.options == {"epochs": 2}
    assert spec.dataset.options == {"root": "data"}  # default filled in by phase 2
    assert spec.space.rules[0].name == "toy_rule"  # string shorthand
    assert spec.evaluation.attacks[0].eps == [pytest.approx(8 / 255)]
    assert spec.retrain.epochs == 600 and spec.retrain.cells == 20  # the DARTS recipe
    assert json.loads(json.dumps(spec.to_dict()))["name"] == "toy"


def test_yaml_and_json_files_load(toy_plugins, tmp_path):
    import yaml

    (tmp_path / "s.yaml").write_text(yaml.safe_dump(toy_plugins.spec()))
    (tmp_path / "s.json").write_text(json.dumps(toy_plugins.spec()))
    assert load_spec(tmp_path / "s.yaml") == load_spec(tmp_path / "s.json")


def test_unknown_plugin_name_is_reported_at_its_path(toy_plugins):
    errors = errors_of(toy_plugins.spec(search={"name": "toy_serch"}))
    assert errors == [
        "search.name: unknown search strategy 'toy_serch'. Did you mean: toy_search? "
        "Known search strategies: darts, egnas, random, toy_search."
    ]


def test_plugin_option_errors_carry_the_full_path(toy_plugins):
    spec = toy_plugins.spec(search={"name": "toy_search", "options": {"epochs": 0, "epoch": 3}})
    spec["space"]["rules"] = ["toy_rule", {"name": "toy_rule", "options": {"scale": "big"}}]
    errors = errors_of(spec)
    assert "search.options.epochs: Input should be greater than 0" in errors
    assert "search.options.epoch: unknown field (not allowed here)" in errors
    assert any(e.startswith("space.rules[1].options.scale: Input should be a valid number") for e in errors)


def test_skeleton_errors_wrong_type_unknown_key_missing_section(toy_plugins):
    spec = toy_plugins.spec(seed="zero", colour="red")
    del spec["dataset"]
    errors = errors_of(spec)
    assert "seed: Input should be a valid integer, unable to parse string as an integer" in errors
    assert "colour: unknown field (not allowed here)" in errors
    assert "dataset: Field required" in errors


def test_search_or_genotype_is_required(toy_plugins):
    assert errors_of(toy_plugins.spec(search=None)) == [
        "search: missing; give a search section, a genotype to retrain, or a model to train"
    ]
    spec = load_spec(toy_plugins.spec(search=None, genotype="genotype.json"))  # file unread
    assert spec.genotype == "genotype.json"


def test_unknown_op_is_reported(toy_plugins):
    spec = toy_plugins.spec()
    spec["space"]["ops"] = ["toy_op", "toy_opp"]
    known = ", ".join(bionas.registry.get_registry().names("op"))  # first-party ops and toy_op
    assert errors_of(spec) == [f"space.ops[1]: unknown op 'toy_opp'. Did you mean: toy_op? Known ops: {known}."]


@pytest.mark.parametrize("field, value", [("rules", None), ("rules", 5), ("ops", None), ("ops", 3)])
def test_ops_or_rules_not_a_list_is_an_error_not_a_crash(toy_plugins, field, value):
    spec = toy_plugins.spec()
    spec["space"] = {**spec["space"], field: value}
    assert errors_of(spec) == [f"space.{field}: Input should be a valid list"]


def test_a_spec_file_not_in_utf8_is_an_error(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    errors = errors_of(path)
    assert len(errors) == 1 and errors[0].startswith("not UTF-8 text")


@pytest.mark.parametrize("text, value", [("8/255", 8 / 255), ("0.3", 0.3), (0.5, 0.5), ("1/4", 0.25)])
def test_budgets_accept_fractions(toy_plugins, text, value):
    spec = toy_plugins.spec(evaluation={"attacks": [{"name": "toy_attack", "eps": [text]}]})
    assert load_spec(spec).evaluation.attacks[0].eps == [pytest.approx(value)]


def test_a_malformed_fraction_is_an_error(toy_plugins):
    spec = toy_plugins.spec(evaluation={"attacks": [{"name": "toy_attack", "eps": ["8//255"]}]})
    assert errors_of(spec) == ["evaluation.attacks[0].eps[0]: expected a number or a fraction like 8/255, got '8//255'"]


FIRST_PARTY = "bionas_rules,bionas_ops,bionas_search,bionas_datasets,bionas_attacks,bionas_loggers"


def test_schema_includes_each_plugin_options_keyed_by_name(monkeypatch, toy_plugins):
    # With the first-party plugins disabled, each kind has exactly one plugin (a toy): no union to discriminate.
    monkeypatch.setenv(bionas.registry.DISABLE_ENV, FIRST_PARTY)
    bionas.registry.reset()
    bionas.registry.get_registry().register_plugin(toy_plugins.plugin, "toy-plugins")
    schema = spec_json_schema()
    assert '"discriminator"' not in json.dumps(schema)
    defs = schema["$defs"]
    toy = defs["SearchToySearch"]
    assert toy["properties"]["name"]["const"] == "toy_search"
    options = defs[toy["properties"]["options"]["$ref"].split("/")[-1]]
    assert options["properties"]["epochs"]["exclusiveMinimum"] == 0
    assert options["additionalProperties"] is False
    assert "RuleToyRule" in defs and "AttackToyAttack" in defs and "DatasetToyData" in defs


def test_schema_with_two_plugins_of_a_kind_is_a_discriminated_union(toy_plugins):
    class Other(bionas.SearchStrategy):
        name = "other_search"
        description = "Another."

    class Plugin:
        @bionas.hookimpl
        def bionas_register_search_strategies(self, register):
            register(Other)

    bionas.registry.get_registry().register_plugin(Plugin(), "other")
    text = json.dumps(spec_json_schema())
    assert '"discriminator"' in text and "SearchOtherSearch" in text and "SearchToySearch" in text


def test_schema_works_with_no_plugins_installed(monkeypatch):
    monkeypatch.setenv(bionas.registry.DISABLE_ENV, FIRST_PARTY)
    bionas.registry.reset()
    schema = spec_json_schema()
    assert schema["title"] == "bionas run spec" and "dataset" in schema["required"]


def test_a_search_name_registered_twice_is_reported_with_the_other_errors(toy_plugins):
    for plugin_name in ("twin-a", "twin-b"):
        twin = type("Twin", (bionas.SearchStrategy,), {"name": "twin_search", "description": "A twin."})

        class Plugin:
            @bionas.hookimpl
            def bionas_register_search_strategies(self, register, twin=twin):
                register(twin)

        bionas.registry.get_registry().register_plugin(Plugin(), plugin_name)
    errors = errors_of(toy_plugins.spec(search={"name": "twin_search"}, dataset={"name": "toy_dta"}))
    assert len(errors) == 2
    assert errors[0].startswith("dataset.name: unknown dataset 'toy_dta'")
    assert errors[1].startswith("search.name: search 'twin_search' is registered by both")


def test_channels_must_be_a_multiple_of_the_strategy_s_partial_channels(toy_plugins):
    def spec(channels, strategy):
        data = toy_plugins.spec(search={"name": strategy})
        data["space"]["channels"] = channels
        return data

    # egnas defaults partial_channels to 4
    assert errors_of(spec(10, "egnas")) == [
        "space.channels: 10 is not a multiple of partial_channels 4 (each mixed edge takes channels / "
        "partial_channels of them)"
    ]
    assert load_spec(spec(12, "egnas")).space.channels == 12  # 3 per edge
    assert load_spec(spec(10, "darts")).space.channels == 10  # darts: K=1
