"""First-party search-space operations of bionas, registered through the `bionas` entry-point group."""

import bionas


@bionas.hookimpl
def bionas_register_ops(register):
    pass  # filled in by the search-space operations issue
