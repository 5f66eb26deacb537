"""The logger plugin kind: where a run's records, parameters and output files go.

A run hands its loggers, on rank 0 only, the same things in the same order:

    start(run)                   once, before the first stage (run: LogRun)
    rewind(stage, after_epoch)   a stage is about to log its epochs after `after_epoch` (None: all) again,
                                 because a killed run is resumed from its checkpoint (or the test reruns)
    log(record)                  one JSON-ready record per epoch and stage, as metrics.jsonl holds it
    log_files(paths)             the run directory's output files, once every stage is done
    finish(status)               "finished", "failed" or "killed"

`Loggers` is that fan-out. A logger whose library is missing says so before a
run starts (`Logger.unavailable`, asked when a spec is validated).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from bionas.errors import one_line
from bionas.plugin import Plugin

Status = Literal["finished", "failed", "killed"]


@dataclass(frozen=True)
class LogRun:
    """What a logger is told when a run starts."""

    dir: Path  # the run directory
    name: str  # the spec's name
    spec: dict[str, Any]  # the resolved spec (resolved_spec.json)
    resumed: bool  # a session of `--resume`: the run directory may hold this run's earlier logs


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """A record's top-level numbers, as scalar metrics: booleans and the epoch (the step) left out."""
    return {key: float(value) for key, value in record.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch"}


class Logger(Plugin):
    """Receives a run's records, parameters and output files (docs/tracking.md).

    Every method has a default that does nothing, so a logger implements only what it uses.
    Class attributes:
    * `always`: on in every run, listed in the spec's `loggers` or not (jsonl: metrics.jsonl).
    * `essential`: a failure stops the run; any other logger that fails is dropped with a warning
      and the run goes on.
    * `modules`, `install`: the top-level modules it imports, and what to pip install when one is missing.
    """

    kind = "logger"
    always: ClassVar[bool] = False
    essential: ClassVar[bool] = False
    modules: ClassVar[tuple[str, ...]] = ()
    install: ClassVar[str] = ""

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this logger cannot run here (a library that is not installed), or None. Imports nothing."""
        missing = [module for module in cls.modules if importlib.util.find_spec(module) is None]
        if not missing:
            return None
        hint = f": pip install '{cls.install}'" if cls.install else ""
        return f"logger '{cls.name}' needs {', '.join(missing)}, which is not installed{hint}"

    def start(self, run: LogRun) -> None:
        """Open the logger for `run`."""

    def rewind(self, stage: str, after_epoch: int | None) -> None:
        """The records of `stage` after epoch `after_epoch` (None: all of them) are about to be logged again."""

    def log(self, record: dict[str, Any]) -> None:
        """One record: `stage`, usually `epoch`, and the stage's numbers (metrics.jsonl's line)."""

    def log_files(self, paths: Sequence[Path]) -> None:
        """The run directory's output files (report, JSON summaries, plots, weights), at the end of a run."""

    def finish(self, status: Status) -> None:
        """Close the logger; `status` says how the run ended."""


class Loggers:
    """The loggers of one run, called in order. Non-essential ones that fail are dropped with a warning."""

    def __init__(self, loggers: Sequence[Logger] = (), warn: Callable[[str], None] = print):
        self.loggers = list(loggers)
        self.warn = warn

    def __len__(self) -> int:
        return len(self.loggers)

    def _each(self, method: str, *args: Any) -> None:
        for logger in list(self.loggers):
            try:
                getattr(logger, method)(*args)
            except Exception as exc:
                if logger.essential:
                    raise
                # A tracking server that goes away must not cost the run: metrics.jsonl keeps every record.
                self.loggers.remove(logger)
                self.warn(f"logger '{logger.name}' failed and is off for the rest of the run: {one_line(exc)}")

    def start(self, run: LogRun) -> None:
        # Not guarded: a logger that cannot start (a wrong tracking URI) stops the run before any work.
        for logger in self.loggers:
            logger.start(run)

    def rewind(self, stage: str, after_epoch: int | None = None) -> None:
        self._each("rewind", stage, after_epoch)

    def log(self, record: dict[str, Any]) -> None:
        self._each("log", record)

    def log_files(self, paths: Sequence[Path]) -> None:
        self._each("log_files", list(paths))

    def finish(self, status: Status) -> None:
        self._each("finish", status)

    @contextmanager
    def session(self, run: LogRun) -> Iterator[Loggers]:
        """start(run); finish("finished"), or "killed" on Ctrl-C, or "failed" on an error."""
        self.start(run)
        try:
            yield self
        except KeyboardInterrupt:
            self.finish("killed")
            raise
        except BaseException:
            self.finish("failed")
            raise
        self.finish("finished")
