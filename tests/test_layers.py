"""The layering of docs/architecture.md, checked on the import graph of bionas/ read from the source.

Each core module belongs to one layer; it may import modules of its own layer or of lower ones,
never a higher layer, never a plugin package, and the imports form no cycle. Importing a module
also runs its packages' __init__ (except the root `bionas`, the public API at the top): those
count as imports too. Imports inside functions are allowed only where ALLOWED_LATE says why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "bionas"

# Lowest first; a module belongs to the layer of the longest name that is it or one of its packages.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("foundation", ("bionas.__about__", "bionas.errors", "bionas.plugin", "bionas.hookspecs", "bionas.runtime",
                    "bionas.seeds", "bionas.fractions", "bionas.checkpoint", "bionas.rundir", "bionas.plots",
                    "bionas.training", "bionas.distributed", "bionas.graphs")),
    ("contracts", ("bionas.rules", "bionas.ops", "bionas.data", "bionas.attacks", "bionas.search",
                   "bionas.search.base", "bionas.tracking", "bionas.model")),
    ("registry", ("bionas.registry",)),
    ("spec", ("bionas.spec",)),
    ("models", ("bionas.space", "bionas.conversion", "bionas.model_network")),
    ("training", ("bionas.search.epochs", "bionas.retrain", "bionas.robustness", "bionas.analysis")),
    ("runs", ("bionas.pipeline", "bionas.analysis.study", "bionas.analysis.random_architectures")),
    ("interface", ("bionas", "bionas.cli", "bionas.commands", "bionas.terminal", "bionas.typer_adapter",
                   "bionas.__main__")),
]
LAYER_NAMES = [name for name, _ in LAYERS]

# (module, imported module or package): why that import waits until a function runs.
ALLOWED_LATE = {
    ("bionas.retrain", "timm"): "timm (and torchvision under it) more than doubles torch's import time",
    ("bionas.search.epochs", "timm"): "timm (and torchvision under it) more than doubles torch's import time",
    ("bionas.data.base", "bionas.data.transforms"): "it imports torchvision, which more than doubles torch's import time",
    ("bionas.spec", "timm.optim"): "timm (and torchvision under it) more than doubles torch's import time",
    ("bionas.plots", "matplotlib"): "matplotlib costs about a quarter of torch's import time",
    ("bionas.space.draw", "matplotlib"): "matplotlib costs about a quarter of torch's import time",
    ("bionas.analysis.alignment", "matplotlib"): "matplotlib costs about a quarter of torch's import time",
    ("bionas.cli", "bionas.commands"): "the commands' work imports torch and the plugins; --version and every "
                                       "--help answer without them (tests/test_cli.py)",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(ROOT.rglob("*.py"))}


def layer_of(module: str) -> str:
    best = max(((len(prefix), layer) for layer, prefixes in LAYERS for prefix in prefixes
                if module == prefix or module.startswith(prefix + ".")), default=None)
    assert best is not None, f"{module} is in no layer: add it to LAYERS here and in docs/architecture.md"
    return best[1]


def is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def resolved(module: str, node: ast.ImportFrom) -> str:
    """The absolute module of a `from ... import` (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package(module) else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports(module: str, source: str | None = None) -> list[tuple[str, bool]]:
    """(imported module, inside a function) for every import statement of `module` (or of `source` as it)."""
    tree = ast.parse(MODULES[module].read_text() if source is None else source)
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = resolved(module, child)
                for alias in child.names:  # `from package import module` imports that module
                    name = f"{base}.{alias.name}"
                    found.append((name if name in MODULES else base, in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def bionas_target(name: str) -> str | None:
    """The core module an imported name runs: the name itself, or the package holding it."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def edges(module: str, source: str | None = None) -> set[str]:
    """The core modules importing `module` runs: each imported module and the packages above it,
    except the root package and `module`'s own packages (already running when it is imported)."""
    out = set()
    own = {".".join(module.split(".")[:i]) for i in range(1, module.count(".") + 1)}
    for name, _ in imports(module, source):
        target = bionas_target(name) if name.split(".")[0] == "bionas" else None
        if target is None:
            continue
        parts = target.split(".")
        for i in range(2, len(parts) + 1):
            candidate = ".".join(parts[:i])
            if candidate != module and candidate not in own and candidate in MODULES:
                out.add(candidate)
        if target == "bionas" and module != "bionas":
            out.add("bionas")
    return out


GRAPH = {module: edges(module) for module in MODULES}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's components with more than one module (each is an import cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_every_core_module_has_a_layer():
    for module in MODULES:
        assert layer_of(module) in LAYER_NAMES


def test_the_core_has_no_import_cycle():
    assert strongly_connected(GRAPH) == []


def test_imports_point_down_the_layers():
    upward = [f"{module} ({layer_of(module)}) imports {target} ({layer_of(target)})"
              for module, targets in GRAPH.items() for target in sorted(targets)
              if LAYER_NAMES.index(layer_of(target)) > LAYER_NAMES.index(layer_of(module))]
    assert upward == []


def test_no_core_module_imports_a_plugin_package():
    found = [f"{module} imports {name}" for module in MODULES for name, _ in imports(module)
             if name.split(".")[0].startswith("bionas_")]
    assert found == []


def test_imports_inside_functions_are_the_allowed_ones():
    late = {(module, name) for module in MODULES for name, in_function in imports(module) if in_function}
    unexplained = sorted((m, n) for m, n in late
                         if not any(m == allowed_m and (n == allowed_n or n.startswith(allowed_n + "."))
                                    for allowed_m, allowed_n in ALLOWED_LATE))
    assert unexplained == [], "import at the top of the module, or add it to ALLOWED_LATE with the reason"
    unused = [key for key in ALLOWED_LATE if not any(m == key[0] and (n == key[1] or n.startswith(key[1] + "."))
                                                     for m, n in late)]
    assert unused == [], "ALLOWED_LATE entries that match no import: remove them"


@pytest.mark.parametrize(("source", "expected"), [
    ("from bionas.registry import get_registry\n", {"bionas.registry"}),
    # a package's __init__ runs when one of its modules is imported; one's own package is running already
    ("from bionas.space.saved import load_network\n", {"bionas.space", "bionas.space.saved"}),
    ("from bionas.rules.layers import rule_of\n", {"bionas.rules.layers"}),
    ("from . import tap\n", {"bionas.rules.tap"}),
    ("import bionas\n", {"bionas"}),
    ("from bionas import distributed\n", {"bionas.distributed"}),
    ("def f():\n    from bionas_rules import Backprop\n", set()),
])
def test_the_graph_counts_what_an_import_runs(source, expected):
    assert edges("bionas.rules.base", source) == expected


def test_imports_inside_functions_and_of_plugins_are_seen():
    source = "import torch\ndef f():\n    import timm.optim\n    from bionas_rules import Backprop\n"
    assert imports("bionas.rules.base", source) == [("torch", False), ("timm.optim", True), ("bionas_rules", True)]


def test_a_cycle_is_found():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
