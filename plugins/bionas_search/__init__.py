"""First-party search strategies of bionas, registered through the `bionas` entry-point group."""

import bionas


@bionas.hookimpl
def bionas_register_search_strategies(register):
    pass  # filled in by the search strategies issue
