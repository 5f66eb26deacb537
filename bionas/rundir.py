"""The run directory: its layout, provenance (versions, git revision), metrics.jsonl, stage markers.

    run_dir/
      resolved_spec.json   the spec with every default filled in
      provenance.json      versions of python, torch, bionas and every plugin used; git revision
      metrics.jsonl        one JSON object per epoch and stage
      genotype.json        the searched (or given) genotype
      checkpoints/         <stage>.safetensors: resumable training state
      model.safetensors    the retrained network selected on validation
      results.json         test accuracy, robustness table
      stages.json          finished stages, with the hash of the spec fields each depends on
      report.md, *.png     the report and its plots

Every file loads with json or safetensors alone.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from bionas.errors import BionasError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temp file renamed over `path`: a reader or a killed run never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # per process: ranks never share one
    try:
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)  # already renamed unless the write failed
    except OSError as exc:
        raise BionasError(f"cannot write {path}: {exc.strerror or exc}") from None


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def git_revision() -> str | None:
    """The revision of the bionas checkout, when it runs from one."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def provenance(plugin_infos: Iterable) -> dict[str, Any]:
    """What produced a run: versions of the stack and of each plugin it used."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "bionas": version("bionas"),
        "torch": torch.__version__,
        "torchvision": version("torchvision"),
        "timm": version("timm"),
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "git_revision": git_revision(),
        "plugins": sorted(
            ({"kind": i.kind, "name": i.name, "distribution": i.distribution, "version": i.version}
             for i in plugin_infos),
            key=lambda p: (p["kind"], p["name"]),
        ),
    }


class MetricsLog:
    """metrics.jsonl: one line per epoch and stage, appended and flushed as it goes."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record, default=float) + "\n")
            handle.flush()

    def records(self, stage: str | None = None) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
        return [r for r in lines if stage is None or r.get("stage") == stage]

    def truncate(self, stage: str, after_epoch: int | None = None) -> None:
        """Forget records a killed run wrote after its last checkpoint (they will be written again);
        with `after_epoch` None, every record of the stage."""

        def dropped(r: dict[str, Any]) -> bool:
            return r.get("stage") == stage and (after_epoch is None or r.get("epoch", -1) > after_epoch)

        keep = [r for r in self.records() if not dropped(r)]
        atomic_write_text(self.path, "".join(json.dumps(r, default=float) + "\n" for r in keep))


class RunDir:
    """Paths of one run directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.metrics = MetricsLog(self.root / "metrics.jsonl")

    def path(self, name: str) -> Path:
        return self.root / name

    def checkpoint(self, stage: str) -> Path:
        return self.checkpoints / f"{stage}.safetensors"

    def prepare(self, resume: bool) -> None:
        if self.root.exists() and any(self.root.iterdir()) and not resume:
            raise BionasError(
                f"run directory {self.root} already holds a run; continue it with --resume, "
                "or choose another directory with --out"
            )
        try:
            self.checkpoints.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BionasError(f"cannot create run directory {self.root}: {exc.strerror or exc}") from None
