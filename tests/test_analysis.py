"""`bionas analyze gradvar | random-rules | alignment` on a tiny finished run."""

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bionas.cli import build_app
from bionas.pipeline import run
from bionas.space.sampling import sample_genotypes
from bionas.spec import load_spec

pytestmark = pytest.mark.slow
runner = CliRunner()


QUICKSTART = Path(__file__).parents[1] / "examples" / "quickstart.yaml"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The quickstart's run on a smaller budget: 1,500 training digits, 1 search epoch, 2 retrain epochs, no attacks."""
    spec = load_spec(QUICKSTART).to_dict()
    spec["dataset"]["options"]["test_size"] = 3000
    spec["search"]["options"].update(epochs=1, warmup_epochs=0)  # the alphas move in the one epoch
    spec["retrain"]["epochs"] = 2
    spec["evaluation"]["attacks"] = []
    return run(spec, tmp_path_factory.mktemp("analysis") / "run", quiet=True).run_dir


def test_the_report_shows_the_supernets_validation_accuracy(finished_run):
    records = [json.loads(line) for line in (finished_run / "metrics.jsonl").read_text().splitlines()]
    accuracy = [r for r in records if r["stage"] == "search"][-1]["valid_accuracy"]  # when the genotype was taken
    assert json.loads((finished_run / "search.json").read_text())["valid_accuracy"] == accuracy
    assert json.loads((finished_run / "results.json").read_text())["search_valid_accuracy"] == accuracy
    assert f"| supernet validation accuracy | {100 * accuracy:.2f}% " in (finished_run / "report.md").read_text()


def test_gradvar_compares_searched_and_single_rules(finished_run):
    result = runner.invoke(build_app(), ["analyze", "gradvar", str(finished_run), "--batches", "4"])
    assert result.exit_code == 0, result.output
    data = json.loads((finished_run / "analysis" / "gradvar.json").read_text())
    assert set(data["points"]) == {"init", "trained"}
    assert set(data["points"]["trained"]) == {"searched", "all usf", "all frsf", "all fa"}
    network = data["points"]["init"]["all fa"]["network"]
    assert network["ratio"] > 0 and network["numel"] > 0
    # Same weights and batches: the classifier learns by bp in every variant with nothing above it, so its
    # updates, and their statistic, do not depend on the rules of the cells.
    layers = {v: data["points"]["init"][v]["layers"]["classifier"]["ratio"] for v in ("searched", "all usf")}
    assert layers["searched"] == pytest.approx(layers["all usf"])
    assert (finished_run / "analysis" / "gradvar.png").exists()
    assert "## Gradient variance" in (finished_run / "report.md").read_text()
    assert "| all fa |" in result.stdout


def test_random_rules_retrains_samples_beside_the_searched_rules(finished_run):
    args = ["analyze", "random-rules", str(finished_run), "--samples", "2", "--epochs", "1", "--quiet"]
    result = runner.invoke(build_app(), args)
    assert result.exit_code == 0, result.output
    data = json.loads((finished_run / "analysis" / "random-rules.json").read_text())
    assert [r["assignment"] for r in data["rows"]] == ["searched", "random-00", "random-01"]
    assert all(set(r["rules"]) <= {"usf", "frsf", "fa", "free"} for r in data["rows"][1:])  # drawn from space.rules
    assert sum(data["rows"][1]["rules"].values()) == 16  # every kept edge of both cells counted
    assert data["rows"][1]["genotype"] != data["rows"][2]["genotype"]  # seeded draws differ
    assert data["summary"]["random_mean"] is not None
    assert "## Random rule assignments" in (finished_run / "report.md").read_text()
    again = runner.invoke(build_app(), args)  # resumes from the samples' checkpoints: same numbers
    assert json.loads((finished_run / "analysis" / "random-rules.json").read_text())["rows"] == data["rows"]
    assert again.exit_code == 0


def test_random_rules_spread_over_torchrun_ranks_then_collected(finished_run, monkeypatch):
    args = ["analyze", "random-rules", str(finished_run), "--samples", "4", "--epochs", "1", "--quiet"]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    spread = runner.invoke(build_app(), args)
    assert spread.exit_code == 0, spread.output
    # every 2nd from position 1 (searched is 0): random-00 and random-02, finished by the test above but random-02
    assert "shard 1 of 2 retrained: random-02. 1 not finished yet" in spread.stdout
    best = finished_run / "analysis" / "random-rules" / "random-02" / "model.safetensors"
    written = best.stat().st_mtime_ns
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    collected = runner.invoke(build_app(), args)
    assert collected.exit_code == 0, collected.output
    data = json.loads((finished_run / "analysis" / "random-rules.json").read_text())
    assert [r["assignment"] for r in data["rows"]] == ["searched", "random-00", "random-01", "random-02", "random-03"]
    assert data["retrained"] == ["random-03"] and data["missing"] == []
    assert best.stat().st_mtime_ns == written  # collected from its directory, not retrained


def test_random_architectures_sharded_then_collected(finished_run):
    args = ["analyze", "random-architectures", str(finished_run), "--samples", "2", "--epochs", "1", "--quiet"]
    first = runner.invoke(build_app(), [*args, "--shard", "1/2"])
    assert first.exit_code == 0, first.output
    assert "shard 1 of 2 retrained: random-00. 2 not finished yet" in first.stdout  # position 1 of 0, 1, 2
    second = runner.invoke(build_app(), [*args, "--shard", "0/2"])
    assert second.exit_code == 0, second.output
    assert "shard 0 of 2 retrained: searched, random-01." in second.stdout
    data = json.loads((finished_run / "analysis" / "random-architectures.json").read_text())
    assert [r["label"] for r in data["rows"]] == ["searched", "random-00", "random-01"]
    assert data["missing"] == [] and data["epochs"] == 1
    spec = json.loads((finished_run / "resolved_spec.json").read_text())
    drawn = sample_genotypes(spec["space"], 2, spec["seed"])  # the run's space and seed: random plain's draws
    assert [r["genotype"] for r in data["rows"][1:]] == [g.to_dict() for g in drawn]
    assert data["rows"][0]["genotype"] == json.loads((finished_run / "genotype.json").read_text())
    randoms = [r["test_accuracy"] for r in data["rows"][1:]]
    searched = data["rows"][0]["test_accuracy"]
    assert data["summary"]["rank"] == 1 + sum(a > searched for a in randoms) and data["summary"]["of"] == 3
    assert data["summary"]["others"]["mean"] == pytest.approx(sum(randoms) / 2)
    assert data["summary"]["line"].startswith(f"searched {searched:.2%}; random ")
    assert f"**{data['summary']['line']}.**" in (finished_run / "report.md").read_text()
    assert (finished_run / "analysis" / "random-architectures.png").read_bytes().startswith(b"\x89PNG")
    again = runner.invoke(build_app(), args)  # everything finished: nothing retrained
    assert again.exit_code == 0 and json.loads(
        (finished_run / "analysis" / "random-architectures.json").read_text())["retrained"] == []


def test_the_search_says_how_decided_its_genotype_is(finished_run):
    info = json.loads((finished_run / "search.json").read_text())["decidedness"]
    assert len(info["edges"]) == 2 * 14  # 4 nodes: 2 + 3 + 4 + 5 edges per cell
    for edge in info["edges"]:
        assert 0 <= edge["margin"] and edge["entropy"] <= edge["max_entropy"] == pytest.approx(math.log(6))
    assert "How decided the genotype is" in (finished_run / "report.md").read_text()


def test_alignment_plots_what_the_retrain_logged(finished_run):
    result = runner.invoke(build_app(), ["analyze", "alignment", str(finished_run)])
    assert result.exit_code == 0, result.output
    data = json.loads((finished_run / "analysis" / "alignment.json").read_text())
    layers = list(data["layers"].values())
    assert layers and all(layer["epochs"] == [0, 1] for layer in layers)
    assert {layer["rule"] for layer in layers} <= {"usf", "frsf", "fa"}  # the quickstart's rules
    for layer in layers:
        assert all(0 <= angle <= 180 for angle in layer["angle"])
        if layer["rule"] != "fa":  # sign-concordant: B . W = sum |B| |W| > 0, below 90 degrees
            assert all(angle < 90 for angle in layer["angle"])
    assert (finished_run / "analysis" / "alignment.png").exists()


def test_analysis_of_a_directory_that_is_not_a_run(tmp_path):
    result = runner.invoke(build_app(), ["analyze", "gradvar", str(tmp_path)])
    assert result.exit_code == 1 and "not a bionas run directory" in result.stderr
