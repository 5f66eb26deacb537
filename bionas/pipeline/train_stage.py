"""The retrain stage: the genotype's network, or the spec's model, trained by the spec's recipe and
selected on validation.

The same stage, under the name `surrogate`, trains the genotype (or model) with backprop for an
attack that crafts its examples on a surrogate (transfer).
"""

from __future__ import annotations

from typing import Any

import torch

from bionas import distributed
from torch import nn

from bionas.data import DatasetInfo
from bionas.model_network import ModelChoice, build_model_network, load_trained_network, model_config
from bionas.pipeline.context import StageContext
from bionas.retrain import retrain
from bionas.rundir import read_json, write_json
from bionas.space import Genotype, build_network, count_parameters
from bionas.spec import Spec

MODEL_FILE = "model.safetensors"
SURROGATE_FILE = "surrogate.safetensors"
MODEL_RECORD = "model.json"  # a model run's model, rules and the rule of every layer

Architecture = Genotype | ModelChoice


def network_config(spec: Spec, info: DatasetInfo) -> dict[str, Any]:
    """Everything needed to rebuild the retrained network besides its genotype (stored beside its weights)."""
    return {"channels": spec.retrain.channels, "cells": spec.retrain.cells, "num_classes": info.num_classes,
            "in_channels": info.channels, "mean": list(info.mean), "std": list(info.std),
            "auxiliary": spec.retrain.auxiliary, "image_size": info.image_size,
            "stem_multiplier": spec.space.stem_multiplier}


class TrainStage:
    """Retrain a genotype or a model by the spec's recipe: stage `retrain` (model.safetensors) or `surrogate`."""

    def __init__(self, context: StageContext, stage: str = "retrain"):
        self.context = context
        self.stage = stage
        self.file = SURROGATE_FILE if stage == "surrogate" else MODEL_FILE
        self.seed = context.spec.seed + (1 if stage == "surrogate" else 0)
        info = context.dataset.info
        self.config = model_config(info) if context.spec.model else network_config(context.spec, info)

    def build(self, architecture: Architecture) -> tuple[nn.Module, dict[str, Any]]:
        """The freshly initialised network, and what its file's metadata says it is."""
        if isinstance(architecture, ModelChoice):
            model = build_model_network(architecture, self.config)
            if self.stage == "retrain" and self.context.main:
                write_json(self.context.path(MODEL_RECORD),
                           {**architecture.to_dict(), "layers": architecture.layer_rules(model.net)})
            return model, {"model": architecture.to_dict()}
        return build_network(architecture, self.config), {"genotype": architecture.to_dict()}

    def run(self, architecture: Architecture) -> nn.Module:
        """The trained network of the epoch chosen on validation, in eval mode on the runtime's device."""
        context, spec, stage = self.context, self.context.spec, self.stage
        path = context.path(self.file)
        device = context.runtime.device
        if context.book.finished(stage):
            context.console.print(f"{stage}: finished earlier, {self.file} reused")
            return load_trained_network(path, device)[0]
        torch.manual_seed(self.seed)
        model, described = self.build(architecture)
        model = model.to(device)
        parameters = count_parameters(model)
        context.console.print(f"{stage}: {parameters:,} parameters (auxiliary head excluded), "
                              f"{spec.retrain.epochs} epochs")
        checkpoint = context.book.checkpointer(stage)
        metadata = {**described, "network": self.config, "run": spec.name, "stage": stage,
                    "dataset": {"name": spec.dataset.name, "options": spec.dataset.options},
                    "parameters": parameters}
        runtime = context.runtime.with_changes(log=lambda record: context.book.log({**record, "stage": stage}))
        trained = retrain(model, context.dataset, spec.retrain, runtime, seed=self.seed, best_path=path,
                          checkpoint=checkpoint, eval_batch_size=spec.evaluation.batch_size, best_metadata=metadata)
        if context.main:
            write_json(context.path(f"{stage}.json"), {"best_epoch": trained.best_epoch, "parameters": parameters,
                                                       "best_val_accuracy": trained.best_val_accuracy,
                                                       "seconds": trained.seconds})
        context.book.mark_finished(stage)
        distributed.barrier()
        return load_trained_network(path, device)[0]  # the epoch chosen on validation, not the last one

    def record_result(self) -> None:
        """The retrain's summary (retrain.json) into the run's result."""
        summary = read_json(self.context.path(f"{self.stage}.json"))
        result = self.context.result
        result.best_epoch = summary["best_epoch"]
        result.val_accuracy = summary["best_val_accuracy"]
        result.parameters = summary["parameters"]
