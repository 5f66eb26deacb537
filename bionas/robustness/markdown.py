"""The robustness report as markdown (report.md, `bionas attack`)."""

from __future__ import annotations

import math

from bionas.attacks import RULE_GRADIENT_NOTE
from bionas.robustness.labels import percent


def report_markdown(report) -> str:
    """A RobustnessReport as markdown: the table, the counting notes, the gradient-masking findings."""
    lines = [
        f"Robustness of {report.model}: {report.points} points, clean accuracy {percent(report.clean_accuracy)}, "
        f"seed {report.seed}.",
        "",
        "| attack | threat model | eps | clean acc | robust acc | success rate | points | work |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report.rows:
        threat = row.threat_model + ("" if row.claim else " †")
        work = "-" if math.isnan(row.work) else f"{row.work:.4g} {row.work_unit}"
        cells = [
            row.attack,
            threat,
            row.budget_label,
            percent(row.clean_accuracy),
            percent(row.robust_accuracy),
            percent(row.success_rate),
            str(row.points),
            work,
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    lines.append("")
    if any(not row.claim for row in report.rows):
        lines += [f"† {RULE_GRADIENT_NOTE}", ""]
    lines.append(
        "Robust accuracy is over all points (wrong when clean = not robust); success rate is among "
        "the points correct when clean; work is per attacked point."
    )
    lines.append("")
    warnings = [flag for flag in report.flags if flag.claim]
    if warnings:
        lines.append("Gradient-masking warnings:")
        lines += [f"* {flag.message}" for flag in warnings]
    else:
        lines.append("Gradient-masking checks: nothing flagged.")
    expected = [flag for flag in report.flags if not flag.claim]
    if expected:
        lines += ["", "Rule-gradient threat model (masking expected there; not a warning about the true gradient):"]
        lines += [f"* {flag.message}" for flag in expected]
    return "\n".join(lines) + "\n"
