"""bionas: neural architecture search over (operation, learning rule) edges.

The public API. Plugin authors need `hookimpl`, the base classes, `PluginOptions` and
the helpers of their kind (`with_rule`, `ReLUFirst`, `FactorizedReduce` for ops;
`Fractional` for budgets; `EpochSearch`, `SearchRun`, `WeightTrainingOptions`,
`weight_step`, `optimizer_step` for search strategies; `Runtime`); users need
`list_plugins`, the `get_*` verbs, `convert`, `exact_gradients`, `load_spec`, `run` and
`run_study`.

The imports below follow the layers of docs/architecture.md, lowest first.
"""

from bionas.__about__ import __version__
from bionas.errors import BionasError, DataError, PluginError, SpecError
from bionas.fractions import Fractional, parse_fraction
from bionas.plugin import PluginOptions
from bionas.runtime import Runtime
from bionas.rules import FeedbackRule, LearningRule, alignment, exact_gradients, hold_feedback
from bionas.ops import FactorizedReduce, Operation, ReLUFirst, with_rule
from bionas.data import Dataset, DatasetInfo
from bionas.attacks import Attack
from bionas.search import SearchData, SearchResult, SearchStrategy
from bionas.tracking import Logger, LogRun
from bionas.registry import (
    PluginInfo,
    get_attack,
    get_dataset,
    get_logger,
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
