"""APGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an ensemble of
diverse parameter-free attacks"): PGD with momentum and a step size that halves at checkpoints
when the loss stops improving, restarting from the best point found. CE or DLR loss.
"""

from __future__ import annotations

import torch
from pydantic import Field

import bionas
from bionas.attacks import input_gradient, normalized, per_image, predict, project, random_start
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


class APGD(bionas.Attack):
    """Auto-PGD; keeps, per image, an iterate that fools the model if any did, else the best-loss one."""

    name = "apgd"
    description = "Auto-PGD (Croce & Hein 2020): step-size-free PGD with momentum, CE or DLR loss."

    class Options(IterativeOptions):
        steps: int = Field(default=100, ge=1, description="Gradient steps per run (Croce & Hein: 100).")
        rho: float = Field(
            default=0.75,
            gt=0,
            le=1,
            description="Halve the step where the loss rose on fewer than rho of the steps since the last checkpoint.",
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

        adv = random_start(x, o.eps, o.norm, generator) if o.random_start else x.clone()
        grad, logits, loss = input_gradient(model, adv, loss_fn, o.gradient)
        fooled = logits.argmax(1) != y
        found = adv.clone()  # first fooling iterate per image
        best, best_loss, best_grad = adv.clone(), loss.clone(), grad.clone()
        step = per_image(torch.full((n,), 2.0 * o.eps, device=x.device, dtype=x.dtype), x)
        previous, last_loss = adv.clone(), loss.clone()
        rises = torch.zeros(n, device=x.device)
        since_check = 0
        checked_loss = best_loss.clone()
        halved_last = torch.ones(n, dtype=torch.bool, device=x.device)

        for i in range(o.steps):
            # z = P(x_k + eta * dir); x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1})), a = 1 first.
            z = project(x, adv + step * normalized(grad, o.norm), o.eps, o.norm)
            a = MOMENTUM if i > 0 else 1.0
            adv, previous = project(x, adv + a * (z - adv) + (1 - a) * (adv - previous), o.eps, o.norm), adv
            if i < o.steps - 1:
                grad, logits, loss = input_gradient(model, adv, loss_fn, o.gradient)
            else:  # the last iterate needs no gradient: `steps` gradient computations in all
                logits = predict(model, adv)
                loss = loss_fn(logits)
            now_fooled = logits.argmax(1) != y
            # torch.where, not boolean indexing: no host-device sync inside the loop.
            found = torch.where(per_image(now_fooled & ~fooled, x), adv, found)
            fooled |= now_fooled

            rises += (loss > last_loss).float()
            last_loss = loss
            improved = loss > best_loss
            best, best_loss = torch.where(per_image(improved, x), adv, best), torch.where(improved, loss, best_loss)
            if i < o.steps - 1:
                best_grad = torch.where(per_image(improved, x), grad, best_grad)

            since_check += 1
            if since_check == period and i < o.steps - 1:
                # Halve where the loss rose too rarely, or where the step was kept last time and
                # the best loss has not improved since; those restart from their best point.
                halve = (rises < o.rho * period) | (~halved_last & (best_loss <= checked_loss))
                back = per_image(halve, x)
                step = torch.where(back, step / 2.0, step)
                adv, previous = torch.where(back, best, adv), torch.where(back, best, previous)
                grad = torch.where(back, best_grad, grad)
                last_loss = torch.where(halve, best_loss, last_loss)
                halved_last, checked_loss = halve, best_loss.clone()
                rises.zero_()
                since_check = 0
                period = max(period - decrement, min_period)

        adversarial = torch.where(per_image(fooled, x), found, best)
        return adversarial, fooled, o.steps
