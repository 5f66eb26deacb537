"""Feedback alignment over training: logged per epoch by the retrain stage, plotted by `bionas analyze alignment`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from torch import nn

from bionas.plots import epoch_axis, figure, save
from bionas.rules import alignment


def alignment_record(model: nn.Module) -> dict[str, dict[str, Any]]:
    """{layer: {rule, angle, ratio}} for every layer that does not learn by plain backprop (JSON-ready: NaN -> None)."""

    def clean(value: float) -> float | None:
        return None if math.isnan(value) else round(value, 4)

    return {
        name: {"rule": a.rule, "angle": clean(a.angle_deg), "ratio": clean(a.norm_ratio)}
        for name, a in alignment(model).items()
        if a.rule != "bp"
    }


def alignment_series(records: list[dict[str, Any]], stage: str = "retrain") -> dict[str, dict[str, Any]]:
    """Per layer: its rule and the epochs, angles and norm ratios logged in metrics.jsonl."""
    series: dict[str, dict[str, Any]] = {}
    for record in records:
        if record.get("stage") != stage or "alignment" not in record:
            continue
        for layer, values in record["alignment"].items():
            entry = series.setdefault(layer, {"rule": values["rule"], "epochs": [], "angle": [], "ratio": []})
            entry["epochs"].append(record["epoch"])
            entry["angle"].append(values["angle"])
            entry["ratio"].append(values["ratio"])
    return series


def plot_alignment(series: dict[str, dict[str, Any]], path: Path) -> Path:
    """Angle and norm ratio against epoch: one thin line per layer, one colour per rule, the rule mean bold."""
    # matplotlib costs about a quarter of torch's import time: only runs that plot pay it.
    from matplotlib import colormaps

    rules = sorted({entry["rule"] for entry in series.values()})
    colours = dict(zip(rules, colormaps["tab10"].colors))
    fig, axes = figure(1, 2, (11, 4))
    for ax, key, title in ((axes[0, 0], "angle", "angle between feedback and weight (deg)"),
                           (axes[0, 1], "ratio", "|B| / |W|")):
        for rule in rules:
            entries = [e for e in series.values() if e["rule"] == rule and any(v is not None for v in e[key])]
            for entry in entries:
                ax.plot(entry["epochs"], entry[key], color=colours[rule], alpha=0.25, linewidth=0.8)
            if entries:
                epochs = entries[0]["epochs"]
                mean = [sum(e[key][i] for e in entries if e[key][i] is not None)
                        / max(1, sum(e[key][i] is not None for e in entries)) for i in range(len(epochs))]
                ax.plot(epochs, mean, color=colours[rule], linewidth=2.5, label=f"{rule} ({len(entries)} layers)")
        ax.set_title(title)
        epoch_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, path)
