"""The robustness curve: accuracy over all points against eps, per attack (robustness.png)."""

from __future__ import annotations

from pathlib import Path

from bionas.plots import figure, save


def plot_report(report, path: str | Path) -> Path:
    """PNG: robust accuracy against eps per attack; budgets other than eps as horizontal lines."""
    fig, axes = figure(size=(7, 4.5))
    ax = axes[0, 0]
    ax.axhline(100 * report.clean_accuracy, color="black", linestyle=":", linewidth=1, label="clean")
    curves: dict[tuple[str, str], list] = {}  # rows by (attack, threat model)
    for row in report.rows:
        curves.setdefault(row.key, []).append(row)
    for (attack, threat), rows in curves.items():
        label = f"{attack}: {threat}" + ("" if rows[0].claim else " (not a robustness claim)")
        style = "-" if rows[0].claim else "--"
        if rows[0].budget == "eps":
            rows = sorted(rows, key=lambda r: r.eps)
            ax.plot(
                [0.0] + [r.eps for r in rows],
                [100 * report.clean_accuracy] + [100 * r.robust_accuracy for r in rows],
                style,
                marker="o",
                label=label,
            )
        else:
            for r in rows:
                ax.axhline(
                    100 * r.robust_accuracy, linestyle="-.", linewidth=1, label=f"{label} [{r.budget_label}]"
                )
    ax.set_xlabel("eps (pixel space, [0, 1] images)")
    ax.set_ylabel("accuracy over all points (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(f"{report.model}: {report.points} points")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save(fig, path, dpi=120)
