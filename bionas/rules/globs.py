"""Which glob of a {module-name glob: rule} mapping gives each layer its rule.

A layer takes the rule of the first glob (in mapping order) that matches its name
or the name of one of its ancestors (fnmatch, case-sensitive, names as in
model.named_modules(); '*' also matches dots). `bionas.convert` applies the mapping;
the spec checks with `glob_problems` that every glob of a model's `rules` gives a layer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase


def _names(layer: str) -> list[str]:
    """The layer's name and its ancestors' names: 'a.b.c', 'a.b', 'a'."""
    parts = layer.split(".")
    return [".".join(parts[:i]) for i in range(len(parts), 0, -1)]


def matches(glob: str, layer: str) -> bool:
    """Whether `glob` matches the layer's name or an ancestor's."""
    return any(fnmatchcase(name, glob) for name in _names(layer))


def first_match(layer: str, globs: Sequence[str]) -> int | None:
    """The index of the first glob matching `layer` (or an ancestor), None when none does."""
    return next((i for i, glob in enumerate(globs) if matches(glob, layer)), None)


def glob_problems(layers: Iterable[str], globs: Sequence[str]) -> dict[str, str]:
    """glob -> why it gives no layer its rule: it matches none, or earlier globs take every layer it matches."""
    layers = list(layers)
    given = {first_match(layer, globs) for layer in layers}
    problems = {}
    for i, glob in enumerate(globs):
        if i in given:
            continue
        matched = [layer for layer in layers if matches(glob, layer)]
        if not matched:
            problems[glob] = "matches no Conv2d/Linear layer of the model (module names as in named_modules())"
        else:
            problems[glob] = (f"every layer it matches ({len(matched)}, e.g. '{matched[0]}') takes the rule of an "
                              "earlier glob (the first matching glob wins)")
    return problems
