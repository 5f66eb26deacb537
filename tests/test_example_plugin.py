"""The third-party example package, installed with pip by the test setup, is found and usable."""

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


def test_the_example_command_runs_in_a_real_process(example_installed):
    result = subprocess.run([sys.executable, "-m", "bionas", "example-info"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "sign_mean" in result.stdout and "blobs" in result.stdout
