"""Damaged and mismatched weight files: every one is a CheckpointError naming the file, never a traceback.

A network file (model.safetensors) is damaged byte by byte (its safetensors header) or rewritten
with contents a run never writes (a tensor missing, one too many, a wrong shape or dtype, a
metadata header that no longer describes a network). `load_trained_network` is the loader behind
`bionas attack`, the analyses, a finished stage reused on resume and the Python API.
"""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from bionas.checkpoint import Checkpointer, load_state, save_state
from bionas.cli import build_app
from bionas.errors import CheckpointError
from bionas.model_network import load_trained_network
from bionas.robustness import load_target
from bionas.space import BIONAS_DARTS, build_network

CONFIG = {"channels": 4, "cells": 2, "num_classes": 10, "in_channels": 1, "mean": [0.5], "std": [0.25],
          "auxiliary": False, "image_size": 8, "stem_multiplier": 1}


def good_file(path):
    torch.manual_seed(0)
    network = build_network(BIONAS_DARTS, CONFIG)
    return save_state(path, {"model": network.state_dict()},
                      {"genotype": BIONAS_DARTS.to_dict(), "network": CONFIG, "run": "r",
                       "dataset": {"name": "digits", "options": {}}})


def split(raw: bytes) -> tuple[dict, bytes]:
    """(header JSON, tensor bytes) of a safetensors file: 8 bytes of header length, the header, the data."""
    length = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + length]), raw[8 + length:]


def join(header: dict, data: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def edit_header(change):
    def damage(raw: bytes) -> bytes:
        header, data = split(raw)
        change(header)
        return join(header, data)
    return damage


def first_tensors(header: dict) -> list[str]:
    return sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])[:2]


def out_of_range(header):
    name = first_tensors(header)[0]
    header[name]["data_offsets"] = [0, 10**9]


def overlapping(header):
    first, second = first_tensors(header)
    start, end = header[first]["data_offsets"]
    header[second]["data_offsets"] = [start, start + header[second]["data_offsets"][1]
                                      - header[second]["data_offsets"][0]]


def metadata(key, value):
    return edit_header(lambda header: header["__metadata__"].__setitem__(key, value))


def header_not_json(raw: bytes) -> bytes:
    length = struct.unpack("<Q", raw[:8])[0]
    return raw[:8] + b"{not json".ljust(length) + raw[8 + length:]


BYTES = {
    "truncated": lambda raw: raw[:-7],
    "truncated-in-header": lambda raw: raw[:40],
    "garbage": lambda raw: b"\x89garbage" * 64,
    "empty": lambda raw: b"",
    "header-length-past-the-end": lambda raw: struct.pack("<Q", len(raw)) + raw[8:],
    "header-not-json": header_not_json,
    "offsets-out-of-range": edit_header(out_of_range),
    "offsets-overlap": edit_header(overlapping),
    "non-string-metadata": metadata("bionas.meta", 5),
    "state-header-not-json": metadata("bionas.state", "{"),
    "state-header-a-number": metadata("bionas.state", "5"),
    "state-node-malformed": metadata("bionas.state", '{"__dict__": {"model": {"__dict__": 5}}}'),
    "meta-header-not-json": metadata("bionas.meta", "{"),
    "meta-header-a-list": metadata("bionas.meta", "[]"),
    "not-a-bionas-file": edit_header(lambda header: header["__metadata__"].pop("bionas.state")),
}


def rewritten(change):
    """The file written again by safetensors itself (valid bytes), with `change(tensors, structure, meta)` applied."""
    def damage(path):
        state, meta = load_state(path)
        tensors = {f"model/{k}": v for k, v in state["model"].items()}
        structure = {"__dict__": {"model": {"__dict__": {k: {"__tensor__": f"model/{k}"} for k in state["model"]}}}}
        change(tensors, structure, meta)
        save_file(tensors, str(path), metadata={"bionas.state": json.dumps(structure), "bionas.meta": json.dumps(meta)})
    return damage


def drop_tensor(tensors, structure, meta):
    del tensors[sorted(tensors)[0]]  # its header still names it


def weight(tensors) -> str:
    return next(k for k in sorted(tensors) if k.endswith(".weight") and tensors[k].dim() == 4)


def wrong_shape(tensors, structure, meta):
    name = weight(tensors)
    tensors[name] = torch.zeros(*tensors[name].shape[:-1], tensors[name].shape[-1] + 1)


def wrong_dtype(tensors, structure, meta):
    name = weight(tensors)
    tensors[name] = tensors[name].double()


def unknown_key(tensors, structure, meta):
    name = weight(tensors)
    structure["__dict__"]["model"]["__dict__"]["bogus"] = {"__tensor__": name}


REWRITTEN = {
    "missing-tensor": drop_tensor,
    "extra-tensor": lambda tensors, structure, meta: tensors.__setitem__("stray", torch.zeros(3)),
    "wrong-shape": wrong_shape,
    "wrong-dtype": wrong_dtype,
    "not-in-the-model": unknown_key,
    "no-model-in-state": lambda tensors, structure, meta: structure["__dict__"].__setitem__(
        "other", structure["__dict__"].pop("model")),
    "genotype-damaged": lambda tensors, structure, meta: meta.__setitem__("genotype", {"normal": 5}),
    "network-config-damaged": lambda tensors, structure, meta: meta["network"].__setitem__("bogus", 1),
    "network-config-wrong-type": lambda tensors, structure, meta: meta.__setitem__("network", "small"),
    "model-choice-damaged": lambda tensors, structure, meta: meta.__setitem__("model", {"name": 5}),
}


@pytest.mark.parametrize("damage", list(BYTES.values()), ids=list(BYTES))
def test_a_damaged_network_file_is_an_error_naming_it(tmp_path, damage):
    path = good_file(tmp_path / "model.safetensors")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CheckpointError) as error:
        load_trained_network(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("change", list(REWRITTEN.values()), ids=list(REWRITTEN))
def test_a_network_file_that_does_not_fit_its_network_is_an_error_naming_it(tmp_path, change):
    path = good_file(tmp_path / "model.safetensors")
    load_trained_network(path)  # the neighbour: the file as written loads
    rewritten(change)(path)
    with pytest.raises(CheckpointError) as error:
        load_trained_network(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("record", [None, "digits", {"name": 5}, {"name": "digits", "options": [1]}])
def test_a_network_file_without_a_readable_data_set_record_is_an_error_naming_it(tmp_path, record):
    path = good_file(tmp_path / "model.safetensors")
    rewritten(lambda tensors, structure, meta: meta.__setitem__("dataset", record))(path)
    with pytest.raises(CheckpointError, match="does not record the data set"):
        load_target(tmp_path)


def test_a_directory_in_place_of_the_network_file_is_an_error_naming_it(tmp_path):
    (tmp_path / "model.safetensors").mkdir()
    with pytest.raises(CheckpointError, match="is a directory, not a checkpoint file"):
        load_trained_network(tmp_path / "model.safetensors")


def test_a_resume_checkpoint_without_what_a_stage_saved_is_an_error_naming_it(tmp_path):
    checkpoint = Checkpointer(tmp_path / "retrain.safetensors", "retrain")
    save_state(checkpoint.path, {"model": {}}, checkpoint.metadata(0))  # no RNG states
    with pytest.raises(CheckpointError, match=r"retrain.safetensors: the checkpoint does not hold what a run writes"):
        checkpoint.load()


@pytest.mark.parametrize("case", ["garbage", "missing-tensor"])
def test_attack_on_a_run_directory_with_a_damaged_network_exits_with_its_name(tmp_path, case):
    path = good_file(tmp_path / "model.safetensors")
    if case in BYTES:
        path.write_bytes(BYTES[case](path.read_bytes()))
    else:
        rewritten(REWRITTEN[case])(path)
    result = CliRunner().invoke(build_app(), ["attack", str(tmp_path), "--attack", "fgsm", "--points", "5"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert f"error: {path}" in result.output or f"checkpoint {path}" in result.output, result.output
