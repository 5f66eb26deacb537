"""Every spec in examples/ validates against the installed plugins."""

from pathlib import Path

import pytest

from bionas.spec import load_spec

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))


def test_the_published_settings_and_the_quickstart_are_there():
    names = {p.name for p in EXAMPLES}
    assert {"quickstart.yaml", "cifar10-bionas-darts.yaml", "cifar10-bionas-egnas.yaml",
            "cifar100-bionas-darts.yaml", "imagenet16-120-bionas-darts.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_spec_is_valid(path):
    spec = load_spec(path)
    assert spec.name == path.stem
    assert path.read_text().startswith("#"), "each example opens with a comment saying what it reproduces"


def test_cifar10_spec_is_the_papers_space_and_the_darts_recipe():
    spec = load_spec(EXAMPLES[0].with_name("cifar10-bionas-darts.yaml"))
    from bionas.space import SearchSpace

    assert SearchSpace(spec.space).num_candidates == 22
    assert (spec.retrain.epochs, spec.retrain.channels, spec.retrain.cells, spec.retrain.batch_size) == (600, 36, 20, 96)
    assert spec.search.options["order"] == "first" and spec.search.options["epochs"] == 50


@pytest.mark.parametrize("table", ["cifar10-baselines", "mnist-baselines"])
def test_each_baseline_spec_is_the_bp_one_with_its_rule(table):
    """The table's six runs: the bp spec beside its five siblings, which change only the name, the rules and
    the run directory (and, as BioTorch's dfa configuration, the learning rate of dfa on CIFAR-10)."""
    import yaml

    examples = EXAMPLES[0].parent
    base = yaml.safe_load((examples / f"{table}.yaml").read_text())
    assert base["rules"] == "bp" and load_spec(examples / f"{table}.yaml").model.name in ("resnet20", "lenet5")
    siblings = sorted((examples / table).glob("*.yaml"))
    assert [p.stem for p in siblings] == ["brsf", "dfa", "fa", "frsf", "usf"]
    for path in siblings:
        spec = yaml.safe_load(path.read_text())
        assert path.read_text().startswith("#") and load_spec(path).rules["*"].name == path.stem
        assert spec["name"] == f"{table}-{path.stem}" and spec["output"]["dir"] == f"runs/{spec['name']}"
        changed = {"name": spec["name"], "rules": path.stem, "output": spec["output"]}
        if table == "cifar10-baselines" and path.stem == "dfa":
            assert spec["retrain"]["lr"] == 0.001  # BioTorch's dfa configuration
            changed["retrain"] = {**base["retrain"], "lr": 0.001}
        assert spec == {**base, **changed}
