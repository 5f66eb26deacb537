"""Architectures drawn uniformly from a space: random search's samples (Li & Talwalkar, UAI 2019) and the
random baseline every search is compared with (`bionas analyze random-architectures`, a study's
`--compare random`)."""

from __future__ import annotations

from typing import Any

import torch

from bionas.seeds import stream_generator
from bionas.space.blocks import num_edges
from bionas.space.candidates import SearchSpace
from bionas.space.genotype import CELL_TYPES, Genotype, derive_genotype

PLAIN_STREAM = 24  # the random stream of sample_genotypes (random search's own streams are 21 to 23)


def sample_weights(space: SearchSpace, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """One uniformly sampled architecture as one-hot mixing weights {"normal": W, "reduce": W} (CPU).

    Per cell type and intermediate node i: 2 distinct sources of range(2 + i), each edge a
    uniformly chosen non-zero candidate (weight 1); every other row is all zero.
    """
    allowed = [k for k in range(space.num_candidates) if not space.is_zero(k)]
    nodes = space.spec.nodes
    weights = {}
    for kind in CELL_TYPES:
        w = torch.zeros(num_edges(nodes), space.num_candidates)
        first = 0
        for node in range(nodes):
            sources = torch.randperm(2 + node, generator=gen)[:2].tolist()
            choices = torch.randint(len(allowed), (2,), generator=gen).tolist()
            for source, choice in zip(sources, choices):
                w[first + source, allowed[choice]] = 1.0
            first += 2 + node
        weights[kind] = w
    return weights


def sample_genotypes(space: SearchSpace | Any, n: int, seed: int) -> list[Genotype]:
    """`n` uniformly sampled genotypes of a space (a SearchSpace, SpaceSpec or its dict), reproducible
    from `seed`; the first k of n are the k of sample_genotypes(space, k, seed)."""
    if not isinstance(space, SearchSpace):
        space = SearchSpace(space)
    gen = stream_generator(seed, PLAIN_STREAM)
    return [derive_genotype(space, sample_weights(space, gen)) for _ in range(n)]
