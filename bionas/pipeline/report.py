"""report.md of a run: what ran, on what, with which result, and where each number comes from.

It is rebuilt from the files of the run directory, so analyses run later
(`bionas analyze ...`, which write analysis/<name>.md) appear in it too.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from bionas.pipeline.result import RunResult, rule_counts
from bionas.robustness import RobustnessReport
from bionas.rundir import RunDir, atomic_write_text, read_json
from bionas.search.decided import decidedness_lines
from bionas.space import Genotype
from bionas.spec import load_spec


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def render_report(spec, result, provenance: dict[str, Any], run_dir: RunDir) -> str:
    lines = [f"# bionas run `{spec.name}`", ""]
    lines += [
        f"Written {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by bionas {provenance.get('bionas')} "
        f"(git {provenance.get('git_revision') or 'unknown'}), torch {provenance.get('torch')}, "
        f"on {provenance.get('device')}{' (' + provenance['gpu'] + ')' if provenance.get('gpu') else ''}.",
        f"Spec: `resolved_spec.json` (seed {spec.seed}); data set `{spec.dataset.name}`; plugin versions in "
        "`provenance.json`; per-epoch numbers in `metrics.jsonl`.",
        "",
        "## Summary",
        "",
        "| | |",
        "|---|---|",
    ]
    if result.search_seconds is not None:
        lines.append(f"| search | `{spec.search.name}`, {result.search_seconds:.1f} s |")
    if result.search_valid_accuracy is not None:
        lines.append(f"| supernet validation accuracy | {_pct(result.search_valid_accuracy)} (architecture part, "
                     "when the genotype was taken) |")
    if result.test_accuracy is not None:
        lines += [
            f"| parameters | {result.parameters:,} (auxiliary head excluded) |",
            f"| validation accuracy | {_pct(result.val_accuracy)} (epoch {result.best_epoch + 1}, selected on it) |",
            f"| test accuracy | {_pct(result.test_accuracy)} (test split used once, after selection) |",
        ]
    if result.robustness is not None:
        for row in result.robustness.rows:
            marker = "" if row.claim else " †"
            lines.append(f"| {row.attack}{marker} at {row.budget_label} | robust {_pct(row.robust_accuracy)}, "
                         f"clean {_pct(row.clean_accuracy)} |")
    lines.append("")
    if result.model is not None:
        lines += model_section(result.model)
    if result.genotype is not None:
        lines += ["## Genotype", "", "```", str(result.genotype), "```", ""]
        if run_dir.path("genotype.png").exists():
            lines += ["![cells](genotype.png)", ""]
    search = run_dir.path("search.json")
    if search.exists():
        info = read_json(search)
        lines += ["## Search", "", f"Strategy `{info['strategy']}`, {info['epochs']} epochs, "
                  f"{len(info['candidates'])} candidates per edge, {info['seconds']:.1f} s.", ""]
        lines += [line + "\n" for line in decidedness_lines(info.get("decidedness"))]
        if run_dir.path("alphas.png").exists():
            lines += ["![mixing weights](alphas.png)", ""]
    if result.test_accuracy is not None:
        lines += ["## Retraining", "", f"Recipe: `resolved_spec.json` -> `retrain`. The weights of the epoch with "
                  "the best validation accuracy are in `model.safetensors`; the test split was not used to choose "
                  "them.", ""]
        if run_dir.path("training.png").exists():
            lines += ["![training](training.png)", ""]
    if result.robustness is not None:
        lines += ["## Robustness", "", "Gradient attacks use exact gradients unless marked †.", "",
                  result.robustness.markdown()]
        if run_dir.path("robustness.png").exists():
            lines += ["![robustness](robustness.png)", ""]
    analysis = run_dir.path("analysis")
    if analysis.is_dir():
        for fragment in sorted(analysis.glob("*.md")):
            lines += [fragment.read_text().rstrip(), ""]
    return "\n".join(lines).rstrip() + "\n"


def model_section(record: dict[str, Any]) -> list[str]:
    """A model run's model, its rules by glob, and how many layers learn by each rule (model.json has each)."""
    model = record["model"]
    options = ", ".join(f"{k}={v!r}" for k, v in model["options"].items())
    lines = ["## Model", "", f"`{model['name']}`" + (f" ({options})" if options else "") + ", trained with the "
             "rules below; layers no glob matches learn by plain backprop. The rule of every layer is in "
             "`model.json`.", ""]
    rules = record.get("rules") or {}
    if rules:
        lines += ["| glob | rule |", "|---|---|"]
        lines += [f"| `{glob}` | {ref['name']}{' ' + json.dumps(ref['options']) if ref['options'] else ''} |"
                  for glob, ref in rules.items()] + [""]
    counts = ", ".join(f"{rule} {count}" for rule, count in rule_counts(record["layers"]).items())
    lines += [f"Layers per rule: {counts}.", ""]
    return lines


def refresh_report(run_dir) -> None:
    """Rebuild report.md of a finished run from its files (after an analysis added a section)."""
    run = RunDir(run_dir)
    spec = load_spec(read_json(run.path("resolved_spec.json")), recorded=True)  # reads no file it names
    result = RunResult(run.root)
    if run.path("genotype.json").exists():
        result.genotype = Genotype.load(run.path("genotype.json"))
    if run.path("model.json").exists():
        result.model = read_json(run.path("model.json"))
    if run.path("search.json").exists():
        search = read_json(run.path("search.json"))
        result.search_seconds, result.search_valid_accuracy = search["seconds"], search.get("valid_accuracy")
    if run.path("retrain.json").exists():
        retrain = read_json(run.path("retrain.json"))
        result.best_epoch, result.val_accuracy = retrain["best_epoch"], retrain["best_val_accuracy"]
        result.parameters = retrain["parameters"]
    if run.path("results.json").exists():
        result.test_accuracy = read_json(run.path("results.json")).get("test_accuracy")
    if run.path("robustness.json").exists():
        result.robustness = RobustnessReport.from_json(read_json(run.path("robustness.json")))
    text = render_report(spec, result, read_json(run.path("provenance.json")), run)
    atomic_write_text(run.path("report.md"), text)
