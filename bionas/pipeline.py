"""search -> genotype -> retrain -> test -> attacks -> report, in one run directory.

(Validation and the run directory only, until the pipeline issue lands.)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from bionas.spec import Spec, load_spec


@dataclass
class RunResult:
    run_dir: Path
    stages_done: list[str] = field(default_factory=list)
    stages_missing: list[str] = field(default_factory=list)


def run(spec: Spec | str | Path | dict, out_dir: str | Path | None = None, resume: bool = False, quiet: bool = False):
    """Run a spec. For now: validate, write the resolved spec, and say which stages are not available."""
    spec = load_spec(spec)
    run_dir = Path(out_dir) if out_dir else spec.run_dir()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "resolved_spec.json").write_text(json.dumps(spec.to_dict(), indent=2))
    stages = ["search" if spec.search else "genotype", "retrain", "test", "attacks", "report"]
    result = RunResult(run_dir, ["validate"], stages)
    Console(stderr=True).print(
        f"spec '{spec.name}' is valid; wrote {run_dir / 'resolved_spec.json'}. "
        f"Stages not yet available in this version: {', '.join(stages)}."
    )
    return result
