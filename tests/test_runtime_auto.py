"""benchmarks/runtime_auto.py: its variants (auto and one setting flipped at a time) and its table."""

import importlib.util
import sys
from pathlib import Path

import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def runtime_auto():
    spec = importlib.util.spec_from_file_location("runtime_auto", BENCHMARKS / "runtime_auto.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["runtime_auto"] = module
    spec.loader.exec_module(module)
    return module


def test_each_variant_flips_one_setting_of_auto(monkeypatch):
    from bionas import runtime

    script = runtime_auto()
    cpu = script.variants(torch.device("cpu"))
    auto = {"amp": "off", "channels_last": runtime.AUTO_CHANNELS_LAST["cpu"], "compile": runtime.AUTO_COMPILE["cpu"],
            "cuda_graphs": False}
    assert cpu["auto"] == auto
    assert list(cpu) == ["auto", "amp bf16", f"channels_last {'off' if auto['channels_last'] else 'on'}",
                         f"compile {'off' if auto['compile'] else 'on'}"]  # no CUDA graphs off CUDA
    for name, settings in cpu.items():
        assert sum(settings[k] != auto[k] for k in auto) == (name != "auto")
    # on CUDA: auto as bionas.runtime says, and cuda_graphs flipped too
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cuda = script.variants(torch.device("cuda"))
    assert cuda["auto"]["amp"] == ("bf16" if runtime.AUTO_AMP["cuda"] else "off")
    assert cuda["auto"]["cuda_graphs"] == runtime.AUTO_CUDA_GRAPHS["cuda"]
    assert f"cuda_graphs {'off' if runtime.AUTO_CUDA_GRAPHS['cuda'] else 'on'}" in cuda


def test_the_table_gives_each_variant_against_auto():
    script = runtime_auto()
    results = {"auto": {"search": {"step": 0.5, "first_step": 3.0}, "retrain": {"images_per_second": 100.0,
                                                                                "first_step": 1.0}},
               "amp bf16": {"search": {"step": 2.0, "first_step": 4.0}}}
    lines = script.table(torch.device("cpu"), results, {"compile on": "timed out"}).splitlines()
    assert lines[2].split(" | ")[2:] == ["0.5000", "1.00x", "3.0", "100.0", "1.00x", "1.0 |"]
    assert lines[3].split(" | ")[2:] == ["2.0000", "4.00x", "4.0", "-", "-", "- |"]
    assert lines[-1].startswith("| compile on (timed out) |") and lines[-1].endswith("| - | - | - | - | - | - |")
