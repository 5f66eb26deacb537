"""The network derived from a genotype (DARTS NetworkCIFAR), and parameter counting.

Structure after quark0/darts cnn/model.py: stem 3x3 conv to 3C + BN, `cells`
cells with reduction (channels doubled) at cells//3 and 2*cells//3, the
auxiliary head after cell 2*cells//3, global pooling, linear classifier.
Every layer learns by its genotype rule; the stem, cell preprocessing,
classifier and auxiliary head by the genotype's fixed rules.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from bionas.ops import with_rule
from bionas.registry import Registry, get_registry
from bionas.rules import OutputTap
from bionas.space.blocks import Normalize, drop_path, preprocess, reduction_cells, stem
from bionas.space.genotype import Edge, Genotype, edge_stride
from bionas.space.rule_factory import RuleFactory

# DARTS AuxiliaryHeadCIFAR: average-pool the 8x8 map (5x5, stride 3) to 2x2, 1x1 conv to 128,
# 2x2 conv to 768, linear classifier.
AUX_POOL_FROM = 8
AUX_MID_CHANNELS = 128
AUX_OUT_CHANNELS = 768


class Cell(nn.Module):
    """A derived cell: each intermediate node sums its two chosen edges; output concats `concat` nodes."""

    def __init__(
        self,
        edges: list[Edge],
        concat: list[int],
        c_prev_prev: int,
        c_prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        rules: RuleFactory,
        preprocess_rule,
        registry: Registry | None = None,
    ):
        super().__init__()
        registry = registry or get_registry()
        self.reduction = reduction
        self.preprocess0, self.preprocess1 = preprocess(c_prev_prev, c_prev, channels, reduction_prev, preprocess_rule)
        self.sources = [edge.source for edge in edges]
        self.concat = list(concat)
        self.ops = nn.ModuleList()
        for edge in edges:
            op = registry.create("op", edge.op)
            stride = edge_stride("reduce" if reduction else "normal", edge.source)
            self.ops.append(op.build(channels, stride, rules(edge.rule) if op.has_weights(stride) else None, True))
        # DARTS drops paths of every op but the identity
        self.droppable = [not isinstance(op, nn.Identity) for op in self.ops]
        self.multiplier = len(self.concat)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float | torch.Tensor = 0.0) -> torch.Tensor:
        # a tensor drop_prob (a CUDA graph's) is never read on the host: drop_path always draws its mask
        drop = isinstance(drop_prob, torch.Tensor) or drop_prob > 0
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(len(self.ops) // 2):
            total = None
            for e in (2 * node, 2 * node + 1):
                h = self.ops[e](states[self.sources[e]])
                if self.training and drop and self.droppable[e]:
                    h = drop_path(h, drop_prob)
                total = h if total is None else total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """DARTS AuxiliaryHeadCIFAR on an 8x8 map; on any other size, adaptive average pooling to 2x2 instead.

    The pooling has no parameters, so the head's parameter count is the same
    for every input size (MNIST's 28x28 images give a 7x7 map here).
    """

    def __init__(self, channels: int, num_classes: int, feature_size: int):
        super().__init__()
        if feature_size == AUX_POOL_FROM:
            pool = nn.AvgPool2d(5, stride=3, padding=0, count_include_pad=False)
        else:
            pool = nn.AdaptiveAvgPool2d(2)
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            pool,
            nn.Conv2d(channels, AUX_MID_CHANNELS, 1, bias=False),
            nn.BatchNorm2d(AUX_MID_CHANNELS),
            nn.ReLU(inplace=False),
            nn.Conv2d(AUX_MID_CHANNELS, AUX_OUT_CHANNELS, 2, bias=False),
            nn.BatchNorm2d(AUX_OUT_CHANNELS),
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(AUX_OUT_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class Network(nn.Module):
    """The derived network of a genotype: images in [0, 1] -> logits.

    `forward(x)` always returns the logits (attacks call `model(x)`);
    `forward_with_aux(x)` returns (logits, auxiliary logits or None) for
    training. The trainer sets `drop_path_prob` each epoch (DARTS: 0.2 scaled
    linearly with the epoch): a float, or a 0-d tensor it fills in place (a CUDA
    graph reads it on the device). One OutputTap sits on the main logits: dfa layers
    (the auxiliary head's too) take their error from the network's output.
    """

    def __init__(
        self,
        genotype: Genotype,
        channels: int = 36,
        cells: int = 20,
        num_classes: int = 10,
        in_channels: int = 3,
        mean=None,
        std=None,
        auxiliary: bool = False,
        image_size: int = 32,
        stem_multiplier: int = 3,
        registry: Registry | None = None,
    ):
        super().__init__()
        genotype.validate(registry)
        self.genotype = genotype
        self.drop_path_prob = 0.0
        rules = RuleFactory(registry)
        self.normalize = Normalize(in_channels, mean, std)
        c_stem = stem_multiplier * channels
        self.stem = stem(in_channels, c_stem, rules(genotype.fixed_rules["stem"]))
        preprocess_rule = rules(genotype.fixed_rules["preprocess"])
        c_prev_prev, c_prev, c = c_stem, c_stem, channels
        reductions = reduction_cells(cells)
        self.auxiliary_position = 2 * cells // 3  # DARTS: the head follows cell 2*layers//3
        self.cells = nn.ModuleList()
        reduction_prev = False
        size, c_aux, size_aux = image_size, c_stem, image_size
        for i in range(cells):
            reduction = i in reductions
            if reduction:
                c, size = 2 * c, math.ceil(size / 2)
            edges, concat = genotype.cell("reduce" if reduction else "normal")
            cell = Cell(
                edges, concat, c_prev_prev, c_prev, c, reduction, reduction_prev, rules, preprocess_rule, registry
            )
            self.cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, cell.multiplier * c
            if i == self.auxiliary_position:
                c_aux, size_aux = c_prev, size
        self.auxiliary_head = None
        if auxiliary:
            head = AuxiliaryHead(c_aux, num_classes, size_aux)
            self.auxiliary_head = with_rule(head, rules(genotype.fixed_rules["auxiliary"]))
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = with_rule(nn.Linear(c_prev, num_classes), rules(genotype.fixed_rules["classifier"]))
        self.output_tap = OutputTap()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward(x, with_aux=False)[0]

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits, auxiliary logits); the latter only in training mode with an auxiliary head (DARTS)."""
        return self._forward(x, with_aux=True)

    def _forward(self, x: torch.Tensor, with_aux: bool):
        aux = None
        s0 = s1 = self.stem(self.normalize(x))
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if with_aux and i == self.auxiliary_position and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(self.global_pooling(s1).flatten(1))
        return self.output_tap(logits), aux


def count_parameters(model: nn.Module, exclude_auxiliary: bool = True) -> int:
    """Trainable parameters, as DARTS's count_parameters_in_MB counts them (times 1e6).

    Buffers (BatchNorm statistics, rules' feedback tensors) never count, nor
    architecture parameters (`model.arch_parameters()`, DARTS keeps alphas out
    of its model parameters); with `exclude_auxiliary`, nor any parameter whose
    name contains "auxiliary" (DARTS's rule).
    """
    arch = {id(p) for p in model.arch_parameters()} if hasattr(model, "arch_parameters") else set()
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if p.requires_grad and id(p) not in arch and not (exclude_auxiliary and "auxiliary" in name)
    )
