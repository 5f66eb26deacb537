"""APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks"): PGD with momentum and a step size that halves at checkpoints
when the loss stops improving, restarting from the best point found. CE or DLR loss.

The algorithm is AutoAttack's code (`autoattack/autopgd_base.py`, linf and l2), step for step,
so that robust accuracies compare with published AutoAttack numbers:
* the start is a random point on the ball's boundary (linf: uniform noise divided by its largest
  magnitude, so one coordinate sits at +-eps; l2: Gaussian noise scaled to norm eps), clamped to [0, 1];
* step size 2 eps; x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1})), z = P(x_k + step dir),
  a = 1 on the first step and 0.75 after;
* at each checkpoint the step halves where the loss rose on at most rho of the steps since the
  last one (`<=`), or where it was not halved last time and the best loss has not improved since;
  those images jump back to their best point and its gradient, and keep x_{k-1} (the momentum
  term) and the loss history as they were;
* the rises are counted against the loss of the step before, and the first step's against 0
  (AutoAttack reads an unfilled row of its loss history there, not the start point's loss);
* per image it returns the last iterate that fooled the model, else the highest-loss iterate.
"""

from __future__ import annotations

import torch
from pydantic import Field

import bionas
from bionas.attacks import input_gradient, lp_norm, normalized, per_image, predict, project
from bionas_attacks.gradient import IterativeOptions, restart_loop
from bionas_attacks.losses import LOSSES

MOMENTUM = 0.75  # alpha of the paper


def checkpoint_lengths(steps: int) -> tuple[int, int, int]:
    """(first period, shortest period, decrement): the checkpoints w_j of the paper, as periods.

    The paper: p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), w_j = ceil(p_j * steps).
    Computed as AutoAttack's code does: periods int(0.22 * steps), each int(0.03 * steps) shorter than the
    last, never below int(0.06 * steps) (rounded down, at least 1).
    """
    return max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)


def boundary_start(images: torch.Tensor, eps: float, norm: str, generator: torch.Generator) -> torch.Tensor:
    """AutoAttack's APGD start: a random direction scaled onto the eps-sphere of the norm, clamped to [0, 1]."""
    shape, device, dtype = images.shape, images.device, images.dtype
    if norm == "linf":
        noise = 2 * torch.rand(shape, generator=generator, device=device, dtype=dtype) - 1
    else:
        noise = torch.randn(shape, generator=generator, device=device, dtype=dtype)
    direction = noise / per_image(lp_norm(noise, norm) + 1e-12, noise)
    return (images + eps * direction).clamp(0.0, 1.0)


class APGD(bionas.Attack):
    """Auto-PGD as AutoAttack runs it; per image, the last fooling iterate if any, else the best-loss one."""

    name = "apgd"
    description = "Auto-PGD (Croce & Hein 2020): step-size-free PGD with momentum, CE or DLR loss."

    class Options(IterativeOptions):
        random_start: bool = Field(
            default=True,
            description="Start each restart at a random point on the ball's boundary (as AutoAttack); "
            "false: at the clean image.",
        )
        steps: int = Field(default=100, ge=1, description="Gradient steps per run (Croce & Hein: 100).")
        rho: float = Field(
            default=0.75,
            gt=0,
            le=1,
            description="Halve the step where the loss rose on at most rho of the steps since the last checkpoint.",
        )

    @property
    def variant(self) -> str:
        return f"{self.name}-{self.options.loss}"  # apgd-ce, apgd-dlr as in AutoAttack

    def perturb(self, model, images, labels, generator):
        return restart_loop(self, model, images, labels, generator, self._single_run)

    def _single_run(self, model, x, y, generator, check):
        o = self.options
        loss_fn = LOSSES[o.loss](y)
        n = len(x)
        period, min_period, decrement = checkpoint_lengths(o.steps)

        adv = boundary_start(x, o.eps, o.norm, generator) if o.random_start else x.clone()
        grad, logits, loss = input_gradient(model, adv, loss_fn, o.gradient)
        fooled = logits.argmax(1) != y
        fooling = adv.clone()  # per image, the last iterate that fooled the model
        best, best_loss, best_grad = adv.clone(), loss.clone(), grad.clone()
        step = per_image(torch.full((n,), 2.0 * o.eps, device=x.device, dtype=x.dtype), x)
        previous = adv.clone()
        last_loss = torch.zeros_like(loss)  # AutoAttack compares the first step's loss with 0
        rises = torch.zeros(n, device=x.device)
        since_check = 0
        checked_loss = best_loss.clone()
        halved_last = torch.ones(n, dtype=torch.bool, device=x.device)

        for i in range(o.steps):
            z = project(x, adv + step * normalized(grad, o.norm), o.eps, o.norm)
            a = MOMENTUM if i > 0 else 1.0
            adv, previous = project(x, adv + (z - adv) * a + (adv - previous) * (1 - a), o.eps, o.norm), adv
            if i < o.steps - 1:
                grad, logits, loss = input_gradient(model, adv, loss_fn, o.gradient)
            else:  # the last iterate needs no gradient: `steps` gradient computations in all
                logits = predict(model, adv)
                loss = loss_fn(logits)
            now_fooled = logits.argmax(1) != y
            # torch.where, not boolean indexing: no host-device sync inside the loop.
            fooling = torch.where(per_image(now_fooled, x), adv, fooling)
            fooled |= now_fooled

            rises += (loss > last_loss).float()
            last_loss = loss
            improved = loss > best_loss
            best, best_loss = torch.where(per_image(improved, x), adv, best), torch.where(improved, loss, best_loss)
            if i < o.steps - 1:
                best_grad = torch.where(per_image(improved, x), grad, best_grad)

            since_check += 1
            if since_check == period and i < o.steps - 1:
                halve = (rises <= o.rho * period) | (~halved_last & (best_loss <= checked_loss))
                back = per_image(halve, x)
                step = torch.where(back, step / 2.0, step)
                adv = torch.where(back, best, adv)  # `previous` stays: the momentum term uses x_{k-1}
                grad = torch.where(back, best_grad, grad)
                halved_last, checked_loss = halve, best_loss.clone()
                rises.zero_()
                since_check = 0
                period = max(period - decrement, min_period)

        adversarial = torch.where(per_image(fooled, x), fooling, best)
        return adversarial, fooled, o.steps
