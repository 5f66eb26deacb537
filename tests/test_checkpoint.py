"""Checkpoints: nested state round trip, RNG states, atomic writes, clear mismatch errors, no pickle."""

import json
import random

import numpy as np
import pytest
import torch
from safetensors import safe_open

from bionas.checkpoint import (
    diff_dicts,
    load_metadata,
    load_model_state,
    load_state,
    rng_state,
    save_state,
    set_rng_state,
    spec_hash,
)
from bionas.errors import CheckpointError


def test_model_and_optimizer_state_round_trip_exactly(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    x, y = torch.randn(16, 4), torch.randint(0, 2, (16,))

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    step()
    save_state(tmp_path / "ckpt.safetensors", {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                               "epoch": 3, "history": [{"loss": 0.5}]}, {"stage": "retrain"})
    step()
    expected = [p.clone() for p in model.parameters()]

    state, meta = load_state(tmp_path / "ckpt.safetensors")
    assert meta == {"stage": "retrain"} and state["epoch"] == 3 and state["history"] == [{"loss": 0.5}]
    assert load_metadata(tmp_path / "ckpt.safetensors") == meta
    load_model_state(model, state["model"])
    optimizer.load_state_dict(state["optimizer"])  # int-keyed state restored as ints
    step()
    for p, e in zip(model.parameters(), expected):
        assert torch.equal(p, e)


def test_tied_weights_and_views_are_stored(tmp_path):
    weight = torch.randn(3, 3)
    save_state(tmp_path / "t.safetensors", {"a": weight, "b": weight, "row": weight[1]})
    state, _ = load_state(tmp_path / "t.safetensors")
    assert torch.equal(state["a"], state["b"]) and torch.equal(state["row"], weight[1])


def test_rng_state_round_trip():
    torch.manual_seed(1), random.seed(1), np.random.seed(1)
    saved = rng_state()
    first = (torch.rand(3), random.random(), np.random.rand())
    set_rng_state(saved)
    second = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(first[0], second[0]) and first[1:] == second[1:]


def test_files_read_with_safetensors_and_json_alone(tmp_path):
    path = save_state(tmp_path / "c.safetensors", {"w": torch.ones(2)}, {"stage": "search", "epoch": 1})
    with safe_open(str(path), framework="pt") as handle:
        assert json.loads(handle.metadata()["bionas.meta"]) == {"stage": "search", "epoch": 1}
        assert torch.equal(handle.get_tensor("w"), torch.ones(2))
    assert not path.read_bytes().startswith(b"\x80")  # not a pickle


def test_write_is_atomic(tmp_path, monkeypatch):
    path = save_state(tmp_path / "c.safetensors", {"w": torch.zeros(2)})

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(CheckpointError, match="No space left on device"):
        save_state(path, {"w": torch.ones(2)})
    monkeypatch.undo()
    assert torch.equal(load_state(path)[0]["w"], torch.zeros(2))  # the last good one is intact
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary left behind


def test_unstorable_values_and_foreign_files_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="cannot store a function at 'fn'"):
        save_state(tmp_path / "x.safetensors", {"fn": lambda: 0})
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_state(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_state(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_metadata(tmp_path / "junk.safetensors")
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_metadata(tmp_path / "missing.safetensors")


def test_mismatched_model_says_what_differs():
    small, big = torch.nn.Linear(3, 2), torch.nn.Sequential(torch.nn.Linear(3, 4))
    with pytest.raises(CheckpointError) as err:
        load_model_state(big, small.state_dict())
    message = str(err.value)
    assert "missing in the checkpoint (2): 0.bias, 0.weight" in message
    assert "not in the model (2): bias, weight" in message
    with pytest.raises(CheckpointError, match=r"weight: checkpoint \(2, 3\), model \(4, 3\)"):
        load_model_state(torch.nn.Linear(3, 4), small.state_dict())


def test_spec_hash_and_diff():
    a = {"name": "x", "retrain": {"epochs": 600, "lr": 0.025}}
    b = {"name": "x", "retrain": {"epochs": 10, "lr": 0.025}, "seed": 1}
    assert spec_hash(a) == spec_hash(dict(reversed(list(a.items())))) != spec_hash(b)
    assert diff_dicts(a, b) == ["retrain.epochs: 600 -> 10", "seed: added"]


def test_checkpointer_restores_rng_and_refuses_another_spec(tmp_path):
    from bionas.checkpoint import Checkpointer

    spec = {"name": "x", "retrain": {"epochs": 5}}
    ckpt = Checkpointer(tmp_path / "retrain.safetensors", "retrain", spec, {"bionas": "0.1.0"})
    assert ckpt.load() is None
    torch.manual_seed(3)
    ckpt.save({"epoch": 2}, epoch=2)
    expected = torch.rand(4)
    torch.manual_seed(99)
    assert ckpt.load() == {"epoch": 2}
    assert torch.equal(torch.rand(4), expected)  # continues the saved random stream

    other = Checkpointer(tmp_path / "retrain.safetensors", "retrain", {**spec, "retrain": {"epochs": 9}})
    with pytest.raises(CheckpointError, match="retrain.epochs: 5 -> 9"):
        other.load()
    with pytest.raises(CheckpointError, match="holds stage 'retrain', not 'search'"):
        Checkpointer(tmp_path / "retrain.safetensors", "search").load()


def test_text_writes_are_atomic(tmp_path, monkeypatch):
    from bionas.errors import BionasError
    from bionas.rundir import atomic_write_text

    path = tmp_path / "report.md"
    atomic_write_text(path, "old\n")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", broken_replace)
    with pytest.raises(BionasError, match="cannot write .*report.md: No space left on device"):
        atomic_write_text(path, "new\n")
    monkeypatch.undo()
    assert path.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["report.md"]
