"""The DARTS supernet over (operation, rule) candidates: mixed edges, search cells, alphas.

Structure and initialisation follow quark0/darts cnn/model_search.py; partial
channels and edge normalization follow PC-DARTS (yuhuixu1993/PC-DARTS
model_search.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bionas.errors import SpecError
from bionas.ops import starts_with_relu, with_rule
from bionas.rules import OutputTap
from bionas.space.blocks import Normalize, channel_shuffle, num_edges, preprocess, reduction_cells, stem
from bionas.space.candidates import SearchSpace
from bionas.space.genotype import CELL_TYPES, Genotype, derive_genotype
from bionas.space.stacking import ConvGroup, Stack, batched_pass, prepare_feedback, stack_groups, stacks_pay, sum_candidates
from bionas.spec import partial_channel_errors

ALPHA_INIT_SCALE = 1e-3  # DARTS: alphas = 1e-3 * randn (PC-DARTS: betas likewise)


@dataclass
class _Plan:
    """How an edge computes one set of candidates: what runs, and how weights map onto outputs."""

    identity: list[int]  # candidates that are the identity: computed once, their weights summed
    from_relu: list[int]  # candidates that start with a ReLU: share one ReLU of the input
    plain: list[int]  # the rest, run as they are
    stacks: list[Stack]  # rule variants of one op run as one computation (bionas.space.stacking)
    factor_index: list[torch.Tensor]  # per stack: its candidates' indices, each repeated over its channels
    selector: torch.Tensor  # (outputs x candidates) 0/1: output weights = selector @ weights
    shares_relu: bool  # some output starts from the shared ReLU


class MixedEdge(nn.Module):
    """One searched edge: sum over candidates of weight * candidate(x) (DARTS MixedOp).

    What it saves without changing a single value: the zero op is never run
    (its term is 0); identical identities (skip_connect at stride 1 under
    several rules) run once with their weights summed; the leading ReLU that
    most candidates share is computed once; candidates outside `active` (zero
    weight in a one-hot architecture) are not run; the rule variants of one op
    run as one stacked computation (bionas.space.stacking; `rule_batching`
    False runs them one by one). With partial channels K,
    only the first 1/K of the channels are mixed; the rest pass by (max-pooled
    at stride 2) and the channels are shuffled (PC-DARTS).
    """

    def __init__(self, space: SearchSpace, channels: int, stride: int, partial_channels: int = 1,
                 rule_batching: bool = True):
        super().__init__()
        self.stride = stride
        self.partial_channels = partial_channels
        self.rule_batching = rule_batching
        self.op_channels = channels // partial_channels  # what every candidate takes and gives
        n = space.num_candidates
        self.ops = nn.ModuleList(space.build_candidate(i, channels // partial_channels, stride) for i in range(n))
        self.zero = [space.is_zero(i) for i in range(n)]
        self.stacking = [space.ops[c.op].stacking for c in space.candidates]  # each candidate's op's form
        self.default_active = tuple(i for i in range(n) if not self.zero[i])
        self._plans: dict[tuple, _Plan] = {}

    def forward(self, x: torch.Tensor, weights: torch.Tensor, active: Sequence[int] | None = None):
        """`weights`: this edge's mixing weights; `active`: candidates to run (default all but zero ops).

        Returns None when nothing but zero ops is active and channels are not partial.
        """
        active = self.default_active if active is None else tuple(active)
        with batched_pass() as outermost:  # a no-op inside the supernet's own pass
            if outermost:
                prepare_feedback(self.conv_groups(active, weights))
            return self._forward(x, weights, active)

    def conv_groups(self, active: tuple, weights: torch.Tensor) -> list[ConvGroup]:
        """The stacked conv groups a forward over `active` candidates runs (bionas.space.stacking)."""
        plan = self._plan(active, weights)
        return [group for form, members, _ in plan.stacks for group in form.conv_groups([self.ops[i] for i in members])]

    def _forward(self, x: torch.Tensor, weights: torch.Tensor, active: tuple):
        if self.partial_channels == 1:
            return self._mix(x, weights, active)
        k = x.shape[1] // self.partial_channels
        mixed = self._mix(x[:, :k], weights, active)
        if mixed is None:
            mixed = self.zeros(x[:, :k])
        rest = x[:, k:]
        if self.stride > 1:  # PC-DARTS max-pools the bypassing channels of a reduction edge
            rest = F.max_pool2d(rest, 2, 2, ceil_mode=True)
        return channel_shuffle(torch.cat([mixed, rest], dim=1), self.partial_channels)

    def zeros(self, x: torch.Tensor) -> torch.Tensor:
        """Zeros shaped like this edge's output for `x`: nothing active (the zero op, or a row of zero
        weights, as random search gives the edges it leaves out): what a zero op outputs by its
        contract, made here without running one."""
        return x[:, :, :: self.stride, :: self.stride].mul(0.0)

    def _mix(self, x: torch.Tensor, weights: torch.Tensor, active: tuple) -> torch.Tensor | None:
        plan = self._plan(active, weights)
        outputs = [x] if plan.identity else []
        relu_x = F.relu(x) if plan.shares_relu else None
        outputs += [self.ops[i].from_relu(relu_x) for i in plan.from_relu]
        outputs += [self.ops[i](x) for i in plan.plain]
        if not outputs and not plan.stacks:
            return None
        total = None
        if outputs:
            mixing = plan.selector @ weights  # one weight per output (the identities' summed)
            # A running sum: faster here than stacking the outputs and contracting them, and it
            # keeps no stacked copy of all outputs for the backward pass.
            for j, out in enumerate(outputs):
                total = out * mixing[j] if total is None else total + out * mixing[j]
        for (form, members, from_relu), index in zip(plan.stacks, plan.factor_index):
            # each candidate's output comes times its weight (folded into its last layer): their sum is the mix
            factors = weights.index_select(0, index)
            scaled = form.forward([self.ops[i] for i in members], relu_x if from_relu else x, from_relu, factors)
            out = sum_candidates(scaled, len(members), x)
            total = out if total is None else total + out
        return total

    def _plan(self, active: tuple, weights: torch.Tensor) -> _Plan:
        batching = self.rule_batching and stacks_pay(weights.device)
        key = (active, weights.device, weights.dtype, batching)
        if key not in self._plans:
            live = [i for i in active if not self.zero[i]]
            identity = [i for i in live if isinstance(self.ops[i], nn.Identity)]
            rest = [i for i in live if i not in identity]
            relu_first = {i: starts_with_relu(self.ops[i]) for i in rest}
            stacks = []
            if batching:
                stacks = stack_groups({i: self.ops[i] for i in rest}, dict(enumerate(self.stacking)), relu_first)
            stacked = {i for _, members, _ in stacks for i in members}
            from_relu = [i for i in rest if relu_first[i] and i not in stacked]
            plain = [i for i in rest if not relu_first[i] and i not in stacked]
            groups = ([identity] if identity else []) + [[i] for i in from_relu + plain]
            selector = torch.zeros(len(groups), len(self.ops), dtype=weights.dtype, device=weights.device)
            for row, group in enumerate(groups):
                selector[row, group] = 1.0
            index = [torch.tensor(members, device=weights.device).repeat_interleave(self.op_channels)
                     for _, members, _ in stacks]
            shares_relu = bool(from_relu) or any(from_relu for _, _, from_relu in stacks)
            self._plans[key] = _Plan(identity, from_relu, plain, stacks, index, selector, shares_relu)
        return self._plans[key]


class SearchCell(nn.Module):
    """A DARTS search cell: preprocessed inputs, `nodes` intermediate nodes each summing mixed edges."""

    def __init__(
        self,
        space: SearchSpace,
        nodes: int,
        c_prev_prev: int,
        c_prev: int,
        channels: int,
        reduction: bool,
        reduction_prev: bool,
        partial_channels: int = 1,
    ):
        super().__init__()
        self.reduction = reduction
        self.nodes = nodes
        self.preprocess0, self.preprocess1 = preprocess(
            c_prev_prev, c_prev, channels, reduction_prev, space.fixed_rule("preprocess"), affine=False
        )
        self.edges = nn.ModuleList(
            MixedEdge(space, channels, 2 if reduction and source < 2 else 1, partial_channels)
            for node in range(nodes)
            for source in range(2 + node)
        )

    def forward(self, s0, s1, weights, edge_weights=None, active=None):
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        first = 0
        for _ in range(self.nodes):
            node = None
            for source, h in enumerate(states):
                e = first + source
                out = self.edges[e](h, weights[e], None if active is None else active[e])
                if out is None:
                    continue
                if edge_weights is not None:
                    out = edge_weights[e] * out
                node = out if node is None else node + out
            if node is None:  # every incoming edge chose the zero op
                node = self.edges[first].zeros(states[0])
            first += len(states)
            states.append(node)
        return torch.cat(states[2:], dim=1)


class Supernet(nn.Module):
    """The DARTS supernet of a SearchSpace: images in [0, 1] -> logits.

    Normalization, stem (fixed_rules.stem), `cells` search cells with reduction
    at 1/3 and 2/3 depth, global pooling, classifier (fixed_rules.classifier),
    and the OutputTap on the logits that dfa layers read their error from. One
    alpha matrix (edges x candidates) for normal cells, one for reduction cells.
    """

    def __init__(self, space: SearchSpace, num_classes: int, in_channels: int = 3, mean=None, std=None):
        super().__init__()
        spec = space.spec
        self.space = space
        self.nodes = spec.nodes
        self.edge_normalization = spec.edge_normalization
        k = spec.partial_channels or 1  # None: no strategy filled it in (bionas.search.resolve_space)
        if errors := partial_channel_errors(spec.channels, k):
            raise SpecError(errors)
        self.normalize = Normalize(in_channels, mean, std)
        c_stem = spec.stem_multiplier * spec.channels
        self.stem = stem(in_channels, c_stem, space.fixed_rule("stem"))
        c_prev_prev, c_prev, c = c_stem, c_stem, spec.channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(spec.cells):
            reduction = i in reduction_cells(spec.cells)
            c = 2 * c if reduction else c
            cell = SearchCell(space, self.nodes, c_prev_prev, c_prev, c, reduction, reduction_prev, k)
            self.cells.append(cell)
            reduction_prev = reduction
            c_prev_prev, c_prev = c_prev, self.nodes * c
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.classifier = with_rule(nn.Linear(c_prev, num_classes), space.fixed_rule("classifier"))
        self.output_tap = OutputTap()
        shape = (num_edges(self.nodes), space.num_candidates)
        self.alphas_normal = nn.Parameter(ALPHA_INIT_SCALE * torch.randn(shape))
        self.alphas_reduce = nn.Parameter(ALPHA_INIT_SCALE * torch.randn(shape))
        if self.edge_normalization:
            self.betas_normal = nn.Parameter(ALPHA_INIT_SCALE * torch.randn(shape[0]))
            self.betas_reduce = nn.Parameter(ALPHA_INIT_SCALE * torch.randn(shape[0]))

    # -- parameters ------------------------------------------------------------------------------

    def arch_parameters(self) -> list[nn.Parameter]:
        """The architecture: alphas (and betas with edge normalization)."""
        params = [self.alphas_normal, self.alphas_reduce]
        if self.edge_normalization:
            params += [self.betas_normal, self.betas_reduce]
        return params

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not architecture."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    # -- forward ---------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor, weights: dict[str, torch.Tensor] | None = None,
                skip_zero: bool = True) -> torch.Tensor:
        """Logits of images `x` in [0, 1].

        `weights` replaces softmax(alphas) as the mixing weights: {"normal": W, "reduce": W},
        each shaped like the alphas with rows summing to 1. When W needs no gradient and
        `skip_zero` is true, candidates of weight exactly 0 are not computed (a one-hot row runs
        one candidate): which those are is read from W on the host, a decision of Python made
        per call (W built on the CPU costs no device sync). With `skip_zero` false every
        candidate runs and W masks them by arithmetic alone, so what runs does not depend on W's
        values (a step a CUDA graph replays with new weights): the zero-weight candidates then
        contribute 0 to the outputs and gradients, but their BatchNorm statistics still move.
        """
        mixing = {kind: self._mixing(kind, weights, skip_zero) for kind in CELL_TYPES}
        with batched_pass():  # the rule-batched layers' feedback made together at its start, statistics at its end
            prepare_feedback(self._conv_groups(mixing))
            s0 = s1 = self.stem(self.normalize(x))
            for cell in self.cells:
                s0, s1 = s1, cell(s0, s1, *mixing["reduce" if cell.reduction else "normal"])
            logits = self.classifier(self.global_pooling(s1).flatten(1))
        return self.output_tap(logits)

    def _conv_groups(self, mixing) -> list[ConvGroup]:
        """Every stacked conv group this pass runs, for prepare_feedback (none without autograd)."""
        if not torch.is_grad_enabled():
            return []
        groups = []
        for cell in self.cells:
            weights, _, active = mixing["reduce" if cell.reduction else "normal"]
            for e, edge in enumerate(cell.edges):
                groups += edge.conv_groups(edge.default_active if active is None else active[e], weights[e])
        return groups

    def _mixing(self, kind: str, weights: dict[str, torch.Tensor] | None, skip_zero: bool = True):
        """(mixing weights, edge weights or None, active candidates per edge or None) of one cell type."""
        alphas = getattr(self, f"alphas_{kind}")
        edge_weights = self.edge_weights(kind)
        if weights is None:
            return F.softmax(alphas, dim=-1), edge_weights, None
        given = weights[kind]
        if tuple(given.shape) != tuple(alphas.shape):
            raise ValueError(f"weights['{kind}'] has shape {tuple(given.shape)}, expected {tuple(alphas.shape)}")
        w = given.to(alphas.device, alphas.dtype)
        if w.requires_grad or not skip_zero:
            return w, edge_weights, None
        # Read where the caller made them: weights built on the CPU cost no device sync.
        nonzero = (given != 0).tolist()
        return w, edge_weights, [tuple(k for k, on in enumerate(row) if on) for row in nonzero]

    def edge_weights(self, kind: str) -> torch.Tensor | None:
        """PC-DARTS edge normalization: per node, softmax over its incoming edges' betas."""
        if not self.edge_normalization:
            return None
        betas = getattr(self, f"betas_{kind}")
        parts, first = [], 0
        for node in range(self.nodes):
            parts.append(F.softmax(betas[first : first + 2 + node], dim=-1))
            first += 2 + node
        return torch.cat(parts)

    # -- architecture ----------------------------------------------------------------------------

    def genotype(self, weights: dict[str, torch.Tensor] | None = None) -> Genotype:
        """The DARTS rule over softmax(alphas), or over given mixing weights (edge weights applied)."""
        with torch.no_grad():
            if weights is None:
                weights = {kind: F.softmax(getattr(self, f"alphas_{kind}"), dim=-1) for kind in CELL_TYPES}
            edge_weights = {kind: self.edge_weights(kind) for kind in CELL_TYPES} if self.edge_normalization else None
            return derive_genotype(self.space, weights, edge_weights)
