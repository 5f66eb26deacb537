"""Studies: the pipeline once per seed (`--seeds`, `seeds:`), shards, resume, and the aggregate of the seeds."""

import json
import math

import pytest
import yaml
from test_pipeline import tiny_spec, without_timing
from typer.testing import CliRunner

from bionas.analysis.aggregate import spread
from bionas.cli import build_app
from bionas.errors import BionasError, SpecError
from bionas.pipeline import run
from bionas.space import BIONAS_DARTS
from bionas.spec import load_spec

runner = CliRunner()


def invoke(*args):
    return runner.invoke(build_app(), [str(arg) for arg in args])


def mean_and_sample_std(values):
    """By hand: the mean, and the square root of the squared deviations summed over n - 1."""
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def study_spec(tmp_path, epochs=2, **overrides):
    """tiny_spec's retrain of a given genotype on digits, cut to `epochs` and one cheap attack, without plots."""
    overrides.setdefault("evaluation", {"points": 30, "attacks": [{"name": "fgsm", "eps": [0.1]}]})
    spec = tiny_spec(tmp_path, **overrides)
    spec["retrain"]["epochs"] = epochs
    spec["output"] = {"dir": str(tmp_path / "study"), "plots": False}  # plots: a second a run (the aggregate's: below)
    return spec


def write_spec(tmp_path, spec):
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


# -- the spread, the spec and the command line: no training --------------------------------------


def test_spread_is_the_mean_and_the_sample_standard_deviation():
    three = spread([0.5, None, 0.9, 0.7])  # None: not measured, left out
    assert (three.n, three.mean, three.min, three.max) == (3, pytest.approx(0.7), 0.5, 0.9)
    assert three.std == pytest.approx(0.2)  # deviations -0.2, 0.2, 0: sqrt(0.08 / 2)
    assert three.text() == "70.00% ± 20.00%"
    assert spread([0.8]).std is None and spread([0.8]).text() == "80.00%"
    assert spread([]).mean is None and spread([]).text() == "-"


def test_spec_seeds_are_validated_with_their_field_paths(tmp_path):
    base = tiny_spec(tmp_path)
    del base["seed"]
    assert load_spec({**base, "seeds": [3, 1]}).seed == 3  # seed left out: the first of seeds
    assert load_spec({**base, "seeds": [3, 1], "seed": 1}).seeds == [3, 1]
    assert load_spec({**base, "seed": 4}).seeds is None
    cases = [({"seeds": [0, 1, 0]}, "seeds[2]: seed 0 is listed twice"),
             ({"seeds": []}, "seeds: List should have at least 1 item"),
             ({"seeds": [1, -2]}, "seeds[1]: Input should be greater than or equal to 0"),
             ({"seeds": [0, 1], "seed": 5}, "seed: 5 is not one of seeds (0, 1): in a study, leave seed out"),
             ({"seeds": "0,1"}, "seeds: Input should be a valid list")]
    for change, message in cases:
        with pytest.raises(SpecError) as err:
            load_spec({**base, **change})
        assert any(line.startswith(message) for line in err.value.errors), (change, err.value.errors)
    # The study's resolved spec loads again (seed is then given, and one of seeds).
    assert load_spec(load_spec({**base, "seeds": [2, 5]}).to_dict()).seeds == [2, 5]


def test_run_refuses_a_study_and_names_run_study(tmp_path):
    with pytest.raises(BionasError, match="that is a study, one run per seed; run it with bionas.run_study"):
        run({**tiny_spec(tmp_path), "seeds": [0, 1]})


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0,x"], "error: --seeds: 'x' is not a non-negative integer"),
    (["--seeds", "1,-1"], "error: --seeds: '-1' is not a non-negative integer"),
    (["--seeds", ""], "error: --seeds: '' is not a non-negative integer"),
    (["--seeds", "2,1,2"], "error: --seeds: seed 2 is listed twice"),
    (["--seeds", "0,1", "--shard", "2/2"], "error: --shard: '2/2' is not i/n with 0 <= i < n"),
    (["--seeds", "0,1", "--shard", "1"], "error: --shard: '1' is not i/n with 0 <= i < n"),
    (["--seeds", "0,1", "--shard", "a/b"], "error: --shard: 'a/b' is not i/n with 0 <= i < n"),
    (["--seeds", "0,1", "--shard", "0/0"], "error: --shard: '0/0' is not i/n with 0 <= i < n"),
    (["--shard", "0/2"], "error: --shard splits the seeds of a study: give --seeds, or seeds in the spec"),
])
def test_bad_seeds_and_shards_are_one_line_errors(tmp_path, args, message):
    result = invoke("run", write_spec(tmp_path, tiny_spec(tmp_path)), "--quiet", *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and result.stderr.startswith(message)
    assert "Traceback" not in result.output and not (tmp_path / "run").exists()


def test_study_command_on_what_is_not_a_study(tmp_path):
    (tmp_path / "single").mkdir()
    (tmp_path / "single" / "resolved_spec.json").write_text("{}")
    for path, message in [(tmp_path / "nowhere", "does not exist"), (tmp_path, "holds no study"),
                          (tmp_path / "single", "is a single run (it has resolved_spec.json), not a study")]:
        result = invoke("study", path)
        assert result.exit_code == 1 and message in result.stderr and "Traceback" not in result.output


def robustness_row(attack, eps, robust):
    return {"attack": attack, "threat_model": "white-box (exact gradients)", "claim": True, "family": "white-box",
            "gradient": "exact", "one_step": True, "budget": "eps", "eps": eps, "eps_label": str(eps), "norm": "linf",
            "clean_accuracy": 0.9, "robust_accuracy": robust, "success_rate": None, "points": 30, "attacked": 27,
            "work": 1.0, "work_unit": "gradients", "seconds": 0.1}


def test_the_aggregate_of_seed_directories_matches_the_numbers_by_hand(tmp_path):
    """Seeds 0, 1, 4 finished with known numbers, seed 2 unfinished, seed 3 missing; plus a seed-9 whose spec
    differs from the study's."""
    root = tmp_path / "study"
    study = load_spec({**tiny_spec(tmp_path), "seeds": [0, 1, 2, 3, 4]}).to_dict()
    root.mkdir()
    (root / "study_spec.json").write_text(json.dumps(study))
    numbers = {0: (0.80, 0.75, 0.20, 12.0), 1: (0.90, 0.85, 0.40, 10.0), 4: (0.70, 0.71, 0.30, 14.0),
               9: (0.10, 0.10, 0.00, 1.0)}
    for seed, (val, test, robust, seconds) in numbers.items():
        seed_dir = root / f"seed-{seed}"
        seed_dir.mkdir()
        BIONAS_DARTS.save(seed_dir / "genotype.json")
        results = {"val_accuracy": val, "test_accuracy": test, "search_seconds": seconds, "best_epoch": 1,
                   "parameters": 100, "robustness": {"rows": [robustness_row("fgsm", 0.1, robust)], "flags": [],
                                                     "clean_accuracy": 0.9, "points": 30}}
        (seed_dir / "results.json").write_text(json.dumps(results))
        spec = {**study, "seed": seed, "seeds": None, "device": "cpu"}  # device may differ: not a difference
        if seed == 9:
            spec["retrain"] = {**spec["retrain"], "epochs": 7}
        (seed_dir / "resolved_spec.json").write_text(json.dumps(spec))
    (root / "seed-2" / "checkpoints").mkdir(parents=True)
    (root / "seed-2" / "stages.json").write_text(json.dumps({"search": {}}))
    (root / "seed-8").mkdir()  # results, but a genotype.json that is not one
    (root / "seed-8" / "results.json").write_text(json.dumps({"test_accuracy": 0.5}))
    (root / "seed-8" / "genotype.json").write_text(json.dumps({"normal": 3}))

    result = invoke("study", root)
    assert result.exit_code == 0, result.output
    aggregate = json.loads((root / "study.json").read_text())
    assert aggregate["seeds"] == [0, 1, 2, 3, 4, 8, 9] and aggregate["finished"] == [0, 1, 4, 9]
    assert aggregate["missing"] == [3]
    assert aggregate["unfinished"][0] == {"seed": 2, "dir": "seed-2", "finished_stages": ["search"], "checkpoints": {}}
    assert aggregate["unfinished"][1]["seed"] == 8 and "SpecError" in aggregate["unfinished"][1]["problem"]
    assert aggregate["differences"] == {"seed-9": ["retrain.epochs: 3 -> 7"]}
    for key, column in (("val_accuracy", 0), ("test_accuracy", 1), ("search_seconds", 3)):
        mean, std = mean_and_sample_std([numbers[s][column] for s in (0, 1, 4, 9)])
        assert aggregate["summary"][key]["mean"] == pytest.approx(mean, rel=1e-12)
        assert aggregate["summary"][key]["std"] == pytest.approx(std, rel=1e-12)
    mean, std = mean_and_sample_std([numbers[s][2] for s in (0, 1, 4, 9)])
    assert aggregate["summary"]["robust"]["fgsm at 0.1"] == {"n": 4, "mean": pytest.approx(mean),
                                                            "std": pytest.approx(std), "min": 0.0, "max": 0.4}
    counts = BIONAS_DARTS.rule_counts()
    assert aggregate["rows"][0]["rules"] == counts and aggregate["distinct_genotypes"] == 1
    assert aggregate["summary"]["rules"] == {rule: {"n": 4, "mean": n, "std": 0.0, "min": n, "max": n}
                                             for rule, n in counts.items()}
    markdown = (root / "study.md").read_text()
    test_mean, test_std = mean_and_sample_std([numbers[s][1] for s in (0, 1, 4, 9)])
    assert "| mean ± std | " in markdown and f"{test_mean:.2%} ± {test_std:.2%}" in markdown
    assert "Missing (no directory yet): seed 3." in markdown
    assert "Unfinished: seed 2 (finished stages: search)" in markdown
    assert "seed-9 ran with a different spec than the study's: retrain.epochs: 3 -> 7." in markdown
    assert "Unreadable: seed 8: SpecError: invalid spec" in markdown
    assert (root / "study.png").read_bytes().startswith(b"\x89PNG")
    assert "Missing (no directory yet): seed 3." in result.stdout


# -- studies that train: slow ---------------------------------------------------------------------


def metrics(run_dir, stage):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["stage"] == stage]


@pytest.mark.slow
def test_a_study_killed_in_its_second_seed_resumes_every_seed_and_aggregates_them(tmp_path, monkeypatch):
    import bionas.retrain

    spec_path = write_spec(tmp_path, study_spec(tmp_path))
    root = tmp_path / "study"
    calls = []

    def interrupting(*args, **kwargs):  # 2 epochs a seed: call 4 is seed 1's second epoch
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    original = bionas.retrain.train_epoch
    monkeypatch.setattr(bionas.retrain, "train_epoch", interrupting)
    killed = invoke("run", spec_path, "--seeds", "0,1,2", "--quiet")
    assert killed.exit_code == 130, killed.output
    assert f"continue with: bionas run SPEC --resume --out {root} --seeds 0,1,2" in killed.stderr
    monkeypatch.undo()

    seen = invoke("study", root)  # between the two: seed 0 done, seed 1 half-done, seed 2 not begun
    assert seen.exit_code == 0, seen.output
    partial = json.loads((root / "study.json").read_text())
    assert partial["finished"] == [0] and partial["missing"] == [2]
    assert partial["unfinished"] == [{"seed": 1, "dir": "seed-1", "finished_stages": [],
                                      "checkpoints": {"retrain": 0}}]
    assert partial["summary"]["test_accuracy"]["n"] == 1 and partial["summary"]["test_accuracy"]["std"] is None
    seed0 = (root / "seed-0" / "metrics.jsonl").read_bytes()

    refused = invoke("run", spec_path, "--seeds", "0,1,2", "--quiet")
    assert refused.exit_code == 1 and "seed-0, seed-1 in" in refused.stderr and "--resume" in refused.stderr
    resumed = invoke("run", spec_path, "--seeds", "0,1,2", "--quiet", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert (root / "seed-0" / "metrics.jsonl").read_bytes() == seed0  # finished: reused, not rerun
    assert [r["epoch"] for r in metrics(root / "seed-1", "retrain")] == [0, 1]  # continued after epoch 0
    assert [p.name for p in sorted(root.iterdir()) if p.is_dir()] == ["seed-0", "seed-1", "seed-2"]

    # Each seed's directory is the single run of the spec with that seed.
    single = run(study_spec(tmp_path / "single", seed=1, genotype=str(tmp_path / "genotype.json")), quiet=True)
    resolved = json.loads((root / "seed-1" / "resolved_spec.json").read_text())
    assert resolved["seed"] == 1 and resolved["seeds"] is None
    expected = {k: v for k, v in json.loads((single.run_dir / "resolved_spec.json").read_text()).items()
                if k != "output"}
    assert {k: v for k, v in resolved.items() if k != "output"} == expected
    resumed_records, single_records = metrics(root / "seed-1", "retrain"), metrics(single.run_dir, "retrain")
    assert without_timing(resumed_records) == without_timing(single_records)  # killed and resumed: the same

    aggregate = json.loads((root / "study.json").read_text())
    assert aggregate["finished"] == [0, 1, 2] and not aggregate["missing"] and not aggregate["unfinished"]
    results = [json.loads((root / f"seed-{s}" / "results.json").read_text()) for s in (0, 1, 2)]
    assert results[1]["test_accuracy"] == single.test_accuracy
    for key in ("val_accuracy", "test_accuracy"):
        mean, std = mean_and_sample_std([r[key] for r in results])
        assert aggregate["summary"][key]["mean"] == pytest.approx(mean, rel=1e-12)
        assert aggregate["summary"][key]["std"] == pytest.approx(std, rel=1e-12)
    robust = [r["robustness"]["rows"][0]["robust_accuracy"] for r in results]
    assert [row["robust"] for row in aggregate["rows"]] == [{"fgsm at 0.1": value} for value in robust]
    mean, std = mean_and_sample_std(robust)
    assert aggregate["summary"]["robust"]["fgsm at 0.1"]["mean"] == pytest.approx(mean, rel=1e-12)
    assert aggregate["summary"]["robust"]["fgsm at 0.1"]["std"] == pytest.approx(std, rel=1e-12)
    assert "| mean ± std |" in (root / "study.md").read_text() and not (root / "study.png").exists()
    assert "bionas study 'tiny'" in resumed.stdout and "mean ± std" in resumed.stdout


@pytest.mark.slow
def test_shards_run_their_share_of_the_seeds_and_the_last_aggregates_all(tmp_path):
    spec = study_spec(tmp_path, epochs=1, evaluation={"attacks": []})
    del spec["seed"]
    spec_path = write_spec(tmp_path, {**spec, "seeds": [5, 6, 7]})
    root = tmp_path / "study"

    first = invoke("run", spec_path, "--shard", "0/2", "--quiet")  # seeds[0::2]: 5 and 7
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["seed-5", "seed-7"]
    assert json.loads((root / "study.json").read_text())["missing"] == [6]
    assert "Missing (no directory yet): seed 6." in first.stdout

    empty = invoke("run", spec_path, "--shard", "3/4", "--quiet")  # more jobs than seeds: nothing to do
    assert empty.exit_code == 0, empty.output
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["seed-5", "seed-7"]

    second = invoke("run", spec_path, "--shard", "1/2", "--quiet")  # seeds[1::2]: 6
    assert second.exit_code == 0, second.output
    aggregate = json.loads((root / "study.json").read_text())
    assert aggregate["finished"] == [5, 6, 7] and not aggregate["missing"]
    assert [json.loads((root / f"seed-{s}" / "resolved_spec.json").read_text())["seed"] for s in (5, 6, 7)] == [5, 6, 7]
    accuracies = [json.loads((root / f"seed-{s}" / "results.json").read_text())["test_accuracy"] for s in (5, 6, 7)]
    assert aggregate["summary"]["test_accuracy"]["mean"] == pytest.approx(sum(accuracies) / 3, rel=1e-12)


@pytest.mark.slow
def test_a_seed_that_fails_does_not_stop_the_others(tmp_path, monkeypatch):
    import bionas.retrain

    def diverging_once(*args, **kwargs):  # seed 0's first epoch fails, as a diverging loss would
        monkeypatch.setattr(bionas.retrain, "train_epoch", original)
        raise BionasError("retrain: the loss became nan")

    original = bionas.retrain.train_epoch
    monkeypatch.setattr(bionas.retrain, "train_epoch", diverging_once)
    spec_path = write_spec(tmp_path, study_spec(tmp_path, epochs=1, evaluation={"attacks": []}))
    result = invoke("run", spec_path, "--seeds", "0,1", "--quiet")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith("error: seed 0 failed: retrain: the loss became nan")
    aggregate = json.loads((tmp_path / "study" / "study.json").read_text())
    assert aggregate["finished"] == [1] and [entry["seed"] for entry in aggregate["unfinished"]] == [0]
