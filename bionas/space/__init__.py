"""Search space: operations, the joint (operation, rule) space, supernet, genotype, derived network.

    operation.py   the Operation plugin base
    blocks.py      cell machinery shared by supernet and network (ReLUConvBN, FactorizedReduce, ...)
    candidates.py  SearchSpace: the flat candidate list of a SpaceSpec
    genotype.py    Genotype and Edge (plain JSON), derivation by the DARTS rule, published genotypes
    supernet.py    the DARTS supernet with mixed (op, rule) edges
    network.py     the network derived from a genotype; count_parameters
    draw.py        a PNG of a genotype's cells, rules colour-coded

Modules here import the registry and the spec only inside functions: the
registry imports this package for `Operation`.
"""

from bionas.space.operation import Operation
from bionas.space.blocks import FactorizedReduce, Normalize, ReLUConvBN, ReLUFirst, drop_path, with_rule
from bionas.space.candidates import Candidate, SearchSpace
from bionas.space.genotype import BIONAS_DARTS, DARTS_V2, Edge, Genotype, derive_cell, derive_genotype
from bionas.space.supernet import MixedEdge, Supernet
from bionas.space.network import Network, count_parameters

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
    "FactorizedReduce",
    "ReLUConvBN",
    "ReLUFirst",
    "Normalize",
    "drop_path",
    "with_rule",
]
