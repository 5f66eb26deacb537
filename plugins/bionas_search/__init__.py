"""First-party search strategies of bionas, registered through the `bionas` entry-point group.

    darts          darts.py          DARTS, first and second order
    egnas          egnas.py          EG-NAS: CMA-ES over the alphas, weights by SGD
    random         random_search.py  random search, weight sharing or plain

Each subclasses the core's epoch loop, bionas.EpochSearch (bionas/search/epochs.py),
as a third party's strategy would.
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
