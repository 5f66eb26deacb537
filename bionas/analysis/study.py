"""The paper's studies on a finished run: `bionas analyze gradvar | random-rules | alignment RUN_DIR`.

Each writes analysis/<name>.json, analysis/<name>.png and analysis/<name>.md into
the run directory and rebuilds report.md with the new section.
"""

from __future__ import annotations

import random
import statistics
from pathlib import Path
from typing import Any, Callable

import torch

from bionas.analysis.aggregate import STD_NOTE, Spread, plot_spreads, spread
from bionas.analysis.alignment import alignment_series, plot_alignment
from bionas.analysis.gradvar import layer_moments, summarise
from bionas.analysis.variants import retrain_variants
from bionas.data import make_loader
from bionas.errors import BionasError
from bionas.pipeline.report import refresh_report
from bionas.plots import figure, save
from bionas.robustness.target import DataAccess, recorded_dataset
from bionas.rundir import RunDir, atomic_write_text, read_json, write_json
from bionas.space import build_network, load_network, replace_rules
from bionas.spec import load_spec
from bionas.training import resolve_device


class RunContext:
    """What an analysis needs of a run: its spec, genotype, data set and trained network."""

    def __init__(self, run_dir: str | Path, device: str = "auto", access: DataAccess = DataAccess()):
        self.dir = RunDir(run_dir)
        if not self.dir.path("resolved_spec.json").exists():
            raise BionasError(f"{self.dir.root} is not a bionas run directory (no resolved_spec.json)")
        if not self.dir.path("model.safetensors").exists():
            raise BionasError(f"{self.dir.root} has no retrained network yet (model.safetensors); finish the run first")
        # load_spec reads no file a recorded spec names (its genotype file is not ours to read: docs/pipeline.md)
        self.spec = load_spec(read_json(self.dir.path("resolved_spec.json")), recorded=True)
        if self.spec.model is not None:
            raise BionasError(f"{self.dir.root} trained the model {self.spec.model.name}, not a genotype: this analysis "
                              "compares variants of a genotype (bionas analyze alignment works on any run)")
        self.device = resolve_device(device)
        self.dataset = recorded_dataset(self.spec.dataset.model_dump(), self.dir.path("resolved_spec.json"), access)
        self.model, meta = load_network(self.dir.path("model.safetensors"), self.device)
        self.genotype = self.model.genotype
        self.config = meta["network"]

    def rule_names(self) -> list[str]:
        return [rule.name for rule in self.spec.space.rules]

    def variant(self, rule: str | None, state: dict[str, torch.Tensor]) -> torch.nn.Module:
        """The run's architecture with every searched edge on `rule` (None: the searched rules), weights from `state`.

        The fixed layers keep the run's rules. Rule buffers of the variant keep their own seeded values.
        """
        genotype = self.genotype if rule is None else replace_rules(self.genotype, lambda *_: rule)
        model = build_network(genotype, self.config).to(self.device)
        own = model.state_dict()
        model.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)
        return model

    def write(self, name: str, data: dict[str, Any], markdown: str) -> None:
        write_analysis(self.dir, name, data, markdown)


def write_analysis(rundir: RunDir, name: str, data: dict[str, Any], markdown: str) -> None:
    """analysis/<name>.json and .md of a run directory, then its report.md refreshed to include them."""
    write_json(rundir.path(f"analysis/{name}.json"), data)
    atomic_write_text(rundir.path(f"analysis/{name}.md"), markdown)
    refresh_report(rundir.root)


# -- gradient variance ---------------------------------------------------------------------------


def gradvar(run_dir: str | Path, batches: int = 16, batch_size: int | None = None, seed: int = 0,
            device: str = "auto", access: DataAccess = DataAccess()) -> dict[str, Any]:
    """Normalised gradient variance (docs/analysis.md) of the searched rules and of each single rule,
    on the same `batches` training minibatches, at initialisation and at the run's trained weights."""
    run = RunContext(run_dir, device, access)
    batch_size = batch_size or run.spec.retrain.batch_size
    loader = make_loader(run.dataset, "train", batch_size, train=True, device=run.device, augment=False, seed=seed,
                         num_workers=run.spec.runtime.workers)
    iterator = iter(loader)
    fixed = [next(iterator) for _ in range(min(batches, len(loader)))]
    if len(fixed) < 2:
        raise BionasError("the gradient variance needs at least 2 minibatches")
    torch.manual_seed(run.spec.seed)
    points = {"init": build_network(run.genotype, run.config).state_dict(), "trained": run.model.state_dict()}
    variants = {"searched": None, **{f"all {rule}": rule for rule in run.rule_names()}}
    results: dict[str, Any] = {"batches": len(fixed), "batch_size": batch_size, "points": {}}
    for point, state in points.items():
        results["points"][point] = {}
        for label, rule in variants.items():
            moments = layer_moments(run.variant(rule, state), fixed)
            results["points"][point][label] = {
                "network": summarise(list(moments.values())).as_dict(),
                "layers": {name: m.summary().as_dict() for name, m in moments.items()},
            }
    plot_gradvar(results, run.dir.path("analysis/gradvar.png"))
    run.write("gradvar", results, gradvar_markdown(results))
    return results


def gradvar_markdown(results: dict[str, Any]) -> str:
    points = list(results["points"])
    lines = ["## Gradient variance", "",
             f"Normalised variance R = sum of per-weight variances across {results['batches']} minibatches of "
             f"{results['batch_size']} / squared norm of the mean update (docs/analysis.md); lower is less noisy. "
             "Same batches and same weights for every rule assignment.", "",
             "| rules | " + " | ".join(f"R at {p}" for p in points) + " |",
             "|---|" + "---|" * len(points)]
    for label in results["points"][points[0]]:
        values = [f"{results['points'][p][label]['network']['ratio']:.4g}" for p in points]
        lines.append(f"| {label} | " + " | ".join(values) + " |")
    return "\n".join(lines + ["", "![gradient variance](analysis/gradvar.png)", ""])


def plot_gradvar(results: dict[str, Any], path: Path) -> Path:
    points = list(results["points"])
    fig, axes = figure(1, len(points), (6 * len(points), 4.2))
    for ax, point in zip(axes[0], points):
        for label, entry in results["points"][point].items():
            layers = entry["layers"]
            ax.plot(range(len(layers)), [v["ratio"] for v in layers.values()], marker=".", linewidth=1,
                    label=f"{label} (network {entry['network']['ratio']:.3g})")
        ax.set_yscale("log")
        ax.set_title(f"normalised gradient variance per layer, {point}")
        ax.set_xlabel("layer (network order)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save(fig, path)


# -- random rule assignments ---------------------------------------------------------------------


def random_assignment(genotype, rules: list[str], excluded: set[tuple[str, str]], rng: random.Random):
    """The genotype's operations with a uniformly drawn rule per parametric edge (excluded pairs avoided)."""

    def draw(kind, index, edge):
        allowed = [r for r in rules if (edge["op"], r) not in excluded] or rules
        return rng.choice(allowed)

    return replace_rules(genotype, draw)


def random_rules(run_dir: str | Path, samples: int = 10, epochs: int | None = None, seed: int = 0,
                 device: str = "auto", quiet: bool = False, shard: tuple[int, int] | None = None,
                 progress: Callable[[str], None] | None = None, access: DataAccess = DataAccess()) -> dict[str, Any]:
    """Retrain the searched operations with `samples` random rule assignments (and the searched one, on the
    same budget); compare their accuracies. Each retrain is a variant directory (bionas/analysis/variants.py):
    finished ones are read back, `shard` (i, n) retrains every n-th."""
    run = RunContext(run_dir, device, access)
    recipe = run.spec.retrain.model_copy(update={"epochs": epochs} if epochs else {})
    rng = random.Random(seed)
    excluded = {tuple(pair) for pair in run.spec.space.exclude}
    genotypes = {"searched": run.genotype}
    for i in range(samples):
        genotypes[f"random-{i:02d}"] = random_assignment(run.genotype, run.rule_names(), excluded, rng)
    collected = retrain_variants(run, "random-rules", genotypes, recipe, quiet=quiet, shard=shard,
                                 progress=progress)
    rows = [{"assignment": row["label"], **{k: v for k, v in row.items() if k != "label"}} for row in collected.rows]
    results = {"samples": samples, "epochs": recipe.epochs, "seed": seed, "rows": rows,
               "missing": collected.missing, "retrained": collected.retrained}
    finish_random_rules(run, results)
    return results


def finish_random_rules(run: RunContext, results: dict[str, Any]) -> None:
    """The summary of the assignments finished so far (the searched one among them), json, md, png."""
    randoms = [r["test_accuracy"] for r in results["rows"] if r["assignment"] != "searched"]
    searched = next((r for r in results["rows"] if r["assignment"] == "searched"), None)
    summary = spread(randoms)
    results["summary"] = {
        "searched_test_accuracy": searched and searched["test_accuracy"],
        "random_mean": summary.mean,
        "random_std": summary.std,  # sample standard deviation, as every spread of bionas
        "random_min": summary.min,
        "random_max": summary.max,
        "searched_beats": searched and sum(a < searched["test_accuracy"] for a in randoms),
    }
    if searched is not None and randoms:
        plot_random_rules(results, run.dir.path("analysis/random-rules.png"))
    run.write("random-rules", results, random_rules_markdown(results))


def random_rules_markdown(results: dict[str, Any]) -> str:
    s = results["summary"]
    lines = ["## Random rule assignments", "",
             f"The searched operations retrained {results['epochs']} epochs with {results['samples']} random rule "
             f"assignments (seed {results['seed']}) and with the searched one, same recipe and budget.", "",
             "| assignment | kept edges per rule | val acc | test acc |", "|---|---|---|---|"]
    for row in results["rows"]:
        rules = ", ".join(f"{name} {n}" for name, n in row["rules"].items())
        lines.append(f"| {row['assignment']} | {rules} | {row['val_accuracy']:.2%} | "
                     f"{row['test_accuracy']:.2%} |")
    if s["random_mean"] is not None and s["searched_test_accuracy"] is not None:
        randoms = Spread(results["samples"], s["random_mean"], s["random_std"], s["random_min"], s["random_max"])
        lines += ["", f"Random assignments: test accuracy {randoms.text()} (min {s['random_min']:.2%}, "
                  f"max {s['random_max']:.2%}; {STD_NOTE}); the searched assignment: "
                  f"{s['searched_test_accuracy']:.2%}, above {s['searched_beats']} of {results['samples']}."]
    if results["missing"]:
        lines += ["", f"Not retrained yet (another shard's, or interrupted): {', '.join(results['missing'])}."]
    return "\n".join(lines + ["", "![random rules](analysis/random-rules.png)", ""])


def plot_random_rules(results: dict[str, Any], path: Path) -> Path:
    randoms = [r["test_accuracy"] for r in results["rows"] if r["assignment"] != "searched"]
    searched = next(r["test_accuracy"] for r in results["rows"] if r["assignment"] == "searched")
    return plot_spreads({"random rule assignments": randoms}, path, "test accuracy (%)",
                        lines={"searched assignment": searched})


# -- alignment -----------------------------------------------------------------------------------


def alignment_over_training(run_dir: str | Path) -> dict[str, Any]:
    """Plot the per-epoch feedback alignment the retrain stage logged in metrics.jsonl."""
    rundir = RunDir(run_dir)
    series = alignment_series(rundir.metrics.records())
    if not series:
        raise BionasError(f"{rundir.metrics.path} holds no alignment records (no rule layers other than bp?)")
    plot_alignment(series, rundir.path("analysis/alignment.png"))
    by_rule: dict[str, list[float]] = {}
    for entry in series.values():
        if entry["angle"] and entry["angle"][-1] is not None:
            by_rule.setdefault(entry["rule"], []).append(entry["angle"][-1])
    lines = ["## Feedback alignment over training", "",
             "Angle between each layer's effective feedback B and its weight W, and |B|/|W|, per retrain epoch "
             "(metrics.jsonl). Final epoch, mean over layers:", "", "| rule | layers | angle (deg) |", "|---|---|---|"]
    lines += [f"| {rule} | {len(a)} | {statistics.fmean(a):.1f} |" for rule, a in sorted(by_rule.items())]
    results = {"layers": series}
    write_analysis(rundir, "alignment", results, "\n".join(lines + ["", "![alignment](analysis/alignment.png)", ""]))
    return results
