"""search -> genotype -> retrain -> test -> attacks -> report, in one run directory.

Each stage checkpoints as it goes and records in stages.json that it finished,
with the hash of the part of the spec it depends on; `resume=True` skips the
finished stages and continues the interrupted one from its checkpoint. The test
split is touched once, by the test and attack stages, after the network was
selected on validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from bionas.checkpoint import Checkpointer, diff_dicts, load_metadata, load_model_state, load_state, spec_hash
from bionas.errors import BionasError, CheckpointError
from bionas.registry import get_attack, get_dataset, get_registry, get_search
from bionas.rundir import RunDir, provenance, read_json, write_json
from bionas.spec import Spec, load_spec
from bionas import distributed
from bionas.training import evaluate_accuracy, seed_everything

# The spec fields each stage depends on: a finished stage is trusted on resume only when they are unchanged.
STAGE_FIELDS = {
    "search": ("seed", "dataset", "space", "search", "runtime"),
    "surrogate": ("seed", "dataset", "space", "search", "genotype", "retrain", "runtime"),
    "retrain": ("seed", "dataset", "space", "search", "genotype", "retrain", "runtime"),
    "attacks": ("seed", "dataset", "space", "search", "genotype", "retrain", "runtime", "evaluation"),
}
MODEL_FILE = "model.safetensors"
SURROGATE_FILE = "surrogate.safetensors"


class Interrupted(BionasError):
    exit_code = 130


@dataclass
class RunResult:
    run_dir: Path
    genotype: Any = None  # bionas.space.Genotype
    search_seconds: float | None = None
    best_epoch: int | None = None
    val_accuracy: float | None = None
    test_accuracy: float | None = None
    parameters: int | None = None
    robustness: Any = None  # bionas.robustness.RobustnessReport
    stages: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out = {"run_dir": str(self.run_dir), "stages": self.stages, "genotype": str(self.genotype) if self.genotype else None,
               "search_seconds": self.search_seconds, "best_epoch": self.best_epoch,
               "val_accuracy": self.val_accuracy, "test_accuracy": self.test_accuracy, "parameters": self.parameters}
        if self.robustness is not None:
            out["robustness"] = self.robustness.to_json()
        return out


def stage_identity(spec_dict: dict[str, Any], stage: str) -> dict[str, Any]:
    return {key: spec_dict.get(key) for key in STAGE_FIELDS[stage]}


# -- models in files -----------------------------------------------------------------------------


def network_config(spec: Spec, info) -> dict[str, Any]:
    """Everything needed to rebuild the retrained network besides its genotype (stored beside its weights)."""
    return {"channels": spec.retrain.channels, "cells": spec.retrain.cells, "num_classes": info.num_classes,
            "in_channels": info.channels, "mean": list(info.mean), "std": list(info.std),
            "auxiliary": spec.retrain.auxiliary, "image_size": info.image_size,
            "stem_multiplier": spec.space.stem_multiplier}


def build_network(genotype, config: dict[str, Any]) -> torch.nn.Module:
    from bionas.space import Network

    return Network(genotype, **config)


def load_network(path: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """A network saved by a run (model.safetensors or surrogate.safetensors): (model in eval mode, metadata)."""
    from bionas.space import Genotype

    state, meta = load_state(path)
    if "genotype" not in meta or "network" not in meta:
        raise CheckpointError(f"{path} is a bionas checkpoint but not a saved network (no genotype in its metadata)")
    model = build_network(Genotype.from_dict(meta["genotype"]), meta["network"])
    load_model_state(model, state["model"], f"network in {path}")
    return model.to(device).eval(), meta


def load_run_target(path: str | Path):
    """`bionas attack` target: a run directory (its model.safetensors) or a saved network; with its test split."""
    from bionas.robustness import Target

    path = Path(path)
    model_path = path / MODEL_FILE if path.is_dir() else path
    if not model_path.is_file():
        raise BionasError(f"no trained network at {model_path} (a run directory holds it once its retrain finished)")
    model, meta = load_network(model_path)
    dataset = get_dataset(meta["dataset"]["name"], **meta["dataset"]["options"])
    return Target(model, dataset.split("test"), meta.get("run", model_path.stem))


# -- the pipeline --------------------------------------------------------------------------------


class Pipeline:
    def __init__(self, spec: Spec, run_dir: Path, resume: bool, quiet: bool, stages: Sequence[str] | None = None):
        self.spec = spec
        self.dir = RunDir(run_dir)
        self.resume = resume
        self.quiet = quiet
        self.world, self.device = distributed.init(spec.device)
        self.main = self.world.is_main  # rank 0 alone writes files and talks
        self.console = Console(stderr=True, quiet=quiet or not self.main)
        self.spec_dict = spec.to_dict()
        self.only = set(stages) if stages else None
        self.result = RunResult(self.dir.root)

    # -- bookkeeping ---------------------------------------------------------------------------

    def wanted(self, stage: str) -> bool:
        return self.only is None or stage in self.only

    def stage_record(self, stage: str) -> dict[str, Any] | None:
        path = self.dir.path("stages.json")
        return read_json(path).get(stage) if path.exists() else None

    def finished(self, stage: str) -> bool:
        """True when `stage` finished for the same spec; a changed spec for a finished stage is an error."""
        record = self.stage_record(stage)
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

    def reused_stages(self) -> list[str]:
        """The stages whose finished outputs this run would reuse: `finished` checks each against the spec."""
        stages = ["search"] if self.spec.search else []
        if self.spec.retrain is not None and self.wanted("retrain"):
            stages += ["retrain", "surrogate"] if self.needs_surrogate() else ["retrain"]
        return stages

    def needs_surrogate(self) -> bool:
        """A transfer attack without a surrogate of its own attacks from the genotype retrained with bp."""
        return self.wanted("attacks") and any(a.name == "transfer" and not a.options.get("surrogate")
                                              for a in self.spec.evaluation.attacks)

    def mark_finished(self, stage: str) -> None:
        if not self.main:
            return
        path = self.dir.path("stages.json")
        records = read_json(path) if path.exists() else {}
        identity = stage_identity(self.spec_dict, stage)
        records[stage] = {"hash": spec_hash(identity), "identity": identity}
        write_json(path, records)

    def checkpointer(self, stage: str) -> Checkpointer:
        return Checkpointer(self.dir.checkpoint(stage), stage, stage_identity(self.spec_dict, stage),
                            {"bionas": self.provenance["bionas"], "torch": self.provenance["torch"]})

    def resume_log(self, stage: str, checkpoint: Checkpointer) -> None:
        """Drop metrics a killed run wrote after its last checkpoint: the resumed stage writes them again."""
        if not self.main:
            return
        if not checkpoint.exists():
            self.dir.metrics.truncate(stage)
            return
        self.dir.metrics.truncate(stage, after_epoch=load_metadata(checkpoint.path)["epoch"])

    def log(self, record: dict[str, Any]) -> None:
        if self.main:
            self.dir.metrics.append(record)

    # -- the run -------------------------------------------------------------------------------

    def execute(self) -> RunResult:
        if self.main:
            self.dir.prepare(self.resume)
        distributed.barrier()
        for stage in self.reused_stages():  # a refused resume must leave the spec files of the run as they were
            self.finished(stage)
        self.write_spec()
        seed_everything(self.spec.seed)
        self.dataset = get_dataset(self.spec.dataset.name, **self.spec.dataset.options)
        self.info = self.dataset.info
        self.console.print(f"[bold]bionas[/bold] run '{self.spec.name}' in {self.dir.root} on {self.device}")
        genotype = self.search_stage() if self.spec.search else self.given_genotype()
        self.result.genotype = genotype
        if self.spec.retrain is not None and self.wanted("retrain"):
            model = self.retrain_stage(genotype)
            surrogate = None
            if self.needs_surrogate():  # training runs collectives: every rank, before rank 0's evaluation
                surrogate = self.train_network(all_bp(genotype), "surrogate", SURROGATE_FILE)
            if self.main:  # evaluation needs no second process
                self.test_stage(model)
                if self.spec.evaluation.attacks and self.wanted("attacks"):
                    self.attack_stage(model, surrogate)
        if self.main:
            self.write_results()
            self.write_report()
        distributed.barrier()
        return self.result

    def write_spec(self) -> None:
        plugins = [get_registry().info(kind, ref.name) for _, kind, ref in self.spec.plugin_refs()]
        plugins += [get_registry().info("op", op) for op in self.spec.space.ops]
        self.provenance = provenance({(p.kind, p.name): p for p in plugins}.values())
        self.provenance["device"] = str(self.device)
        self.provenance["world_size"] = self.world.world_size
        if self.main:  # on resume, each stage checks the part of the spec it depends on (see `finished`)
            write_json(self.dir.path("resolved_spec.json"), self.spec_dict)
            write_json(self.dir.path("provenance.json"), self.provenance)

    def given_genotype(self):
        from bionas.space import Genotype

        source = self.spec.genotype
        if isinstance(source, str):
            genotype = Genotype.load(Path(source).expanduser())
        else:
            genotype = Genotype.from_dict(source, source="spec genotype")
        if self.main:
            genotype.save(self.dir.path("genotype.json"))
        return genotype

    # -- search --------------------------------------------------------------------------------

    def search_stage(self):
        from bionas.search import SearchData, resolve_space
        from bionas.space import Genotype, SearchSpace, Supernet

        if self.finished("search"):
            self.console.print("search: finished earlier, genotype.json reused")
            genotype = Genotype.load(self.dir.path("genotype.json"))
            self.result.search_seconds = read_json(self.dir.path("search.json")).get("seconds")
            return genotype
        if not self.wanted("search"):
            raise BionasError("this command does not run the search, and the run has no genotype yet")
        strategy = get_search(self.spec.search.name, **self.spec.search.options)
        space = SearchSpace(resolve_space(self.spec.space, type(strategy)))
        supernet = Supernet(space, self.info.num_classes, self.info.channels, self.info.mean, self.info.std)
        supernet.to(self.device)
        if self.device.type == "cuda" and self.spec.runtime.channels_last:
            supernet.to(memory_format=torch.channels_last)
        data = SearchData.split(self.dataset, self.spec.search.arch_fraction, device=self.device, seed=self.spec.seed,
                                rank=self.world.rank, world_size=self.world.world_size,
                                workers=self.spec.runtime.workers)
        checkpoint = self.checkpointer("search")
        self.resume_log("search", checkpoint)
        self.console.print(f"search: {strategy.name} over {space.num_candidates} candidates per edge")
        result = strategy.search(supernet, data, self.device, checkpoint if self.main else checkpoint.reader(),
                                 log=self.log, quiet=self.quiet or not self.main, amp=self.spec.runtime.amp)
        if self.main:
            result.genotype.save(self.dir.path("genotype.json"))
            write_json(self.dir.path("search.json"), {"strategy": strategy.name, "seconds": result.seconds,
                                                      "candidates": space.labels, "epochs": len(result.history)})
            if self.spec.output.plots:
                self.search_plots(result, space)
        self.mark_finished("search")
        distributed.barrier()
        self.result.search_seconds = result.seconds
        self.console.print(f"search: done in {result.seconds:.1f}s\n{result.genotype}")
        return result.genotype

    def search_plots(self, result, space) -> None:
        from bionas.plots import alpha_heatmaps

        alphas = next((r["alphas"] for r in reversed(result.history) if r.get("alphas")), None)
        if alphas:
            alpha_heatmaps(alphas, space.labels, self.dir.path("alphas.png"))

    # -- retrain and test ----------------------------------------------------------------------

    def train_network(self, genotype, stage: str, file: str) -> torch.nn.Module:
        """Retrain `genotype` by the spec's recipe (stage 'retrain', or 'surrogate' for the bp copy)."""
        from bionas.space import count_parameters
        from bionas.train import retrain

        config = network_config(self.spec, self.info)
        path = self.dir.path(file)
        if self.finished(stage):
            self.console.print(f"{stage}: finished earlier, {file} reused")
            model, _ = load_network(path, self.device)
            return model
        seed = self.spec.seed + (1 if stage == "surrogate" else 0)
        torch.manual_seed(seed)
        model = build_network(genotype, config).to(self.device)
        if self.device.type == "cuda" and self.spec.runtime.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.spec.runtime.compile:
            model.forward_with_aux = torch.compile(model.forward_with_aux)
        parameters = count_parameters(model)
        self.console.print(f"{stage}: {parameters:,} parameters (auxiliary head excluded), "
                           f"{self.spec.retrain.epochs} epochs")
        checkpoint = self.checkpointer(stage)
        self.resume_log(stage, checkpoint)
        metadata = {"genotype": genotype.to_dict(), "network": config, "run": self.spec.name, "stage": stage,
                    "dataset": {"name": self.spec.dataset.name, "options": self.spec.dataset.options},
                    "parameters": parameters}

        def log(record):
            self.log({**record, "stage": stage})

        trained = retrain(model, self.dataset, self.spec.retrain, device=self.device, seed=seed, best_path=path,
                          checkpoint=checkpoint if self.main else checkpoint.reader(), log=log, quiet=self.quiet or not self.main,
                          amp=self.spec.runtime.amp,
                          channels_last=self.device.type == "cuda" and self.spec.runtime.channels_last,
                          eval_batch_size=self.spec.evaluation.batch_size, best_metadata=metadata,
                          rank=self.world.rank, world_size=self.world.world_size, workers=self.spec.runtime.workers,
                          train_model=distributed.data_parallel(model, self.device) if self.world.distributed else None)
        if self.main:
            write_json(self.dir.path(f"{stage}.json"), {"best_epoch": trained.best_epoch, "parameters": parameters,
                                                       "best_val_accuracy": trained.best_val_accuracy,
                                                       "seconds": trained.seconds})
        self.mark_finished(stage)
        distributed.barrier()
        best, _ = load_network(path, self.device)  # the epoch chosen on validation, not the last one
        return best

    def retrain_stage(self, genotype) -> torch.nn.Module:
        model = self.train_network(genotype, "retrain", MODEL_FILE)
        summary = read_json(self.dir.path("retrain.json"))
        self.result.best_epoch = summary["best_epoch"]
        self.result.val_accuracy = summary["best_val_accuracy"]
        self.result.parameters = summary["parameters"]
        return model

    def test_stage(self, model: torch.nn.Module) -> None:
        from bionas.data import make_loader

        loader = make_loader(self.dataset, "test", self.spec.evaluation.batch_size, train=False, device=self.device,
                             num_workers=self.spec.runtime.workers)
        loss, accuracy = evaluate_accuracy(model, loader, self.device, self.spec.runtime.amp)
        self.result.test_accuracy = accuracy
        self.dir.metrics.truncate("test")  # a resumed run tests again: one record
        self.log({"stage": "test", "test_loss": loss, "test_accuracy": accuracy,
                  "best_epoch": self.result.best_epoch})
        self.console.print(f"test: accuracy {accuracy:.2%} (network of epoch {self.result.best_epoch + 1}, "
                           f"chosen on validation accuracy {self.result.val_accuracy:.2%})")

    # -- attacks -------------------------------------------------------------------------------

    def attack_stage(self, model: torch.nn.Module, surrogate: torch.nn.Module | None) -> None:
        from bionas.robustness import RobustnessReport, evaluate_robustness

        report_path = self.dir.path("robustness.json")
        if self.finished("attacks") and report_path.exists():
            self.result.robustness = RobustnessReport.from_json(read_json(report_path))
            return
        items = []
        for attack_spec in self.spec.evaluation.attacks:
            attack = get_attack(attack_spec.name, **attack_spec.options)
            if attack_spec.name == "transfer" and not attack_spec.options.get("surrogate"):
                attack = attack.with_surrogate(surrogate, label="the same genotype trained with bp")
            items.append((attack, attack_spec.eps))
        report = evaluate_robustness(
            model, self.dataset.split("test"), attacks=items, points=self.spec.evaluation.points,
            batch_size=self.spec.evaluation.batch_size, device=self.device, seed=self.spec.seed,
            name=self.spec.name, progress=None if self.quiet else lambda m: self.console.print(f"attacks: {m}", markup=False),
        )
        write_json(report_path, report.to_json())
        if self.spec.output.plots:
            report.plot(self.dir.path("robustness.png"))
        self.mark_finished("attacks")
        self.result.robustness = report

    # -- outputs -------------------------------------------------------------------------------

    def write_results(self) -> None:
        self.result.stages = [s for s in STAGE_FIELDS if self.stage_record(s)]
        write_json(self.dir.path("results.json"), self.result.summary())
        if self.spec.output.plots and self.result.genotype is not None:
            self.result.genotype.draw(self.dir.path("genotype.png"))
        if self.spec.output.plots and self.result.best_epoch is not None:  # last: every training stage logged
            from bionas.plots import training_curves

            training_curves(self.dir.metrics.records(), self.dir.path("training.png"))

    def write_report(self) -> None:
        from bionas.report import refresh_report

        refresh_report(self.dir.root)


def replace_rules(genotype, edge_rule, fixed_rules: dict[str, Any] | None = None):
    """The same architecture with other rules: `edge_rule(cell_type, index, edge) -> rule` for every edge
    whose op has a rule; `fixed_rules` replaces the fixed layers' rules when given."""
    from bionas.space import Genotype

    data = genotype.to_dict()
    for kind in ("normal", "reduce"):
        for index, edge in enumerate(data[kind]):
            if edge.get("rule") is not None:
                edge["rule"] = edge_rule(kind, index, edge)
    if fixed_rules is not None:
        data["fixed_rules"] = dict(fixed_rules)
    return Genotype.from_dict(data)


def all_bp(genotype):
    """The same architecture with every layer learning by backprop: the transfer attack's default surrogate."""
    return replace_rules(genotype, lambda *_: "bp", dict.fromkeys(genotype.fixed_rules, "bp"))


def run(
    spec: Spec | str | Path | dict,
    out_dir: str | Path | None = None,
    resume: bool = False,
    quiet: bool = False,
    stages: Sequence[str] | None = None,
) -> RunResult:
    """Run a spec: search -> genotype -> retrain -> test -> attacks -> report.

    `stages` limits the run to some stages (`["search"]`, or `["retrain"]`
    which also tests and attacks); `resume` continues an interrupted run.
    """
    spec = load_spec(spec)
    pipeline = Pipeline(spec, Path(out_dir) if out_dir else spec.run_dir(), resume, quiet, stages)
    try:
        return pipeline.execute()
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted. Finished stages and the last epoch checkpoint are kept in {pipeline.dir.root}; "
            f"continue with: bionas run SPEC --resume --out {pipeline.dir.root}"
        ) from None
    finally:
        distributed.shutdown()


def print_summary(result: RunResult, console: Console | None = None) -> None:
    """The table `bionas run` ends with: genotype, accuracies, robust accuracies, run directory."""
    console = console or Console()
    table = Table(title="bionas run", show_header=False)
    if result.genotype is not None:
        table.add_row("genotype", str(result.genotype))
    if result.search_seconds is not None:
        table.add_row("search time", f"{result.search_seconds:.1f} s")
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
