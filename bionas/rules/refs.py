"""Rule references as specs and genotypes write them: a name ("usf") or {"name": ..., "options": {...}}.

A reference of None means plain layers: no rule, the true gradient (backprop).
"""

from __future__ import annotations

from typing import Any

RuleRef = str | dict[str, Any]


def rule_name(ref: Any) -> Any:
    """The rule name of a reference: "usf" -> "usf", {"name": "usf", ...} -> "usf"; an object with a
    `name` (a spec's PluginRef) -> its name; None -> None. Anything else is returned as it is (for the
    validation error that follows)."""
    if isinstance(ref, dict):
        return ref.get("name")
    return getattr(ref, "name", ref)


def rule_options(ref: RuleRef | None) -> dict[str, Any]:
    """The options of a reference ({} for a plain name)."""
    return dict(ref.get("options") or {}) if isinstance(ref, dict) else {}


def rule_ref(name: str, options: dict[str, Any]) -> RuleRef:
    """A reference as a genotype records it: the name, or {name, options} when options differ from defaults."""
    return {"name": name, "options": dict(options)} if options else name
