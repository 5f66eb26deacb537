"""Numbers a spec or a plugin's options may write as fractions: an attack budget of `8/255`."""

from __future__ import annotations

from fractions import Fraction
from typing import Annotated, Any

from pydantic import BeforeValidator, Field


def parse_fraction(value: Any) -> float:
    """`8/255`, `"0.3"` or `0.3` -> float; used for attack budgets written as k/255."""
    if isinstance(value, str):
        try:
            return float(Fraction(value.strip()))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"expected a number or a fraction like 8/255, got {value!r}") from None
    return value


# The type of an option that takes a non-negative number or a fraction: `eps: Fractional = Field(...)`.
Fractional = Annotated[float, BeforeValidator(parse_fraction), Field(ge=0)]
