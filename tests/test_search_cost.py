"""benchmarks/search_cost.py: its GPU table without operator counts (--no-counts), and its --budget."""

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "search_cost.py"


@pytest.fixture
def search_cost():
    spec = importlib.util.spec_from_file_location("search_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["search_cost"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("search_cost", None)


def test_the_gpu_table_without_counts_shows_dashes_for_them(search_cost, monkeypatch, capsys):
    # --device cuda --no-counts: no kernels, no operator counts (this crashed in report())
    args = search_cost.parse_args(["--sizes", "tiny", "--no-counts"])
    args.device = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a GPU")
    config = search_cost.Config("batched", "tiny", 1, "channels_last", 4, 4, times=[0.5, 0.7, 0.6], eval_time=0.1)
    search_cost.report(args, [config])
    row = capsys.readouterr().out.splitlines()[3].split()
    hours = 50 * math.ceil(25_000 / 4) * (0.6 + 0.1) / 3600
    assert row[:5] == ["tiny", "1", "channels_last", "batched", "0.600"]
    assert row[8:11] == ["-", "-", "-"]  # ATen ops, computing, kernels
    assert row[-2:] == [f"{hours:.1f}", "h"]


def test_the_budget_skips_configurations_once_spent(search_cost, capsys):
    search_cost.main(["--sizes", "tiny", "--modes", "batched", "--layouts", "nchw", "--partial-channels", "1,4",
                      "--no-counts", "--budget", "1e-9"])
    out = capsys.readouterr().out
    assert out.count("skipped: --budget 1e-09 s spent") == 2
