"""Retrain variants of a run: other genotypes on the run's recipe, data and test split, each in its own directory.

    RUN/analysis/<name>/<label>/
      genotype.json                 the variant
      checkpoint.safetensors        the retrain's checkpoint (an interrupted variant resumes from it)
      model.safetensors             the weights of the epoch chosen on validation
      result.json                   written last: the variant is finished

`random-rules` and `random-architectures` (bionas/analysis/study.py,
bionas/analysis/random_architectures.py) differ only in the genotypes they
draw. A finished variant (its result.json) is read back, never retrained; one
finished with another budget or genotype is refused. A shard `(i, n)` retrains
the variants at positions i, i + n, ... of the list, as a study's shard runs
its seeds (bionas/pipeline/study.py), and every invocation collects the
variants finished so far, whoever retrained them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch

from bionas.checkpoint import Checkpointer
from bionas.data import make_loader
from bionas.errors import BionasError
from bionas.retrain import retrain
from bionas.rundir import read_json, write_json
from bionas.runtime import Runtime
from bionas.space import Genotype, build_network, load_network
from bionas.training import evaluate_accuracy

RESULT = "result.json"


class Collected(NamedTuple):
    rows: list[dict[str, Any]]  # every finished variant's result.json, in the order of the genotypes
    missing: list[str]  # labels not finished yet (another shard's, or interrupted)
    retrained: list[str]  # labels this invocation retrained


def shard_items(labels: list[str], shard: tuple[int, int] | None) -> list[str]:
    """The labels a shard retrains: labels[i::n]; all of them without a shard."""
    return labels if shard is None else labels[shard[0]::shard[1]]


def finished_result(directory: Path, genotype: Genotype, epochs: int) -> dict[str, Any] | None:
    """The variant's result.json, or None while it is not finished; an error when it was retrained otherwise."""
    path = directory / RESULT
    if not path.exists():
        return None
    result = read_json(path)
    if result.get("genotype") != genotype.to_dict() or result.get("epochs") != epochs:
        raise BionasError(f"{directory} holds a variant retrained with another genotype or budget "
                          f"({result.get('epochs')} epochs); give the options it was run with, or remove the "
                          f"directory {directory.parent} to start the analysis again")
    return result


def retrain_variants(run, name: str, genotypes: Mapping[str, Genotype], recipe, *, quiet: bool = False,
                     shard: tuple[int, int] | None = None,
                     progress: Callable[[str], None] | None = None) -> Collected:
    """Retrain this shard's unfinished variants of `run` (an analysis RunContext) by `recipe`, then collect.

    The rows are every finished variant's result.json (label, epochs, kept edges per rule, validation and
    test accuracy, best epoch, genotype), this shard's and the others'.
    """
    root = run.dir.path(f"analysis/{name}")
    spec = run.spec
    runtime = Runtime(device=run.device, amp=spec.runtime.amp, workers=spec.runtime.workers, quiet=quiet)
    test_loader, retrained = None, []
    for label in shard_items(list(genotypes), shard):
        genotype, directory = genotypes[label], root / label
        if finished_result(directory, genotype, recipe.epochs) is not None:
            continue
        if progress:
            progress(f"{label}: retraining {recipe.epochs} epochs")
        genotype.save(directory / "genotype.json")
        torch.manual_seed(spec.seed)  # every variant starts from the run's seeded initialisation
        model = build_network(genotype, run.config).to(run.device)
        checkpoint = Checkpointer(directory / "checkpoint.safetensors", f"{name}/{label}",
                                  {"genotype": genotype.to_dict(), "recipe": recipe.model_dump(mode="json")})
        trained = retrain(model, run.dataset, recipe, runtime, seed=spec.seed,
                          best_path=directory / "model.safetensors", checkpoint=checkpoint,
                          best_metadata={"genotype": genotype.to_dict(), "network": run.config})
        if test_loader is None:
            test_loader = make_loader(run.dataset, "test", spec.evaluation.batch_size, train=False,
                                      device=run.device, num_workers=spec.runtime.workers)
        best, _ = load_network(directory / "model.safetensors", run.device)
        _, test_accuracy = evaluate_accuracy(best, test_loader, run.device, spec.runtime.amp)
        write_json(directory / RESULT, {
            "label": label, "epochs": recipe.epochs, "rules": genotype.rule_counts(),
            "val_accuracy": trained.best_val_accuracy, "best_epoch": trained.best_epoch,
            "test_accuracy": test_accuracy, "genotype": genotype.to_dict()})
        retrained.append(label)
    rows, missing = [], []
    for label, genotype in genotypes.items():
        result = finished_result(root / label, genotype, recipe.epochs)
        if result is None:
            missing.append(label)
        else:
            rows.append(result)
    return Collected(rows, missing, retrained)
