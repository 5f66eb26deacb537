"""The search stage: the strategy over the supernet of the spec's space, to genotype.json (or the given genotype)."""

from __future__ import annotations

import torch

from bionas import distributed
from bionas.errors import BionasError
from bionas.pipeline.context import StageContext
from bionas.plots import alpha_heatmaps
from bionas.registry import get_search
from bionas.rundir import read_json, write_json
from bionas.search import SearchData, SearchResult, resolve_space
from bionas.search.decided import decidedness
from bionas.space import Genotype, SearchSpace, Supernet


class SearchStage:
    """Search the spec's space with its strategy; genotype.json, search.json and alphas.png on rank 0."""

    def __init__(self, context: StageContext, allowed: bool):
        self.context = context
        self.allowed = allowed  # False: this command does not search (`bionas train`)
        spec = context.spec
        self.strategy = get_search(spec.search.name, **spec.search.options)
        self.space_spec = resolve_space(spec.space, type(self.strategy))

    def run(self) -> Genotype:
        context, spec = self.context, self.context.spec
        if context.book.finished("search"):
            context.console.print("search: finished earlier, genotype.json reused")
            info = read_json(context.path("search.json"))
            context.result.search_seconds = info.get("seconds")
            context.result.search_valid_accuracy = info.get("valid_accuracy")  # None in runs of earlier versions
            return Genotype.load(context.path("genotype.json"))
        if not self.allowed:
            raise BionasError("this command does not run the search, and the run has no genotype yet")
        space = SearchSpace(self.space_spec)
        info = context.dataset.info
        supernet = Supernet(space, info.num_classes, info.channels, info.mean, info.std)
        runtime = context.runtime
        supernet.to(runtime.device)  # a strategy gets the supernet on the runtime's device
        if runtime.channels_last:
            supernet.to(memory_format=torch.channels_last)
        data = SearchData.split(context.dataset, spec.search.arch_fraction, device=runtime.device, seed=spec.seed,
                                rank=runtime.rank, world_size=runtime.world_size, workers=runtime.workers)
        checkpoint = context.book.checkpointer("search")
        context.console.print(f"search: {self.strategy.name} over {space.num_candidates} candidates per edge")
        result = self.strategy.search(supernet, data, runtime, checkpoint)
        valid_accuracy = last_valid_accuracy(result)
        zero = [space.is_zero(k) for k in range(space.num_candidates)]
        decided = decidedness(last_alphas(result) or {}, space.labels, zero)
        if context.main:
            result.genotype.save(context.path("genotype.json"))
            write_json(context.path("search.json"), {
                "strategy": self.strategy.name, "seconds": result.seconds, "candidates": space.labels,
                "epochs": len(result.history), "valid_accuracy": valid_accuracy,
                "decidedness": decided if decided["edges"] else None})
            if spec.output.plots:
                self.plot_alphas(result, space)
        context.book.mark_finished("search")
        distributed.barrier()
        context.result.search_seconds, context.result.search_valid_accuracy = result.seconds, valid_accuracy
        accuracy = "" if valid_accuracy is None else f", supernet validation accuracy {valid_accuracy:.1%}"
        context.console.print(f"search: done in {result.seconds:.1f}s{accuracy}\n{result.genotype}")
        if decided["close_to_uniform"]:
            context.console.print(f"search: every edge's mixing weights are within {decided['threshold']:.0%} of "
                                  "uniform: the genotype is close to a random draw from the space")
        return result.genotype

    def plot_alphas(self, result: SearchResult, space: SearchSpace) -> None:
        alphas = last_alphas(result)
        if alphas:
            alpha_heatmaps(alphas, space.labels, self.context.path("alphas.png"))


def last_alphas(result: SearchResult) -> dict | None:
    """The mixing weights softmax(alpha) of the search's last record that has them (None: a strategy without)."""
    return next((r["alphas"] for r in reversed(result.history) if r.get("alphas")), None)


def last_valid_accuracy(result: SearchResult) -> float | None:
    """The supernet's accuracy on the architecture part in the search's last record: how well the network
    the genotype was read from did when it was read (None when the strategy records none)."""
    return result.history[-1].get("valid_accuracy") if result.history else None


def given_genotype(context: StageContext, genotype: Genotype) -> Genotype:
    """The spec's genotype, read once when the run starts (spec_genotype), copied to the run's genotype.json."""
    if context.main:
        genotype.save(context.path("genotype.json"))
    return genotype
