"""First-party datasets of bionas, registered through the `bionas` entry-point group."""

import bionas


@bionas.hookimpl
def bionas_register_datasets(register):
    pass  # filled in by the datasets issue
