"""A study's aggregate: study.json, study.md and study.png, rebuilt from whatever seed directories exist.

It reads only the files each seed's run wrote (results.json, genotype.json,
resolved_spec.json, stages.json, checkpoint headers), so it can run at any
time: during a study, after a shard, or after a crash. A seed listed in the
study but without a directory is *missing*; one whose run has not written
results.json is *unfinished*; neither stops the aggregate.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from bionas.analysis.aggregate import STD_NOTE, Spread, format_value, plot_spreads, spread, spreads
from bionas.checkpoint import diff_dicts, load_metadata
from bionas.errors import BionasError, CheckpointError, one_line
from bionas.pipeline.result import rule_counts
from bionas.pipeline.study_compare import BASELINES, PREFIX, comparison_lines, paired
from bionas.pipeline.train_stage import MODEL_RECORD
from bionas.robustness import RobustnessReport
from bionas.rundir import RunDir, atomic_write_text, read_json, write_json
from bionas.space import Genotype

STUDY_SPEC = "study_spec.json"
SEED_DIR = re.compile(r"^seed-(\d+)$")
# Fields that may differ between the seeds of one study without making them different experiments.
PER_RUN_FIELDS = ("seed", "seeds", "device", "output")


def seed_dir(root: str | Path, seed: int) -> Path:
    return Path(root) / f"seed-{seed}"


def seed_dirs(root: Path) -> dict[int, Path]:
    """The seed-N directories of a study, by seed."""
    found = {int(m.group(1)): p for p in root.iterdir() if p.is_dir() and (m := SEED_DIR.match(p.name))}
    return dict(sorted(found.items()))


def _readable_json(path: Path) -> Any | None:
    """The JSON of `path`, or None when it is missing or half-written by a killed process."""
    try:
        return read_json(path)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def _comparable(spec_dict: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in spec_dict.items() if key not in PER_RUN_FIELDS}


def genotype_line(genotype: Genotype) -> str:
    """Both cells on one line: `normal: sep_conv_3x3/usf(0) ...; reduce: ...`."""
    return "; ".join(f"{cell}: " + " ".join(map(str, genotype.cell(cell)[0])) for cell in ("normal", "reduce"))


def robust_label(row) -> str:
    return f"{row.attack} at {row.budget_label}" + ("" if row.claim else " (rule gradients)")


def finished_row(seed: int, path: Path, results: dict[str, Any]) -> dict[str, Any]:
    """One seed's row: its genotype, kept edges per rule (a model run: layers per rule), accuracies, robust
    accuracies, search time."""
    row: dict[str, Any] = {"seed": seed, "dir": path.name, "genotype": None, "rules": {}}
    genotype = _readable_json(path / "genotype.json")
    model = _readable_json(path / MODEL_RECORD)
    if genotype is not None:  # read as data: the plugins it names need not be installed to aggregate
        genotype = Genotype.from_dict(genotype, check_plugins=False, source=str(path / "genotype.json"))
        row["genotype"], row["rules"] = genotype_line(genotype), genotype.rule_counts()
    elif model is not None:
        row["rules"] = rule_counts(model["layers"])
    for key in ("val_accuracy", "test_accuracy", "best_epoch", "parameters", "search_seconds"):
        row[key] = results.get(key)
    robustness = results.get("robustness")
    rows = RobustnessReport.from_json(robustness).rows if robustness else []
    row["robust"] = {robust_label(r): r.robust_accuracy for r in rows}
    return row


def unfinished_entry(seed: int, path: Path) -> dict[str, Any]:
    """What an unfinished seed has done: its finished stages and the epoch of each stage's checkpoint."""
    rundir = RunDir(path)
    checkpoints = {}
    for checkpoint in sorted(rundir.checkpoints.glob("*.safetensors")) if rundir.checkpoints.is_dir() else []:
        try:
            checkpoints[checkpoint.stem] = load_metadata(checkpoint).get("epoch")
        except CheckpointError:
            checkpoints[checkpoint.stem] = None  # being written, or damaged: the run's resume says which
    stages = _readable_json(rundir.path("stages.json")) or {}
    return {"seed": seed, "dir": path.name, "finished_stages": list(stages), "checkpoints": checkpoints}


def collect_study(root: str | Path) -> dict[str, Any]:
    """The aggregate of the study in `root` (what study.json holds); raises when `root` is not a study."""
    root = Path(root)
    if not root.is_dir():
        raise BionasError(f"{root} does not exist or is not a directory")
    if (root / "resolved_spec.json").exists():
        raise BionasError(f"{root} is a single run (it has resolved_spec.json), not a study of several seeds")
    study_spec = _readable_json(root / STUDY_SPEC)
    dirs = seed_dirs(root)
    if study_spec is None and not dirs:
        raise BionasError(f"{root} holds no study: no {STUDY_SPEC} and no seed-N directories")
    listed = (study_spec or {}).get("seeds") or []
    seeds = list(dict.fromkeys([*listed, *dirs]))
    rows, unfinished, differences, reference = [], [], {}, None
    if study_spec is not None:
        reference = _comparable(study_spec)
    for seed, path in dirs.items():
        results = _readable_json(path / "results.json")
        if results is None:
            unfinished.append(unfinished_entry(seed, path))
            continue
        try:
            rows.append(finished_row(seed, path, results))
        except (BionasError, KeyError, TypeError, ValueError) as exc:  # files of another version, or edited
            unfinished.append({**unfinished_entry(seed, path), "problem": one_line(exc)})
            continue
        spec = _readable_json(path / "resolved_spec.json")
        if spec is not None:
            reference = reference if reference is not None else _comparable(spec)
            if changes := diff_dicts(reference, _comparable(spec)):
                differences[path.name] = changes
    name = (study_spec or {}).get("name") or next(
        (spec["name"] for p in dirs.values() if (spec := _readable_json(p / "resolved_spec.json"))), root.name)
    return {
        "name": name,
        "dir": str(root),
        "seeds": seeds,
        "finished": [row["seed"] for row in rows],
        "unfinished": unfinished,
        "missing": [seed for seed in seeds if seed not in dirs],
        "std": "sample standard deviation (n - 1 in the denominator); null below 2 seeds",
        "rows": rows,
        "summary": summarise(rows),
        "distinct_genotypes": len({row["genotype"] for row in rows if row["genotype"]}),
        "differences": differences,
        "plots": (study_spec or {}).get("output", {}).get("plots", True),
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± sample std over the finished seeds, per column; a rule a seed does not use counts 0 there."""
    scalars = spreads({key: row[key] for key in ("val_accuracy", "test_accuracy", "search_seconds", "parameters")}
                      for row in rows)
    rules = list(dict.fromkeys(rule for row in rows for rule in row["rules"]))
    return {
        **{key: value.as_dict() for key, value in scalars.items()},
        "robust": {key: value.as_dict() for key, value in spreads(row["robust"] for row in rows).items()},
        "rules": {rule: spread(row["rules"].get(rule, 0) for row in rows if row["rules"]).as_dict()
                  for rule in rules},
    }


# -- the table, shared by study.md and the closing table of `bionas run` / `bionas study` ----------


def _spread_text(summary: dict[str, Any], percent: bool = True) -> str:
    return Spread(**summary).text(percent)


def study_table(aggregate: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per finished seed, then mean ± std."""
    rows, summary = aggregate["rows"], aggregate["summary"]
    robust = list(summary["robust"])
    timed = any(row["search_seconds"] is not None for row in rows)
    counted = "kept edges per rule" if any(row["genotype"] for row in rows) or not rows else "layers per rule"
    header = ["seed", counted, "val acc", "test acc", *robust, *(["search s"] if timed else [])]

    def cells(rules: str, val: str, test: str, attacks: list[str], seconds: str) -> list[str]:
        return [rules, val, test, *attacks, *([seconds] if timed else [])]

    table = []
    for row in rows:  # every row names the rules in one order, that of the mean row
        rules = ", ".join(f"{name} {row['rules'].get(name, 0)}" for name in summary["rules"]) if row["rules"] else "-"
        table.append([str(row["seed"]), *cells(rules, format_value(row["val_accuracy"]),
                                               format_value(row["test_accuracy"]),
                                               [format_value(row["robust"].get(label)) for label in robust],
                                               format_value(row["search_seconds"], percent=False))])
    if rows:
        rules = ", ".join(f"{name} {_spread_text(s, percent=False)}" for name, s in summary["rules"].items()) or "-"
        table.append(["mean ± std", *cells(rules, _spread_text(summary["val_accuracy"]),
                                           _spread_text(summary["test_accuracy"]),
                                           [_spread_text(summary["robust"][label]) for label in robust],
                                           _spread_text(summary["search_seconds"], percent=False))])
    return header, table


def status_lines(aggregate: dict[str, Any]) -> list[str]:
    """Which seeds finished, which are unfinished (and how far they got), which are missing."""
    seeds = ", ".join(map(str, aggregate["seeds"]))
    lines = [f"Seeds {seeds}: {len(aggregate['finished'])} of {len(aggregate['seeds'])} finished."]
    for entry in aggregate["unfinished"]:
        stages = ", ".join(entry["finished_stages"]) or "none"
        checkpoints = ", ".join(f"{stage} at epoch {epoch}" for stage, epoch in entry["checkpoints"].items())
        if "problem" in entry:
            lines.append(f"Unreadable: seed {entry['seed']}: {entry['problem']}.")
            continue
        lines.append(f"Unfinished: seed {entry['seed']} (finished stages: {stages}"
                     + (f"; checkpoints: {checkpoints}" if checkpoints else "") + "); continue it with --resume.")
    if aggregate["missing"]:
        lines.append(f"Missing (no directory yet): seed {', '.join(map(str, aggregate['missing']))}.")
    for name, changes in aggregate["differences"].items():
        lines.append(f"{name} ran with a different spec than the study's: {'; '.join(changes)}.")
    return lines


def study_markdown(aggregate: dict[str, Any]) -> str:
    header, table = study_table(aggregate)
    lines = [f"# bionas study `{aggregate['name']}`", "", *status_lines(aggregate), "",
             f"Each seed's run is a run directory of its own (seed-N/, with its report.md). Robust accuracy counts "
             f"over all the points evaluated (a point wrong when clean is not robust); {STD_NOTE}.", ""]
    if table:
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table]
        if any(row["genotype"] for row in aggregate["rows"]):  # a model run has none
            lines += ["", "## Genotypes", "",
                      f"{aggregate['distinct_genotypes']} distinct among {len(aggregate['rows'])} seeds.", ""]
            lines += [f"* seed {row['seed']}: `{row['genotype']}`" for row in aggregate["rows"]]
        if aggregate.get("plot"):
            lines += ["", f"![study]({aggregate['plot']})"]
    for comparison in aggregate.get("comparisons", {}).values():
        lines += ["", *comparison_lines(comparison, aggregate.get("strategy") or "strategy")]
    return "\n".join(lines).rstrip() + "\n"


def plot_study(aggregate: dict[str, Any], path: Path) -> Path | None:
    """Each accuracy per seed, with its mean ± std; None when no seed has finished with one."""
    rows = aggregate["rows"]
    series = {"val accuracy": [r["val_accuracy"] for r in rows], "test accuracy": [r["test_accuracy"] for r in rows]}
    series |= {f"robust: {label}": [r["robust"].get(label) for r in rows] for label in aggregate["summary"]["robust"]}
    series = {label: [v for v in values if v is not None] for label, values in series.items()}
    series = {label: values for label, values in series.items() if values}
    return plot_spreads(series, path, "accuracy (%)") if series else None


def write_study(root: str | Path) -> dict[str, Any]:
    """Collect the study in `root` and write study.json, study.md and (plots on) study.png there."""
    root = Path(root)
    aggregate = collect_study(root)
    aggregate["plot"] = None
    if aggregate.pop("plots") and plot_study(aggregate, root / "study.png"):
        aggregate["plot"] = "study.png"
    aggregate["strategy"] = ((_readable_json(root / STUDY_SPEC) or {}).get("search") or {}).get("name")
    aggregate["comparisons"] = {  # baselines run beside the strategy (--compare): each a study of its own
        sub.name[len(PREFIX):]: paired(aggregate, write_study(sub), sub.name[len(PREFIX):])
        for sub in sorted(root.glob(f"{PREFIX}*")) if sub.is_dir() and sub.name[len(PREFIX):] in BASELINES}
    write_json(root / "study.json", aggregate)
    atomic_write_text(root / "study.md", study_markdown(aggregate))
    return aggregate
