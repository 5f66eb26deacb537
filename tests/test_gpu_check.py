"""benchmarks/gpu_check.py without a GPU: its table, verdicts and smoke spec, and a clear exit where CUDA is missing."""

import importlib.util
import sys
from pathlib import Path

import torch

from bionas.spec import load_spec

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


def test_verdicts_and_table():
    check = gpu_check()
    assert check.verdict(0.95, 0.9) == "met" and check.verdict(0.85, 0.9) == "not met"
    assert check.verdict(1.5, 2.0, higher_is_better=False) == "met"
    assert check.verdict(float("nan"), 2.0) == "-"
    table = check.format_table([check.Row("loader", "3.5x", ">= 3x", "met")])
    assert table.splitlines() == ["| check | measured | target | verdict |", "|---|---|---|---|",
                                  "| loader | 3.5x | >= 3x | met |"]


def test_the_smoke_run_spec_is_valid(tmp_path):
    spec = load_spec(gpu_check().tiny_spec(tmp_path))
    assert spec.search.name == "darts" and spec.output.dir == str(tmp_path / "run")


def test_without_cuda_it_says_so_and_exits_non_zero(monkeypatch, capsys):
    check = gpu_check()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err
