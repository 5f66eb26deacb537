"""Cell machinery shared by the supernet and the derived network.

ReLUConvBN (cell preprocessing) and FactorizedReduce (preprocessing after a
reduction cell, and skip_connect at stride 2) are built exactly as in DARTS
(quark0/darts cnn/operations.py); the learning rule of their convs is applied
by whoever builds them (`with_rule`). Every block keeps odd spatial sizes
working: a stride-2 block maps H to ceil(H / 2), like the pooling and conv ops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from bionas.rules import rule_of


def with_rule(module: nn.Module, rule) -> nn.Module:
    """`rule.apply(module)`: every Conv2d/Linear inside learns by `rule`; None leaves it as built."""
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
        self.conv_1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.conv_2 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, padding=0, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.from_relu(self.relu(x))

    def from_relu(self, x: torch.Tensor) -> torch.Tensor:
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(shifted)], dim=1))


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


def starts_with_relu(module: nn.Module) -> bool:
    """`module.from_relu(relu(x))` equals `module(x)`: a ReLUFirst or FactorizedReduce without a module-level rule."""
    if rule_of(module) is not None:
        return False
    if isinstance(module, FactorizedReduce):
        return isinstance(module.relu, nn.ReLU)
    return isinstance(module, ReLUFirst) and isinstance(module[0], nn.ReLU)


def drop_path(x: torch.Tensor, prob: float) -> torch.Tensor:
    """Zero whole samples with probability `prob`, scaling the rest by 1 / (1 - prob) (DARTS utils.drop_path)."""
    if prob <= 0.0:
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


class RuleFactory:
    """Learning-rule instances from references ("usf" or {"name": ..., "options": {...}}), one per distinct rule.

    A model built by bionas shares one instance per distinct rule among its layers.
    """

    def __init__(self, registry=None):
        self.registry = registry
        self._made: dict[str, Any] = {}

    def __call__(self, ref: str | dict[str, Any] | None):
        if ref is None:
            return None
        name, options = rule_name(ref), rule_options(ref)
        key = f"{name}:{sorted(options.items())!r}"
        if key not in self._made:
            from bionas.registry import get_registry

            self._made[key] = (self.registry or get_registry()).create("rule", name, **options)
        return self._made[key]


def rule_name(ref: str | dict[str, Any] | None) -> str | None:
    """The rule name of a reference: "usf" -> "usf", {"name": "usf", ...} -> "usf"."""
    return ref["name"] if isinstance(ref, dict) else ref


def rule_options(ref: str | dict[str, Any] | None) -> dict[str, Any]:
    """The options of a reference ({} for a plain name)."""
    return dict(ref.get("options") or {}) if isinstance(ref, dict) else {}


def rule_ref(name: str, options: dict[str, Any]) -> str | dict[str, Any]:
    """A reference as a genotype records it: the name, or {name, options} when options differ from defaults."""
    return {"name": name, "options": dict(options)} if options else name
