"""Search strategies, core side.

    base.py    the SearchStrategy plugin base, SearchData, SearchResult, resolve_space
    epochs.py  EpochSearch: the epoch loop with checkpoint, resume, records and
               data-parallel gradient averaging that darts, egnas and random share

The package's own namespace holds the base only: the registry imports it, and
the epoch loop sits above the registry (it builds genotypes).
"""

from bionas.search.base import SPACE_FALLBACKS, SearchData, SearchResult, SearchStrategy, resolve_space

__all__ = ["SearchStrategy", "SearchData", "SearchResult", "resolve_space", "SPACE_FALLBACKS"]
