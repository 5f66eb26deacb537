"""First-party search-space operations: DARTS's eight (quark0/darts cnn/operations.py).

Every conv of a parametric op learns by the rule it is built with, including
the FactorizedReduce of skip_connect at stride 2. The supernet runs the rule
variants of sep_conv, dil_conv and skip_connect (stride 2) of an edge stacked
(`stacking`, bionas.space.stacking). Built for the supernet
(affine=False), BatchNorm has no affine parameters and pooling is followed by
a BatchNorm, as in DARTS's search model.

The eight make the default search space (`default_space`), in this order.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

import bionas
from bionas.space.stacking import FactorizedReduceStack, SequentialStack


class Zero(nn.Module):
    """Zeros shaped like the op's output (strided subsample at stride 2)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)


class DartsOperation(bionas.Operation):
    """DARTS's operations make the default search space."""

    default_space = True


class NoneOp(DartsOperation):
    name = "none"
    description = "No connection (zeros); never kept in a derived cell."
    parametric = False
    zero = True

    def build(self, channels, stride, rule, affine):
        return Zero(stride)


class _Pool(DartsOperation):
    parametric = False

    def pool(self, stride: int) -> nn.Module:
        raise NotImplementedError

    def build(self, channels, stride, rule, affine):
        if affine:
            return self.pool(stride)
        return nn.Sequential(self.pool(stride), nn.BatchNorm2d(channels, affine=False))


class MaxPool2d3x3(nn.MaxPool2d):
    """nn.MaxPool2d(3, stride, padding=1), whose forward passes without gradients run on the CPU as
    two separable maxima of shifted views: the same values, about ten times faster than torch's CPU
    max_pool2d kernel at these sizes (which a supernet's validation and EG-NAS's scoring call once
    per pooling edge and batch). With gradients it is nn.MaxPool2d itself (the backward needs its indices)."""

    def __init__(self, stride: int):
        super().__init__(3, stride=stride, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu" or x.dim() != 4 or (torch.is_grad_enabled() and x.requires_grad):
            return super().forward(x)
        padded = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
        rows = torch.maximum(torch.maximum(padded[..., :-2], padded[..., 1:-1]), padded[..., 2:])
        out = torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])
        return out if self.stride == 1 else out[:, :, :: self.stride, :: self.stride]


class MaxPool3x3(_Pool):
    name = "max_pool_3x3"
    description = "3x3 max pooling (followed by a BatchNorm in the supernet)."

    def pool(self, stride):
        return MaxPool2d3x3(stride)


class AvgPool3x3(_Pool):
    name = "avg_pool_3x3"
    description = "3x3 average pooling without padded zeros (followed by a BatchNorm in the supernet)."

    def pool(self, stride):
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)


class SkipConnect(DartsOperation):
    name = "skip_connect"
    description = "Identity; at stride 2 a FactorizedReduce whose two convs learn by the edge's rule."
    # Parametric because of stride 2. At stride 1 it is the identity, so its rule variants
    # there are identical (true of the paper's space as well).
    parametric = True
    # The paper's space has no (skip_connect, fa): LR-NAS BioNAS-DARTS/genotypes.py PRIMITIVES lists
    # skip_connect only with usf, frsf and brsf, which with the rest makes its 22 candidates.
    default_exclude = ("fa",)
    stacking = FactorizedReduceStack  # at stride 2; identities at stride 1 run once anyway

    def build(self, channels, stride, rule, affine):
        if stride == 1:
            return nn.Identity()
        return bionas.with_rule(bionas.FactorizedReduce(channels, channels, affine=affine), rule)

    @classmethod
    def has_weights(cls, stride: int) -> bool:
        return stride != 1


def _depthwise(channels: int, kernel: int, stride: int, dilation: int) -> nn.Conv2d:
    padding = dilation * (kernel - 1) // 2
    return nn.Conv2d(channels, channels, kernel, stride, padding, dilation=dilation, groups=channels, bias=False)


class _SepConv(DartsOperation):
    kernel: ClassVar[int]
    stacking = SequentialStack

    def build(self, channels, stride, rule, affine):
        # Twice [ReLU, depthwise kxk, pointwise 1x1, BN]; the stride on the first depthwise conv.
        layers = []
        for first in (True, False):
            layers += [
                nn.ReLU(inplace=False),
                _depthwise(channels, self.kernel, stride if first else 1, 1),
                nn.Conv2d(channels, channels, 1, bias=False),
                nn.BatchNorm2d(channels, affine=affine),
            ]
        return bionas.with_rule(bionas.ReLUFirst(*layers), rule)


class SepConv3x3(_SepConv):
    name = "sep_conv_3x3"
    description = "Separable 3x3 conv, applied twice: [ReLU, depthwise 3x3, 1x1, BN] x 2."
    kernel = 3


class SepConv5x5(_SepConv):
    name = "sep_conv_5x5"
    description = "Separable 5x5 conv, applied twice: [ReLU, depthwise 5x5, 1x1, BN] x 2."
    kernel = 5


class _DilConv(DartsOperation):
    kernel: ClassVar[int]
    stacking = SequentialStack

    def build(self, channels, stride, rule, affine):
        layers = [
            nn.ReLU(inplace=False),
            _depthwise(channels, self.kernel, stride, 2),
            nn.Conv2d(channels, channels, 1, bias=False),
            nn.BatchNorm2d(channels, affine=affine),
        ]
        return bionas.with_rule(bionas.ReLUFirst(*layers), rule)


class DilConv3x3(_DilConv):
    name = "dil_conv_3x3"
    description = "Dilated separable 3x3 conv (dilation 2): ReLU, depthwise 3x3, 1x1, BN."
    kernel = 3


class DilConv5x5(_DilConv):
    name = "dil_conv_5x5"
    description = "Dilated separable 5x5 conv (dilation 2): ReLU, depthwise 5x5, 1x1, BN."
    kernel = 5


OPS = [NoneOp, MaxPool3x3, AvgPool3x3, SkipConnect, SepConv3x3, SepConv5x5, DilConv3x3, DilConv5x5]
DARTS_OPS = [op.name for op in OPS]


@bionas.hookimpl
def bionas_register_ops(register):
    for op in OPS:
        register(op)
