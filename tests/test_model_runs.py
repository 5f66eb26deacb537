"""The pipeline on a model: retrain, test, attacks and report as for a searched network, and resume."""

import json

import pytest
import torch
from typer.testing import CliRunner

from bionas.cli import build_app
from bionas.pipeline import Interrupted, run
from bionas.robustness import load_target
from bionas.rules import rule_of, wrappable_layers

pytestmark = pytest.mark.slow

TIMING = {"seconds"}


def model_spec(tmp_path, model, rules=None, **overrides):
    """A model trained for 2 epochs on scikit-learn's 8x8 digits, tested and attacked: seconds on a CPU."""
    spec = {
        "name": "model-run",
        "seed": 0,
        "dataset": {"name": "digits"},
        "model": model,
        "rules": rules,
        "retrain": {"epochs": 2, "batch_size": 64, "lr": 0.05, "cutout": 0},
        "evaluation": {"points": 40, "attacks": [{"name": "pgd", "eps": [0.1]}]},
        "output": {"dir": str(tmp_path / "run")},
    }
    spec.update(overrides)
    return spec


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def check_layers(network, expected):
    """Each layer of the trained network learns by the rule its glob gave it (None: a plain layer)."""
    found = {name: (rule_of(layer).name if rule_of(layer) else None) for name, layer in wrappable_layers(network.net)}
    assert found == expected


def test_first_party_model_run_trains_tests_attacks_and_reports(tmp_path):
    rules = {"fc1": "fa", "classifier": {"name": "usf", "options": {}}}
    result = run(model_spec(tmp_path, {"name": "mlp", "options": {"hidden": [32, 16]}}, rules), quiet=True)
    run_dir = result.run_dir
    assert {"model.safetensors", "model.json", "results.json", "robustness.json", "report.md", "retrain.json",
            "training.png", "robustness.png"} <= {p.name for p in run_dir.iterdir()}
    assert not (run_dir / "genotype.json").exists()
    layers = {"fc1": "fa", "fc2": None, "classifier": "usf"}
    assert json.loads((run_dir / "model.json").read_text())["layers"] == layers
    results = json.loads((run_dir / "results.json").read_text())
    assert results["model"] == {"name": "mlp", "options": {"hidden": [32, 16]},
                                "rules": {"fa": 1, "plain": 1, "usf": 1}}
    assert 0 <= result.test_accuracy <= 1 and result.robustness.rows[0].attack == "pgd"
    report = (run_dir / "report.md").read_text()
    assert "## Model" in report and "| `fc1` | fa {" in report and "Layers per rule: fa 1, plain 1, usf 1." in report
    # the saved network is rebuilt from its metadata, rules included, and `bionas attack` loads it
    target = load_target(run_dir)
    check_layers(target.model, layers)
    images = torch.rand(5, 1, 8, 8)
    assert torch.equal(target.model(images), load_target(run_dir / "model.safetensors").model(images))
    # the per-layer alignment the retrain logged is there; the genotype analyses say why they do not apply
    app = build_app()
    assert CliRunner().invoke(app, ["analyze", "alignment", str(run_dir)]).exit_code == 0
    refused = CliRunner().invoke(app, ["analyze", "gradvar", str(run_dir)])
    assert refused.exit_code == 1 and "trained the model mlp, not a genotype" in refused.output


@pytest.mark.parametrize(("model", "rules", "expected"), [
    ({"name": "timm/test_resnet", "options": {"drop_rate": 0.1}}, {"layer1.*": "frsf", "fc": "fa"},
     lambda name: "frsf" if name.startswith("layer1.") else "fa" if name == "fc" else None),
    ({"name": "torchvision/mobilenet_v2", "options": {"width_mult": 0.25}}, {"features.1*": "usf", "classifier*": "fa"},
     lambda name: "usf" if name.startswith("features.1") else "fa" if name.startswith("classifier") else None),
], ids=["timm", "torchvision"])
def test_timm_and_torchvision_models_run_with_rules_by_glob(tmp_path, model, rules, expected):
    spec = model_spec(tmp_path, model, rules, retrain={"epochs": 1, "batch_size": 128, "lr": 0.05, "cutout": 0},
                      evaluation={"points": 20, "attacks": [{"name": "fgsm", "eps": [0.1]}]})
    result = run(spec, quiet=True)
    record = json.loads((result.run_dir / "model.json").read_text())
    assert record["model"]["options"] == model["options"]
    layers = record["layers"]
    assert layers == {name: expected(name) for name in layers} and set(layers.values()) == {*rules.values(), None}
    check_layers(load_target(result.run_dir).model, layers)
    assert result.test_accuracy is not None and result.robustness.rows


def test_an_interrupted_model_run_resumes_to_the_uninterrupted_result(tmp_path, interrupt_second_retrain_epoch):
    spec = model_spec(tmp_path / "a", {"name": "lenet5"}, "dfa", evaluation={"points": 20, "attacks": []},
                      retrain={"epochs": 3, "batch_size": 64, "lr": 0.05, "cutout": 0})
    with pytest.raises(Interrupted, match="--resume"):
        run(spec, quiet=True)
    interrupt_second_retrain_epoch.undo()
    resumed = run(spec, resume=True, quiet=True)  # continues after epoch 1, the last checkpoint
    reference = run({**spec, "output": {"dir": str(tmp_path / "b")}}, quiet=True)
    strip = [{k: v for k, v in r.items() if k not in TIMING} for r in metrics(resumed.run_dir)]
    assert strip == [{k: v for k, v in r.items() if k not in TIMING} for r in metrics(reference.run_dir)]
    assert [r["epoch"] for r in strip if r["stage"] == "retrain"] == [0, 1, 2]
    assert resumed.test_accuracy == reference.test_accuracy
    a, b = load_target(reference.run_dir).model, load_target(resumed.run_dir).model
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    with pytest.raises(Exception, match="different spec"):  # a resumed model run checks its model and rules
        run({**spec, "rules": "fa"}, resume=True, quiet=True)


def test_a_study_of_a_model_counts_layers_per_rule_and_has_no_genotypes(tmp_path):
    from bionas.pipeline import run_study

    spec = model_spec(tmp_path, {"name": "mlp", "options": {"hidden": [8]}}, {"fc1": "fa"}, seeds=[0, 1],
                      retrain={"epochs": 1, "batch_size": 128, "lr": 0.05, "cutout": 0},
                      evaluation={"points": 20, "attacks": []}, output={"dir": str(tmp_path / "run"), "plots": False})
    aggregate = run_study(spec, quiet=True)
    assert [row["rules"] for row in aggregate["rows"]] == [{"fa": 1, "plain": 1}] * 2
    study = (tmp_path / "run" / "study.md").read_text()
    assert "| seed | layers per rule |" in study and "| 0 | fa 1, plain 1 |" in study and "Genotypes" not in study
