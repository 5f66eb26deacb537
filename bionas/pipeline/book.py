"""Stage bookkeeping: which stages of a run directory finished, for which spec; checkpoints; the loggers.

Each stage checkpoints as it goes and records in stages.json that it finished,
with the hash of the part of the spec it depends on (STAGE_FIELDS). On resume a
finished stage is trusted only when that part is unchanged; a changed one is an
error that lists the differences (attacks excepted: they are cheap to redo).
"""

from __future__ import annotations

from typing import Any

from bionas.checkpoint import Checkpointer, diff_dicts, load_metadata, spec_hash
from bionas.errors import BionasError
from bionas.rundir import RunDir, read_json, write_json
from bionas.tracking import Loggers

# The spec fields each stage depends on: a finished stage is trusted on resume only when they are unchanged.
STAGE_FIELDS = {
    "search": ("seed", "dataset", "space", "search", "runtime"),
    "surrogate": ("seed", "dataset", "space", "search", "genotype", "model", "rules", "retrain", "runtime"),
    "retrain": ("seed", "dataset", "space", "search", "genotype", "model", "rules", "retrain", "runtime"),
    "attacks": ("seed", "dataset", "space", "search", "genotype", "model", "rules", "retrain", "runtime",
                "evaluation"),
}
# Left out of the identity when null, so that runs recorded before these fields existed still resume.
ABSENT_WHEN_NULL = ("model", "rules")


def stage_identity(spec_dict: dict[str, Any], stage: str) -> dict[str, Any]:
    return {key: spec_dict.get(key) for key in STAGE_FIELDS[stage]
            if not (key in ABSENT_WHEN_NULL and spec_dict.get(key) is None)}


class StageBook:
    """What one run directory records about its stages. Rank 0 (`main`) alone writes."""

    def __init__(self, run_dir: RunDir, spec_dict: dict[str, Any], versions: dict[str, Any], main: bool,
                 loggers: Loggers | None = None):
        self.dir = run_dir
        self.spec_dict = spec_dict
        self.versions = versions  # stored in every checkpoint's metadata
        self.main = main
        self.loggers = loggers if loggers is not None else Loggers()  # metrics.jsonl is the jsonl logger's

    def record(self, stage: str) -> dict[str, Any] | None:
        path = self.dir.path("stages.json")
        return read_json(path).get(stage) if path.exists() else None

    def finished(self, stage: str) -> bool:
        """True when `stage` finished for the same spec; a changed spec for a finished stage is an error."""
        record = self.record(stage)
        if record is None:
            return False
        identity = stage_identity(self.spec_dict, stage)
        if record["hash"] == spec_hash(identity):
            return True
        if stage == "attacks":  # cheap to redo, and changing the attacks of a finished run is normal
            return False
        changes = diff_dicts(record["identity"], identity)
        raise BionasError(f"stage '{stage}' of {self.dir.root} ran with a different spec; it cannot be resumed "
                          "with this one. Differences:\n  " + "\n  ".join(changes))

    def mark_finished(self, stage: str) -> None:
        if not self.main:
            return
        path = self.dir.path("stages.json")
        records = read_json(path) if path.exists() else {}
        identity = stage_identity(self.spec_dict, stage)
        records[stage] = {"hash": spec_hash(identity), "identity": identity}
        write_json(path, records)

    def finished_stages(self) -> list[str]:
        return [stage for stage in STAGE_FIELDS if self.record(stage)]

    def checkpointer(self, stage: str) -> Checkpointer:
        """The stage's checkpoint, about to be resumed from or written: on rank 0 the loggers rewind to it
        (metrics.jsonl drops what a killed run wrote after it; the resumed stage writes it again); other
        ranks only read it."""
        checkpoint = Checkpointer(self.dir.checkpoint(stage), stage, stage_identity(self.spec_dict, stage),
                                  self.versions)
        if not self.main:
            return checkpoint.reader()
        self.rewind(stage, load_metadata(checkpoint.path)["epoch"] if checkpoint.exists() else None)
        return checkpoint

    def rewind(self, stage: str, after_epoch: int | None = None) -> None:
        """`stage` logs its records after `after_epoch` (None: all) again."""
        if self.main:
            self.loggers.rewind(stage, after_epoch)

    def log(self, record: dict[str, Any]) -> None:
        if self.main:
            self.loggers.log(record)
