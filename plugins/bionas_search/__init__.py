"""First-party search strategies of bionas, registered through the `bionas` entry-point group.

    darts          darts.py          DARTS, first and second order
    egnas          egnas.py          EG-NAS: CMA-ES over the alphas, weights by SGD
    random         random_search.py  random search, weight sharing or plain
    common.py      the epoch loop, checkpoint/resume, the per-epoch record, shared steps
"""

import bionas
from bionas_search.darts import Darts
from bionas_search.egnas import EGNAS
from bionas_search.random_search import RandomSearch, sample_genotypes

__all__ = ["Darts", "EGNAS", "RandomSearch", "sample_genotypes"]


@bionas.hookimpl
def bionas_register_search_strategies(register):
    for strategy in (Darts, EGNAS, RandomSearch):
        register(strategy)
