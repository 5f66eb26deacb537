"""Reading the pickle formats of CIFAR and downsampled ImageNet."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from bionas.errors import DataError


# The only globals the CIFAR and downsampled-ImageNet pickles refer to: numpy's array and scalar
# reconstruction (numpy 1 and numpy 2 module paths; _frombuffer for protocol 5) and the bytes encoding
# of protocol-2 pickles. Containers, str, bytes and numbers are pickle opcodes, not globals. Anything
# else (os.system, builtins.eval, ...) is refused.
ALLOWED_GLOBALS = frozenset({
    *((module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
      for name in ("_reconstruct", "scalar")),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
})


class DataUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts, str, bytes and numbers; refuses every other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a data file never needs (refused: "
                                     "loading it could run code)")


def load_pickle(path: Path, dataset: str) -> dict[str, Any]:
    """A Python 2-era data pickle as a dict with str keys (latin1 decoding, as the originals need).

    Read with DataUnpickler: a file that names anything but numpy arrays and plain containers is
    refused before any of its code can run; object arrays are refused after."""
    try:
        with open(path, "rb") as f:
            entry = DataUnpickler(f, encoding="latin1").load()
    except Exception as exc:
        raise DataError(f"{dataset}: cannot read {path}: {exc}") from None
    if not isinstance(entry, dict):
        raise DataError(f"{dataset}: {path} is not a pickled dict")
    for value in entry.values():
        if isinstance(value, np.ndarray) and value.dtype.hasobject:
            raise DataError(f"{dataset}: {path} holds an array of Python objects; a data file holds numbers")
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
