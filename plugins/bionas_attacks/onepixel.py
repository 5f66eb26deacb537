"""One-pixel attack (Su, Vargas & Sakurai 2019): differential evolution over (row, col, colour).

A candidate sets `pixels` pixels to new colours; DE/rand/1 without crossover
(mutant = a + F (b - c) from three other members, kept if it lowers the true
class's probability), population 400, at most 100 generations, F = 0.5. An
image stops as soon as any candidate fools the model.

Everything is batched: the population of every image still being attacked is
one tensor, and its fitness is computed as batches of perturbed images
(`chunk` images per forward pass) with no Python loop over images or
candidates. The best chunk depends on the model: an MLP runs fastest on a few
thousand images per pass, a CNN, whose activations per image are far larger, on
about a hundred (benchmarks/attacks.py --chunks). So by default, on the CPU, the
first pass measures the model's activations per image (forward hooks) and the
chunk holds ACTIVATION_BYTES of them.
"""

from __future__ import annotations

import torch
from pydantic import Field

import bionas
from bionas.attacks import AttackError

# Activations per forward pass on the CPU when `chunk` is not given: about the size of a last-level
# cache, measured best for an MLP and a CNN (docs/attacks.md).
ACTIVATION_BYTES = 16 * 2**20
PROBE = 32  # images in the measured first pass
MIN_CHUNK, MAX_CHUNK = 16, 8192  # MAX_CHUNK is also the chunk on other devices (not measured there)


def distinct_others(rows: int, population: int, generator: torch.Generator, device) -> torch.Tensor:
    """For each member i of each population, 3 distinct member indices, all different from i.

    Exactly uniform: draw ranks among the remaining indices and shift them past the ones taken.
    Returns rows x population x 3.
    """
    if population < 4:
        raise AttackError("onepixel needs a population of at least 4 for DE/rand/1")
    taken = torch.arange(population, device=device).expand(rows, population).unsqueeze(-1)
    picks = []
    for k in range(3):
        r = (torch.rand(rows, population, generator=generator, device=device) * (population - 1 - k)).long()
        excluded = torch.cat([taken, *picks], dim=-1).sort(dim=-1).values
        for j in range(excluded.shape[-1]):  # shift past each excluded index, in increasing order
            r = r + (r >= excluded[..., j]).long()
        picks.append(r.unsqueeze(-1))
    return torch.cat(picks, dim=-1)


class OnePixel(bionas.Attack):
    """Black-box L0 attack; its budget is the number of pixels changed, not an eps."""

    name = "onepixel"
    description = "One-pixel attack (Su et al. 2019): differential evolution over pixel position and colour."
    family = "black-box"
    budget = "pixels"
    work_unit = "queries"

    class Options(bionas.PluginOptions):
        pixels: int = Field(default=1, ge=1, description="Pixels an adversarial image may change (Su et al.: 1).")
        population: int = Field(default=400, ge=4, description="Candidates per image (Su et al.: 400).")
        generations: int = Field(default=100, ge=0, description="Generations at most (Su et al.: 100).")
        mutation: float = Field(
            default=0.5, gt=0, le=2, description="Differential weight F of DE/rand/1 (Su et al.: 0.5)."
        )
        chunk: int | None = Field(
            default=None,
            ge=1,
            description="Perturbed images per forward pass when scoring candidates; null: on the CPU as many as "
            "keep the model's activations near 16 MiB (measured on the first pass), elsewhere 8192.",
        )
        seed: int = Field(default=0, ge=0, description="Seed of the evolution (a torch.Generator).")

    @property
    def variant(self) -> str:
        return f"{self.name} ({self.options.pixels} px)" if self.options.pixels > 1 else self.name

    def budget_excess(self, images, adversarial):
        changed = (adversarial != images).reshape(images.shape[0], images.shape[1], -1).any(dim=1).sum(dim=1)
        return (changed - self.options.pixels).to(images.dtype)

    def perturb(self, model, x, y, generator):
        if x.dim() != 4:
            raise AttackError("onepixel takes images N x C x H x W")
        o = self.options
        n, c, h, w = x.shape
        dev = x.device
        # A candidate: pixels x (row, col, colour...), rows/cols continuous in [0, h) and [0, w), truncated
        # when applied (as Su et al.'s code), so that every pixel is equally likely.
        upper = torch.tensor([h, w] + [1.0] * c, device=dev, dtype=x.dtype)

        def uniform(shape):
            return torch.rand(shape, generator=generator, device=dev, dtype=x.dtype) * upper

        population = uniform((n, o.population, o.pixels, 2 + c))
        colour = 0.5 + 0.5 * torch.randn(population[..., 2:].shape, generator=generator, device=dev, dtype=x.dtype)
        population[..., 2:] = colour.clamp(0.0, 1.0)  # Su et al.: colours ~ N(128, 127) of 255
        forward = ChunkedForward(model, o.chunk if o.chunk is not None or dev.type == "cpu" else MAX_CHUNK)
        fitness, fools = self._score(forward, x, y, population, torch.arange(n, device=dev))
        queries = torch.full((n,), float(o.population), device=dev)  # on the device: counting needs no sync
        done = torch.zeros(n, dtype=torch.bool, device=dev)
        winner = population[:, 0].clone()  # per image: the candidate returned
        self._record(done, winner, torch.arange(n, device=dev), population, fools)
        for _ in range(o.generations):
            todo = (~done).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            members = population[todo]
            others = distinct_others(len(todo), o.population, generator, dev)
            pick = others.view(len(todo), -1)[..., None, None].expand(-1, -1, o.pixels, 2 + c)
            a, b, d = members.gather(1, pick).view(len(todo), o.population, 3, o.pixels, 2 + c).unbind(2)
            mutant = a + o.mutation * (b - d)
            outside = (mutant < 0) | (mutant > upper)  # redrawn uniformly within the bounds
            mutant = torch.where(outside, uniform(mutant.shape), mutant)
            new_fitness, new_fools = self._score(forward, x, y, mutant, todo)
            queries[todo] += o.population
            self._record(done, winner, todo, mutant, new_fools)
            better = new_fitness < fitness[todo]  # selection: a mutant replaces its parent if better
            population[todo] = torch.where(better[..., None, None], mutant, members)
            fitness[todo] = torch.where(better, new_fitness, fitness[todo])
        # Images never fooled: the candidate with the lowest true-class probability.
        best = population[torch.arange(n, device=dev), fitness.argmin(dim=1)]
        winner = torch.where(done[:, None, None], winner, best)
        return self._apply(x, winner), queries

    @staticmethod
    def _record(done, winner, image_index, candidates, fools):
        """Images of `image_index` that a candidate fooled are done; keep their first fooling candidate."""
        hit = fools.any(dim=1)
        first = fools.int().argmax(dim=1)
        rows = image_index[hit]
        winner[rows] = candidates[hit, first[hit]]
        done[rows] = True

    @staticmethod
    def _apply(images: torch.Tensor, candidates: torch.Tensor, in_place: bool = False) -> torch.Tensor:
        """Images (m x C x H x W) with the pixels of their candidates (m x pixels x (2 + C)) set."""
        m, c, h, w = images.shape
        row = candidates[..., 0].long().clamp(0, h - 1)  # truncation; the clamp catches a coordinate of exactly h
        col = candidates[..., 1].long().clamp(0, w - 1)
        index = (row * w + col).unsqueeze(1).expand(m, c, -1)
        out = images.reshape(m, c, h * w) if in_place else images.reshape(m, c, h * w).clone()
        out.scatter_(2, index, candidates[..., 2:].transpose(1, 2).clamp(0.0, 1.0))
        return out.view(m, c, h, w)

    def _score(self, forward, x, y, candidates, image_index):
        """(true-class probability, fooled) of every candidate: tensors of image_index x population."""
        m, p = candidates.shape[:2]
        flat = candidates.reshape(m * p, *candidates.shape[2:])
        owner = image_index.repeat_interleave(p)
        probabilities, fooled = [], []
        start = 0
        with torch.no_grad():
            while start < m * p:
                part = slice(start, start + forward.size)
                start = part.stop
                logits = forward(self._apply(x[owner[part]], flat[part], in_place=True))  # a fresh gather
                labels = y[owner[part]]
                probabilities.append(logits.softmax(dim=1).gather(1, labels[:, None]).squeeze(1))
                fooled.append(logits.argmax(dim=1) != labels)
        return torch.cat(probabilities).view(m, p), torch.cat(fooled).view(m, p)


class ChunkedForward:
    """The model, called on chunks of `size` images; without a chunk, the first call (PROBE images)
    measures the bytes of every module's output per image and sets the chunk to ACTIVATION_BYTES."""

    def __init__(self, model, chunk: int | None):
        self.model, self.chunk = model, chunk

    @property
    def size(self) -> int:
        return self.chunk if self.chunk is not None else PROBE

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.chunk is not None:
            return self.model(images)
        sizes = [images.numel() * images.element_size()]

        def record(module, inputs, output):
            if torch.is_tensor(output):
                sizes.append(output.numel() * output.element_size())

        handles = [module.register_forward_hook(record) for module in self.model.modules()]
        try:
            logits = self.model(images)
        finally:
            for handle in handles:
                handle.remove()
        per_image = sum(sizes) / len(images)
        self.chunk = int(min(max(ACTIVATION_BYTES // per_image, MIN_CHUNK), MAX_CHUNK))
        return logits
