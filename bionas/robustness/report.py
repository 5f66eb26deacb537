"""The robustness report: one row per attack and budget, the gradient-masking flags, and its JSON form."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bionas.__about__ import __version__
from bionas.attacks import RULE_GRADIENT_NOTE
from bionas.robustness.markdown import report_markdown
from bionas.robustness.plot import plot_report
from bionas.rundir import write_json


@dataclass
class RobustnessRow:
    """One attack at one budget."""

    attack: str  # label: name plus variant (norm, loss, base attack)
    threat_model: str
    claim: bool  # False for rule gradients: a separate threat model, not a robustness claim
    family: str  # white-box | black-box | transfer
    gradient: str | None  # exact | rule for white-box attacks
    one_step: bool
    budget: str | None  # the option swept: eps, pixels, ...
    eps: float | None
    eps_label: str
    norm: str | None
    clean_accuracy: float
    robust_accuracy: float  # over ALL points
    success_rate: float | None  # among the points correct when clean
    points: int
    attacked: int  # points correct when clean, the ones attacked
    work: float  # mean per attacked point
    work_unit: str
    seconds: float
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return self.attack, self.threat_model

    @property
    def budget_label(self) -> str:
        if self.budget == "eps":
            return self.eps_label if self.norm in (None, "linf") else f"{self.eps_label} ({self.norm})"
        if not self.budget:
            return "-"
        value = self.options.get(self.budget, "-")
        unit = self.budget[:-1] if value == 1 and self.budget.endswith("s") else self.budget
        return f"{value} {unit}"


@dataclass
class MaskingFlag:
    """A sign of gradient masking, with the numbers behind it."""

    kind: str  # stronger-than-white-box | one-step-beats-iterative | not-zero-at-largest-eps
    message: str
    eps: float | None
    attacks: list[str]
    values: dict[str, float]
    claim: bool = True  # False: about the rule-gradient threat model, where masking is the expected finding


@dataclass
class RobustnessReport:
    rows: list[RobustnessRow]
    flags: list[MaskingFlag]
    clean_accuracy: float
    points: int
    model: str = "model"
    seed: int = 0
    batch_size: int = 256
    device: str = "cpu"
    tolerance: float = 0.01
    near_zero: float = 0.05

    @property
    def notes(self) -> list[str]:
        notes = ["Robust accuracy counts over all points: a point wrong when clean is not robust."]
        if any(not row.claim for row in self.rows):
            notes.append(RULE_GRADIENT_NOTE)
        return notes

    def to_json(self) -> dict[str, Any]:
        return {
            "bionas_version": __version__,
            "model": self.model,
            "points": self.points,
            "clean_accuracy": self.clean_accuracy,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "device": self.device,
            "tolerance": self.tolerance,
            "near_zero": self.near_zero,
            "rows": [asdict(row) for row in self.rows],
            "flags": [asdict(flag) for flag in self.flags],
            "notes": self.notes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RobustnessReport:
        """The report `to_json` wrote (robustness.json of a run)."""
        fields = ("clean_accuracy", "points", "model", "seed", "batch_size", "device", "tolerance", "near_zero")
        return cls(
            rows=[RobustnessRow(**row) for row in data["rows"]],
            flags=[MaskingFlag(**flag) for flag in data["flags"]],
            **{key: data[key] for key in fields if key in data},
        )

    def save_json(self, path: str | Path) -> Path:
        return write_json(path, self.to_json())

    def markdown(self) -> str:
        """The table, the counting notes and the gradient-masking findings, as markdown."""
        return report_markdown(self)

    def plot(self, path: str | Path) -> Path:
        """PNG: robust accuracy against eps per attack; budgets other than eps as horizontal lines."""
        return plot_report(self, path)
