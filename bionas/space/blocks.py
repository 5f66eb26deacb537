"""Cell machinery shared by the supernet and the derived network.

The stem, each cell's input preprocessing (DARTS's ReLUConvBN and
FactorizedReduce, from bionas.ops, whose convs learn by the fixed
`preprocess` rule), input normalization, drop path, the channel shuffle of
partial channels, and the cell layout (reduction positions, edge count). Every
block keeps odd spatial sizes working: a stride-2 block maps H to ceil(H / 2),
like the pooling and conv ops.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bionas.ops import FactorizedReduce, ReLUConvBN, with_rule


def stem(in_channels: int, channels: int, rule) -> nn.Module:
    """DARTS's stem: 3x3 conv to `channels`, BatchNorm; learns by `rule`."""
    return with_rule(nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(channels)), rule)


def preprocess(c_prev_prev: int, c_prev: int, channels: int, reduction_prev: bool, rule,
               affine: bool = True) -> tuple[nn.Module, nn.Module]:
    """A cell's preprocessing of its two inputs to `channels` (DARTS): the older input by a
    FactorizedReduce after a reduction cell, else by a 1x1 ReLUConvBN; the newer by a 1x1 ReLUConvBN."""
    if reduction_prev:
        first = with_rule(FactorizedReduce(c_prev_prev, channels, affine=affine), rule)
    else:
        first = with_rule(ReLUConvBN(c_prev_prev, channels, 1, 1, 0, affine=affine), rule)
    return first, with_rule(ReLUConvBN(c_prev, channels, 1, 1, 0, affine=affine), rule)


class Normalize(nn.Module):
    """(x - mean) / std per channel, with mean and std as buffers: models take images in [0, 1]."""

    def __init__(self, channels: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        mean = [0.0] * channels if mean is None else list(mean)
        std = [1.0] * channels if std is None else list(std)
        if len(mean) != channels or len(std) != channels:
            raise ValueError(f"mean and std need {channels} values each, got {len(mean)} and {len(std)}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def drop_path(x: torch.Tensor, prob: float | torch.Tensor) -> torch.Tensor:
    """Zero whole samples with probability `prob`, scaling the rest by 1 / (1 - prob) (DARTS utils.drop_path).

    `prob` a 0-d tensor (a CUDA graph's, filled per epoch): the mask is always drawn, also at 0, so the
    kernels do not depend on its value."""
    if not isinstance(prob, torch.Tensor) and prob <= 0.0:
        return x
    keep = 1.0 - prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave `groups` channel groups (PC-DARTS, after partial-channel mixing)."""
    n, c, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        # shuffle along the innermost (channel) axis of the NHWC storage, so the result stays channels_last
        nhwc = x.permute(0, 2, 3, 1).reshape(n, h, w, groups, c // groups).transpose(3, 4)
        return nhwc.reshape(n, h, w, c).permute(0, 3, 1, 2)
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def reduction_cells(cells: int) -> set[int]:
    """Indices of the reduction cells: at 1/3 and 2/3 of the depth (DARTS: layers//3, 2*layers//3)."""
    return {cells // 3, 2 * cells // 3}


def num_edges(nodes: int) -> int:
    """Edges of a cell: intermediate node i has one from each of the 2 inputs and the i earlier nodes."""
    return sum(2 + i for i in range(nodes))
