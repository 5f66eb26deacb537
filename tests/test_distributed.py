"""Data-parallel runs: two gloo processes launched by torchrun on the CPU."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from bionas.space import BIONAS_DARTS

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("distributed_worker.py")


def torchrun(spec: dict, tmp_path: Path, port: int) -> subprocess.CompletedProcess:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               str(WORKER), str(path), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_two_process_retrain_writes_one_run_with_ranks_in_step(tmp_path):
    BIONAS_DARTS.save(tmp_path / "genotype.json")
    genotype = json.loads((tmp_path / "genotype.json").read_text())
    genotype["normal"][2]["rule"] = "brsf"  # redrawn every step: must be redrawn alike on both ranks
    genotype["normal"][4]["rule"] = "fa"
    (tmp_path / "genotype.json").write_text(json.dumps(genotype))
    spec = {"name": "ddp", "dataset": "digits", "genotype": str(tmp_path / "genotype.json"),
            "retrain": {"epochs": 3, "batch_size": 32, "channels": 4, "cells": 3, "cutout": 0, "lr": 0.05},
            "evaluation": {"points": 40, "attacks": [{"name": "fgsm", "eps": [0.1]}]},
            "output": {"dir": str(tmp_path / "run")}}
    torchrun(spec, tmp_path, 29611)
    runs = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert runs == [tmp_path / "run"]  # rank 0 alone wrote a run directory
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if r["stage"] == "retrain"]
    assert len(losses) == 3 and losses[-1] < losses[0]  # one record per epoch, not one per rank
    provenance = json.loads((tmp_path / "run" / "provenance.json").read_text())
    assert provenance["world_size"] == 2
    rank0, rank1 = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert rank0.keys() == rank1.keys()
    feedback = [k for k in rank0 if "feedback" in k]
    assert any(k.endswith("feedback_step") for k in feedback) and any(k.endswith(".feedback") for k in feedback)
    assert all(rank0[k].item() > 0 for k in feedback if k.endswith("feedback_step"))  # brsf redrew
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
