"""Data-parallel runs: two gloo processes launched by torchrun on the CPU, a darts search, a retrain and a
bp surrogate for a transfer attack."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("distributed_worker.py")


def test_two_process_search_and_retrain_write_one_run_with_ranks_in_step(tmp_path):
    spec = {
        "name": "ddp", "dataset": "digits",
        # brsf redraws its feedback every step: both ranks must redraw alike.
        "space": {"ops": ["max_pool_3x3", "skip_connect", "sep_conv_3x3"], "rules": ["brsf", "fa"],
                  "channels": 4, "cells": 3},
        "search": {"name": "darts", "options": {"epochs": 3, "batch_size": 32}},
        "retrain": {"epochs": 3, "batch_size": 32, "channels": 4, "cells": 3, "cutout": 0, "lr": 0.05},
        # A transfer attack trains its bp surrogate: a training stage between retrain and the rank-0 evaluation.
        "evaluation": {"points": 40, "attacks": [{"name": "fgsm", "eps": [0.1]},
                                                 {"name": "transfer", "options": {"attack": "fgsm"}, "eps": [0.1]}]},
        "output": {"dir": str(tmp_path / "run")},
        "loggers": ["tensorboard"],  # rank 0 alone logs
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    # --standalone: a free rendezvous port, so that two launches at once don't collide.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(WORKER), str(tmp_path / "spec.yaml"), str(tmp_path)]
    # The workers import bionas from where this test does, not from an installed copy.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["run"]  # rank 0 alone wrote a run directory
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    for stage in ("search", "retrain", "surrogate"):
        losses = [r["train_loss"] for r in records if r["stage"] == stage]
        assert len(losses) == 3 and losses[-1] < losses[0], (stage, losses)  # one record per epoch, falling
    assert json.loads((tmp_path / "run" / "provenance.json").read_text())["world_size"] == 2
    for stage in ("search", "retrain", "surrogate"):  # one writer (rank 0's), one point per epoch
        [events] = (tmp_path / "run" / "tensorboard" / stage).glob("events.out.tfevents.*")
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        assert [e.step for e in accumulator.Scalars("train_loss")] == [0, 1, 2]
    assert (tmp_path / "run" / "model.safetensors").exists() and (tmp_path / "run" / "surrogate.safetensors").exists()
    robustness = json.loads((tmp_path / "run" / "robustness.json").read_text())
    assert [row["attack"] for row in robustness["rows"]] == ["fgsm", "transfer (fgsm)"]

    for stage in ("search", "retrain", "surrogate"):
        rank0, rank1 = (load_file(str(tmp_path / f"{stage}-rank{r}.safetensors")) for r in (0, 1))
        assert rank0.keys() == rank1.keys()
        for key in rank0:  # weights, alphas and feedback buffers identical on both ranks
            assert torch.equal(rank0[key], rank1[key]), (stage, key)
    supernet = load_file(str(tmp_path / "search-rank0.safetensors"))
    steps = [v.item() for k, v in supernet.items() if k.endswith("feedback_step")]
    assert steps and min(steps) > 0  # brsf redrew during the search
    assert any(k.endswith(".feedback") for k in supernet) and "alphas_normal" in supernet
