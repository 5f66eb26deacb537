"""The Operation plugin base: one candidate operation of a cell edge."""

from __future__ import annotations

from typing import ClassVar

from torch import nn

from bionas.plugin import Plugin


class Operation(Plugin):
    """A candidate operation of a cell edge; every conv inside it learns by the given rule.

    `build(channels, stride, rule, affine)` returns the module for one edge:
    input and output have `channels` channels; stride 2 halves the spatial size
    (rounding up, so odd sizes work). A parametric op builds plain layers and
    returns `rule.apply(module)`. A parameter-free op ignores `rule` (it may be
    None). `affine=False` means "built for the supernet": DARTS searches with
    BatchNorm without affine parameters and follows pooling by a BatchNorm.
    """

    kind: ClassVar[str] = "op"
    # Appears once per rule in the joint space (True), or once (False).
    parametric: ClassVar[bool] = True
    # The op outputs zeros (DARTS 'none'): the supernet never computes it, and a
    # genotype is derived from the other candidates (the DARTS rule).
    zero: ClassVar[bool] = False

    def build(self, channels: int, stride: int, rule, affine: bool) -> nn.Module:
        raise NotImplementedError
