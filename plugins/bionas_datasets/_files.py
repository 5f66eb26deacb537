"""Reading the pickle formats of CIFAR and downsampled ImageNet."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from bionas.errors import DataError


def load_pickle(path: Path, dataset: str) -> dict[str, Any]:
    """A Python 2-era data pickle as a dict with str keys (latin1 decoding, as the originals need)."""
    try:
        with open(path, "rb") as f:
            entry = pickle.load(f, encoding="latin1")
    except Exception as exc:
        raise DataError(f"{dataset}: cannot read {path}: {exc}") from None
    if not isinstance(entry, dict):
        raise DataError(f"{dataset}: {path} is not a pickled dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in entry.items()}


def images_and_labels(entry: dict[str, Any], label_key: str, side: int, path: Path, dataset: str):
    """(uint8 N x 3 x side x side, int64 N) from an entry whose 'data' rows are all R, then G, then B."""
    for key in ("data", label_key):
        if key not in entry:
            raise DataError(f"{dataset}: {path} has no {key!r} entry (keys: {', '.join(map(str, entry))})")
    data = np.asarray(entry["data"], dtype=np.uint8)
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * side * side or len(data) != len(labels):
        raise DataError(f"{dataset}: {path}: 'data' should be N x {3 * side * side} with N labels, got {data.shape}")
    return data.reshape(-1, 3, side, side), labels
