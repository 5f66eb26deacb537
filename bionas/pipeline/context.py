"""What every stage of one run shares: the spec, the run directory's bookkeeping, the runtime, the data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from bionas.data import Dataset
from bionas.pipeline.book import StageBook
from bionas.pipeline.result import RunResult
from bionas.runtime import Runtime
from bionas.spec import Spec


@dataclass(frozen=True)
class StageContext:
    """One run's shared state. `result` is filled in stage by stage; rank 0 (`runtime.is_main`) writes files."""

    spec: Spec
    book: StageBook
    runtime: Runtime
    dataset: Dataset
    console: Console
    result: RunResult

    @property
    def main(self) -> bool:
        return self.runtime.is_main

    def path(self, name: str) -> Path:
        return self.book.dir.path(name)
