"""jsonl: metrics.jsonl of the run directory, one JSON object per epoch and stage; on in every run."""

from __future__ import annotations

from typing import Any

import bionas
from bionas.rundir import MetricsLog, RunDir


class JsonLines(bionas.Logger):
    name = "jsonl"
    description = "metrics.jsonl in the run directory: one JSON object per epoch and stage (always on)."
    # The run reads it back (training curves, `bionas analyze alignment`): it is never left out, and a
    # failure to write it stops the run like any other failed write to the run directory.
    always = True
    essential = True

    def start(self, run: bionas.LogRun) -> None:
        self.metrics: MetricsLog = RunDir(run.dir).metrics

    def rewind(self, stage: str, after_epoch: int | None) -> None:
        # The resumed stage writes these records again: keep each epoch once.
        self.metrics.truncate(stage, after_epoch)

    def log(self, record: dict[str, Any]) -> None:
        self.metrics.append(record)
