"""Search space: the joint (operation, rule) space, supernet, genotype, derived network.

    blocks.py        cell machinery shared by supernet and network (stem, preprocessing, Normalize, ...)
    rule_factory.py  rule instances from the references a space or genotype holds
    candidates.py    SearchSpace: the flat candidate list of a SpaceSpec
    genotype.py      Genotype and Edge (plain JSON), derivation by the DARTS rule, published genotypes
    supernet.py      the DARTS supernet with mixed (op, rule) edges
    network.py       the network derived from a genotype; count_parameters
    saved.py         a derived network from a file a run saved (load_network, build_network)
    rewrite.py       the same architecture with other rules (replace_rules, with_backprop)
    sampling.py      genotypes drawn uniformly from a space (sample_genotypes)
    draw.py          a PNG of a genotype's cells, rules colour-coded

The Operation plugin base and the blocks ops are built from live in bionas.ops (below
the registry, which this package uses); they are re-exported here.
"""

from bionas.ops import FactorizedReduce, Operation, ReLUConvBN, ReLUFirst, with_rule
from bionas.space.blocks import Normalize, drop_path
from bionas.space.candidates import Candidate, SearchSpace
from bionas.space.genotype import BIONAS_DARTS, DARTS_V2, Edge, Genotype, derive_cell, derive_genotype
from bionas.space.network import Network, count_parameters
from bionas.space.rewrite import replace_rules, with_backprop
from bionas.space.saved import build_network, load_network
from bionas.space.supernet import MixedEdge, Supernet

__all__ = [
    "Operation",
    "Candidate",
    "SearchSpace",
    "Edge",
    "Genotype",
    "derive_cell",
    "derive_genotype",
    "DARTS_V2",
    "BIONAS_DARTS",
    "MixedEdge",
    "Supernet",
    "Network",
    "count_parameters",
    "build_network",
    "load_network",
    "replace_rules",
    "with_backprop",
    "FactorizedReduce",
    "ReLUConvBN",
    "ReLUFirst",
    "Normalize",
    "drop_path",
    "with_rule",
]
