"""bionas: neural architecture search over (operation, learning rule) edges.

The public API. Plugin authors need `hookimpl`, the base classes, `PluginOptions` and
the helpers of their kind (`with_rule`, `ReLUFirst`, `FactorizedReduce` for ops;
`Fractional` for budgets; `EpochSearch`, `SearchRun`, `WeightTrainingOptions`,
`weight_step`, `optimizer_step` for search strategies; `Runtime`); users need
`list_plugins`, the `get_*` verbs (`get_model` for a network by name), `convert`, `exact_gradients`,
`load_spec`, `run` and `run_study`.

Each name is imported when first used (PEP 562), not by `import bionas`: the `bionas`
command's --help and --version, which import this package, do not pay for torch. _EXPORTS
says which module holds each name, in the layers of docs/architecture.md, lowest first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bionas.__about__ import __version__

_EXPORTS: dict[str, tuple[str, ...]] = {
    "bionas.errors": ("BionasError", "DataError", "PluginError", "SpecError"),
    "bionas.fractions": ("Fractional", "parse_fraction"),
    "bionas.plugin": ("PluginOptions",),
    "bionas.runtime": ("Runtime",),
    "bionas.rules": ("FeedbackRule", "LearningRule", "alignment", "exact_gradients", "hold_feedback"),
    "bionas.ops": ("FactorizedReduce", "Operation", "ReLUFirst", "with_rule"),
    "bionas.data": ("Dataset", "DatasetInfo"),
    "bionas.attacks": ("Attack",),
    "bionas.model": ("Model",),
    "bionas.search": ("SearchData", "SearchResult", "SearchStrategy"),
    "bionas.tracking": ("Logger", "LogRun"),
    "bionas.registry": (
        "PluginInfo", "get_attack", "get_dataset", "get_logger", "get_model", "get_op", "get_rule", "get_search",
        "hookimpl", "list_plugins"
    ),
    "bionas.spec": ("load_spec",),
    "bionas.conversion": ("convert",),
    "bionas.search.epochs": ("EpochSearch", "SearchRun", "WeightTrainingOptions", "optimizer_step", "weight_step"),
    "bionas.pipeline": ("RunResult", "run", "run_study"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

if TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported at once
    from bionas.errors import BionasError, DataError, PluginError, SpecError
    from bionas.fractions import Fractional, parse_fraction
    from bionas.plugin import PluginOptions
    from bionas.runtime import Runtime
    from bionas.rules import FeedbackRule, LearningRule, alignment, exact_gradients, hold_feedback
    from bionas.ops import FactorizedReduce, Operation, ReLUFirst, with_rule
    from bionas.data import Dataset, DatasetInfo
    from bionas.attacks import Attack
    from bionas.model import Model
    from bionas.search import SearchData, SearchResult, SearchStrategy
    from bionas.tracking import Logger, LogRun
    from bionas.registry import (
        PluginInfo,
        get_attack,
        get_dataset,
        get_logger,
        get_model,
        get_op,
        get_rule,
        get_search,
        hookimpl,
        list_plugins,
    )
    from bionas.spec import load_spec
    from bionas.conversion import convert
    from bionas.search.epochs import EpochSearch, SearchRun, WeightTrainingOptions, optimizer_step, weight_step
    from bionas.pipeline import RunResult, run, run_study


def __getattr__(name: str) -> Any:
    """The public name `name` (or a submodule, `bionas.space`), imported on first use and then cached."""
    module = _MODULE_OF.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    else:
        try:
            value = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "__version__",
    "hookimpl",
    "LearningRule",
    "FeedbackRule",
    "Operation",
    "SearchStrategy",
    "Dataset",
    "Attack",
    "Logger",
    "LogRun",
    "Model",
    "PluginOptions",
    "PluginInfo",
    "DatasetInfo",
    "SearchResult",
    "SearchData",
    "EpochSearch",
    "SearchRun",
    "WeightTrainingOptions",
    "weight_step",
    "optimizer_step",
    "Runtime",
    "with_rule",
    "ReLUFirst",
    "FactorizedReduce",
    "Fractional",
    "parse_fraction",
    "hold_feedback",
    "list_plugins",
    "get_rule",
    "get_op",
    "get_search",
    "get_dataset",
    "get_attack",
    "get_logger",
    "get_model",
    "convert",
    "exact_gradients",
    "alignment",
    "BionasError",
    "SpecError",
    "PluginError",
    "DataError",
    "load_spec",
    "run",
    "run_study",
    "RunResult",
]
