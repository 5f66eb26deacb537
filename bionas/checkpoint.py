"""Checkpoints in safetensors: nested training state, JSON metadata, atomic writes, no pickle.

A training state is any nesting of dicts and lists whose leaves are tensors or
JSON values (a model's state_dict, an optimizer's, a scheduler's, a history,
RNG states). `save_state` stores the tensors in a safetensors file and the
structure (with the JSON leaves) in its metadata, so every file of a run loads
with `safetensors` and `json` alone. Writes go through bionas.rundir.atomic_write: an
interruption or a full disk leaves the last good checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from bionas.errors import BionasError, CheckpointError, one_line
from bionas.rundir import atomic_write

_TENSOR = "__tensor__"
STATE_KEY = "bionas.state"
META_KEY = "bionas.meta"


def _flatten(value: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value
        return {_TENSOR: prefix}
    if isinstance(value, Mapping):
        if any(not isinstance(k, (str, int)) for k in value):
            raise CheckpointError(f"state at '{prefix}' has keys that are neither str nor int")
        # JSON keys are strings; remember which were ints (optimizer states are keyed by int).
        items = {str(k): _flatten(v, f"{prefix}/{k}" if prefix else str(k), tensors) for k, v in value.items()}
        int_keys = [str(k) for k in value if isinstance(k, int)]
        return {"__dict__": items, "__int_keys__": int_keys} if int_keys else {"__dict__": items}
    if isinstance(value, (list, tuple)):
        return {"__list__": [_flatten(v, f"{prefix}/{i}", tensors) for i, v in enumerate(value)]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise CheckpointError(f"cannot store a {type(value).__name__} at '{prefix}' in a checkpoint (tensors and JSON only)")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor], used: set[str]) -> Any:
    """The state `_flatten` described; a node it cannot have written raises ValueError (the caller names the file)."""
    if not isinstance(value, dict):
        if isinstance(value, list):
            raise ValueError("a bare list in the structure (lists are stored as __list__)")
        return value
    if _TENSOR in value:
        name = value[_TENSOR]
        if not isinstance(name, str) or name not in tensors:
            raise ValueError(f"the structure names a tensor the file does not hold: {name!r}")
        used.add(name)
        return tensors[name]
    if "__list__" in value:
        if not isinstance(value["__list__"], list):
            raise ValueError("__list__ is not a list")
        return [_unflatten(v, tensors, used) for v in value["__list__"]]
    items, int_keys = value.get("__dict__"), value.get("__int_keys__", [])
    if not isinstance(items, dict) or not isinstance(int_keys, list) or any(
            k not in items or not isinstance(k, str) or not k.lstrip("-").isdigit() for k in int_keys):
        raise ValueError(f"a node that is neither a tensor, a list nor a dict: {json.dumps(value)[:80]}")
    return {(int(k) if k in int_keys else k): _unflatten(v, tensors, used) for k, v in items.items()}


def _contiguous_unshared(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share memory (tied weights): store copies of those."""
    out, seen = {}, set()
    for key, tensor in tensors.items():
        tensor = tensor.detach().cpu()
        ptr = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes()) if tensor.numel() else None
        if ptr in seen or not tensor.is_contiguous():
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        elif ptr is not None:
            seen.add(ptr)
        out[key] = tensor
    return out


def save_state(path: str | Path, state: Mapping[str, Any], metadata: Mapping[str, Any] | None = None) -> Path:
    """Write `state` (tensors + JSON leaves) and `metadata` (JSON) to `path` atomically."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    structure = _flatten(dict(state), "", tensors)
    header = {STATE_KEY: json.dumps(structure), META_KEY: json.dumps(dict(metadata or {}))}
    tensors = _contiguous_unshared(tensors)
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header), error=CheckpointError)


def load_state(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, Any], dict[str, Any]]:
    """(state, metadata) of a checkpoint written by `save_state`.

    Any file `save_state` could not have written -- damaged bytes, a header that is not JSON or
    points outside the file, a structure naming a tensor the file lacks, tensors no structure
    names, metadata that is not a JSON object -- is a CheckpointError naming the file.
    """
    path = Path(path)
    header = _header(path)
    structure = _json_field(path, header, STATE_KEY)
    meta = _metadata(path, header)
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    used: set[str] = set()
    try:
        state = _unflatten(structure, tensors, used)
    except ValueError as exc:
        raise CheckpointError(f"{path} is damaged: {exc}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is damaged: its '{STATE_KEY}' header is not a dict of state")
    extra = sorted(set(tensors) - used)
    if extra:
        raise CheckpointError(f"{path} is damaged: it holds tensors its '{STATE_KEY}' header does not name: "
                              f"{', '.join(extra[:8])}{' ...' if len(extra) > 8 else ''}")
    return state, meta


def load_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata of a checkpoint written by `save_state`, without reading its tensors."""
    path = Path(path)
    return _metadata(path, _header(path))


def _header(path: Path) -> dict[str, str]:
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if STATE_KEY not in header:
        raise CheckpointError(f"{path} is a safetensors file but not a bionas checkpoint (no '{STATE_KEY}' header)")
    return header


def _json_field(path: Path, header: dict[str, str], key: str) -> Any:
    try:
        return json.loads(header[key])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is damaged: its '{key}' header is not JSON ({exc})") from None


def _metadata(path: Path, header: dict[str, str]) -> dict[str, Any]:
    meta = _json_field(path, header, META_KEY) if META_KEY in header else {}
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is damaged: its '{META_KEY}' header is not a JSON object")
    return meta


@contextmanager
def restoring(path: str | Path, what: str = "checkpoint") -> Iterator[None]:
    """Around code that applies what a checkpoint holds (a state_dict, an optimizer's state, a network
    rebuilt from its metadata): content a run could not have written -- a missing key, a value of the
    wrong type or shape -- becomes a CheckpointError naming the file instead of a traceback."""
    try:
        yield
    except CheckpointError:
        raise
    except BionasError as exc:  # e.g. a genotype in the metadata that is not one: its own message, the file named
        raise CheckpointError(f"{path}: the {what} does not hold what a run writes: {exc}") from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: the {what} does not hold what a run writes ({one_line(exc)})") from None


# -- RNG states ----------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every global generator a training loop may draw from: torch (CPU, CUDA), Python, NumPy."""
    numpy_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": json.loads(json.dumps(random.getstate())),
        "numpy": {
            "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = state["numpy"]
    np.random.set_state(
        ("MT19937", numpy_state["key"].numpy().astype(np.uint32), numpy_state["pos"],
         numpy_state["has_gauss"], numpy_state["gauss"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


# -- identity of a spec --------------------------------------------------------------------------


def spec_hash(spec_dict: Mapping[str, Any]) -> str:
    """A short stable hash of a resolved spec (its JSON with sorted keys)."""
    return hashlib.sha256(json.dumps(spec_dict, sort_keys=True).encode()).hexdigest()[:16]


def diff_dicts(old: Any, new: Any, path: str = "") -> list[str]:
    """Human-readable differences between two JSON-like values: `retrain.epochs: 600 -> 10`."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"{sub}: added")
            elif key not in new:
                out.append(f"{sub}: removed")
            else:
                out += diff_dicts(old[key], new[key], sub)
        return out
    return [] if old == new else [f"{path}: {json.dumps(old)} -> {json.dumps(new)}"]


def load_model_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """load_state_dict that says exactly what differs when the model and the checkpoint disagree."""
    if not isinstance(state, Mapping):
        raise CheckpointError(f"the {what} does not fit this model: it holds a {type(state).__name__}, not a "
                              "state_dict")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    not_tensors = sorted(k for k in state if not isinstance(state[k], torch.Tensor))
    if not_tensors:
        raise CheckpointError(f"the {what} does not fit this model: not tensors: {', '.join(not_tensors[:8])}")
    common = sorted(set(own) & set(state))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
              for k in common if tuple(own[k].shape) != tuple(state[k].shape)]
    # load_state_dict would cast a float64 or an integer tensor silently: a run saves the model's own dtypes.
    dtypes = [f"{k}: checkpoint {state[k].dtype}, model {own[k].dtype}" for k in common if own[k].dtype != state[k].dtype]
    if missing or unexpected or shapes or dtypes:
        lines = [f"the {what} does not fit this model:"]
        for label, items in (("missing in the checkpoint", missing), ("not in the model", unexpected)):
            if items:
                lines.append(f"  {label} ({len(items)}): {', '.join(items[:8])}{' ...' if len(items) > 8 else ''}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): " + "; ".join(shapes[:8]))
        if dtypes:
            lines.append(f"  dtype mismatches ({len(dtypes)}): " + "; ".join(dtypes[:8]))
        raise CheckpointError("\n".join(lines))
    model.load_state_dict(state)


class Checkpointer:
    """The checkpoint of one stage of a run (`search`, `retrain`, ...): save each epoch, load to resume.

    `save(state, epoch)` adds the global RNG states and metadata (stage, epoch,
    spec hash, versions) and writes atomically; `load()` returns the saved state
    (RNG states restored) or None when the stage has no checkpoint yet. A
    checkpoint written by a different spec is refused with the fields that differ.
    """

    def __init__(self, path: str | Path, stage: str, spec: Mapping[str, Any] | None = None,
                 versions: Mapping[str, str] | None = None):
        self.path = Path(path)
        self.stage = stage
        self.spec = dict(spec or {})
        self.versions = dict(versions or {})
        self.read_only = False

    def metadata(self, epoch: int) -> dict[str, Any]:
        return {"stage": self.stage, "epoch": epoch, "spec_hash": spec_hash(self.spec), "spec": self.spec,
                "versions": self.versions}

    def save(self, state: Mapping[str, Any], epoch: int) -> Path:
        if self.read_only:
            return self.path
        return save_state(self.path, {**state, "rng": rng_state()}, self.metadata(epoch))

    def reader(self) -> Checkpointer:
        """The same checkpoint for a process that resumes from it but must not write it (ranks other than 0)."""
        copy = Checkpointer(self.path, self.stage, self.spec, self.versions)
        copy.read_only = True
        return copy

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self, device: str | torch.device = "cpu") -> dict[str, Any] | None:
        if not self.exists():
            return None
        state, meta = load_state(self.path, device="cpu")
        if meta.get("stage") != self.stage:
            raise CheckpointError(f"{self.path} holds stage '{meta.get('stage')}', not '{self.stage}'")
        if self.spec and meta.get("spec_hash") != spec_hash(self.spec):
            changes = diff_dicts(meta.get("spec", {}), self.spec)
            raise CheckpointError(
                f"{self.path} was written by a different spec; it cannot resume this one. Differences:\n  "
                + "\n  ".join(changes or ["(spec hashes differ)"])
            )
        with restoring(self.path):
            set_rng_state(state.pop("rng"))
        return _to_device(state, device)

    def restoring(self) -> Any:
        """Around a stage's code that applies the loaded state (see `restoring`)."""
        return restoring(self.path)


def _to_device(value: Any, device: str | torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    return value
