"""How the robustness report writes its numbers: budgets and percentages."""

from __future__ import annotations

import math


def format_eps(eps: float | None) -> str:
    """A short decimal when one is exact (0.3, 0.2), else k/255 when k is whole (8/255), else 4 digits."""
    if eps is None:
        return "-"
    short = f"{eps:.4g}"
    if float(short) == eps:
        return short
    k = eps * 255
    if abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return short


def percent(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"
