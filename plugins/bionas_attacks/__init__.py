"""First-party adversarial attacks of bionas, registered through the `bionas` entry-point group.

fgsm, pgd and apgd are white-box gradient attacks (exact gradients by default,
`gradient: rule` for the learning rules' own feedback path); square is a
black-box score-query attack; onepixel is a black-box L0 attack by differential
evolution; transfer crafts examples on a surrogate model with any of them.
"""

import bionas
from bionas_attacks.apgd import APGD
from bionas_attacks.gradient import FGSM, PGD
from bionas_attacks.onepixel import OnePixel
from bionas_attacks.square import Square
from bionas_attacks.transfer import TransferAttack

ATTACKS = (FGSM, PGD, APGD, Square, OnePixel, TransferAttack)


@bionas.hookimpl
def bionas_register_attacks(register):
    for attack in ATTACKS:
        register(attack)
