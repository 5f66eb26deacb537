"""First-party learning rules of bionas, registered through the `bionas` entry-point group.

    bp       backprop.py   plain layers: the true gradient
    fa       feedback.py   fixed random feedback B (Lillicrap et al. 2016)
    usf      feedback.py   B = s * sign(W)
    brsf     feedback.py   B = |R| * sign(W), R redrawn every training step
    frsf     feedback.py   B = |R0| * sign(W), R0 drawn once
    dfa      dfa.py        the output error, projected by a fixed random matrix
    hebbian  hebbian.py    SoftHebb local update as the pseudo-gradient
    pc       pc.py         predictive coding inference over a module's layers
"""

import bionas
from bionas_rules.backprop import Backprop
from bionas_rules.dfa import DirectFeedbackAlignment
from bionas_rules.feedback import (
    BatchRandomSignFeedback,
    FeedbackAlignment,
    FixedRandomSignFeedback,
    UniformSignFeedback,
)
from bionas_rules.hebbian import SoftHebb
from bionas_rules.pc import PredictiveCoding

# Registration order is the order of the default space's rules: the paper's usf, brsf, frsf, fa.
RULES = (
    Backprop,
    UniformSignFeedback,
    BatchRandomSignFeedback,
    FixedRandomSignFeedback,
    FeedbackAlignment,
    DirectFeedbackAlignment,
    SoftHebb,
    PredictiveCoding,
)


@bionas.hookimpl
def bionas_register_rules(register):
    for rule in RULES:
        register(rule)
