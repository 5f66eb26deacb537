"""Experiment loggers: the logger kind, the spec's `loggers`, and what jsonl, tensorboard and mlflow write,
read back with TensorBoard's event reader and MLflow's client (the default SQLite store, and a file store)."""

from __future__ import annotations

import json
import shutil

import pytest
from typer.testing import CliRunner

import bionas
from bionas.cli import build_app
from bionas.errors import SpecError
from bionas.pipeline.tracking import run_loggers
from bionas.space import BIONAS_DARTS
from bionas.spec import load_spec
from bionas.tracking import Loggers, LogRun
from bionas_loggers.mlflow_logger import MLflow, flat_params
from bionas_loggers.tensorboard_logger import TensorBoard

GENOTYPE = BIONAS_DARTS.to_dict()  # inline: validate reads a genotype file, and these specs need none


@pytest.fixture(autouse=True)
def _mlflow_env_restored(monkeypatch):
    """The mlflow logger opts in to MLflow's file store through the environment: undone after each test."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")


def retrain_record(epoch: int, val: float) -> dict:
    """A retrain record as the retrain loop writes it (numbers, a nested alignment, a boolean-free record)."""
    return {"stage": "retrain", "epoch": epoch, "lr": 0.1 / (epoch + 1), "train_loss": 2.0 - epoch / 10,
            "val_accuracy": val, "best_epoch": epoch,
            "alignment": {"cells.0.conv": {"rule": "fa", "angle": 80.0 - epoch, "ratio": 1.1},
                          "cells.1.conv": {"rule": "fa", "angle": 70.0 - epoch, "ratio": 0.9},
                          "cells.2.conv": {"rule": "usf", "angle": None, "ratio": None}}}


def search_record(epoch: int) -> dict:
    return {"stage": "search", "epoch": epoch, "train_loss": 1.5, "valid_accuracy": 0.5, "strategy": "darts",
            "alphas": {"normal": [[0.25, 0.75], [0.5, 0.5]], "reduce": [[0.1, 0.9], [0.3, 0.7]],
                       "edge_weights": {"normal": [0.5, 0.5, 1.0], "reduce": [1.0, 0.25, 0.75]}},
            "genotype": None}


def log_run(tmp_path, resumed=False) -> LogRun:
    spec = {"name": "tiny", "seed": 3, "retrain": {"lr": 0.05, "epochs": 4},
            "space": {"rules": [{"name": "fa", "options": {"seed": None}}, {"name": "usf", "options": {}}]}}
    return LogRun(tmp_path, "tiny", spec, resumed)


def png(path, width=20, height=12):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width / 10, height / 10), dpi=10)
    fig.savefig(path)
    return path


# -- the kind and the spec -------------------------------------------------------------------------


def test_first_party_loggers_are_registered_with_jsonl_always_on():
    assert bionas.registry.get_registry().names("logger") == ["jsonl", "mlflow", "tensorboard"]
    assert bionas.get_logger("tensorboard", flush_secs=3).options.flush_secs == 3
    spec = load_spec({"name": "t", "dataset": "digits", "genotype": GENOTYPE, "loggers": ["mlflow"]})
    assert [logger.name for logger in run_loggers(spec, main=True, warn=print).loggers] == ["jsonl", "mlflow"]
    assert len(run_loggers(spec, main=False, warn=print)) == 0  # the other ranks of a torchrun launch log nothing
    listed = load_spec({"name": "t", "dataset": "digits", "genotype": GENOTYPE, "loggers": ["tensorboard", "jsonl"]})
    assert [logger.name for logger in run_loggers(listed, main=True, warn=print).loggers] == ["tensorboard", "jsonl"]


def errors_of(data) -> list[str]:
    with pytest.raises(SpecError) as err:
        load_spec(data)
    return err.value.errors


def test_an_unknown_logger_suggests_close_names_at_its_path():
    spec = {"name": "t", "dataset": "digits", "genotype": GENOTYPE, "loggers": ["jsonl", "tensorbord"]}
    assert errors_of(spec) == ["loggers[1].name: unknown logger 'tensorbord'. Did you mean: tensorboard? "
                               "Known loggers: jsonl, mlflow, tensorboard."]


def test_logger_options_are_validated_at_their_path_and_a_logger_is_listed_once():
    spec = {"name": "t", "dataset": "digits", "genotype": GENOTYPE,
            "loggers": [{"name": "mlflow", "options": {"experimnt": "x"}}, "tensorboard", "tensorboard"]}
    errors = errors_of(spec)
    assert errors == ["loggers[2]: logger 'tensorboard' is listed twice"]
    del spec["loggers"][2]
    assert errors_of(spec) == ["loggers[0].options.experimnt: unknown field (not allowed here)"]


def test_a_logger_whose_library_is_missing_is_refused_by_validate_naming_the_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(TensorBoard, "modules", ("tensorboard_not_installed_here",))
    path = tmp_path / "s.yaml"
    path.write_text(json.dumps({"name": "t", "dataset": "digits", "genotype": GENOTYPE,
                                "loggers": ["tensorboard"]}))
    result = CliRunner().invoke(build_app(), ["validate", str(path)])
    assert result.exit_code == 2
    assert ("loggers[0].name: logger 'tensorboard' needs tensorboard_not_installed_here, which is not installed: "
            "pip install 'bionas[tensorboard]'") in result.output
    assert "Traceback" not in result.output


# -- the fan-out -----------------------------------------------------------------------------------


class Recording(bionas.Logger):
    name = "recording"
    description = "Records the calls (test)."

    def __init__(self, calls, fail_on=None):
        super().__init__()
        self.calls, self.fail_on = calls, fail_on

    def called(self, method, *args):
        self.calls.append((method, *args))
        if method == self.fail_on:
            raise RuntimeError("server went away")

    def start(self, run):
        self.called("start", run)

    def log(self, record):
        self.called("log", record)

    def finish(self, status):
        self.called("finish", status)


def test_a_failing_logger_is_dropped_with_a_warning_unless_essential(tmp_path):
    calls, warnings = [], []
    loggers = Loggers([Recording(calls, fail_on="log"), Recording(calls)], warn=warnings.append)
    loggers.log({"stage": "retrain", "epoch": 0})
    loggers.log({"stage": "retrain", "epoch": 1})
    assert [c[1]["epoch"] for c in calls] == [0, 0, 1]  # the failing one once, the other twice
    assert warnings == ["logger 'recording' failed and is off for the rest of the run: RuntimeError: server went away"]
    essential = Recording([], fail_on="log")
    essential.essential = True
    with pytest.raises(RuntimeError):
        Loggers([essential]).log({})


@pytest.mark.parametrize("error, status", [(None, "finished"), (ValueError, "failed"), (KeyboardInterrupt, "killed")])
def test_a_session_finishes_with_how_the_run_ended(tmp_path, error, status):
    calls = []
    run = log_run(tmp_path)
    try:
        with Loggers([Recording(calls)]).session(run):
            if error:
                raise error
    except (ValueError, KeyboardInterrupt):
        pass
    assert calls == [("start", run), ("finish", status)]


# -- tensorboard -------------------------------------------------------------------------------------


def events(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    accumulator.Reload()
    return accumulator


def points(accumulator, tag):
    """(steps, values) of a scalar tag."""
    scalars = accumulator.Scalars(tag)
    return [e.step for e in scalars], [e.value for e in scalars]


def test_tensorboard_writes_scalars_per_stage_histograms_and_images(tmp_path):
    logger = TensorBoard()
    logger.start(log_run(tmp_path))
    for epoch in range(2):
        logger.log(search_record(epoch))
    for epoch, val in enumerate([0.3, 0.6, 0.5]):
        logger.log(retrain_record(epoch, val))
    logger.log({"stage": "test", "test_loss": 0.9, "test_accuracy": 0.55, "best_epoch": 1})
    logger.log_files([png(tmp_path / "genotype.png", 30, 20), png(tmp_path / "robustness.png"),
                      tmp_path / "results.json"])
    logger.finish("finished")

    retrain = events(tmp_path / "tensorboard" / "retrain")
    assert points(retrain, "val_accuracy") == ([0, 1, 2], pytest.approx([0.3, 0.6, 0.5]))  # float32 in the file
    assert [e.value for e in retrain.Scalars("lr")] == pytest.approx([0.1, 0.05, 0.1 / 3])
    assert "epoch" not in retrain.Tags()["scalars"]
    angles = retrain.Histograms("alignment_angle/fa")  # the usf layer's angle is None: no usf histogram
    assert [(h.step, h.histogram_value.num, h.histogram_value.sum) for h in angles] == \
        [(0, 2, 150.0), (1, 2, 148.0), (2, 2, 146.0)]
    assert "alignment_angle/usf" not in retrain.Tags()["histograms"]

    search = events(tmp_path / "tensorboard" / "search")
    normal = search.Histograms("alphas/normal")
    assert [h.step for h in normal] == [0, 1]
    value = normal[0].histogram_value
    assert (value.num, value.sum, value.min, value.max) == (4, 2.0, 0.25, 0.75)
    assert sorted(search.Tags()["histograms"]) == ["alphas/edge_weights/normal", "alphas/edge_weights/reduce",
                                                   "alphas/normal", "alphas/reduce"]
    assert search.Histograms("alphas/edge_weights/reduce")[1].histogram_value.num == 3
    assert [e.value for e in events(tmp_path / "tensorboard" / "test").Scalars("test_accuracy")] == \
        pytest.approx([0.55])

    plots = events(tmp_path / "tensorboard" / "plots")
    assert sorted(plots.Tags()["images"]) == ["genotype", "robustness"]
    [image] = plots.Images("genotype")
    assert (image.width, image.height) == (30, 20) and image.encoded_image_string.startswith(b"\x89PNG")


def test_a_resumed_tensorboard_stage_hides_the_epochs_it_logs_again(tmp_path):
    first = TensorBoard()
    first.start(log_run(tmp_path))
    for epoch, val in enumerate([0.1, 0.2, 0.3, 0.4]):  # killed after epoch 3, its last checkpoint at epoch 1
        first.log(retrain_record(epoch, val))
    first.log_files([png(tmp_path / "genotype.png")])
    first.finish("killed")

    second = TensorBoard()
    second.start(log_run(tmp_path, resumed=True))
    second.rewind("search", None)  # nothing of it was logged: nothing to hide, no directory made
    second.rewind("retrain", 1)
    for epoch, val in [(2, 0.7), (3, 0.8)]:
        second.log(retrain_record(epoch, val))
    second.log_files([png(tmp_path / "genotype.png", 40, 10)])
    second.finish("finished")

    assert not (tmp_path / "tensorboard" / "search").exists()
    retrain = events(tmp_path / "tensorboard" / "retrain")
    assert points(retrain, "val_accuracy") == ([0, 1, 2, 3], pytest.approx([0.1, 0.2, 0.7, 0.8]))
    assert [h.step for h in retrain.Histograms("alignment_angle/fa")] == [0, 1, 2, 3]
    [image] = events(tmp_path / "tensorboard" / "plots").Images("genotype")  # the latest drawing only
    assert (image.width, image.height) == (40, 10)


# -- mlflow ------------------------------------------------------------------------------------------


def mlflow_client(run_dir):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{(run_dir / 'mlflow.db').resolve()}")


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory):
    """A new SQLite store, made once: creating its tables takes MLflow about 2 CPU seconds."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    mlflow_client(path.parent).search_experiments()
    return path


@pytest.fixture
def store(tmp_path, empty_store):
    """tmp_path as a run directory whose mlflow.db exists, as a resumed run's would (a copy of empty_store)."""
    shutil.copy(empty_store, tmp_path / "mlflow.db")
    return tmp_path


def only_run(client, experiment="tiny"):
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    [run] = client.search_runs([experiment_id])
    return run


def test_flat_params_join_nested_keys_and_keep_values_as_json():
    assert flat_params({"retrain": {"lr": 0.05, "auxiliary": False}, "genotype": None, "name": "tiny",
                        "attacks": [{"name": "pgd", "eps": [0.1, 0.2]}], "ops": ["a", "b"], "empty": {}}) == {
        "retrain.lr": "0.05", "retrain.auxiliary": "false", "genotype": "null", "name": "tiny",
        "attacks.0.name": "pgd", "attacks.0.eps": "[0.1, 0.2]", "ops": '["a", "b"]', "empty": "{}"}


def test_mlflow_logs_params_metrics_and_artifacts_to_a_sqlite_store_in_the_run_directory(store):
    tmp_path = store
    logger = MLflow(tags={"team": "bio"})
    logger.start(log_run(tmp_path))
    for epoch, val in enumerate([0.3, 0.6, 0.5]):
        logger.log(retrain_record(epoch, val))
    logger.log({"stage": "test", "test_accuracy": 0.55})
    (tmp_path / "report.md").write_text("# report\n")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    logger.log_files([tmp_path / "report.md", png(tmp_path / "genotype.png"), tmp_path / "model.safetensors"])
    logger.finish("finished")

    client = mlflow_client(tmp_path)
    run = only_run(client)
    assert run.info.status == "FINISHED" and run.info.run_name == tmp_path.name
    assert run.data.tags["team"] == "bio" and run.data.tags["bionas.run_dir"] == str(tmp_path.resolve())
    assert run.data.params["retrain.lr"] == "0.05" and run.data.params["seed"] == "3"
    assert run.data.params["space.rules.0.options.seed"] == "null"
    history = client.get_metric_history(run.info.run_id, "retrain/val_accuracy")
    assert [(m.step, m.value) for m in history] == [(0, 0.3), (1, 0.6), (2, 0.5)]
    assert [m.value for m in client.get_metric_history(run.info.run_id, "test/test_accuracy")] == [0.55]
    assert "retrain/epoch" not in run.data.metrics and "retrain/alignment" not in run.data.metrics
    # The weights stay out unless asked for.
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == ["genotype.png", "report.md"]
    stored = json.loads((tmp_path / "mlflow_run.json").read_text())
    assert stored["run_id"] == run.info.run_id and stored["tracking_uri"] is None
    # Artifacts beside the database in the run directory, not in ./mlruns of wherever the run was started.
    assert (tmp_path / "mlartifacts").is_dir() and run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())


def test_mlflow_writes_a_file_store_only_when_the_spec_names_one(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    logger = MLflow(tracking_uri=uri)
    logger.start(log_run(tmp_path))
    logger.log({"stage": "test", "test_accuracy": 0.5})
    logger.finish("finished")
    assert not (tmp_path / "mlflow.db").exists()
    run = only_run(MlflowClient(tracking_uri=uri))
    assert run.info.status == "FINISHED" and run.data.metrics == {"test/test_accuracy": 0.5}


def test_mlflow_options_name_the_experiment_and_run_and_upload_the_weights(store):
    tmp_path = store
    logger = MLflow(experiment="rules-study", run_name="seed-0", weights=True)
    logger.start(log_run(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    logger.log_files([tmp_path / "model.safetensors"])
    logger.finish("failed")
    client = mlflow_client(tmp_path)
    run = only_run(client, "rules-study")
    assert run.info.run_name == "seed-0" and run.info.status == "FAILED"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["model.safetensors"]


def test_a_resumed_run_continues_its_mlflow_run(store):
    tmp_path = store
    first = MLflow()
    first.start(log_run(tmp_path))
    first.log(retrain_record(0, 0.3))
    first.finish("killed")
    assert only_run(mlflow_client(tmp_path)).info.status == "KILLED"

    second = MLflow()
    second.start(log_run(tmp_path, resumed=True))
    assert only_run(mlflow_client(tmp_path)).info.status == "RUNNING"
    second.log(retrain_record(1, 0.6))
    second.finish("finished")
    client = mlflow_client(tmp_path)
    run = only_run(client)  # still one run
    assert run.info.run_id == first.run_id == second.run_id and run.info.status == "FINISHED"
    history = client.get_metric_history(run.info.run_id, "retrain/val_accuracy")
    assert [(m.step, m.value) for m in history] == [(0, 0.3), (1, 0.6)]


def test_a_wrong_tracking_uri_is_one_line_before_the_run(tmp_path):
    logger = MLflow(tracking_uri="nosuchscheme://x")
    with pytest.raises(bionas.BionasError, match=r"^mlflow: cannot start a run at nosuchscheme://x: [^\n]+$"):
        logger.start(log_run(tmp_path))


# -- a run ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_interrupted_then_resumed_run_reaches_both_loggers_as_metrics_jsonl_holds_it(tmp_path, monkeypatch):
    import bionas.retrain
    from bionas.pipeline import Interrupted, run
    from bionas.space import BIONAS_DARTS

    BIONAS_DARTS.save(tmp_path / "genotype.json")
    spec = {"name": "tiny", "dataset": "digits", "genotype": str(tmp_path / "genotype.json"),
            "retrain": {"epochs": 3, "batch_size": 64, "channels": 4, "cells": 2, "cutout": 0, "auxiliary": False},
            "evaluation": {"points": 30, "attacks": [{"name": "fgsm", "eps": [0.1]}]},
            "output": {"dir": str(tmp_path / "run")}, "loggers": ["tensorboard", {"name": "mlflow"}]}
    calls, original = [], bionas.retrain.train_epoch

    def interrupting(*args, **kwargs):  # Ctrl-C in the retrain's second epoch
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(bionas.retrain, "train_epoch", interrupting)
    with pytest.raises(Interrupted):
        run(spec, quiet=True)
    run_dir = tmp_path / "run"
    assert only_run(mlflow_client(run_dir)).info.status == "KILLED"
    monkeypatch.undo()
    result = run(spec, resume=True, quiet=True)

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    retrain = [r for r in records if r["stage"] == "retrain"]
    assert [r["epoch"] for r in retrain] == [0, 1, 2]
    board = events(run_dir / "tensorboard" / "retrain")
    for key in ("train_loss", "val_accuracy", "lr"):
        assert points(board, key) == ([0, 1, 2], pytest.approx([r[key] for r in retrain]))
    assert [e.value for e in events(run_dir / "tensorboard" / "test").Scalars("test_accuracy")] == \
        [pytest.approx(result.test_accuracy)]
    assert {"genotype", "robustness", "training"} <= set(events(run_dir / "tensorboard" / "plots").Tags()["images"])

    client = mlflow_client(run_dir)
    mlrun = only_run(client)  # the resumed session continued the interrupted one's MLflow run
    assert mlrun.info.status == "FINISHED" and mlrun.data.params["retrain.epochs"] == "3"
    assert mlrun.data.params["loggers.0.name"] == "tensorboard"
    history = client.get_metric_history(mlrun.info.run_id, "retrain/val_accuracy")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["val_accuracy"]) for r in retrain]
    assert mlrun.data.metrics["test/test_accuracy"] == result.test_accuracy
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"report.md", "results.json", "metrics.jsonl", "genotype.png", "robustness.json"} <= artifacts
    assert "model.safetensors" not in artifacts
