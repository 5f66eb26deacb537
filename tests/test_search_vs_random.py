"""Does the search beat random: the standing of a value among random ones, retraining variants (resume, shards),
how decided a genotype is, and a study paired with random genotypes. No training here but the slow study."""

import json
import math
from types import SimpleNamespace

import pytest
from search_support import TINY_SPACE
from test_pipeline import tiny_spec
from test_study import invoke, mean_and_sample_std, study_spec, write_spec

from bionas.analysis import variants
from bionas.analysis.aggregate import standing
from bionas.analysis.random_architectures import markdown, summarise
from bionas.errors import BionasError
from bionas.rundir import RunDir
from bionas.search.decided import decidedness, decidedness_lines, edge_decidedness
from bionas.space import BIONAS_DARTS
from bionas.space.sampling import sample_genotypes
from bionas.spec import RetrainSpec, load_spec

RANDOMS = [0.95, 0.96, 0.97, 0.94, 0.93]  # mean 0.95; deviations 0, 1, 2, -1, -2 hundredths


# -- standing: rank, percentile, verdict ----------------------------------------------------------


def test_standing_ranks_the_value_among_the_random_ones():
    place = standing(0.958, RANDOMS)
    mean, std = mean_and_sample_std(RANDOMS)  # 0.95, sqrt(0.001 / 4)
    assert place.others.mean == pytest.approx(mean) and place.others.std == pytest.approx(std)
    assert place.rank == 3  # 0.96 and 0.97 above it
    assert place.percentile == pytest.approx(60.0)  # 0.95, 0.94, 0.93 of 5 below
    assert place.verdict == "not better than random at this budget"
    assert place.text("searched", "random") == ("searched 95.80%; random 95.00% ± 1.58% (n=5): not better than "
                                                "random at this budget")
    assert standing(0.95, RANDOMS).percentile == pytest.approx(50.0)  # 2 below, the tie counted half
    assert standing(0.95, RANDOMS).rank == 3


def test_standing_verdicts_need_more_than_the_spread():
    std = math.sqrt(0.001 / 4)
    assert standing(0.98, RANDOMS).verdict.startswith("better than random")  # above all 5, 1.9 std above
    assert standing(0.98, RANDOMS).rank == 1 and standing(0.98, RANDOMS).percentile == 100.0
    # above every random one, but within one std of their mean: not better
    assert standing(0.971, [0.97, 0.97, 0.90]).verdict == "not better than random at this budget"
    assert standing(0.95 - std - 1e-4, RANDOMS).verdict.startswith("worse than random")
    assert standing(0.95 - std + 1e-4, RANDOMS).verdict == "not better than random at this budget"
    assert standing(0.99, [0.5]).verdict.startswith("too few random samples")


def test_the_analysis_summary_puts_the_searched_genotype_first_and_says_the_verdict():
    genotype = BIONAS_DARTS.to_dict()
    rows = [{"label": f"random-{i:02d}", "test_accuracy": a, "val_accuracy": a, "genotype": genotype}
            for i, a in enumerate(RANDOMS)]
    rows.insert(2, {"label": "searched", "test_accuracy": 0.958, "val_accuracy": 0.96, "genotype": genotype})
    results = {**summarise(rows, 5, 6, 0), "missing": [], "retrained": []}
    assert [r["label"] for r in results["rows"]] == ["searched"] + [f"random-{i:02d}" for i in range(5)]
    assert results["summary"]["rank"] == 3 and results["summary"]["of"] == 6
    assert results["summary"]["percentile"] == pytest.approx(60.0)
    text = markdown(results)
    assert "**searched 95.80%; random 95.00% ± 1.58% (n=5): not better than random at this budget.**" in text
    assert "ranks 3 of 6, above 60% of the random ones" in text
    partial = summarise([r for r in rows if r["label"] != "searched"], 5, 6, 0)  # the searched one not retrained yet: no verdict
    assert partial["summary"] is None


# -- retraining variants: resume and shards, with the training replaced by a recorder -------------


@pytest.fixture
def fake_run(tmp_path, monkeypatch):
    """A run context whose retrains are recorded, not trained: each 'trains' to a fixed accuracy."""
    trained = []

    def fake_retrain(model, dataset, recipe, runtime, *, seed, best_path, checkpoint, best_metadata):
        trained.append(best_path.parent.name)
        best_path.write_bytes(b"weights")
        return SimpleNamespace(best_val_accuracy=0.5, best_epoch=recipe.epochs - 1)

    monkeypatch.setattr(variants, "retrain", fake_retrain)
    monkeypatch.setattr(variants, "build_network", lambda genotype, config: SimpleNamespace(to=lambda d: None))
    monkeypatch.setattr(variants, "load_network", lambda path, device: (None, {}))
    monkeypatch.setattr(variants, "make_loader", lambda *args, **kwargs: None)
    monkeypatch.setattr(variants, "evaluate_accuracy", lambda *args: (0.1, 0.75))
    spec = load_spec(tiny_spec(tmp_path / "spec"))
    run = SimpleNamespace(dir=RunDir(tmp_path / "run"), spec=spec, device="cpu", dataset=None, config={})
    genotypes = {f"random-{i:02d}": g for i, g in enumerate(sample_genotypes(TINY_SPACE, 5, seed=0))}
    return run, genotypes, trained


def test_shards_split_the_variants_and_every_shard_collects_the_finished_ones(fake_run):
    run, genotypes, trained = fake_run
    recipe = RetrainSpec(epochs=2)
    first = variants.retrain_variants(run, "x", genotypes, recipe, shard=(1, 2))
    assert trained == first.retrained == ["random-01", "random-03"]  # positions 1 and 3
    assert [r["label"] for r in first.rows] == ["random-01", "random-03"]
    assert first.missing == ["random-00", "random-02", "random-04"]
    second = variants.retrain_variants(run, "x", genotypes, recipe, shard=(0, 2))
    assert second.retrained == ["random-00", "random-02", "random-04"] and second.missing == []
    assert [r["label"] for r in second.rows] == list(genotypes)  # the other shard's too, in order
    row = second.rows[0]
    assert (row["test_accuracy"], row["val_accuracy"], row["epochs"]) == (0.75, 0.5, 2)
    assert row["genotype"] == genotypes["random-00"].to_dict()
    assert variants.shard_items(list("abcdefg"), (2, 3)) == ["c", "f"]


def test_resume_skips_finished_variants_and_refuses_another_budget(fake_run):
    run, genotypes, trained = fake_run
    variants.retrain_variants(run, "x", dict(list(genotypes.items())[:2]), RetrainSpec(epochs=2))
    assert trained == ["random-00", "random-01"]
    again = variants.retrain_variants(run, "x", genotypes, RetrainSpec(epochs=2))  # 3 more samples asked
    assert again.retrained == ["random-02", "random-03", "random-04"]
    assert trained == ["random-00", "random-01", "random-02", "random-03", "random-04"]
    assert variants.retrain_variants(run, "x", genotypes, RetrainSpec(epochs=2)).retrained == []
    (run.dir.path("analysis/x/random-02") / "result.json").unlink()  # interrupted before its result
    assert variants.retrain_variants(run, "x", genotypes, RetrainSpec(epochs=2)).retrained == ["random-02"]
    with pytest.raises(BionasError, match="another genotype or budget"):
        variants.retrain_variants(run, "x", genotypes, RetrainSpec(epochs=3))


# -- decidedness ----------------------------------------------------------------------------------


def test_edge_decidedness_by_hand():
    edge = edge_decidedness([0.5, 0.3, 0.2], [False, False, False])
    assert (edge["kept"], edge["runner_up"]) == (0, 1)
    assert edge["margin"] == pytest.approx(0.2)
    assert edge["entropy"] == pytest.approx(-(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2)))
    assert edge["max_entropy"] == pytest.approx(math.log(3))
    assert edge["deviation"] == pytest.approx(0.5)  # 3 x 0.5 - 1
    assert edge["variation"] == pytest.approx(math.sqrt((0.5**2 + 0.1**2 + 0.4**2) / 3))  # 3p - 1: 0.5, -0.1, -0.4
    zero_first = edge_decidedness([0.5, 0.3, 0.2], [True, False, False])  # the zero op is never kept
    assert (zero_first["kept"], zero_first["runner_up"], zero_first["margin"]) == (1, 2, pytest.approx(0.1))
    uniform = edge_decidedness([0.25] * 4, [False] * 4)
    assert uniform["entropy"] == pytest.approx(math.log(4)) and uniform["deviation"] == pytest.approx(0.0)
    assert uniform["variation"] == pytest.approx(0.0)


def test_a_genotype_within_ten_percent_of_uniform_is_called_close_to_a_draw():
    labels, zero = ["a", "b", "c"], [False] * 3
    # 3p - 1 of the last edge: 0.125, -0.0625, -0.0625: one weight 12.5% off, their variation sqrt(0.0078125)
    near = {"normal": [[0.35, 0.33, 0.32], [0.34, 0.34, 0.32]], "reduce": [[0.375, 0.3125, 0.3125]]}
    info = decidedness(near, labels, zero)
    assert info["close_to_uniform"] and info["max_variation"] == pytest.approx(math.sqrt(0.0078125))
    assert info["max_deviation"] == pytest.approx(0.125)
    assert info["edges"][0]["kept"] == "a" and info["edges"][0]["runner_up"] == "b"
    assert info["margin"] == {"min": pytest.approx(0.0), "median": pytest.approx(0.02), "max": pytest.approx(0.0625)}
    assert any("close to a random draw" in line for line in decidedness_lines(info))
    decided = {**near, "reduce": [[0.8, 0.1, 0.1]]}
    info = decidedness(decided, labels, zero)
    assert not info["close_to_uniform"] and info["max_deviation"] == pytest.approx(1.4)  # 3 x 0.8 - 1
    assert not any("close to a random draw" in line for line in decidedness_lines(info))
    assert decidedness_lines(None) == []


# -- a study beside random genotypes --------------------------------------------------------------


def test_a_study_pairs_its_seeds_with_the_random_ones(tmp_path):
    root = tmp_path / "study"
    spec = load_spec({**study_spec(tmp_path), "seeds": [0, 1, 2]}).to_dict()
    ours, theirs = {0: 0.90, 1: 0.80, 2: 0.85}, {0: 0.86, 1: 0.83, 2: 0.70}
    for directory, numbers in ((root, ours), (root / "compare-random", theirs)):
        directory.mkdir(parents=True)
        (directory / "study_spec.json").write_text(json.dumps(spec))
        for seed, test in numbers.items():
            (directory / f"seed-{seed}").mkdir()
            (directory / f"seed-{seed}" / "results.json").write_text(json.dumps({"test_accuracy": test}))
    result = invoke("study", root)
    assert result.exit_code == 0, result.output
    comparison = json.loads((root / "study.json").read_text())["comparisons"]["random"]
    differences = [0.04, -0.03, 0.15]
    assert [r["difference"] for r in comparison["rows"]] == pytest.approx(differences)
    mean, std = mean_and_sample_std(differences)
    assert comparison["difference"]["mean"] == pytest.approx(mean) and comparison["difference"]["std"] == \
        pytest.approx(std)
    assert comparison["random"]["mean"] == pytest.approx(sum(theirs.values()) / 3)
    text = (root / "study.md").read_text()
    assert "## Compared with random genotypes" in text
    assert f"| paired difference, strategy - random (per seed) | {mean:.2%} ± {std:.2%} | 3 |" in text
    assert "| 2 | 85.00% | 70.00% | +15.00% |" in text
    assert (root / "compare-random" / "study.md").exists()  # the baseline's own aggregate
    assert f"paired difference {mean:.2%} ± {std:.2%} over 3 seeds" in result.stdout


def test_compare_needs_a_study_with_a_search(tmp_path):
    path = write_spec(tmp_path, study_spec(tmp_path))  # a given genotype: nothing searched
    result = invoke("run", path, "--seeds", "0,1", "--compare", "random")
    assert result.exit_code != 0 and "the spec has no search" in result.stderr
    result = invoke("run", path, "--compare", "random")
    assert result.exit_code != 0 and "--compare pairs the seeds of a study" in result.stderr
    result = invoke("run", path, "--seeds", "0", "--compare", "grid")
    assert result.exit_code != 0 and "unknown baseline 'grid'" in result.stderr


@pytest.mark.slow
def test_a_study_runs_random_genotypes_beside_its_search(tmp_path):
    spec = study_spec(tmp_path, epochs=1, evaluation={"points": 30, "attacks": []})
    del spec["genotype"]
    spec["space"] = {**TINY_SPACE, "cells": 2}
    spec["search"] = {"name": "darts", "options": {"epochs": 1, "batch_size": 64}}
    result = invoke("run", write_spec(tmp_path, spec), "--seeds", "0,1", "--compare", "random", "--quiet")
    assert result.exit_code == 0, result.output
    root = tmp_path / "study"
    for seed in (0, 1):
        searched = json.loads((root / f"seed-{seed}" / "search.json").read_text())
        assert searched["strategy"] == "darts" and searched["decidedness"]["edges"]
        drawn = json.loads((root / "compare-random" / f"seed-{seed}" / "genotype.json").read_text())
        assert drawn == sample_genotypes(spec["space"], 1, seed)[0].to_dict()  # random plain, the seed's draw
    aggregate = json.loads((root / "study.json").read_text())
    rows = aggregate["comparisons"]["random"]["rows"]
    assert [r["seed"] for r in rows] == [0, 1]
    by_seed = {r["seed"]: r["test_accuracy"] for r in aggregate["rows"]}
    assert [r["strategy"] for r in rows] == [by_seed[0], by_seed[1]]
    assert "| darts |" in (root / "study.md").read_text()
