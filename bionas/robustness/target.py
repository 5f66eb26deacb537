"""What `bionas attack` attacks: a trained network and the test data it is evaluated on."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from bionas.errors import BionasError, CheckpointError
from bionas.data import Dataset
from bionas.model_network import load_trained_network
from bionas.registry import get_dataset, get_registry

MODEL_FILE = "model.safetensors"  # the retrained network in a run directory


@dataclass
class Target:
    """A trained model and the test data it is evaluated on."""

    model: nn.Module
    data: Any  # (images, labels) tensors, a torch Dataset split, or a DataLoader
    name: str


@dataclass(frozen=True)
class DataAccess:
    """What the user allows when a data set is rebuilt from a run directory's records (resolved_spec.json,
    a network file's header): `root` replaces every data location they name; `trust` follows them as
    recorded. Neither: a recorded location is refused, since the records may come from someone else."""

    root: Path | None = None
    trust: bool = False


def recorded_dataset(record: Mapping[str, Any], source: Path, access: DataAccess = DataAccess()) -> Dataset:
    """The data set `record` ({name, options}, read from `source`), following no data location the user
    did not name (docs/pipeline.md, "What a run directory is trusted with")."""
    name, options = record["name"], dict(record.get("options") or {})
    locations = get_registry().get_class("dataset", name).location_fields()
    if access.root is not None:
        if not locations:
            raise BionasError(f"--data-root: data set '{name}' of {source} reads no data files (it is built in)")
        options.update({field: str(access.root) for field in locations})
    elif not access.trust:
        named = [f"dataset.options.{f} = {options[f]!r}" for f in locations if options.get(f) is not None]
        if named:
            raise BionasError(f"{source} names the location of its data ({', '.join(named)}); bionas reads data "
                              "only from where you say: pass --data-root DIR (the directory of the "
                              f"{name} files), or --trust-run-data to follow the recorded location")
    if not access.trust and options.get("download"):
        options["download"] = False  # a recorded download is not the user's request to fetch files
    return get_dataset(name, **options)


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any], Path]:
    """(network, its file's metadata, the file) of a run directory (its model.safetensors) or a network file."""
    path = Path(path)
    model_path = path / MODEL_FILE if path.is_dir() else path
    if not model_path.is_file():
        raise BionasError(f"no trained network at {model_path} (a run directory holds it once its retrain finished)")
    model, meta = load_trained_network(model_path)
    return model, meta, model_path


def load_target(path: str | Path, access: DataAccess = DataAccess()) -> Target:
    """The model of a run directory (its model.safetensors) or of a saved network file, and its test split."""
    model, meta, model_path = load_model(path)
    record = meta.get("dataset")
    if not (isinstance(record, dict) and isinstance(record.get("name"), str)
            and isinstance(record.get("options") or {}, dict)):
        raise CheckpointError(f"{model_path} does not record the data set its network was trained on "
                              "(a 'dataset' entry {name, options} in its metadata)")
    dataset = recorded_dataset(record, model_path, access)
    return Target(model, dataset.split("test"), meta.get("run", model_path.stem))
