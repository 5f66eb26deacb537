"""Stage bookkeeping: which stages of a run directory finished, for which spec; checkpoints; the loggers.

Each stage checkpoints as it goes and records in stages.json that it finished,
with the hash of the part of the spec it depends on (STAGE_FIELDS), with inputs
named by location taken by content (content_identity) and result-neutral settings
left out (RESULT_NEUTRAL). On resume a finished stage is trusted only when that
part is unchanged; a changed one is an error that lists the differences (attacks
excepted: they are cheap to redo).
"""

from __future__ import annotations

from typing import Any

from bionas.checkpoint import Checkpointer, diff_dicts, load_metadata, spec_hash
from bionas.data import Dataset
from bionas.errors import BionasError
from bionas.rundir import RunDir, read_json, write_json
from bionas.space import Genotype
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


# Settings that cannot change what a stage computes: a resume may change them.
RESULT_NEUTRAL = {"runtime": ("workers",)}


def stage_identity(spec_dict: dict[str, Any], stage: str) -> dict[str, Any]:
    identity = {key: spec_dict.get(key) for key in STAGE_FIELDS[stage]
                if not (key in ABSENT_WHEN_NULL and spec_dict.get(key) is None)}
    for section, neutral in RESULT_NEUTRAL.items():
        if isinstance(identity.get(section), dict):
            identity[section] = {k: v for k, v in identity[section].items() if k not in neutral}
    return identity


def content_identity(spec_dict: dict[str, Any], genotype: Genotype | None, dataset: Dataset) -> dict[str, Any]:
    """The spec as stage identities see it: an input named by its location stands for its content.

    A genotype file is replaced by the genotype it holds; the data location options (root) of a data
    set that fingerprints its files are replaced by that fingerprint. Editing the file (or the data) is
    then a change of the spec, and moving it is not."""
    identity = dict(spec_dict)
    if isinstance(identity.get("genotype"), str) and genotype is not None:
        identity["genotype"] = genotype.to_dict()
    fingerprint = dataset.fingerprint()
    if fingerprint is not None:
        locations = dataset.location_fields()
        options = {k: v for k, v in identity["dataset"].get("options", {}).items() if k not in locations}
        identity["dataset"] = {**identity["dataset"], "options": {**options, "files_sha256": fingerprint}}
    return identity


class StageBook:
    """What one run directory records about its stages. Rank 0 (`main`) alone writes."""

    def __init__(self, run_dir: RunDir, spec_dict: dict[str, Any], versions: dict[str, Any], main: bool,
                 loggers: Loggers | None = None, identity_dict: dict[str, Any] | None = None):
        self.dir = run_dir
        self.spec_dict = spec_dict  # what resolved_spec.json holds
        self.identity_dict = identity_dict or spec_dict  # what stages are identified by (content_identity)
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
        identity = stage_identity(self.identity_dict, stage)
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
        identity = stage_identity(self.identity_dict, stage)
        records[stage] = {"hash": spec_hash(identity), "identity": identity}
        write_json(path, records)

    def finished_stages(self) -> list[str]:
        return [stage for stage in STAGE_FIELDS if self.record(stage)]

    def checkpointer(self, stage: str) -> Checkpointer:
        """The stage's checkpoint, about to be resumed from or written: on rank 0 the loggers rewind to it
        (metrics.jsonl drops what a killed run wrote after it; the resumed stage writes it again); other
        ranks only read it."""
        checkpoint = Checkpointer(self.dir.checkpoint(stage), stage, stage_identity(self.identity_dict, stage),
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
