"""The same architecture with other learning rules: a genotype's rules rewritten."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bionas.errors import BionasError
from bionas.rules.refs import RuleRef
from bionas.space.genotype import Genotype
from bionas.spec import default_fixed_rule


def replace_rules(genotype: Genotype, edge_rule: Callable[[str, int, dict[str, Any]], RuleRef],
                  fixed_rules: dict[str, RuleRef | None] | None = None) -> Genotype:
    """The same architecture with other rules: `edge_rule(cell_type, index, edge) -> rule` for every edge
    whose op has a rule; `fixed_rules` replaces the fixed layers' rules when given."""
    data = genotype.to_dict()
    for kind in ("normal", "reduce"):
        for index, edge in enumerate(data[kind]):
            if edge.get("rule") is not None:
                edge["rule"] = edge_rule(kind, index, edge)
    if fixed_rules is not None:
        data["fixed_rules"] = dict(fixed_rules)
    return Genotype.from_dict(data)


def with_backprop(genotype: Genotype) -> Genotype:
    """The same architecture with every layer learning by backprop: the installed rule marked as
    backprop (bp) on every edge and fixed layer. A transfer attack's default surrogate."""
    rule = default_fixed_rule()
    if rule is None:
        raise BionasError("no installed rule is marked as backprop (bp), so the genotype cannot be retrained with "
                          "backprop; give the attack a surrogate of its own")
    return replace_rules(genotype, lambda *_: rule, dict.fromkeys(genotype.fixed_rules, rule))
