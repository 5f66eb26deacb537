"""The table `bionas run` ends with, and that of a study."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from bionas.pipeline.result import RunResult, rule_counts
from bionas.pipeline.study_compare import comparison_summary
from bionas.pipeline.study_report import status_lines, study_table


def print_summary(result: RunResult, console: Console | None = None) -> None:
    """The table `bionas run` ends with: genotype, accuracies, robust accuracies, run directory."""
    console = console or Console()
    table = Table(title="bionas run", show_header=False)
    if result.model is not None:
        counts = ", ".join(f"{rule} {count}" for rule, count in rule_counts(result.model["layers"]).items())
        table.add_row("model", f"{result.model['model']['name']} (layers: {counts})")
    if result.genotype is not None:
        table.add_row("genotype", str(result.genotype))
    if result.search_seconds is not None:
        table.add_row("search time", f"{result.search_seconds:.1f} s")
    if result.search_valid_accuracy is not None:
        table.add_row("supernet val accuracy", f"{result.search_valid_accuracy:.2%} (when the genotype was taken)")
    if result.test_accuracy is not None:
        table.add_row("parameters", f"{result.parameters:,}")
        table.add_row("val accuracy", f"{result.val_accuracy:.2%} (epoch {result.best_epoch + 1}, selected)")
        table.add_row("test accuracy", f"{result.test_accuracy:.2%}")
    if result.robustness is not None:
        for row in result.robustness.rows:
            label = f"{row.attack} eps {row.eps_label}" + ("" if row.claim else " (rule gradients)")
            table.add_row(label, f"robust {row.robust_accuracy:.2%} / clean {row.clean_accuracy:.2%}")
    table.add_row("run directory", str(result.run_dir))
    console.print(table)


def print_study_summary(aggregate: dict, console: Console | None = None) -> None:
    """A study's table (each finished seed, then mean ± sample std), which seeds are not done, where it is."""
    console = console or Console()
    header, rows = study_table(aggregate)
    if rows:
        table = Table(*header, title=f"bionas study '{aggregate['name']}'")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    for line in status_lines(aggregate):
        console.print(line, highlight=False)
    for comparison in aggregate.get("comparisons", {}).values():
        console.print(comparison_summary(comparison, aggregate.get("strategy") or "strategy"), highlight=False)
    console.print(f"study: {aggregate['dir']}/study.md (± is the sample standard deviation)", highlight=False)
