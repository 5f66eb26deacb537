"""bionas: neural architecture search over (operation, learning rule) edges.

The public API. Plugin authors need `hookimpl`, the base classes and
`PluginOptions`; users need `list_plugins`, the `get_*` verbs, `convert`,
`exact_gradients`, `load_spec` and `run`.
"""

from bionas.__about__ import __version__
from bionas.attacks import Attack
from bionas.data import Dataset, DatasetInfo
from bionas.errors import BionasError, DataError, PluginError, SpecError
from bionas.plugin import PluginOptions
from bionas.registry import (
    PluginInfo,
    get_attack,
    get_dataset,
    get_op,
    get_rule,
    get_search,
    hookimpl,
    list_plugins,
)
from bionas.rules import FeedbackRule, LearningRule, alignment, convert, exact_gradients
from bionas.search import SearchData, SearchResult, SearchStrategy
from bionas.space import Operation
from bionas.spec import load_spec
from bionas.pipeline import RunResult, run

__all__ = [
    "__version__",
    "hookimpl",
    "LearningRule",
    "FeedbackRule",
    "Operation",
    "SearchStrategy",
    "Dataset",
    "Attack",
    "PluginOptions",
    "PluginInfo",
    "DatasetInfo",
    "SearchResult",
    "SearchData",
    "list_plugins",
    "get_rule",
    "get_op",
    "get_search",
    "get_dataset",
    "get_attack",
    "convert",
    "exact_gradients",
    "alignment",
    "BionasError",
    "SpecError",
    "PluginError",
    "DataError",
    "load_spec",
    "run",
    "RunResult",
]
