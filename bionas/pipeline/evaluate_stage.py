"""The evaluation stages, on rank 0: test accuracy once, after selection; then the spec's attacks."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from bionas.attacks import Attack
from bionas.data import make_loader
from bionas.graphs import StepGraph
from bionas.pipeline.context import StageContext
from bionas.robustness import RobustnessReport, evaluate_robustness
from bionas.rundir import read_json, write_json
from bionas.training import eval_step, evaluate_accuracy


class AccuracyStage:
    """The test stage: accuracy on the test split of the network chosen on validation, its one look at it."""

    def __init__(self, context: StageContext):
        self.context = context

    def run(self, model: nn.Module) -> None:
        context, spec, runtime, result = self.context, self.context.spec, self.context.runtime, self.context.result
        loader = make_loader(context.dataset, "test", spec.evaluation.batch_size, train=False, device=runtime.device,
                             num_workers=runtime.workers)
        # runtime.cuda_graphs: each full batch a replay of one captured forward pass
        versioned = [*model.parameters(), *model.buffers()] if runtime.cuda_graphs else []  # bionas.graphs
        step = StepGraph(eval_step(model, runtime.device, runtime.amp, cache=not runtime.cuda_graphs),
                         runtime.cuda_graphs, versioned=versioned)
        loss, accuracy = evaluate_accuracy(model, loader, runtime.device, runtime.amp, step)
        result.test_accuracy = accuracy
        context.book.rewind("test")  # a resumed run tests again: one record
        context.book.log({"stage": "test", "test_loss": loss, "test_accuracy": accuracy,
                          "best_epoch": result.best_epoch})
        context.console.print(f"test: accuracy {accuracy:.2%} (network of epoch {result.best_epoch + 1}, "
                              f"chosen on validation accuracy {result.val_accuracy:.2%})")


class AttackStage:
    """The spec's attacks on the test points: robustness.json and robustness.png."""

    def __init__(self, context: StageContext, attacks: Sequence[Attack], surrogate_label: str):
        self.context = context
        self.attacks = list(attacks)  # one per evaluation.attacks item, in order
        self.surrogate_label = surrogate_label  # names the surrogate the pipeline trained, in the report

    def run(self, model: nn.Module, surrogate: nn.Module | None) -> None:
        context, spec, runtime = self.context, self.context.spec, self.context.runtime
        report_path = context.path("robustness.json")
        if context.book.finished("attacks") and report_path.exists():
            context.result.robustness = RobustnessReport.from_json(read_json(report_path))
            return
        items = []
        for attack, attack_spec in zip(self.attacks, spec.evaluation.attacks):
            if attack.needs_surrogate:
                attack = attack.with_surrogate(surrogate, label=self.surrogate_label)
            items.append((attack, attack_spec.eps))

        def progress(message: str) -> None:
            context.console.print(f"attacks: {message}", markup=False)

        report = evaluate_robustness(
            model, context.dataset.split("test"), attacks=items, points=spec.evaluation.points,
            batch_size=spec.evaluation.batch_size, device=runtime.device, seed=spec.seed, name=spec.name,
            progress=None if runtime.quiet else progress, cuda_graphs=runtime.cuda_graphs,
        )
        write_json(report_path, report.to_json())
        if spec.output.plots:
            report.plot(context.path("robustness.png"))
        context.book.mark_finished("attacks")
        context.result.robustness = report
