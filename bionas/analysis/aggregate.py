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


@dataclass(frozen=True)
class Standing:
    """Where one value stands among others measured the same way (the searched genotype among random ones)."""

    value: float
    others: Spread
    rank: int  # 1 = best of the value and the others; ties share the better rank
    percentile: float | None  # percent of the others below the value, ties counted half; None with no others
    verdict: str

    def as_dict(self) -> dict:
        return {"value": self.value, "others": self.others.as_dict(), "rank": self.rank, "of": self.others.n + 1,
                "percentile": self.percentile, "verdict": self.verdict}

    def text(self, value_name: str, others_name: str) -> str:
        """`searched 95.80%; random 95.90% ± 1.00% (n=5): not better than random at this budget`."""
        return (f"{value_name} {format_value(self.value)}; {others_name} {self.others.text()} (n={self.others.n}): "
                f"{self.verdict}")


def standing(value: float, others: Iterable[float], name: str = "random") -> Standing:
    """Rank, percentile and a verdict of `value` against `others` (higher is better).

    The verdict is "better than {name}" only when the value is above every other one and more than one
    sample standard deviation above their mean, "worse" when more than one below, and otherwise "not
    better": with a handful of samples nothing finer can be told apart from noise.
    """
    others = [float(v) for v in others]
    summary = spread(others)
    rank = 1 + sum(other > value for other in others)
    percentile = (100 * (sum(o < value for o in others) + 0.5 * sum(o == value for o in others)) / len(others)
                  if others else None)
    if len(others) < 2:
        verdict = f"too few {name} samples for a verdict (at least 2 are needed for a spread)"
    elif value > summary.max and value > summary.mean + summary.std:
        verdict = f"better than {name} at this budget (above all {len(others)}, more than one std above their mean)"
    elif value < summary.mean - summary.std:
        verdict = f"worse than {name} at this budget (more than one std below their mean)"
    else:
        verdict = f"not better than {name} at this budget"
    return Standing(value, summary, rank, percentile, verdict)
