"""The run's plots: the figure helpers every plot of bionas uses, training curves, alpha heatmaps.

Figures are bare matplotlib Figures saved through the Agg canvas: pyplot's global
state and backend are never touched, so plotting works headless and inside notebooks.
The genotype drawing is Genotype.draw; the robustness curve RobustnessReport.plot;
the analyses' plots live in bionas.analysis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bionas.rundir import atomic_write


def figure(rows: int = 1, cols: int = 1, size: tuple[float, float] = (7, 4.5)):
    """(figure, 2-D array of axes)."""
    # matplotlib costs about a quarter of torch's import time: only runs that plot pay it.
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    return fig, fig.subplots(rows, cols, squeeze=False)


def save(fig, path: str | Path, dpi: int = 110) -> Path:
    fig.tight_layout()
    return save_figure(fig, path, dpi)


def save_figure(fig, path: str | Path, dpi: int) -> Path:
    """A figure written atomically (bionas.rundir.atomic_write): a killed run leaves no half-written plot.
    The format follows the target's suffix (the temp file's is .tmp)."""
    path = Path(path)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png"))


def epoch_axis(ax) -> None:
    """An x axis of epochs: whole epochs only, so a run of 2 epochs is not labelled 1.25, 1.5, ..."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def training_curves(records: list[dict[str, Any]], path: Path) -> Path | None:
    """Loss and accuracy per epoch of every stage in metrics.jsonl; None when there is nothing to plot."""
    fig = training_figure(records)
    return None if fig is None else save(fig, path)


def training_figure(records: list[dict[str, Any]]):
    """The figure of `training_curves`, unsaved; None when there is nothing to plot."""
    stages = [s for s in ("search", "surrogate", "retrain") if any(r.get("stage") == s for r in records)]
    if not stages:
        return None
    fig, axes = figure(len(stages), 2, (10, 3.2 * len(stages)))
    for row, stage in zip(axes, stages):
        stage_records = [r for r in records if r.get("stage") == stage]
        epochs = [r["epoch"] + 1 for r in stage_records]
        for ax, metric in zip(row, ("loss", "accuracy")):
            for split in ("train", "valid", "val"):
                key = f"{split}_{metric}"
                values = [r.get(key) for r in stage_records]
                if any(v is not None for v in values):
                    ax.plot(epochs, values, marker="o", markersize=3, label=split)
            ax.set_title(f"{stage}: {metric}")
            epoch_axis(ax)
            ax.grid(alpha=0.3)
            ax.legend()
    return fig


def alpha_heatmaps(alphas: dict[str, list[list[float]]], labels: list[str], path: Path) -> Path:
    """The mixing weights (softmax of alpha) of every edge over every candidate, normal and reduce cells."""
    kinds = [k for k in ("normal", "reduce") if k in alphas]
    fig, axes = figure(1, len(kinds), (0.45 * len(labels) * len(kinds) + 3, 5.5))
    for ax, kind in zip(axes[0], kinds):
        image = ax.imshow(alphas[kind], aspect="auto", cmap="viridis")
        ax.set_title(f"{kind} cell: mixing weights")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_ylabel("edge")
        fig.colorbar(image, ax=ax, fraction=0.04)
    return save(fig, path)
