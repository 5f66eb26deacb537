"""search -> genotype -> retrain -> test -> attacks -> report, in one run directory.

A spec with a `model` trains that model with its rules instead: retrain -> test -> attacks -> report.

Each stage checkpoints as it goes and records in stages.json that it finished
(bionas.pipeline.book); `resume=True` skips the finished stages and continues
the interrupted one from its checkpoint. The test split is touched once, by the
test and attack stages, after the network was selected on validation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from bionas import distributed
from bionas.errors import BionasError
from bionas.model import split_model_name
from bionas.model_network import ModelChoice
from bionas.pipeline.book import StageBook, content_identity
from bionas.pipeline.context import StageContext
from bionas.pipeline.evaluate_stage import AccuracyStage, AttackStage
from bionas.pipeline.report import refresh_report
from bionas.pipeline.result import Interrupted, RunResult
from bionas.pipeline.search_stage import SearchStage, given_genotype
from bionas.pipeline.tracking import output_files, run_loggers
from bionas.pipeline.train_stage import MODEL_RECORD, TrainStage
from bionas.plots import training_curves
from bionas.registry import get_attack, get_dataset, get_registry
from bionas.runtime import Runtime, cpu_threads, resolve_channels_last, resolve_compile, resolve_cuda_graphs
from bionas.rundir import RunDir, provenance, read_json, write_json
from bionas.space import with_backprop
from bionas.space.genotype import spec_genotype
from bionas.spec import Spec, default_fixed_rule, load_spec
from bionas.tracking import LogRun
from bionas.training import seed_everything


def run_provenance(spec: Spec, device: torch.device, world_size: int) -> dict[str, Any]:
    """provenance.json: the versions of the stack and of every plugin the spec uses, the device, the world."""
    registry = get_registry()
    plugins = [registry.info(kind, ref.name) for _, kind, ref in spec.plugin_refs()]
    plugins += [registry.info("op", op) for op in spec.space.ops]
    if spec.model is not None:
        plugins.append(registry.info("model", split_model_name(spec.model.name)[0]))
    found = provenance({(p.kind, p.name): p for p in plugins}.values())
    threads = spec.runtime.threads or torch.get_num_threads()
    # The CPU kernels torch dispatches to (DEFAULT, AVX2, AVX512, ...) decide float sums as the thread count
    # does: runs are bit-identical only for the same torch, thread count and capability (docs/pipeline.md).
    return {**found, "device": str(device), "world_size": world_size, "cpu_threads": threads,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cuda_graphs": resolve_cuda_graphs(spec.runtime.cuda_graphs, device)}


class Pipeline:
    """One run of a spec in one run directory; `stages` limits it (`["search"]`, or `["retrain", "attacks"]`)."""

    def __init__(self, spec: Spec, run_dir: Path, resume: bool, quiet: bool, stages: Sequence[str] | None = None):
        self.spec = spec
        self.dir = RunDir(run_dir)
        self.resume = resume
        self.only = set(stages) if stages else None
        # Inputs named by location are read now, before a process group exists: stages are identified by
        # their content (content_identity), and an unreadable input fails before any work.
        self.dataset = get_dataset(spec.dataset.name, **spec.dataset.options)
        self.given = spec_genotype(spec)
        world, device = distributed.init(spec.device)
        self.console = Console(stderr=True, quiet=quiet or not world.is_main)  # rank 0 alone talks
        self.provenance = run_provenance(spec, device, world.world_size)
        versions = {"bionas": self.provenance["bionas"], "torch": self.provenance["torch"]}
        identity = content_identity(spec.to_dict(), self.given, self.dataset)
        self.loggers = run_loggers(spec, world.is_main, self.warn)
        for note in self.given.notes if self.given is not None else []:
            self.warn(note)
        self.book = StageBook(self.dir, spec.to_dict(), versions, main=world.is_main, loggers=self.loggers,
                              identity_dict=identity)
        self.runtime = Runtime(device=device, amp=spec.runtime.amp,
                               compile=resolve_compile(spec.runtime.compile, device),
                               channels_last=resolve_channels_last(spec.runtime.channels_last, device),
                               cuda_graphs=resolve_cuda_graphs(spec.runtime.cuda_graphs, device),
                               rank=world.rank, world_size=world.world_size, workers=spec.runtime.workers,
                               quiet=quiet or not world.is_main, log=self.book.log)
        self.attacks = [get_attack(a.name, **a.options) for a in spec.evaluation.attacks]
        self.result = RunResult(self.dir.root)

    # -- which stages ----------------------------------------------------------------------------

    def wanted(self, stage: str) -> bool:
        return self.only is None or stage in self.only

    def needs_surrogate(self) -> bool:
        """An attack that crafts its examples on a surrogate it was not given gets the genotype retrained
        with backprop."""
        return self.wanted("attacks") and any(attack.needs_surrogate for attack in self.attacks)

    def reused_stages(self) -> list[str]:
        """The stages whose finished outputs this run would reuse: `finished` checks each against the spec."""
        stages = ["search"] if self.spec.search else []
        if self.spec.retrain is not None and self.wanted("retrain"):
            stages += ["retrain", "surrogate"] if self.needs_surrogate() else ["retrain"]
        return stages

    # -- the run -------------------------------------------------------------------------------

    def execute(self) -> RunResult:
        spec, main = self.spec, self.runtime.is_main
        if spec.model is not None and self.only == {"search"}:
            raise BionasError(f"spec '{spec.name}' trains a model: it has no search stage (bionas run or bionas train)")
        if main:
            self.dir.prepare(self.resume)
        distributed.barrier()
        for stage in self.reused_stages():  # a refused resume must leave the spec files of the run as they were
            self.book.finished(stage)
        if main:  # on resume, each stage checks the part of the spec it depends on (StageBook.finished)
            write_json(self.dir.path("resolved_spec.json"), self.book.spec_dict)
            write_json(self.dir.path("provenance.json"), self.provenance)
        with self.loggers.session(LogRun(self.dir.root, spec.name, self.book.spec_dict, self.resume)), \
                cpu_threads(spec.runtime.threads):
            return self.run_stages()

    def run_stages(self) -> RunResult:
        spec, main = self.spec, self.runtime.is_main
        seed_everything(spec.seed)
        context = StageContext(spec, self.book, self.runtime, self.dataset, self.console, self.result)
        self.console.print(f"[bold]bionas[/bold] run '{spec.name}' in {self.dir.root} on {self.runtime.device}")
        if spec.model is not None:
            architecture = ModelChoice.from_spec(spec)
            surrogate_label = "the same model trained with plain backprop"
        else:
            if spec.search:
                self.result.genotype = SearchStage(context, allowed=self.wanted("search")).run()
            else:
                self.result.genotype = given_genotype(context, self.given)
            architecture = self.result.genotype
            surrogate_label = f"the same genotype trained with {default_fixed_rule()}"
        if spec.retrain is not None and self.wanted("retrain"):
            retrain = TrainStage(context, "retrain")
            model = retrain.run(architecture)
            retrain.record_result()
            if spec.model is not None:
                self.result.model = read_json(self.dir.path(MODEL_RECORD))
            surrogate = None
            if self.needs_surrogate():  # training runs collectives: every rank, before rank 0's evaluation
                backprop = architecture.with_backprop() if spec.model else with_backprop(architecture)
                surrogate = TrainStage(context, "surrogate").run(backprop)
            if main:  # evaluation needs no second process
                AccuracyStage(context).run(model)
                if spec.evaluation.attacks and self.wanted("attacks"):
                    AttackStage(context, self.attacks, surrogate_label).run(model, surrogate)
        if main:
            self.write_outputs()
        distributed.barrier()
        return self.result

    def write_outputs(self) -> None:
        """results.json, the genotype and training plots, report.md; then the loggers get the files."""
        self.result.stages = self.book.finished_stages()
        write_json(self.dir.path("results.json"), self.result.summary())
        if self.spec.output.plots and self.result.genotype is not None:
            self.result.genotype.draw(self.dir.path("genotype.png"))
        if self.spec.output.plots and self.result.best_epoch is not None:  # last: every training stage logged
            training_curves(self.dir.metrics.records(), self.dir.path("training.png"))
        refresh_report(self.dir.root)
        self.loggers.log_files(output_files(self.dir))

    def warn(self, message: str) -> None:
        self.console.print(f"warning: {message}", style="yellow", markup=False, highlight=False)


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
    if spec.seeds is not None:
        raise BionasError(f"the spec lists seeds ({', '.join(map(str, spec.seeds))}): that is a study, one run per "
                          "seed; run it with bionas.run_study (or `bionas run`)")
    pipeline = Pipeline(spec, Path(out_dir) if out_dir else spec.run_dir(), resume, quiet, stages)
    try:
        return execute(pipeline, f"bionas run SPEC --resume --out {pipeline.dir.root}")
    finally:
        distributed.shutdown()


def execute(pipeline: Pipeline, resume_command: str) -> RunResult:
    """Run the pipeline; Ctrl-C becomes Interrupted with where the run is kept and how to continue it."""
    try:
        return pipeline.execute()
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted. Finished stages and the last epoch checkpoint are kept in {pipeline.dir.root}; "
            f"continue with: {resume_command}"
        ) from None
