"""egnas: EG-NAS (Cai et al., AAAI 2024): weights by SGD, the architecture by CMA-ES, no arch gradient.

Once per epoch from `start_epoch`, before the epoch's weight training (caicaicheng/EG-NAS
train_search.py `explore_architecture`, `CFF`, `updated_alpha`):

1. On one batch of the architecture part (eval mode, no gradients), a = softmax(alpha) per
   cell type and the current accuracy acc0 of the supernet.
2. `samplings` times, a CMA-ES (the `cmaes` package) with mean = a + 0.01 * N(0, 1) (both cell
   types flattened), step size sigma = max(1 / (epoch + 1), sigma_min) and `population`
   candidates per generation runs `generations` generations. A candidate z, one row z_e per
   edge and cell type, is scored by the compound fitness (lower is better)
       u_e = z_e / |z_e|,   mixing weights m_e = softmax(u_e)
       s   = mean over the two cell types of mean over edges of (cos(a_e, u_e) + 1) / 2
       f   = CE(m) + lambda * s   if acc(m) >= acc0   (as good: pushed away from the current alpha)
             CE(m) - lambda * s   otherwise            (worse: pulled toward it)
   The sampling keeps its lowest-fitness candidate.
3. Each sampling's best candidate gets its step direction d: d = softmax(m) per row with
   `update: double_softmax` (EG-NAS's code: `explore_architecture` applies softmax to the
   softmax(u) that `CFF` returns, `updated_alpha` adds the result), d = m with `update: softmax`.
   With double_softmax the candidates' accuracy is re-scored with d as mixing weights, as
   explore_architecture does. The most accurate one wins (ties: the earlier sampling) and
   alpha <- alpha + step * d (per cell type).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from bionas import distributed
from bionas.search.epochs import (EpochSearch, SearchRun, WeightTrainingOptions, forward_pass, graphed_weight_step,
                                  late_start_errors)
from bionas.seeds import stream_generator, stream_seed
from bionas.space.genotype import CELL_TYPES
from bionas.training import eval_mode

MEAN_NOISE = 1e-2  # EG-NAS: mean = softmax(alpha) + 1e-2 * randn
_NOISE, _CMA = 11, 12  # random streams of this strategy


def candidate_rows(z: torch.Tensor) -> torch.Tensor:
    """u = z / |z| per row (the candidate as EG-NAS scores it)."""
    return z / z.norm(dim=-1, keepdim=True)


def candidate_mixing(z: torch.Tensor) -> torch.Tensor:
    """The mixing weights a candidate stands for: softmax(z / |z|) per row."""
    return F.softmax(candidate_rows(z), dim=-1)


def candidate_weights(z: np.ndarray, shape) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(unit rows u, mixing weights m) per cell type of a CMA-ES sample z (both cell types flattened)."""
    rows = torch.from_numpy(z).to(torch.float32).view(2, *shape)
    return ({k: candidate_rows(rows[i]) for i, k in enumerate(CELL_TYPES)},
            {k: candidate_mixing(rows[i]) for i, k in enumerate(CELL_TYPES)})


def similarity(current: dict[str, torch.Tensor], candidate: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean over cell types of mean over edges of (cos(current row, candidate row) + 1) / 2, in [0, 1]."""
    parts = [((F.cosine_similarity(current[k], candidate[k], dim=-1) + 1) / 2).mean() for k in CELL_TYPES]
    return sum(parts) / len(parts)


def compound_fitness(loss: float, accuracy: float, current_accuracy: float, similarity: float,
                     weight: float) -> float:
    """EG-NAS's CFF: loss + weight * similarity when the candidate is at least as accurate as the
    current architecture (push it away: explore), loss - weight * similarity otherwise (pull it in)."""
    if accuracy >= current_accuracy:
        return loss + weight * similarity
    return loss - weight * similarity


def step_direction(mixing: dict[str, torch.Tensor], update: str) -> dict[str, torch.Tensor]:
    """What alpha moves along: softmax(m) per row ('double_softmax', EG-NAS's code) or m ('softmax')."""
    if update == "softmax":
        return mixing
    return {kind: F.softmax(m, dim=-1) for kind, m in mixing.items()}


def update_alphas(alphas: dict[str, torch.Tensor], direction: dict[str, torch.Tensor], step: float) -> None:
    """alpha <- alpha + step * d, in place, per cell type."""
    with torch.no_grad():
        for kind in CELL_TYPES:
            alphas[kind].add_(step * direction[kind].to(alphas[kind].device, alphas[kind].dtype))


class EGNAS(EpochSearch):
    name = "egnas"
    description = "EG-NAS: weights by SGD, the alphas moved toward the best of CMA-ES samples (compound fitness)."
    space_defaults = {"partial_channels": 4}  # EG-NAS searches a partial-channel supernet, K = 4

    class Options(WeightTrainingOptions):
        epochs: int = Field(default=50, gt=0, description="Search epochs (EG-NAS: 50).")
        batch_size: int = Field(default=256, gt=0, description="Minibatch of the weight steps (EG-NAS: 256).")
        lr: float = Field(default=0.1, gt=0, description="Initial learning rate of the weights (EG-NAS: 0.1).")
        lr_min: float = Field(default=0.0, ge=0, description="Final learning rate of the cosine schedule (EG-NAS: 0).")
        start_epoch: int = Field(
            default=15, ge=0, description="First epoch with an architecture update (EG-NAS warm start: 15)."
        )
        population: int = Field(default=50, ge=2, description="CMA-ES population size (EG-NAS: 50).")
        samplings: int = Field(default=3, gt=0, description="Independent CMA-ES samplings per epoch (EG-NAS: 3).")
        generations: int = Field(
            default=1, gt=0, description="CMA-ES generations per sampling (EG-NAS's code: 1, ask then tell)."
        )
        sigma_min: float = Field(
            default=0.02, gt=0, description="Step size sigma = max(1 / (epoch + 1), sigma_min) (EG-NAS: 0.02)."
        )
        similarity_weight: float = Field(
            default=0.4, ge=0, description="lambda of the compound fitness CE +- lambda * similarity (EG-NAS: 0.4)."
        )
        alpha_step: float = Field(default=0.1, gt=0, description="alpha <- alpha + step * d (EG-NAS: 0.1).")
        update: Literal["double_softmax", "softmax"] = Field(
            default="double_softmax",
            description="The step direction d of the winner, and the mixing its accuracy is compared with: "
            "'double_softmax' softmax(softmax(u)) as EG-NAS's code; 'softmax' softmax(u), the mixing its fitness "
            "was scored with (moves the alphas about 20x harder with 22 candidates).",
        )
        fitness_batch_size: int = Field(
            default=128, gt=0, description="The one batch candidates are scored on (EG-NAS: batch_size / 2 = 128)."
        )

    @classmethod
    def spec_errors(cls, options, spec) -> list[str]:
        return late_start_errors("start_epoch", options.start_epoch, options.epochs)

    def prepare(self, run: SearchRun) -> None:
        super().prepare(run)
        # Every rank scores candidates on the same batch (the population is spread over the ranks).
        run.loaders["fitness"] = run.data.loader("arch", self.options.fitness_batch_size, augment=False, shard=False)

    def before_epoch(self, run: SearchRun, epoch: int) -> dict[str, Any]:
        return {"evolution": self.evolve(run, epoch) if epoch >= self.options.start_epoch else None}

    def train_step(self, run: SearchRun, epoch: int, x, y):
        return graphed_weight_step(run, x, y, self.options.grad_clip)

    @torch.no_grad()
    def evolve(self, run: SearchRun, epoch: int) -> dict[str, Any]:
        """The epoch's architecture update; returns what the history records of it."""
        from cmaes import CMA

        o, supernet, seed = self.options, run.supernet, run.data.seed
        loader = run.loaders["fitness"]
        loader.set_epoch(epoch)
        x, y = next(iter(loader))
        alphas = {k: getattr(supernet, f"alphas_{k}") for k in CELL_TYPES}
        current = {k: F.softmax(a.float(), dim=-1).cpu() for k, a in alphas.items()}
        shape = current["normal"].shape
        with eval_mode(supernet):
            # Each rank has its own BatchNorm statistics: every rank compares with rank 0's accuracy.
            current_accuracy = distributed.broadcast(self._accuracy(run, x, y))
            noise = torch.randn(2, *shape, generator=stream_generator(seed, epoch, _NOISE), dtype=torch.float64)
            mean = (torch.stack([current[k].double() for k in CELL_TYPES]) + MEAN_NOISE * noise).flatten()
            sigma = max(1.0 / (epoch + 1), o.sigma_min)
            best = []  # per sampling: (accuracy, fitness, z) of its lowest-fitness candidate
            for sampling in range(o.samplings):
                cma = CMA(mean=mean.numpy(), sigma=sigma, population_size=o.population,
                          seed=stream_seed(seed, epoch, sampling, _CMA) % 2**32)
                found = None
                for _ in range(o.generations):
                    asked = [cma.ask() for _ in range(o.population)]  # the same on every rank (same seed)
                    scores = self._population_fitness(run, x, y, asked, current, current_accuracy)
                    for z, (fitness, accuracy) in zip(asked, scores):
                        if found is None or fitness < found[1]:
                            found = (accuracy, fitness, z)
                    cma.tell([(z, fitness) for z, (fitness, _) in zip(asked, scores)])
                best.append(found)
            directions = [step_direction(candidate_weights(z, shape)[1], o.update) for _, _, z in best]
            if o.update == "double_softmax":
                # EG-NAS's explore_architecture compares the samplings under the mixing it then adds
                best = [(distributed.broadcast(self._accuracy(run, x, y, d)), fitness, z)
                        for (_, fitness, z), d in zip(best, directions)]
        # The scores were gathered from the ranks, the same on each: every rank applies the same update.
        winner = max(range(len(best)), key=lambda i: (best[i][0], -i))
        accuracy, fitness, z = best[winner]
        update_alphas(alphas, directions[winner], o.alpha_step)
        return {"sigma": sigma, "current_accuracy": current_accuracy, "best_accuracy": accuracy,
                "best_fitness": fitness, "sampling": winner}

    def _population_fitness(self, run, x, y, population: list[np.ndarray], current, current_accuracy: float):
        """(fitness, accuracy) of every candidate; in a distributed run each rank scores every world_size-th one."""
        rank, world_size = run.runtime.rank, run.runtime.world_size
        shape = current["normal"].shape
        indices = [i for i in range(len(population)) if i % world_size == rank]
        candidates = [candidate_weights(population[i], shape) for i in indices]
        scores = self._scores(run, x, y, [mixing for _, mixing in candidates]).tolist()  # one host read
        mine = {i: (compound_fitness(loss, accuracy, current_accuracy, similarity(current, rows).item(),
                                     self.options.similarity_weight), accuracy)
                for i, (rows, _), (loss, accuracy) in zip(indices, candidates, scores)}
        scored = {i: f for part in distributed.gather(mine) for i, f in part.items()}
        return [scored[i] for i in range(len(population))]

    def _scores(self, run, x, y, mixings: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """(loss, accuracy) on the batch under each mixing, one row each, on the device: no host read, each
        pass under runtime.cuda_graphs one replay (the mixing copied into its static inputs)."""
        scores = torch.empty(len(mixings), 2, device=run.device)
        for row, mixing in zip(scores, mixings):
            loss, logits = forward_pass(run, x, y, mixing, name="fitness")
            row.copy_(torch.stack([loss, (logits.argmax(1) == y).float().mean()]))  # before the next replay
        return scores

    def _accuracy(self, run, x, y, mixing=None) -> float:
        """Accuracy on the batch of the current alphas, or of the given mixing weights."""
        if mixing is not None:
            return self._scores(run, x, y, [mixing])[0, 1].item()
        _, logits = run.loss_and_logits(x, y)
        return (logits.argmax(1) == y).float().mean().item()
