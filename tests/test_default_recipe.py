"""The retrain's defaults learn on every embedded data set: no setting of another data set's recipe
(CIFAR's 16-pixel cutout, once the default on every data set) ruins a run that leaves it out.

Only the length of the run, the size of a genotype's network and the size of the generated set are
given; augmentation, cutout, drop path, auxiliary head, learning rate and batch size are the defaults.
Chance is 10% on each data set.
"""

import pytest

from bionas.errors import SpecError
from bionas.pipeline import run
from bionas.spec import load_spec

WELL_ABOVE_CHANCE = 0.3  # three times chance, for 10 classes
# A one-node cell of each kind: the network keeps DARTS's auxiliary head and drop path by default.
TINY_GENOTYPE = {
    "normal": [{"op": "sep_conv_3x3", "rule": "bp", "source": 0}, {"op": "skip_connect", "rule": None, "source": 1}],
    "normal_concat": [2],
    "reduce": [{"op": "max_pool_3x3", "rule": None, "source": 0}, {"op": "sep_conv_3x3", "rule": "bp", "source": 1}],
    "reduce_concat": [2],
}
LENET = {"model": {"name": "lenet5"}, "rules": "bp"}
GENOTYPE = {"genotype": TINY_GENOTYPE, "retrain": {"channels": 8, "cells": 3}}

# Every embedded data set (shipped in an installed package or generated), 3 epochs each:
# (data set options, what is trained). docs/datasets.md has the accuracies before and after.
EMBEDDED = {
    "mnist5k": ({"image_size": 16}, LENET),
    "digits": ({}, GENOTYPE),
    "synthetic": ({"image_size": 8, "train_size": 2000, "val_size": 200, "test_size": 200}, GENOTYPE),
}


def default_spec(tmp_path, dataset: str) -> dict:
    options, trained = EMBEDDED[dataset]
    return {"name": f"defaults-{dataset}", "dataset": {"name": dataset, "options": options}, **trained,
            "retrain": {"epochs": 3, **trained.get("retrain", {})}, "evaluation": {"attacks": []},
            "runtime": {"threads": 1}, "output": {"dir": str(tmp_path / dataset), "plots": False}}


@pytest.mark.slow
@pytest.mark.parametrize("dataset", list(EMBEDDED))
def test_the_default_recipe_learns_on_every_embedded_data_set(tmp_path, dataset):
    spec = default_spec(tmp_path, dataset)
    retrain = load_spec(spec).retrain
    model_run = "model" in spec
    assert (retrain.cutout, retrain.auxiliary, retrain.drop_path) == (0, not model_run, 0.0 if model_run else 0.2)
    assert run(spec, quiet=True).test_accuracy > WELL_ABOVE_CHANCE


@pytest.mark.parametrize("dataset, cutout", [("mnist5k", 0), ("digits", 0), ("synthetic", 0), ("cifar10", 16),
                                             ("cifar100", 16), ("imagenet16-120", 0), ("imagenet", 0), ("folder", 0)])
def test_the_data_set_says_the_retrain_cutout(dataset, cutout):
    """Without reading any data, the resolved spec holds the data set's own cutout (DARTS's 16 on CIFAR
    only); a cutout the spec gives is kept."""
    assert load_spec({"name": "x", "dataset": dataset, **LENET, "retrain": {}}).retrain.cutout == cutout
    assert load_spec({"name": "x", "dataset": dataset, **LENET, "retrain": {"cutout": 3}}).retrain.cutout == 3


def test_a_model_run_records_no_auxiliary_head_and_no_drop_path():
    """A model has neither; its resolved spec says so, and reading that spec again gives the same spec."""
    spec = load_spec({"name": "x", "dataset": "digits", **LENET})
    assert (spec.retrain.auxiliary, spec.retrain.drop_path) == (False, 0.0)
    assert load_spec(spec.to_dict()).to_dict() == spec.to_dict()
    explicit = load_spec({"name": "x", "dataset": "digits", **LENET, "retrain": {"auxiliary": False, "drop_path": 0}})
    assert explicit.retrain == spec.retrain  # what happens anyway may be written out
    genotype = load_spec({"name": "x", "dataset": "digits", "genotype": TINY_GENOTYPE})
    assert (genotype.retrain.auxiliary, genotype.retrain.drop_path) == (True, 0.2)  # DARTS's, for its cells


def test_a_run_recorded_with_the_old_cutout_still_reads():
    """Runs before the data set owned the cutout recorded 16 on every data set: their resolved spec is a record
    of what ran, and still reads (bionas analyze, report); a spec to run with it is refused."""
    old = load_spec({"name": "x", "dataset": "digits", "genotype": TINY_GENOTYPE}).to_dict()
    old["retrain"]["cutout"] = 16
    assert load_spec(old, recorded=True).retrain.cutout == 16
    with pytest.raises(SpecError) as err:
        load_spec(old)
    assert err.value.errors == ["retrain.cutout: 16 is not smaller than the 8x8 images of digits: a cutout square "
                                "that size can blank a whole image; give less than 8 (0 = off)"]
