"""benchmarks/gpu_check.py without a GPU: its time-boxed parts (benchmarks/timebox.py), its arithmetic, its smoke
spec, the step clock of benchmarks/real_steps.py, and a clear exit where CUDA is missing."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

from bionas.spec import load_spec

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def gpu_check():
    return script("gpu_check")


def test_verdicts_and_table():
    check = gpu_check()
    assert check.verdict(0.95, 0.9) == "met" and check.verdict(0.85, 0.9) == "not met"
    assert check.verdict(1.5, 2.0, higher_is_better=False) == "met"
    assert check.verdict(float("nan"), 2.0) == "-" and check.verdict(None, 2.0) == "-"
    table = check.format_table([check.Row("loader", "3.5x", ">= 3x", "met")])
    assert table.splitlines() == ["| check | measured | target | verdict |", "|---|---|---|---|",
                                  "| loader | 3.5x | >= 3x | met |"]


def test_the_projection_counts_each_epochs_steps_and_forward_pass():
    check = gpu_check()
    # 50 x ceil(25,000 / 64) = 50 x 391 steps of 60 ms plus as many forward passes of 20 ms
    assert check.projected_hours(0.060, 0.020, 64) == pytest.approx(50 * 391 * 0.080 / 3600)
    assert check.projected_hours(0.1, 0.0, 256) == pytest.approx(50 * 98 * 0.1 / 3600)


def test_comparison_rows_are_the_ratios_of_what_the_parts_measured():
    check = gpu_check()
    values = {"search-64-graphs": {"step": 0.05, "batch": 64}, "search-64-eager": {"step": 2.5, "batch": 64},
              "search-256-graphs": {"step": 0.2, "batch": 256}, "lrnas": {"step": 5.0},
              "retrain-graphs": {"bp": 10_000.0, "mixed": 8_500.0}, "retrain-eager": {"bp": 500.0}}
    rows = {r.check: r for r in check.comparison_rows(values)}
    assert rows["search step batch 64: CUDA graphs vs eager"].measured.endswith("50.0x faster")
    assert rows["search step, batch 256 / batch 64 (graphs)"].measured == "4.00x"
    assert rows["search step, batch 256 / batch 64 (graphs)"].verdict == "not met"
    assert rows["search step batch 64, bionas graphs / LR-NAS"].measured.startswith("0.010x")
    assert rows["retrain mixed rules / bp, graphs"].measured.startswith("0.85x")
    assert rows["retrain mixed rules / bp, graphs"].verdict == "not met"
    assert rows["retrain bp: CUDA graphs vs eager"].measured == "20.0x images/s"
    assert "retrain mixed: CUDA graphs vs eager" not in rows  # eager mixed was not measured
    assert all(r.target == "" for r in check.comparison_rows(values, with_targets=False))


def test_the_smoke_run_specs_are_valid(tmp_path):
    for tiny in (False, True):
        spec = load_spec(gpu_check().tiny_spec(tmp_path, tiny=tiny))
        assert spec.search.name == "darts" and spec.output.dir == str(tmp_path / "run")


def test_without_cuda_it_says_so_and_exits_non_zero(monkeypatch, capsys):
    check = gpu_check()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check.main([]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_a_part_that_raises_reports_its_row_and_exits_non_zero(monkeypatch, capsys):
    check = gpu_check()

    def broken(args, batch, graphs):
        raise RuntimeError("no memory left\nsecond line")

    monkeypatch.setattr(check, "search_part", broken)
    assert check.main(["--part", "search-64-graphs", "--device", "cpu", "--tiny"]) == 1
    line = capsys.readouterr().out.strip()
    assert line.startswith("@row ")
    assert json.loads(line[5:]) == {"check": "search-64-graphs", "measured": "failed: RuntimeError: no memory left",
                                    "target": "", "verdict": ""}


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_parts_run_in_time_boxes_and_the_rest_go_on():
    timebox = script("timebox")
    row = 'print("@row " + json.dumps({"check": "%s", "measured": "1 ms"}), flush=True)'
    parts = [
        timebox.Part("good", python("import json; " + row % "good" + '; print("@value {\\"x\\": 2}")'), 20),
        timebox.Part("raises", python("import json; " + row % "before" + "; raise RuntimeError('broken here')"), 20),
        timebox.Part("hangs", python("import json, time; " + row % "early" + "; time.sleep(60)"), 1.5),
        timebox.Part("after", python("import json; " + row % "after"), 20),
    ]
    shown, log = [], open("/dev/null", "w")
    outcomes = timebox.run_parts(parts, budget=60, show=shown.append, log=log)
    assert [o.status for o in outcomes.values()] == ["ok", "failed", "timed out", "ok"]
    assert outcomes["good"].values == {"x": 2}
    checks = [(r.check, r.measured.split(":")[0]) for r in shown]
    assert checks == [("good", "1 ms"), ("before", "1 ms"), ("raises", "failed"), ("early", "1 ms"),
                      ("hangs", "timed out after 2 s (its time box); the rows above are what it measured before"),
                      ("after", "1 ms")]
    assert "RuntimeError: broken here" in shown[2].measured  # the last line of what it wrote to stderr
    assert outcomes["hangs"].seconds < 10  # killed at its box, not after its sleep


def test_the_overall_budget_cuts_boxes_and_skips_what_does_not_fit(monkeypatch):
    timebox = script("timebox")
    monkeypatch.setattr(timebox, "MIN_BOX", 0.5)
    parts = [timebox.Part("slow", python("import time; time.sleep(60)"), 30),
             timebox.Part("next", python("pass"), 30)]
    shown = []
    outcomes = timebox.run_parts(parts, budget=1.5, show=shown.append, log=open("/dev/null", "w"))
    assert outcomes["slow"].status == "timed out" and outcomes["slow"].seconds < 10  # its box cut to 1.5 s
    assert outcomes["next"].status == "skipped"
    assert shown[-1].measured.startswith("skipped: the run's budget of 2 s is spent")


def test_the_step_clock_times_the_last_epoch_and_its_validation():
    real_steps = script("real_steps")
    clock = real_steps.StepClock(torch.device("cpu"), started=100.0)
    clock.epochs = [{"start": 100.5, "total": 4, "steps": 4, "first_step_end": 110.0, "steps_end": 113.0,
                     "validated": 114.0},
                    {"start": 114.5, "total": 4, "steps": 4, "first_step_end": 115.0, "steps_end": 116.5,
                     "validated": 117.5}]
    timing = real_steps.Timing.from_clock(clock, steps=4, batch=64, validation_batches=2)
    assert (timing.first_step, timing.first_epoch) == (10.0, 13.0)
    assert timing.step == pytest.approx(0.5) and timing.forward == pytest.approx(0.5)
    assert timing.images_per_second == pytest.approx(128)
    one = real_steps.Timing.from_clock(real_steps.StepClock(torch.device("cpu"), 100.0), 4, 64, 2)
    assert math.isnan(one.step)  # nothing ran: nothing measured
    with pytest.raises(RuntimeError, match="no steady epoch"):
        one.checked()


def test_the_step_clock_stands_in_for_the_loops_bar():
    real_steps = script("real_steps")
    clock = real_steps.StepClock(torch.device("cpu"), started=0.0)
    for _ in range(2):
        with clock.bar(3, "epoch") as bar:
            for _ in range(3):
                bar.advance(1, None)
            bar.advance(0, "summary")
    first, last = clock.epochs
    assert first["steps"] == last["steps"] == 3
    assert first["start"] <= first["first_step_end"] <= first["steps_end"] <= first["validated"] <= last["start"]
    assert "first_step_end" not in last  # a steady epoch synchronises at its end only


@pytest.mark.slow
def test_the_tiny_check_runs_its_parts_on_the_cpu(capsys):
    check = gpu_check()
    assert check.main(["--device", "cpu", "--tiny", "--only", "search-64-eager,retrain-eager", "--budget",
                       "120", "--box-scale", "3"]) == 0
    out = capsys.readouterr().out
    for check_name in ("search step, batch 4, eager", "forward pass (validation), batch 4", "first step, search",
                       "50-epoch search projected", "retrain bp, BioNAS-DARTS", "retrain mixed rules / bp, eager"):
        assert check_name in out
    assert "failed" not in out and "timed out" not in out
    values = json.loads(out.split("values: ")[1])
    assert values["search-64-eager"]["step"] > 0 and values["retrain-eager"]["mixed"] > 0
