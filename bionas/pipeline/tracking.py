"""The loggers of a run (bionas.tracking): those always on, then the spec's `loggers`; on rank 0 only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bionas.registry import get_registry
from bionas.rundir import RunDir
from bionas.spec import Spec
from bionas.tracking import Loggers


def run_loggers(spec: Spec, main: bool, warn: Callable[[str], None]) -> Loggers:
    """The installed loggers marked `always` (jsonl: metrics.jsonl) that the spec does not list, then the spec's;
    none on the other ranks of a torchrun launch, which train but do not talk."""
    if not main:
        return Loggers(warn=warn)
    registry = get_registry()
    listed = {ref.name for ref in spec.loggers}
    always = [info.name for info in registry.in_registration_order("logger") if info.cls.always
              and info.name not in listed]
    loggers = [registry.create("logger", name) for name in always]
    loggers += [registry.create("logger", ref.name, **ref.options) for ref in spec.loggers]
    return Loggers(loggers, warn)


def output_files(run_dir: RunDir) -> list[Path]:
    """The files at the top of the run directory (its outputs; checkpoints/ and the loggers' folders left out)."""
    return sorted(path for path in run_dir.root.iterdir() if path.is_file() and not path.name.startswith("."))
