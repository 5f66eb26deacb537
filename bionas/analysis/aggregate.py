"""Mean ± spread of repeated measurements: a study's seeds, random-rules' assignments.

One definition for every table bionas prints over repeats: the mean, the
*sample* standard deviation (n - 1 in the denominator, `statistics.stdev`;
none for a single value), min and max, over the values that exist (None is a
measurement that was not made, not a zero). The markdown and the plot helpers
format them the same way everywhere.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from bionas.plots import figure, save

STD_NOTE = "± is the sample standard deviation (n - 1 in the denominator)"


@dataclass(frozen=True)
class Spread:
    """n values: their mean, sample standard deviation (None below 2 values), min and max."""

    n: int
    mean: float | None
    std: float | None
    min: float | None
    max: float | None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)

    def text(self, percent: bool = True) -> str:
        """`97.10% ± 0.52%` (or `12.3 ± 0.4` with percent False); `-` with no value."""
        if self.mean is None:
            return "-"
        value = format_value(self.mean, percent)
        return value if self.std is None else f"{value} ± {format_value(self.std, percent)}"


def spread(values: Iterable[float | None]) -> Spread:
    """The spread of the values that are not None."""
    present = [float(v) for v in values if v is not None]
    if not present:
        return Spread(0, None, None, None, None)
    std = statistics.stdev(present) if len(present) > 1 else None
    return Spread(len(present), statistics.fmean(present), std, min(present), max(present))


def spreads(rows: Iterable[Mapping[str, float | None]]) -> dict[str, Spread]:
    """Per key (in order of first appearance), the spread of that key over the rows that have it."""
    rows = list(rows)
    keys = list(dict.fromkeys(key for row in rows for key in row))
    return {key: spread(row.get(key) for row in rows) for key in keys}


def format_value(value: float | None, percent: bool = True) -> str:
    if value is None:
        return "-"
    return f"{value:.2%}" if percent else f"{value:.1f}"


def plot_spreads(series: Mapping[str, list[float]], path: Path, xlabel: str,
                 lines: Mapping[str, float] | None = None, percent: bool = True) -> Path:
    """One row per series: each value as a dot, the mean ± sample std as a bar; `lines` as vertical lines."""
    scale = 100 if percent else 1
    labels = list(series)
    fig, axes = figure(size=(7, 1.2 + 0.55 * max(len(labels), 1)))
    ax = axes[0, 0]
    for y, label in enumerate(labels):
        values = [v * scale for v in series[label]]
        ax.scatter(values, [y] * len(values), alpha=0.7, color="tab:blue", zorder=3)
        summary = spread(values)
        if summary.mean is not None:
            ax.errorbar(summary.mean, y, xerr=summary.std or 0, fmt="D", color="black", capsize=4, zorder=4)
    for (name, value), color in zip((lines or {}).items(), ("red", "tab:orange", "tab:green")):
        ax.axvline(value * scale, color=color, linewidth=2, label=name)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(-0.6, len(labels) - 0.4)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title("dots: one value each; diamond and bar: mean ± sample standard deviation (n - 1)", fontsize=8)
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=8)
    return save(fig, path)
