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

import errno
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from bionas.errors import BionasError


def atomic_write(path: str | Path, write: Callable[[Path], None], error: type[BionasError] = BionasError) -> Path:
    """The one way bionas writes a file: `write(tmp)` fills a new temp file beside `path`, which is
    flushed to disk (fsync), given the mode of a plain new file (0666 less the umask), renamed over
    `path`, and the directory entry synced. A reader or a killed run sees the old file or the new one,
    never half of one; a symlink at `path` is replaced, never followed. Any failure (full disk, a
    writer's own error type) leaves the old file and no temp file, and raises `error`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # O_EXCL
        os.close(handle)
    except OSError as exc:
        raise error(f"cannot write {path}: {exc.strerror or exc}") from None
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; every file of a run gets the same mode
        os.replace(tmp, path)
        _sync_directory(path.parent)
    except BionasError:
        raise
    except Exception as exc:  # OSError, or a writer library's own error type (safetensors, matplotlib)
        raise error(f"cannot write {path}: {getattr(exc, 'strerror', None) or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)  # already renamed unless something failed
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable; platforms that cannot open a directory (Windows) skip it."""
    try:
        handle = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass  # some file systems refuse fsync on a directory; the file itself is synced
    finally:
        os.close(handle)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> Any:
    """A JSON file of a run; an unreadable or corrupted one is an error naming it. A missing one raises
    FileNotFoundError, which callers that expect it may catch."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise BionasError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BionasError(f"{path} is corrupted (not valid JSON: {exc}); restore it or start the run afresh") from None


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
    """metrics.jsonl: one line per epoch and stage, appended and flushed as it goes.

    A run killed mid-write can leave a torn last line (no newline at its end): reading drops it, and
    a resume removes it before appending. Any other line that is not JSON is an error naming the file.
    """

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict[str, Any]) -> None:
        line = (json.dumps(record, default=float) + "\n").encode()
        try:  # O_NOFOLLOW: a symlink planted at metrics.jsonl is refused, not written through
            handle = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        except OSError as exc:
            raise BionasError(f"cannot write {self.path}: {_why(exc)}") from None
        try:
            os.write(handle, line)
        except OSError as exc:
            raise BionasError(f"cannot write {self.path}: {_why(exc)}") from None
        finally:
            os.close(handle)

    def records(self, stage: str | None = None) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BionasError(f"cannot read {self.path}: {getattr(exc, 'strerror', None) or exc}") from None
        lines = text.split("\n")  # the last item is "" unless the last line is torn
        records = []
        for number, line in enumerate(lines[:-1], 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                raise BionasError(f"{self.path} is corrupted at line {number} (not JSON); remove that line "
                                  "or start the run afresh") from None
        return [r for r in records if stage is None or r.get("stage") == stage]

    def drop_torn_line(self) -> None:
        """Remove the unfinished last line a killed run may have left (records() already ignores it)."""
        if self.path.exists() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n"):
            self.rewrite(self.records())

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        atomic_write_text(self.path, "".join(json.dumps(r, default=float) + "\n" for r in records))

    def truncate(self, stage: str, after_epoch: int | None = None) -> None:
        """Forget records a killed run wrote after its last checkpoint (they will be written again);
        with `after_epoch` None, every record of the stage."""

        def dropped(r: dict[str, Any]) -> bool:
            return r.get("stage") == stage and (after_epoch is None or r.get("epoch", -1) > after_epoch)

        self.rewrite([r for r in self.records() if not dropped(r)])


def _why(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "it is a symbolic link (bionas does not write through links in a run directory)"
    return exc.strerror or str(exc)


# Files only bionas writes at the top of a run directory: a non-empty directory with none of them is not a run.
RUN_MARKERS = ("resolved_spec.json", "stages.json", "checkpoints")


class RunDir:
    """Paths of one run directory. Every path it gives for writing stays inside it: a subdirectory that is
    a symbolic link leading out of the run directory is refused."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self.metrics = MetricsLog(self.root / "metrics.jsonl")

    def path(self, name: str) -> Path:
        path = self.root / name
        self._check_inside(path if path.is_dir() else path.parent)
        return path

    def checkpoint(self, stage: str) -> Path:
        return self.path(f"checkpoints/{stage}.safetensors")

    def _check_inside(self, directory: Path) -> None:
        existing = directory
        while not existing.exists() and existing != self.root and existing != existing.parent:
            existing = existing.parent  # the missing part is created as real directories
        if existing.exists() and not existing.resolve().is_relative_to(self.root.resolve()):
            raise BionasError(f"{existing} leads out of the run directory {self.root} (a symbolic link): "
                              "bionas does not write through it")

    def holds_run(self) -> bool:
        return any((self.root / marker).exists() for marker in RUN_MARKERS)

    def prepare(self, resume: bool) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise BionasError(f"run directory {self.root} is a file, not a directory; choose another with --out")
        occupied = self.root.exists() and any(self.root.iterdir())
        if occupied and not resume:
            raise BionasError(
                f"run directory {self.root} already holds a run; continue it with --resume, "
                "or choose another directory with --out"
            )
        if occupied and not self.holds_run():
            raise BionasError(f"{self.root} is not empty and holds no bionas run (no {', '.join(RUN_MARKERS)}): "
                              "--resume would overwrite its files; choose another directory with --out")
        try:
            self.path("checkpoints/x").parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BionasError(f"cannot create run directory {self.root}: {exc.strerror or exc}") from None
        if resume:
            self.metrics.drop_torn_line()
