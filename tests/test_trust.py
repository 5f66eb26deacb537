"""Trust: resumed runs that match their inputs, no code from data or run directories, writes that are atomic
and stay inside the run directory."""

from __future__ import annotations

import json
import os
import pickle
import stat

import numpy as np
import pytest
from safetensors import SafetensorError

import bionas
from bionas.checkpoint import load_state, save_state
from bionas.errors import BionasError, CheckpointError, DataError
from bionas.pipeline import Interrupted, run
from bionas.robustness import DataAccess, recorded_dataset
from bionas.rundir import MetricsLog, RunDir, atomic_write_text, write_json
from bionas.space import BIONAS_DARTS, Genotype
from bionas_datasets._files import load_pickle


def tiny_spec(tmp_path, **overrides):
    genotype = tmp_path / "genotype.json"
    if not genotype.exists():
        BIONAS_DARTS.save(genotype)
    spec = {
        "name": "trust",
        "dataset": {"name": "digits"},
        "genotype": str(genotype),
        "retrain": {"epochs": 1, "batch_size": 64, "channels": 4, "cells": 2, "cutout": 0, "auxiliary": False},
        "evaluation": {"points": 20, "attacks": []},
        "output": {"dir": str(tmp_path / "run"), "plots": False},
    }
    spec.update(overrides)
    return spec


# -- 1. a resumed run publishes only results that belong together ----------------------------------


@pytest.mark.slow
def test_an_edited_genotype_file_refuses_the_resume_and_a_moved_one_does_not(tmp_path):
    spec = tiny_spec(tmp_path)
    run(spec, quiet=True)
    moved = tmp_path / "moved.json"
    moved.write_text((tmp_path / "genotype.json").read_text())
    assert run({**spec, "genotype": str(moved)}, resume=True, quiet=True).genotype == BIONAS_DARTS

    edited = BIONAS_DARTS.to_dict()
    edited["normal"][0] = {**edited["normal"][0], "op": "max_pool_3x3", "rule": None}
    (tmp_path / "genotype.json").write_text(json.dumps(edited))
    with pytest.raises(BionasError, match=r"stage 'retrain' .* different spec.*\n  genotype.normal: "):
        run(spec, resume=True, quiet=True)
    published = Genotype.load(tmp_path / "run" / "genotype.json")
    assert published == BIONAS_DARTS  # the refusal published nothing of the edited genotype


@pytest.mark.slow
def test_runtime_workers_do_not_block_a_resume(tmp_path):
    spec = tiny_spec(tmp_path)
    first = run(spec, quiet=True)
    second = run({**spec, "runtime": {"workers": 0}}, resume=True, quiet=True)
    assert second.test_accuracy == first.test_accuracy


def write_cifar10(root, data_value=0) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"labels": list(range(10)), "data": np.full((10, 3072), data_value, dtype=np.uint8)}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list("0123456789")}, protocol=2))


def test_data_read_from_a_root_is_fingerprinted_by_content_not_location(tmp_path):
    from bionas.pipeline.book import content_identity, stage_identity

    write_cifar10(tmp_path / "a")
    write_cifar10(tmp_path / "b")  # the same data elsewhere
    write_cifar10(tmp_path / "c", data_value=1)  # other data

    def identity(root):
        spec = bionas.load_spec({"name": "x", "dataset": {"name": "cifar10", "options": {"root": str(root),
                                                                                          "val_size": 5}},
                                 "search": "random"})
        dataset = bionas.get_dataset("cifar10", **spec.dataset.options)
        return stage_identity(content_identity(spec.to_dict(), None, dataset), "search")

    assert identity(tmp_path / "a") == identity(tmp_path / "b")
    assert identity(tmp_path / "a") != identity(tmp_path / "c")
    assert "root" not in identity(tmp_path / "a")["dataset"]["options"]
    assert "workers" not in identity(tmp_path / "a")["runtime"]


# -- 2. no code runs from data files or run directories -------------------------------------------


class RunsCode:
    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


@pytest.mark.parametrize("payload", [
    lambda marker: RunsCode(os.system, f"touch {marker}"),
    lambda marker: {"data": RunsCode(eval, f"open({str(marker)!r}, 'w')"), "labels": []},
    lambda marker: {"data": [RunsCode(exec, f"open({str(marker)!r}, 'w')")], "labels": []},
], ids=["os.system", "eval-inside-dict", "exec-inside-list"])
def test_a_malicious_data_pickle_is_refused_before_it_runs(tmp_path, payload):
    marker = tmp_path / "code-ran"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(payload(marker), protocol=2))
    with pytest.raises(DataError, match="cannot read .*data_batch_1: it refers to .*which a data file never needs"):
        load_pickle(path, "cifar10")
    assert not marker.exists()


def test_an_array_of_python_objects_is_refused(tmp_path):
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps({"data": np.array([1, "x"], dtype=object), "labels": []}, protocol=2))
    with pytest.raises(DataError, match="an array of Python objects"):
        load_pickle(path, "cifar10")


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_the_real_data_formats_still_load(tmp_path, protocol):
    entry = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [1, 2], b"batch_label": b"b",
             b"mean": np.zeros(3), b"filenames": ["a.png", "b.png"], b"count": np.int64(2)}
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(entry, protocol=protocol))
    loaded = load_pickle(path, "cifar10")
    assert set(loaded) == {"data", "labels", "batch_label", "mean", "filenames", "count"}
    assert np.array_equal(loaded["data"], entry[b"data"]) and loaded["labels"] == [1, 2]
    # Files pickled before numpy 2 name numpy.core.multiarray; protocol 2 writes module names as text.
    older = pickle.dumps(entry, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    path.write_bytes(older)
    assert np.array_equal(load_pickle(path, "cifar10")["data"], entry[b"data"])


def test_a_run_directory_names_no_data_location_the_user_did_not_name(tmp_path):
    record = {"name": "cifar10", "options": {"root": str(tmp_path / "theirs"), "val_size": 5, "download": True}}
    with pytest.raises(BionasError, match=r"names the location of its data \(dataset.options.root = "):
        recorded_dataset(record, tmp_path / "run" / "model.safetensors")
    write_cifar10(tmp_path / "mine")
    dataset = recorded_dataset(record, tmp_path / "run", DataAccess(root=tmp_path / "mine"))
    assert dataset.options.root == str(tmp_path / "mine") and dataset.options.download is False
    assert len(dataset.split("test")) == 10
    trusted = recorded_dataset(record, tmp_path / "run", DataAccess(trust=True))
    assert trusted.options.root == str(tmp_path / "theirs") and trusted.options.download is True


# -- writes stay inside the run directory ------------------------------------------------------------


@pytest.fixture
def outside(tmp_path):
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "precious").write_text("mine\n")
    return directory


def test_a_symlinked_subdirectory_leading_out_of_the_run_is_refused(tmp_path, outside):
    run_dir = RunDir(tmp_path / "run")
    run_dir.root.mkdir()
    for name in ("analysis", "checkpoints", "attacks"):
        (run_dir.root / name).symlink_to(outside, target_is_directory=True)
    with pytest.raises(BionasError, match="analysis leads out of the run directory"):
        run_dir.path("analysis/gradvar.json")
    with pytest.raises(BionasError, match="checkpoints leads out of the run directory"):
        run_dir.checkpoint("retrain")
    with pytest.raises(BionasError, match="attacks leads out of the run directory"):
        run_dir.path("attacks")
    (run_dir.root / "inside").mkdir()
    (run_dir.root / "alias").symlink_to(run_dir.root / "inside", target_is_directory=True)
    assert run_dir.path("alias/x.json") == run_dir.root / "alias" / "x.json"  # a link within the run is fine


def test_a_symlinked_file_is_replaced_not_written_through(tmp_path, outside):
    run_dir = RunDir(tmp_path / "run")
    run_dir.root.mkdir()
    (run_dir.root / "genotype.json").symlink_to(outside / "precious")
    BIONAS_DARTS.save(run_dir.path("genotype.json"))
    assert (outside / "precious").read_text() == "mine\n"
    assert not (run_dir.root / "genotype.json").is_symlink()
    assert Genotype.load(run_dir.root / "genotype.json") == BIONAS_DARTS

    (run_dir.root / "metrics.jsonl").symlink_to(outside / "precious")
    with pytest.raises(BionasError, match="metrics.jsonl: it is a symbolic link"):
        run_dir.metrics.append({"stage": "retrain", "epoch": 0})
    assert (outside / "precious").read_text() == "mine\n"


def test_attack_does_not_write_through_a_symlinked_attacks_folder(tmp_path, outside):
    from tests.test_bad_inputs import assert_refused, invoke, save_model

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    save_model(run_dir / "model.safetensors", {"name": "digits", "options": {}}, 1, 8)
    (run_dir / "attacks").symlink_to(outside, target_is_directory=True)
    assert_refused(invoke("attack", run_dir, "--attack", "fgsm", "--points", "5"), "leads out of the run directory")
    assert sorted(p.name for p in outside.iterdir()) == ["precious"]


# -- metrics.jsonl: a torn last line is dropped, other corruption named ---------------------------------


def test_a_torn_last_metrics_line_is_dropped_and_other_corruption_is_named(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.append({"stage": "retrain", "epoch": 0})
    with open(log.path, "a") as handle:
        handle.write('{"stage": "retrain", "ep')  # a kill during the append
    assert log.records() == [{"stage": "retrain", "epoch": 0}]
    log.drop_torn_line()
    log.append({"stage": "retrain", "epoch": 1})
    assert [r["epoch"] for r in log.records()] == [0, 1]

    log.path.write_text('{"stage": "retrain", "epoch": 0}\nnot json\n{"stage": "retrain", "epoch": 1}\n')
    with pytest.raises(BionasError, match="metrics.jsonl is corrupted at line 2"):
        log.records()


@pytest.mark.slow
def test_a_resume_after_a_torn_metrics_line_finishes(tmp_path, monkeypatch):
    reference = run(tiny_spec(tmp_path / "a", retrain={**tiny_spec(tmp_path / "a")["retrain"], "epochs": 2}),
                    quiet=True)
    spec = tiny_spec(tmp_path / "b", retrain={**tiny_spec(tmp_path / "b")["retrain"], "epochs": 2})
    append = MetricsLog.append

    def killed_mid_append(self, record):  # a kill while the retrain's second epoch is logged
        if record.get("stage") == "retrain" and record.get("epoch") == 1:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record)[:20])
            raise KeyboardInterrupt
        append(self, record)

    monkeypatch.setattr(MetricsLog, "append", killed_mid_append)
    with pytest.raises(Interrupted):
        run(spec, quiet=True)
    monkeypatch.undo()
    assert not (tmp_path / "b" / "run" / "metrics.jsonl").read_text().endswith("\n")  # torn
    resumed = run(spec, resume=True, quiet=True)
    assert resumed.test_accuracy == reference.test_accuracy
    lines = [json.loads(line) for line in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if r["stage"] == "retrain"] == [0, 1]


# -- 6. atomic writes: full disk, failing writers, one file mode -----------------------------------------


def test_a_full_disk_during_a_checkpoint_is_one_error_and_keeps_the_old_one(tmp_path, monkeypatch):
    import bionas.checkpoint

    path = tmp_path / "checkpoints" / "retrain.safetensors"
    save_state(path, {"epoch": 1}, {"epoch": 1})

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")

    monkeypatch.setattr(bionas.checkpoint, "save_file", full_disk)
    with pytest.raises(CheckpointError, match=r"cannot write .*retrain.safetensors: .*StorageFull"):
        save_state(path, {"epoch": 2}, {"epoch": 2})
    assert load_state(path)[1] == {"epoch": 1}
    assert [p.name for p in path.parent.iterdir()] == ["retrain.safetensors"]  # no temp file left


@pytest.mark.slow
def test_a_full_disk_during_a_run_is_a_one_line_error(tmp_path, monkeypatch):
    import bionas.checkpoint
    from tests.test_bad_inputs import assert_refused, invoke

    def full_disk(tensors, filename, metadata=None):
        raise SafetensorError("No space left on device (os error 28)")

    monkeypatch.setattr(bionas.checkpoint, "save_file", full_disk)
    (tmp_path / "spec.json").write_text(json.dumps(tiny_spec(tmp_path)))
    result = invoke("run", tmp_path / "spec.json", "--quiet", "--device", "cpu")
    assert_refused(result, "No space left on device")
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_a_failed_write_keeps_every_old_file(tmp_path, monkeypatch):
    """genotype.json, the attack's robustness.json, analysis reports and plots all go through the one writer."""
    from bionas.plots import figure, save
    from bionas.robustness import RobustnessReport

    report = RobustnessReport(rows=[], flags=[], clean_accuracy=0.5, points=10)
    writers = {
        "genotype.json": lambda path: BIONAS_DARTS.save(path),
        "robustness.json": lambda path: report.save_json(path),
        "gradvar.md": lambda path: atomic_write_text(path, "# new\n"),
        "curve.png": lambda path: save(figure()[0], path),
    }
    for name in writers:
        (tmp_path / name).write_text("old\n")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    for name, write in writers.items():
        with pytest.raises(BionasError, match=f"cannot write .*{name}: No space left on device"):
            write(tmp_path / name)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(writers)
    assert all((tmp_path / name).read_text() == "old\n" for name in writers)


def test_every_file_gets_the_same_mode(tmp_path):
    old = os.umask(0o022)
    try:
        save_state(tmp_path / "c.safetensors", {"epoch": 1})
        write_json(tmp_path / "r.json", {})
    finally:
        os.umask(old)
    modes = {stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ("c.safetensors", "r.json")}
    assert modes == {0o644}
