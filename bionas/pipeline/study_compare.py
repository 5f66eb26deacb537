"""A study beside a baseline: the same seeds with random genotypes, paired seed by seed.

    RUN/
      seed-0/, seed-1/, ...          the study's strategy
      compare-random/seed-0/, ...    the same spec and seeds, its search replaced by random search
                                     `mode: plain` (one genotype drawn uniformly from the space, no
                                     search): a study of its own, with its own study.md

The retrain recipe, data split and test split are the spec's in both, so for
each seed the two test accuracies differ only by the genotype. study.md gets a
row for each and their paired difference (per seed, then mean ± sample std).
"""

from __future__ import annotations

from typing import Any

from bionas.analysis.aggregate import Spread, spread
from bionas.errors import UsageError

# The baselines a study can run beside its strategy: their search, in spec form.
BASELINES = {"random": {"name": "random", "options": {"mode": "plain"}}}
DESCRIPTIONS = {"random": "random search `mode: plain`: one genotype drawn uniformly from the space, no search"}
PREFIX = "compare-"


def baseline_spec(spec_dict: dict[str, Any], baseline: str) -> dict[str, Any]:
    """The study's spec (as a dict) with its search replaced by the baseline's."""
    if baseline not in BASELINES:
        raise UsageError(f"--compare: unknown baseline '{baseline}'; known: {', '.join(BASELINES)}")
    search = spec_dict.get("search")
    if search is None:
        raise UsageError("--compare compares a search with a baseline, and the spec has no search (it gives a "
                         "genotype or a model)")
    if search.get("name") == "random" and (search.get("options") or {}).get("mode") == "plain":
        raise UsageError("--compare random: the spec's search is already random search mode plain")
    return {**spec_dict, "name": f"{spec_dict['name']}-{baseline}", "search": BASELINES[baseline]}


def paired(aggregate: dict[str, Any], baseline: dict[str, Any], name: str) -> dict[str, Any]:
    """The strategy's and the baseline's test accuracy over their finished seeds, and per seed finished in both
    their difference (strategy - baseline), with the spread of each."""
    ours = {row["seed"]: row["test_accuracy"] for row in aggregate["rows"] if row["test_accuracy"] is not None}
    theirs = {row["seed"]: row["test_accuracy"] for row in baseline["rows"] if row["test_accuracy"] is not None}
    rows = [{"seed": seed, "strategy": ours[seed], name: theirs[seed], "difference": ours[seed] - theirs[seed]}
            for seed in ours if seed in theirs]
    return {"baseline": name, "description": DESCRIPTIONS[name], "dir": f"{PREFIX}{name}", "rows": rows,
            "strategy": spread(ours.values()).as_dict(), name: spread(theirs.values()).as_dict(),
            "difference": spread(row["difference"] for row in rows).as_dict()}


def comparison_lines(comparison: dict[str, Any], strategy: str) -> list[str]:
    """study.md's section: a row for the strategy and the baseline, then the paired difference."""
    name = comparison["baseline"]
    ours, theirs, diff = (Spread(**comparison[key]) for key in ("strategy", name, "difference"))
    lines = [f"## Compared with {name} genotypes", "",
             f"The same spec and seeds with {comparison['description']} (`{comparison['dir']}/`, a study of its "
             "own): the same retrain recipe, data split and test split, so per seed only the genotype differs.", "",
             "| search | test acc | seeds |", "|---|---|---|",
             f"| {strategy} | {ours.text()} | {ours.n} |", f"| {name} | {theirs.text()} | {theirs.n} |",
             f"| paired difference, {strategy} - {name} (per seed) | {diff.text()} | {diff.n} |", ""]
    if comparison["rows"]:
        lines += [f"| seed | {strategy} | {name} | difference |", "|---|---|---|---|"]
        lines += [f"| {row['seed']} | {row['strategy']:.2%} | {row[name]:.2%} | {row['difference']:+.2%} |"
                  for row in comparison["rows"]]
    return lines


def comparison_summary(comparison: dict[str, Any], strategy: str) -> str:
    """One line for the terminal: both spreads and the paired difference."""
    name = comparison["baseline"]
    ours, theirs, diff = (Spread(**comparison[key]) for key in ("strategy", name, "difference"))
    return (f"compared with {name} genotypes: {strategy} {ours.text()} (n={ours.n}), {name} {theirs.text()} "
            f"(n={theirs.n}); paired difference {diff.text()} over {diff.n} seeds")
