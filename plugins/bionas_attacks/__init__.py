"""First-party adversarial attacks of bionas, registered through the `bionas` entry-point group."""

import bionas


@bionas.hookimpl
def bionas_register_attacks(register):
    pass  # filled in by the adversarial attacks issue
