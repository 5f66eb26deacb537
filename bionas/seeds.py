"""How bionas derives seeds: every random choice is a function of the run's seed and where it is made.

Two derivations, for two kinds of parts:

* `stream_seed(*ints)`: a random stream named by integers (run seed, epoch, rank, a
  stream number); numpy's SeedSequence mixes them. `stream_generator` is a CPU torch
  generator seeded with it. Data order, augmentation, search sampling and retrain
  drop path draw from these.
* `hash_seed(*parts)`: parts of any kind with a stable `repr` (the attack evaluation's
  seed, an attack's own seed, a batch number); a BLAKE2b hash of their repr.

The two give different numbers for the same integers; each caller keeps to one.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch


def stream_seed(*parts: int) -> int:
    """A 63-bit seed that depends on every part (e.g. seed, epoch, rank, stream), well mixed."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def stream_generator(*parts: int) -> torch.Generator:
    """A CPU torch.Generator seeded by `stream_seed(*parts)`."""
    return torch.Generator().manual_seed(stream_seed(*parts))


def hash_seed(*parts: Any) -> int:
    """A 63-bit seed from parts of any kind (by their repr); stable across runs and machines."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1
