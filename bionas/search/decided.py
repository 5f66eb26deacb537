"""How decided a searched genotype is: per edge, how far the architecture step moved the mixing weights.

For each edge, from its mixing weights p = softmax(alpha) over the n candidates:

* `margin` = p(kept) - p(runner-up), the two largest weights among the candidates other than the
  zero op (the DARTS rule keeps the largest: bionas.space.genotype.derive_cell);
* `entropy` = -sum p log p (nats), against `max_entropy` = log n for uniform weights;
* `deviation` = max_k |n p_k - 1|, the largest departure of a weight from uniform 1/n, relative to it;
* `variation` = sqrt(mean_k (n p_k - 1)^2), the coefficient of variation of the weights (their
  standard deviation over their mean 1/n): how far from uniform the edge is as a whole.

When every edge's variation is at most `threshold` (10%: the weights spread by a tenth of the uniform
weight), the search barely moved the alphas: the genotype is decided by differences that small, and it
is then close to a random draw from the space.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

THRESHOLD = 0.1


def edge_decidedness(weights: Sequence[float], zero: Sequence[bool]) -> dict[str, Any]:
    """Margin, entropy and deviation from uniform of one edge's mixing weights (see the module)."""
    n = len(weights)
    order = sorted((k for k in range(n) if not zero[k]), key=lambda k: -weights[k])
    entropy = -sum(p * math.log(p) for p in weights if p > 0)
    return {"kept": order[0] if order else None, "runner_up": order[1] if len(order) > 1 else None,
            "margin": weights[order[0]] - weights[order[1]] if len(order) > 1 else None,
            "entropy": entropy, "max_entropy": math.log(n), "deviation": max(abs(n * p - 1) for p in weights),
            "variation": math.sqrt(sum((n * p - 1) ** 2 for p in weights) / n)}


def decidedness(alphas: Mapping[str, Sequence[Sequence[float]]], labels: Sequence[str], zero: Sequence[bool],
                threshold: float = THRESHOLD) -> dict[str, Any]:
    """Every edge's numbers (candidates by label) per cell type of `alphas` (softmax weights, as a search
    record's `alphas`), their range, and whether every edge is within `threshold` of uniform."""
    edges = []
    for cell in ("normal", "reduce"):
        for index, weights in enumerate(alphas.get(cell) or []):
            edge = edge_decidedness(weights, zero)
            edge.update(cell=cell, edge=index, kept=_label(labels, edge["kept"]),
                        runner_up=_label(labels, edge["runner_up"]))
            edges.append(edge)
    margins = [e["margin"] for e in edges if e["margin"] is not None]
    ratios = [e["entropy"] / e["max_entropy"] for e in edges if e["max_entropy"] > 0]
    close = bool(edges) and all(e["variation"] <= threshold for e in edges)
    return {"edges": edges, "threshold": threshold, "close_to_uniform": close,
            "margin": {"min": min(margins), "median": statistics.median(margins), "max": max(margins)}
            if margins else None,
            "entropy_ratio": {"min": min(ratios), "mean": statistics.fmean(ratios)} if ratios else None,
            "max_deviation": max((e["deviation"] for e in edges), default=None),
            "max_variation": max((e["variation"] for e in edges), default=None)}


def _label(labels: Sequence[str], index: int | None) -> str | None:
    return None if index is None else labels[index]


def decidedness_lines(info: Mapping[str, Any]) -> list[str]:
    """The report's sentences on a decidedness record (None: the strategy has no mixing weights)."""
    if not info or not info.get("edges"):
        return []
    m, h = info["margin"], info["entropy_ratio"]
    margin = (f"margin between the kept candidate's mixing weight and the runner-up's {m['min']:.3g} to "
              f"{m['max']:.3g} (median {m['median']:.3g}); ") if m else ""
    lines = [f"How decided the genotype is (`search.json` -> `decidedness`, per edge): {margin}entropy of "
             f"softmax(alpha) {h['mean']:.5f} x log(n), the uniform value, on average (lowest {h['min']:.5f}); "
             f"coefficient of variation of an edge's weights at most {info['max_variation']:.1%} (0 when uniform); "
             f"largest departure of a weight from uniform {info['max_deviation']:.1%} of 1/n."]
    if info["close_to_uniform"]:
        lines.append(f"**Every edge's mixing weights are within {info['threshold']:.0%} of uniform (coefficient of "
                     "variation): the architecture "
                     "step barely moved the alphas, and the genotype is close to a random draw from the space.**")
    return lines
