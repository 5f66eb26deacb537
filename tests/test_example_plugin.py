"""The third-party example package, installed with pip by the test setup, is found and usable: one plugin
of each kind, as a third party writes them."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import bionas
from bionas import registry
from bionas.cli import build_app
from bionas.ops import starts_with_relu
from bionas.robustness import evaluate_robustness
from bionas.rules import rule_of
from bionas.spec import load_spec

EXAMPLE = Path(__file__).parents[1] / "examples" / "bionas-plugin-example"


@pytest.fixture(scope="session")
def example_site(tmp_path_factory):
    """pip-install the example package into a throwaway site directory (the checkout stays clean)."""
    source = tmp_path_factory.mktemp("src") / EXAMPLE.name
    shutil.copytree(EXAMPLE, source)
    site = tmp_path_factory.mktemp("site")
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(source)]
    if importlib.util.find_spec("setuptools"):  # build offline with the environment's setuptools
        command.insert(5, "--no-build-isolation")
    subprocess.run(command, check=True, capture_output=True)
    return site


@pytest.fixture
def example_installed(example_site, monkeypatch):
    monkeypatch.syspath_prepend(str(example_site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(example_site), *sys.path]))
    registry.reset()
    yield
    for module in [m for m in sys.modules if m.startswith("bionas_example")]:
        del sys.modules[module]


def test_plugins_list_shows_the_example_package(example_installed):
    result = CliRunner().invoke(build_app(), ["plugins", "list", "--json"])
    plugins = {p["name"]: p for p in json.loads(result.stdout)["plugins"]}
    assert plugins["sign_mean"]["distribution"] == "bionas-plugin-example"
    assert plugins["sign_mean"]["kind"] == "rule" and plugins["blobs"]["kind"] == "dataset"
    assert plugins["blobs"]["version"] == "0.1.0"
    kinds = {"sign_mean": "rule", "relu_conv_3x3": "op", "one_level": "search", "blobs": "dataset",
             "random_sign": "attack", "tiny_cnn": "model"}
    assert {name: plugins[name]["kind"] for name in kinds} == kinds
    assert {plugins[name]["distribution"] for name in kinds} == {"bionas-plugin-example"}


def test_a_spec_can_use_the_example_plugins(example_installed, toy_plugins):
    spec = toy_plugins.spec(dataset={"name": "blobs", "options": {"samples": 50}})
    spec["space"]["rules"] = ["toy_rule", {"name": "sign_mean", "options": {"scale": 0.5}}]
    loaded = load_spec(spec)
    assert loaded.dataset.options == {"samples": 50, "noise": 0.1, "seed": 0}
    assert loaded.space.rules[1].options == {"scale": 0.5}


def test_the_example_plugins_work(example_installed):
    data = bionas.get_dataset("blobs", samples=40)
    image, label = data.split("train")[0]
    assert image.shape == (1, 16, 16) and 0 <= label < data.info.num_classes
    layer = torch.nn.Linear(3, 2)
    feedback = bionas.get_rule("sign_mean").feedback(layer)
    assert torch.equal(feedback.sign(), layer.weight.sign())


def test_the_example_op_builds_a_shared_relu_block_that_learns_by_its_rule(example_installed):
    op = bionas.get_op("relu_conv_3x3")
    block = op.build(8, 2, bionas.get_rule("sign_mean"), affine=False)
    assert starts_with_relu(block)  # the supernet computes its ReLU once with the other candidates'
    assert rule_of(block[1]).name == "sign_mean" and not block[2].affine
    x = torch.randn(2, 8, 7, 7)
    assert block(x).shape == (2, 8, 4, 4) and torch.allclose(block.from_relu(torch.relu(x)), block(x))


def test_the_example_attack_stays_in_its_budget_and_counts_queries(example_installed):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    images, labels = torch.rand(12, 1, 4, 4), torch.randint(0, 3, (12,))
    attack = bionas.get_attack("random_sign", eps="8/255", tries=5, seed=1)
    result = attack.run(model, images, labels)
    attack.check_result(images, result.adversarial)  # shape, [0, 1], the L-inf budget
    assert result.unit == "queries" and ((result.work >= 1) & (result.work <= 5)).all()
    fooled = model(result.adversarial).argmax(1) != labels
    assert (result.work[~fooled] == 5).all()  # an image never fooled used every try
    assert torch.equal(attack.run(model, images, labels).adversarial, result.adversarial)  # seeded
    report = evaluate_robustness(model, images, labels, [attack], eps_sweep=[0.0, 0.5])
    assert [row.attack for row in report.rows] == ["random_sign", "random_sign"]
    assert report.rows[0].robust_accuracy == report.clean_accuracy  # eps 0: nothing changes


@pytest.mark.slow
def test_a_run_of_the_five_example_plugins(example_installed, tmp_path):
    spec = {
        "name": "example", "dataset": {"name": "blobs", "options": {"samples": 64}},
        "space": {"ops": ["skip_connect", "relu_conv_3x3"], "rules": ["sign_mean"], "channels": 4, "cells": 3,
                  "nodes": 2},
        "search": {"name": "one_level", "options": {"epochs": 2, "batch_size": 16}},
        "retrain": {"epochs": 1, "batch_size": 16, "channels": 4, "cells": 3, "auxiliary": False, "cutout": 0},
        "evaluation": {"points": 16, "attacks": [{"name": "random_sign", "eps": [0.3]}]},
        "runtime": {"workers": 0}, "output": {"dir": str(tmp_path / "run"), "plots": False},
    }
    result = bionas.run(spec, quiet=True)
    assert {edge.op for edge in result.genotype.normal + result.genotype.reduce} <= {"skip_connect", "relu_conv_3x3"}
    assert set(result.genotype.rules_used()) <= {"sign_mean"}
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    searched = [r for r in records if r["stage"] == "search"]
    assert [r["strategy"] for r in searched] == ["one_level", "one_level"]
    assert searched[0]["alphas"]["normal"] != searched[1]["alphas"]["normal"]  # the alphas moved every epoch
    assert [row.attack for row in result.robustness.rows] == ["random_sign"]
    assert result.robustness.rows[0].work_unit == "queries"


@pytest.mark.slow
def test_a_model_run_of_the_example_model_with_the_example_rule(example_installed, tmp_path):
    spec = {
        "name": "example-model", "dataset": {"name": "blobs", "options": {"samples": 64}},
        "model": {"name": "tiny_cnn", "options": {"width": 4}}, "rules": {"0": "sign_mean", "2": "usf"},
        "retrain": {"epochs": 1, "batch_size": 16, "cutout": 0},
        "evaluation": {"points": 16, "attacks": [{"name": "random_sign", "eps": [0.3]}]},
        "runtime": {"workers": 0}, "output": {"dir": str(tmp_path / "run"), "plots": False},
    }
    result = bionas.run(spec, quiet=True)
    assert result.model["layers"] == {"0": "sign_mean", "2": "usf", "6": None}
    assert [row.attack for row in result.robustness.rows] == ["random_sign"]


def test_the_example_command_runs_in_a_real_process(example_installed):
    result = subprocess.run([sys.executable, "-m", "bionas", "example-info"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "sign_mean" in result.stdout and "blobs" in result.stdout
