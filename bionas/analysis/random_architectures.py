"""`bionas analyze random-architectures RUN_DIR`: does the search beat random architectures of its own space?

The searched genotype and `samples` genotypes drawn uniformly from the run's
space (sample_genotypes with the run's seed: random search `mode: plain`
draws the first of them) are retrained by the run's recipe on the same
budget, each as a variant (bionas/analysis/variants.py), and tested on the
same test split. The searched genotype's rank, percentile and a verdict
(bionas.analysis.aggregate.standing) go to analysis/random-architectures.*.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bionas.analysis.aggregate import STD_NOTE, plot_spreads, standing
from bionas.analysis.study import RunContext
from bionas.analysis.variants import retrain_variants
from bionas.pipeline.study_report import genotype_line
from bionas.robustness.target import DataAccess
from bionas.search import resolve_space
from bionas.space import Genotype, SearchSpace
from bionas.space.sampling import sample_genotypes

NAME = "random-architectures"


def random_architectures(run_dir: str | Path, samples: int = 10, epochs: int | None = None, device: str = "auto",
                         quiet: bool = False, shard: tuple[int, int] | None = None,
                         progress: Callable[[str], None] | None = None,
                         access: DataAccess = DataAccess()) -> dict[str, Any]:
    """Retrain this shard's share of the searched genotype and `samples` random ones, then summarise every
    one finished so far (json, md, png, a section of report.md); returns the summary."""
    run = RunContext(run_dir, device, access)
    recipe = run.spec.retrain.model_copy(update={"epochs": epochs} if epochs else {})
    space = SearchSpace(resolve_space(run.spec.space))
    genotypes = {"searched": run.genotype}
    for i, genotype in enumerate(sample_genotypes(space, samples, run.spec.seed)):
        genotypes[f"random-{i:02d}"] = genotype
    collected = retrain_variants(run, NAME, genotypes, recipe, quiet=quiet, shard=shard, progress=progress)
    results = summarise(collected.rows, samples, recipe.epochs, run.spec.seed)
    results.update(missing=collected.missing, retrained=collected.retrained)
    if results["summary"] is not None:
        plot_spreads({"random architectures": [r["test_accuracy"] for r in results["rows"][1:]]},
                     run.dir.path(f"analysis/{NAME}.png"), "test accuracy (%)",
                     lines={"searched genotype": results["rows"][0]["test_accuracy"]})
    run.write(NAME, results, markdown(results))
    return results


def summarise(rows: list[dict[str, Any]], samples: int, epochs: int, seed: int) -> dict[str, Any]:
    """The rows (searched first when it is finished) and, once the searched one and a random one are,
    the searched genotype's standing among the random ones and its one-line verdict."""
    rows = sorted(rows, key=lambda r: r["label"] != "searched")  # stable: the random ones keep their order
    searched = rows[0] if rows and rows[0]["label"] == "searched" else None
    randoms = [r["test_accuracy"] for r in rows if r["label"] != "searched"]
    summary = None
    if searched is not None and randoms:
        place = standing(searched["test_accuracy"], randoms)
        summary = {**place.as_dict(), "line": place.text("searched", "random")}
    return {"samples": samples, "epochs": epochs, "seed": seed, "rows": rows, "summary": summary}


def markdown(results: dict[str, Any]) -> str:
    lines = ["## Random architectures", "",
             f"The searched genotype and {results['samples']} genotypes drawn uniformly from the run's space "
             f"(`sample_genotypes`, seed {results['seed']}), each retrained {results['epochs']} epochs by the run's "
             "recipe from the same initialisation seed, the epoch chosen on validation, tested once on the test "
             "split.", "", "| genotype | kept edges | val acc | test acc |", "|---|---|---|---|"]
    for row in results["rows"]:
        genotype = genotype_line(Genotype.from_dict(row["genotype"], check_plugins=False))
        lines.append(f"| {row['label']} | `{genotype}` | {row['val_accuracy']:.2%} | {row['test_accuracy']:.2%} |")
    s = results["summary"]
    if s is not None:
        lines += ["", f"**{s['line']}.** The searched genotype ranks {s['rank']} of {s['of']}, above "
                  f"{s['percentile']:.0f}% of the random ones ({STD_NOTE})."]
    if results["missing"]:
        lines += ["", f"Not retrained yet (another shard's, or interrupted): {', '.join(results['missing'])}."]
    if s is not None:
        lines += ["", f"![random architectures](analysis/{NAME}.png)"]
    return "\n".join(lines + [""])
