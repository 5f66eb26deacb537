"""Search space: operations, mixed edges, cells, supernet, genotype, derived network.

(Interface only until the search-space issue lands.)
"""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from bionas.plugin import Plugin


class Operation(Plugin):
    """A candidate operation of a cell edge; every conv inside it learns by the given rule."""

    kind: ClassVar[str] = "op"
    parametric: ClassVar[bool] = True

    def build(self, channels: int, stride: int, rule, affine: bool) -> nn.Module:
        raise NotImplementedError
