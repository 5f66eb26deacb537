"""The pipeline on a given genotype: run directory, selection on validation, resume, failures, attack CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open
from typer.testing import CliRunner

from bionas.checkpoint import load_state
from bionas.cli import build_app
from bionas.errors import BionasError
from bionas.pipeline import Interrupted, run
from bionas.space import load_network
from bionas.space import BIONAS_DARTS

pytestmark = pytest.mark.slow

TIMING = {"seconds", "search_seconds"}


def tiny_spec(tmp_path, **overrides):
    """A genotype retrained for 3 epochs on scikit-learn's digits: seconds on a CPU."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    genotype = tmp_path / "genotype.json"
    BIONAS_DARTS.save(genotype)
    spec = {
        "name": "tiny",
        "seed": 0,
        "dataset": {"name": "digits"},
        "genotype": str(genotype),
        "retrain": {"epochs": 3, "batch_size": 64, "channels": 4, "cells": 2, "cutout": 0, "auxiliary": False,
                    "lr": 0.05},
        "evaluation": {"points": 60, "attacks": [{"name": "fgsm", "eps": [0.1]}, {"name": "pgd", "eps": [0.1]}]},
        "output": {"dir": str(tmp_path / "run")},
    }
    spec.update(overrides)
    return spec


def without_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_writes_every_file_and_each_loads_with_json_or_safetensors_alone(tmp_path, monkeypatch):
    from bionas.pipeline.run import Pipeline

    seen, run_stages, threads = [], Pipeline.run_stages, torch.get_num_threads()
    monkeypatch.setattr(Pipeline, "run_stages", lambda self: seen.append(torch.get_num_threads()) or run_stages(self))
    result = run(tiny_spec(tmp_path, runtime={"threads": threads + 1}), quiet=True)
    assert seen == [threads + 1] and torch.get_num_threads() == threads  # runtime.threads for the run only
    run_dir = result.run_dir
    expected = {"resolved_spec.json", "provenance.json", "metrics.jsonl", "genotype.json", "model.safetensors",
                "results.json", "robustness.json", "report.md", "stages.json", "retrain.json", "genotype.png",
                "training.png", "robustness.png"}
    assert expected <= {p.name for p in run_dir.iterdir()}
    for path in run_dir.rglob("*"):
        if path.is_dir():
            continue
        data = path.read_bytes()
        # a safetensors file starts with its header's length, which may begin with 0x80; safe_open checks it below
        assert path.suffix == ".safetensors" or not data.startswith(b"\x80"), f"{path} looks like a pickle"
        if path.suffix == ".json":
            json.loads(data)
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in data.decode().splitlines()]
        elif path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as handle:
                json.loads(handle.metadata()["bionas.meta"])
                assert handle.keys()
        elif path.suffix == ".png":
            assert data.startswith(b"\x89PNG")
        else:
            assert path.suffix == ".md", path
    provenance = json.loads((run_dir / "provenance.json").read_text())
    assert provenance["torch"] == torch.__version__ and provenance["bionas"]
    assert provenance["cpu_threads"] == threads + 1
    assert provenance["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert provenance["cuda_graphs"] is False  # auto on the CPU
    assert {("dataset", "digits"), ("attack", "pgd"), ("rule", "usf")} <= {
        (p["kind"], p["name"]) for p in provenance["plugins"]}
    assert "test accuracy" in (run_dir / "report.md").read_text()
    assert result.test_accuracy is not None and result.robustness.rows[1].attack == "pgd"


def test_the_best_epoch_is_chosen_on_validation_and_saved(tmp_path):
    result = run(tiny_spec(tmp_path), quiet=True)
    retrain = [r for r in metrics(result.run_dir) if r["stage"] == "retrain"]
    val = [r["val_accuracy"] for r in retrain]
    assert result.best_epoch == val.index(max(val)) and result.val_accuracy == max(val)
    [test] = [r for r in metrics(result.run_dir) if r["stage"] == "test"]
    assert test["test_accuracy"] == result.test_accuracy
    model, meta = load_network(result.run_dir / "model.safetensors")
    assert meta["epoch"] == result.best_epoch and meta["val_accuracy"] == result.val_accuracy
    assert isinstance(model(torch.rand(2, 1, 8, 8)), torch.Tensor)


def test_a_used_run_directory_needs_resume(tmp_path):
    spec = tiny_spec(tmp_path, retrain={"epochs": 1, "channels": 4, "cells": 2, "auxiliary": False},
                     evaluation={"attacks": []})
    run(spec, quiet=True)
    with pytest.raises(BionasError, match="already holds a run; continue it with --resume"):
        run(spec, quiet=True)
    resolved = (tmp_path / "run" / "resolved_spec.json").read_bytes()
    changed = {**spec, "retrain": {**spec["retrain"], "epochs": 2}}
    with pytest.raises(BionasError, match="retrain.epochs: 1 -> 2"):
        run(changed, resume=True, quiet=True)
    assert (tmp_path / "run" / "resolved_spec.json").read_bytes() == resolved  # the refusal wrote nothing


def test_resumed_finished_run_reuses_its_stages_and_redoes_changed_attacks(tmp_path):
    spec = tiny_spec(tmp_path)
    first = run(spec, quiet=True)
    spec["evaluation"]["attacks"] = [{"name": "fgsm", "eps": [0.2]}]
    second = run(spec, resume=True, quiet=True)
    assert second.test_accuracy == first.test_accuracy
    assert [r["stage"] for r in metrics(second.run_dir)].count("test") == 1
    assert [row.eps for row in second.robustness.rows] == [0.2]


def test_a_diverging_loss_stops_the_stage_and_keeps_the_last_checkpoint(tmp_path):
    spec = tiny_spec(tmp_path, evaluation={"attacks": []})
    spec["retrain"].update(lr=1e6, grad_clip=None)
    with pytest.raises(BionasError, match="retrain: the loss became .* stopping. The last good checkpoint is kept"):
        run(spec, quiet=True)


def test_ctrl_c_exits_cleanly_with_how_to_resume(tmp_path, interrupt_second_retrain_epoch):
    spec = tiny_spec(tmp_path, evaluation={"attacks": []})
    with pytest.raises(Interrupted, match="--resume") as err:
        run(spec, quiet=True)
    assert err.value.exit_code == 130
    interrupt_second_retrain_epoch.undo()
    resumed = run(spec, resume=True, quiet=True)  # continues after epoch 1, the last checkpoint
    assert [r["epoch"] for r in metrics(resumed.run_dir) if r["stage"] == "retrain"] == [0, 1, 2]


def search_spec(tmp_path):
    """A 3-epoch darts search over a small mixed-rule space, then the tiny retrain."""
    return tiny_spec(tmp_path, genotype=None,
                     space={"ops": ["max_pool_3x3", "skip_connect", "sep_conv_3x3"], "rules": ["usf", "fa"],
                            "channels": 4, "cells": 3},
                     search={"name": "darts", "options": {"epochs": 3, "batch_size": 32}})


def test_a_run_is_bit_identical_in_another_process_whatever_its_thread_settings_and_directory(tmp_path):
    """docs/pipeline.md, Reproducibility: the same spec (a search, then a retrain) with runtime.threads fixed gives
    the same genotype, records and weights in a fresh process started elsewhere with other OpenMP/MKL thread
    variables, another interop thread count and a busy sibling process: nothing depends on the process."""
    spec = search_spec(tmp_path / "a")
    spec["search"]["options"]["epochs"] = 2
    spec["retrain"]["epochs"] = 2
    spec.update(runtime={"threads": 1}, evaluation={"attacks": []})
    reference = run(spec, quiet=True)
    other = tmp_path / "b"
    other.mkdir()
    spec_b = {**spec, "output": {"dir": str(other / "run")}}
    (other / "spec.yaml").write_text(yaml.safe_dump(spec_b))
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        root = Path(__file__).resolve().parents[1]  # this checkout, as pytest's pythonpath gives it here
        env = {**os.environ, "OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3",
               "PYTHONPATH": os.pathsep.join([str(root), str(root / "plugins"), os.environ.get("PYTHONPATH", "")])}
        code = ("import sys, torch; torch.set_num_interop_threads(3); from bionas.cli import main; "
                "sys.argv = ['bionas', 'run', 'spec.yaml', '--quiet']; main()")
        subprocess.run([sys.executable, "-c", code], cwd=other, env=env, check=True, capture_output=True,
                       timeout=600)
    finally:
        busy.kill()
    assert (other / "run" / "genotype.json").read_text() == (reference.run_dir / "genotype.json").read_text()
    assert without_timing(metrics(other / "run")) == without_timing(metrics(reference.run_dir))
    a, _ = load_state(reference.run_dir / "model.safetensors")
    b, _ = load_state(other / "run" / "model.safetensors")
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name


def test_runtime_workers_reach_every_loader(tmp_path, monkeypatch):
    import bionas.data
    import bionas.pipeline.evaluate_stage
    import bionas.retrain
    import bionas.search.base

    calls = []

    def recording(dataset, split, *args, **kwargs):
        calls.append((split, kwargs.get("num_workers")))
        return make_loader(dataset, split, *args, **kwargs)

    make_loader = bionas.data.make_loader
    for module in (bionas.search.base, bionas.retrain, bionas.pipeline.evaluate_stage):  # the search, retrain, test
        monkeypatch.setattr(module, "make_loader", recording)
    spec = search_spec(tmp_path)
    spec["search"]["options"]["epochs"] = 1
    spec.update(retrain={**spec["retrain"], "epochs": 1}, evaluation={"attacks": []}, runtime={"workers": 3})
    run(spec, quiet=True)
    assert {split for split, _ in calls} == {"train", "val", "test"}
    assert [split for split, _ in calls].count("train") >= 3  # the search's two parts and the retrain
    assert {workers for _, workers in calls} == {3}


def kill_when(process, path, deadline):
    while not path.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_sigkill_during_search_and_retraining_then_resume_equals_an_uninterrupted_run(tmp_path):
    reference = run(search_spec(tmp_path / "a"), quiet=True)
    spec = search_spec(tmp_path / "b")
    spec_path = tmp_path / "b" / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    run_dir = tmp_path / "b" / "run"
    # One thread like this test process (conftest): the float summation order then matches bit for bit.
    command = [sys.executable, "-m", "bionas", "run", str(spec_path), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    deadline = time.time() + 300

    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    kill_when(first, run_dir / "checkpoints" / "search.safetensors", deadline)
    assert load_state(run_dir / "checkpoints" / "search.safetensors")[1]["epoch"] < 2  # killed mid-search
    assert not (run_dir / "genotype.json").exists()

    second = subprocess.Popen(command + ["--resume"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    kill_when(second, run_dir / "checkpoints" / "retrain.safetensors", deadline)
    assert load_state(run_dir / "checkpoints" / "retrain.safetensors")[1]["epoch"] < 2  # killed mid-retrain
    assert not (run_dir / "results.json").exists()

    resumed = run(spec, resume=True, quiet=True)
    assert resumed.genotype == reference.genotype
    assert without_timing(metrics(resumed.run_dir)) == without_timing(metrics(reference.run_dir))
    assert resumed.test_accuracy == reference.test_accuracy
    a, _ = load_network(reference.run_dir / "model.safetensors")
    b, _ = load_network(resumed.run_dir / "model.safetensors")
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name


def test_attack_command_on_a_run_directory(tmp_path):
    result = run(tiny_spec(tmp_path, evaluation={"attacks": []}), quiet=True)
    cli = CliRunner().invoke(build_app(), ["attack", str(result.run_dir), "--attack", "pgd", "--eps", "8/255",
                                           "--eps", "0.2", "--points", "40"])
    assert cli.exit_code == 0, cli.output
    assert "| pgd | white-box (exact gradients) | 8/255 |" in cli.stdout
    report = json.loads((result.run_dir / "attacks" / "robustness.json").read_text())
    assert [row["eps"] for row in report["rows"]] == pytest.approx([8 / 255, 0.2])
    assert (result.run_dir / "attacks" / "robustness.png").exists()


def test_run_command_prints_the_summary_table(tmp_path):
    spec = tiny_spec(tmp_path, evaluation={"points": 30, "attacks": [{"name": "fgsm", "eps": [0.1]}]})
    spec["retrain"]["epochs"] = 1
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(build_app(), ["run", str(tmp_path / "s.yaml"), "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for text in ("test accuracy", "fgsm eps 0.1", "robust", "run directory", "node 2 ="):
        assert text in result.stdout
    assert json.loads((tmp_path / "run" / "resolved_spec.json").read_text())["device"] == "cpu"
