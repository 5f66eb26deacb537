"""What a run produced, as `bionas.run` returns it and results.json holds it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bionas.errors import BionasError


class Interrupted(BionasError):
    exit_code = 130


@dataclass
class RunResult:
    run_dir: Path
    genotype: Any = None  # bionas.space.Genotype
    model: dict[str, Any] | None = None  # a model run's model.json: model, rules, the rule of every layer
    search_seconds: float | None = None
    search_valid_accuracy: float | None = None  # the supernet's, on the architecture part, when the genotype was taken
    best_epoch: int | None = None
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    parameters: int | None = None
    robustness: Any = None  # bionas.robustness.RobustnessReport
    stages: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out = {"run_dir": str(self.run_dir), "stages": self.stages,
               "genotype": str(self.genotype) if self.genotype else None, "search_seconds": self.search_seconds,
               "search_valid_accuracy": self.search_valid_accuracy, "best_epoch": self.best_epoch,
               "val_accuracy": self.val_accuracy, "test_accuracy": self.test_accuracy, "parameters": self.parameters}
        if self.model is not None:
            out["model"] = {"name": self.model["model"]["name"], "options": self.model["model"]["options"],
                            "rules": rule_counts(self.model["layers"])}
        if self.robustness is not None:
            out["robustness"] = self.robustness.to_json()
        return out


def rule_counts(layers: dict[str, str | None]) -> dict[str, int]:
    """rule name -> how many layers learn by it ('plain' for backprop without a rule), from model.json."""
    counts: dict[str, int] = {}
    for rule in layers.values():
        counts[rule or "plain"] = counts.get(rule or "plain", 0) + 1
    return counts
