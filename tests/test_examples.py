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
