"""First-party learning rules of bionas, registered through the `bionas` entry-point group."""

import bionas


@bionas.hookimpl
def bionas_register_rules(register):
    pass  # filled in by the learning rules issue
