"""Square attack (Andriushchenko et al. 2020), linf: a black-box random search that only reads scores.

Start from vertical stripes of +-eps; each query changes one random square window
(per image) to +-eps per channel and keeps the change if the margin loss
z_y - max_{i!=y} z_i drops. The window's side shrinks on the published schedule.
Every image has its own window; all images still unfooled are queried as one batch.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

import bionas
from bionas.attacks import AttackError, predict
from bionas.fractions import Fractional
from bionas_attacks.gradient import EPS_DESCRIPTION
from bionas_attacks.losses import margin

# Draws of a window's signs before a query is spent on an unchanged image anyway.
REDRAWS = 10

# Fraction of the iterations (out of 10,000) after which p is halved again.
P_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, iteration: int, queries: int) -> float:
    """p: the share of the image a window covers at this iteration (halved on the schedule)."""
    scaled = int(iteration / queries * 10000)
    return p_init / 2 ** sum(scaled > t for t in P_SCHEDULE)


class Square(bionas.Attack):
    """Score-based black-box linf attack; reports the model queries spent on each image."""

    name = "square"
    description = "Square attack (Andriushchenko et al. 2020): black-box linf random search with score queries."
    family = "black-box"
    work_unit = "queries"

    class Options(bionas.PluginOptions):
        eps: Fractional = Field(default=8 / 255, description=EPS_DESCRIPTION)
        queries: int = Field(default=5000, ge=1, description="Model queries per image, at most (published: 5000).")
        p_init: float = Field(
            default=0.8, gt=0, le=1, description="Initial share of the image a square covers (AutoAttack: 0.8)."
        )
        seed: int = Field(default=0, ge=0, description="Seed of the random search (a torch.Generator).")

    def perturb(self, model, x, y, generator):
        if x.dim() != 4:
            raise AttackError("square takes images N x C x H x W")
        o = self.options
        n, c, h, w = x.shape
        dev = x.device

        def sign(*shape):
            return torch.randint(0, 2, shape, generator=generator, device=dev).to(x.dtype) * 2 - 1

        best = (x + o.eps * sign(n, c, 1, w)).clamp(0.0, 1.0)
        loss = margin(predict(model, best), y)
        queries = torch.ones(n, device=dev)  # on the device: counting needs no sync; Attack.run moves it
        rows = torch.arange(h, device=dev).view(1, 1, h, 1)
        cols = torch.arange(w, device=dev).view(1, 1, 1, w)
        for iteration in range(1, o.queries):
            todo = (loss > 0).nonzero().squeeze(1)
            if len(todo) == 0:
                break
            m = len(todo)
            p = square_fraction(o.p_init, iteration, o.queries)
            side = min(max(round(math.sqrt(p * h * w)), 1), min(h, w) - 1) if min(h, w) > 1 else 1
            top = torch.randint(0, h - side + 1, (m, 1, 1, 1), generator=generator, device=dev)
            left = torch.randint(0, w - side + 1, (m, 1, 1, 1), generator=generator, device=dev)
            window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
            xs, current = x[todo], best[todo]
            delta = sign(m, c, 1, 1)
            # As the published code: redraw the signs of a window that would leave the image unchanged
            # (already at those signs, or clamped at 0 or 1), so that no query is wasted. Bounded, as
            # some windows (eps 0) cannot change.
            for _ in range(REDRAWS):
                candidate = torch.where(window, xs + o.eps * delta, current).clamp(0.0, 1.0)
                same = (candidate == current).flatten(1).all(1)
                if not same.any():
                    break
                delta = torch.where(same.view(-1, 1, 1, 1), sign(m, c, 1, 1), delta)
            new_loss = margin(predict(model, candidate), y[todo])
            queries[todo] += 1
            better = new_loss < loss[todo]
            best[todo[better]] = candidate[better]
            loss[todo[better]] = new_loss[better]
        return best, queries
