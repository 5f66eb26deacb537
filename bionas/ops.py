"""The Operation plugin base, and the blocks an operation is built from.

An op plugin subclasses `Operation` and builds plain torch layers; the rule of
the edge is applied with `with_rule`. Two building blocks matter to the
supernet's speed and are public for op authors:

* `ReLUFirst`: a Sequential starting with a ReLU. A mixed edge computes that
  ReLU once for every candidate that starts with one (`starts_with_relu`).
* `FactorizedReduce` and `ReLUConvBN`: DARTS's blocks (quark0/darts
  cnn/operations.py), also used by the cells' preprocessing.

Every stride-2 block maps H to ceil(H / 2), so odd spatial sizes work.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from bionas.plugin import Plugin
from bionas.rules import rule_of


class Operation(Plugin):
    """A candidate operation of a cell edge; every conv inside it learns by the given rule.

    `build(channels, stride, rule, affine)` returns the module for one edge:
    input and output have `channels` channels; stride 2 halves the spatial size
    (rounding up, so odd sizes work). A parametric op builds plain layers and
    returns `with_rule(module, rule)`. A parameter-free op ignores `rule` (it may be
    None). `affine=False` means "built for the supernet": DARTS searches with
    BatchNorm without affine parameters and follows pooling by a BatchNorm.

    The default search space (a spec without `space.ops`) is data the op plugins own:
    `default_space` puts an op in it (in registration order), `default_exclude`
    names rules the op is not paired with unless a spec says otherwise.
    """

    kind: ClassVar[str] = "op"
    # Appears once per rule in the joint space (True), or once (False).
    parametric: ClassVar[bool] = True
    # The op outputs zeros (DARTS 'none'): the supernet never computes it, and a
    # genotype is derived from the other candidates (the DARTS rule).
    zero: ClassVar[bool] = False
    # In the default search space.
    default_space: ClassVar[bool] = False
    # Rules this op is not paired with in a space whose spec gives no `exclude`.
    default_exclude: ClassVar[tuple[str, ...]] = ()
    # How the supernet runs this op's rule variants on an edge as one computation (a
    # bionas.space.stacking.StackedForm: SequentialStack for Sequentials of ReLU, Conv2d and
    # BatchNorm2d); None: one candidate at a time.
    stacking: ClassVar[type | None] = None

    def build(self, channels: int, stride: int, rule, affine: bool) -> nn.Module:
        raise NotImplementedError

    @classmethod
    def has_weights(cls, stride: int) -> bool:
        """Whether the op built at `stride` has weights for a rule to train: `parametric`, unless the op
        says otherwise for a stride (skip_connect: the identity at stride 1). A derived cell builds an
        edge without a rule where this is False, and a genotype's rule there is read as null."""
        return cls.parametric


def with_rule(module: nn.Module, rule) -> nn.Module:
    """`rule.apply(module)`: every Conv2d/Linear inside learns by `rule`; None leaves it as built (backprop)."""
    return module if rule is None else rule.apply(module)


class ReLUFirst(nn.Sequential):
    """A Sequential that starts with a ReLU.

    A mixed edge computes that ReLU once for all its candidates that start with
    one (the forward is identical; the ReLU has no parameters and no rule) and
    calls `from_relu` on the shared result, unless a rule works on the module
    as a whole (pc): its forward must then run as it is.
    """

    def from_relu(self, x: torch.Tensor) -> torch.Tensor:
        layers = iter(self)
        next(layers)  # the ReLU, already applied
        for layer in layers:
            x = layer(x)
        return x


class ReLUConvBN(ReLUFirst):
    """ReLU, conv, BatchNorm: DARTS's cell preprocessing (1x1) of each cell input."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class FactorizedReduce(nn.Module):
    """Halve the spatial size with two 1x1 stride-2 convs, the second on the input shifted by one pixel.

    DARTS's FactorizedReduce (ReLU, two convs of c_out/2 channels, concat, BN).
    The shifted input is zero-padded at its far end, which changes nothing for
    even sizes (the padded row/column is never sampled) and makes both halves
    ceil(H / 2) tall for odd sizes, where DARTS's shapes would not match.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        # DARTS's 1x1 stride-2 convs, run as 1x1 convs on every other pixel (the same outputs): torch's CPU
        # kernel for channels_last 1x1 stride-2 convs of 4 or fewer input channels corrupts memory (torch 2.14)
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_relu(self.relu(x))

    def from_relu(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(torch.cat([self.conv_1(x[:, :, ::2, ::2]), self.conv_2(self.shift(x)[:, :, ::2, ::2])], dim=1))

    @staticmethod
    def shift(x: torch.Tensor) -> torch.Tensor:
        """The input of conv_2: x shifted up and left by one pixel, zero-padded at the far end."""
        return F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))


def starts_with_relu(module: nn.Module) -> bool:
    """`module.from_relu(relu(x))` equals `module(x)`: a ReLUFirst or FactorizedReduce without a module-level rule."""
    if rule_of(module) is not None:
        return False
    if isinstance(module, FactorizedReduce):
        return isinstance(module.relu, nn.ReLU)
    return isinstance(module, ReLUFirst) and isinstance(module[0], nn.ReLU)
