"""The attacks of an evaluation, in any of the forms `evaluate_robustness` accepts, as instances with sweeps.

An item is an Attack, (Attack, sweep or None), a name, (name, options), an AttackSpec,
or a mapping {"name", "options", "eps"}.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from bionas.attacks import Attack, pixel_budget_error
from bionas.errors import BionasError
from bionas.fractions import parse_fraction
from bionas.registry import get_attack
from bionas.spec import AttackSpec

AttackItem = Any  # Attack | name | (name, options) | AttackSpec | {"name", "options", "eps"}


def resolve_attacks(
    attacks: Iterable[AttackItem], eps_sweep: Sequence[Any] | Mapping[str, Sequence[Any]] | None = None
) -> list[tuple[Attack, list[float] | None]]:
    """(attack, eps values or None) per item; names and options become attack instances.

    `eps_sweep` is one sweep for every attack with an eps budget, or {attack name or label: sweep};
    an item's own sweep (`AttackSpec.eps`, or "eps" of a dict item) wins.
    """
    resolved = []
    for item in attacks:
        own = None
        if isinstance(item, Attack):
            attack = item
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], Attack):
            attack, own = item  # an attack with its own sweep (None: its own eps)
        elif isinstance(item, str):
            attack = get_attack(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            attack = get_attack(item[0], **(item[1] or {}))
        elif isinstance(item, (AttackSpec, Mapping)):
            spec = item if isinstance(item, AttackSpec) else AttackSpec.model_validate(item)
            attack, own = get_attack(spec.name, **spec.options), spec.eps
        else:
            raise BionasError(f"not an attack: {item!r} (give an Attack, a name, (name, options) or an AttackSpec)")
        sweep = own
        if sweep is None and eps_sweep is not None:
            if isinstance(eps_sweep, Mapping):
                sweep = eps_sweep.get(attack.label, eps_sweep.get(attack.name))
            elif attack.budget == "eps":
                sweep = eps_sweep
        if sweep is not None:
            if attack.budget != "eps":
                raise BionasError(
                    f"attack '{attack.label}' has no eps budget (its budget is {attack.budget}); no eps sweep"
                )
            try:
                sweep = sorted(float(parse_fraction(e)) for e in sweep)
            except ValueError as exc:
                raise BionasError(f"eps of attack '{attack.label}': {exc}") from None
            errors = [error for eps in sweep if (error := pixel_budget_error(eps, attack.norm))]
            if errors:
                raise BionasError(f"eps of attack '{attack.label}': {errors[0]}")
        resolved.append((attack, sweep))
    return resolved
