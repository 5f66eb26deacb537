"""The run's plots (matplotlib, Agg): training curves and architecture-weight heatmaps.

The genotype drawing is Genotype.draw and the robustness curve RobustnessReport.plot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def training_curves(records: list[dict[str, Any]], path: Path) -> Path | None:
    """Loss and accuracy per epoch of every stage in metrics.jsonl; None when there is nothing to plot."""
    stages = [s for s in ("search", "surrogate", "retrain") if any(r.get("stage") == s for r in records)]
    if not stages:
        return None
    fig, axes = plt.subplots(len(stages), 2, figsize=(10, 3.2 * len(stages)), squeeze=False)
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
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def alpha_heatmaps(alphas: dict[str, list[list[float]]], labels: list[str], path: Path) -> Path:
    """The mixing weights (softmax of alpha) of every edge over every candidate, normal and reduce cells."""
    kinds = [k for k in ("normal", "reduce") if k in alphas]
    fig, axes = plt.subplots(1, len(kinds), figsize=(0.45 * len(labels) * len(kinds) + 3, 5.5), squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        image = ax.imshow(alphas[kind], aspect="auto", cmap="viridis")
        ax.set_title(f"{kind} cell: mixing weights")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_ylabel("edge")
        fig.colorbar(image, ax=ax, fraction=0.04)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
