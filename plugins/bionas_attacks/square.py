"""Square attack (Andriushchenko et al. 2020), linf: a black-box random search that only reads scores.

Start from vertical stripes of +-eps; each query changes one random square window
to +-eps per channel and keeps the change if the margin loss z_y - max_{i!=y} z_i
drops. The window's side shrinks on the published schedule. All images still
unfooled are queried as one batch, with one window position per query for the
batch (as AutoAttack's code) and signs drawn per image and channel. By default,
as the paper's code, the signs are drawn among those that change the image
(`redraw`); AutoAttack's Square (redraw: false) spends a query on such windows.

Only the window is touched: the images still being attacked are kept as one
tensor, a query writes the window into it in place (a view, no index tensors) and
puts the old one back where the loss did not drop. A query costs one forward pass
plus work on the window alone, which shrinks to a few pixels within the first 5%
of the budget.
"""

from __future__ import annotations

import math

import torch
from pydantic import Field

import bionas
from bionas.attacks import AttackError
from bionas.fractions import Fractional
from bionas_attacks.gradient import EPS_DESCRIPTION
from bionas_attacks.losses import margin

# Fraction of the iterations (out of 10,000) after which p is halved again.
P_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, iteration: int, queries: int) -> float:
    """p: the share of the image a window covers at this iteration (0-based; halved on the schedule)."""
    scaled = int(iteration / queries * 10000)
    return p_init / 2 ** sum(scaled > t for t in P_SCHEDULE)


def window_side(p: float, h: int, w: int) -> int:
    """round(sqrt(p h w)), at least 1 and (as the published code) smaller than the image where it can be."""
    side = max(round(math.sqrt(p * h * w)), 1)
    return min(side, min(h, w) - 1) if min(h, w) > 1 else 1


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
        redraw: bool = Field(
            default=True,
            description="Draw a window's signs among those that change the image, as the paper's code; "
            "false: AutoAttack's Square, which spends a query on a window that changes nothing.",
        )
        seed: int = Field(default=0, ge=0, description="Seed of the random search (a torch.Generator).")

    def perturb(self, model, x, y, generator):
        if x.dim() != 4:
            raise AttackError("square takes images N x C x H x W")
        o = self.options
        n, c, h, w = x.shape
        dev = x.device
        stripes = torch.randint(0, 2, (n, c, 1, w), generator=generator, device=dev).to(x.dtype) * 2 - 1
        best = (x + o.eps * stripes).clamp(0.0, 1.0)
        with torch.no_grad():
            loss = margin(model(best), y)
        queries = torch.ones(n, device=dev)
        # The images still unfooled, compacted: index, label, loss, current best, and the two values
        # (+eps, -eps, clamped) each pixel can take.
        active = (loss > 0).nonzero().squeeze(1)
        labels, current_loss, current = y[active], loss[active], best[active]
        raised, lowered = (x[active] + o.eps).clamp(0.0, 1.0), (x[active] - o.eps).clamp(0.0, 1.0)
        for iteration in range(o.queries - 1):
            m = len(active)
            if m == 0:
                break
            side = window_side(square_fraction(o.p_init, iteration, o.queries), h, w)
            # One window position for the batch, as AutoAttack's code: each image's windows are still
            # uniform and independent of its past, and the window is a view (no index tensors).
            u, v = torch.rand(2, generator=generator, device=dev, dtype=torch.float64).tolist()
            top, left = min(int(u * (h - side + 1)), h - side), min(int(v * (w - side + 1)), w - side)
            rows, cols = slice(top, top + side), slice(left, left + side)
            spot = current[:, :, rows, cols]
            old, up, down = spot.clone(), raised[:, :, rows, cols], lowered[:, :, rows, cols]
            if o.redraw:
                plus = signs_that_change(up, down, old, generator)
            else:
                plus = torch.rand(m, c, generator=generator, device=dev) < 0.5
            new = torch.where(plus.view(m, c, 1, 1), up, down)
            spot.copy_(new)
            with torch.no_grad():
                new_loss = margin(model(current), labels)
            better = new_loss < current_loss
            spot.copy_(torch.where(better.view(m, 1, 1, 1), new, old))
            current_loss = torch.where(better, new_loss, current_loss)
            fooled = current_loss <= 0
            if fooled.any():
                best[active[fooled]] = current[fooled]
                queries[active[fooled]] = iteration + 2
                keep = ~fooled
                active, labels, current_loss = active[keep], labels[keep], current_loss[keep]
                current, raised, lowered = current[keep], raised[keep], lowered[keep]
        best[active] = current
        queries[active] = o.queries
        return best, queries


def signs_that_change(raised, lowered, old, generator) -> torch.Tensor:
    """Per image and channel, whether the window goes to +eps (True) or -eps: a uniform draw among
    the sign choices that change the window (m x C, from windows m x C x s x s).

    The paper's code redraws signs that would leave the whole window as it is (already at those
    signs, or clamped at 0 or 1), so that no query is wasted. This draws once from the
    distribution that loop ends in: channel by channel, each sign with probability proportional
    to the number of sign choices for the remaining channels that make the window change.
    A window no choice can change (eps 0) gets a uniform draw.
    """
    m, c = old.shape[:2]
    # still[0]: +eps leaves this channel's window as it is; still[1]: -eps does (2 x m x C).
    still = (torch.stack((raised, lowered)) == old).flatten(3).all(3)
    uniform = torch.rand(m, c, generator=generator, device=old.device, dtype=old.dtype)
    if c == 1:
        weight_up, weight_down = (~still).to(old.dtype).unbind(0)
        total = weight_up + weight_down
        return uniform < torch.where(total > 0, weight_up / total.clamp_min(1), 0.5)
    # Share of the sign choices of the channels after j that leave all of them unchanged.
    half = still.sum(0).to(old.dtype) / 2
    after = torch.cat([half.flip(1).cumprod(1).flip(1)[:, 1:], half.new_ones(m, 1)], dim=1)
    unchanged_so_far = torch.ones(m, dtype=torch.bool, device=old.device)
    plus = torch.empty(m, c, dtype=torch.bool, device=old.device)
    for j in range(c):
        # Valid completions (relative) of each sign: all, unless every channel so far and this one
        # stay unchanged, when those where every later channel stays unchanged too are lost.
        weight_up = 1 - (unchanged_so_far & still[0, :, j]) * after[:, j]
        weight_down = 1 - (unchanged_so_far & still[1, :, j]) * after[:, j]
        total = weight_up + weight_down
        plus[:, j] = uniform[:, j] < torch.where(total > 0, weight_up / total.clamp_min(1e-12), 0.5)
        unchanged_so_far &= torch.where(plus[:, j], still[0, :, j], still[1, :, j])
    return plus
