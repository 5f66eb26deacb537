"""Search strategies: the SearchStrategy base and SearchResult.

(Interface only until the search issue lands.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from bionas.plugin import Plugin


@dataclass
class SearchResult:
    genotype: Any
    history: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


class SearchStrategy(Plugin):
    """Searches the supernet's architecture and returns a SearchResult."""

    kind: ClassVar[str] = "search"

    def search(self, supernet, data, device, checkpoint) -> SearchResult:
        raise NotImplementedError
