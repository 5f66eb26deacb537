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

Under runtime.cuda_graphs each iteration but the last replays one CUDA graph (docs/attacks.md):
an iteration maps the `State` tensors to new ones, checkpoint included (torch.where where the
schedule, fixed by `steps` alone and given as device tensors, says so); nothing reads a tensor
on the host.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from pydantic import Field

import bionas
from bionas.attacks import input_gradient, lp_norm, normalized, per_image, predict, project
from bionas_attacks.gradient import IterativeOptions, restart_loop
from bionas_attacks.losses import LOSSES

MOMENTUM = 0.75  # alpha of the paper


class State(NamedTuple):
    """What one APGD iteration reads and writes, per image (the inputs and outputs of its StepGraph)."""

    adv: torch.Tensor
    previous: torch.Tensor  # x_{k-1}, for the momentum term
    grad: torch.Tensor
    step: torch.Tensor
    fooling: torch.Tensor  # the last iterate that fooled the model
    fooled: torch.Tensor
    best: torch.Tensor  # the highest-loss iterate, its loss and gradient
    best_loss: torch.Tensor
    best_grad: torch.Tensor
    last_loss: torch.Tensor
    rises: torch.Tensor  # steps whose loss rose since the last checkpoint
    halved_last: torch.Tensor  # whether the last checkpoint halved the step
    checked_loss: torch.Tensor  # the best loss at the last checkpoint


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
        n = len(x)
        period, min_period, decrement = checkpoint_lengths(o.steps)

        adv = boundary_start(x, o.eps, o.norm, generator) if o.random_start else x.clone()
        x, y, adv = self.padded(x, y, adv)  # drawn before padding: the same start with graphs or not
        loss_fn = LOSSES[o.loss](y)
        grad, logits, loss = input_gradient(model, adv, loss_fn, o.gradient)
        state = State(
            adv=adv,
            previous=adv.clone(),
            grad=grad,
            step=per_image(torch.full((len(x),), 2.0 * o.eps, device=x.device, dtype=x.dtype), x),
            fooling=adv.clone(),  # per image, the last iterate that fooled the model
            fooled=logits.argmax(1) != y,
            best=adv.clone(),
            best_loss=loss.clone(),
            best_grad=grad.clone(),
            last_loss=torch.zeros_like(loss),  # AutoAttack compares the first step's loss with 0
            rises=torch.zeros(len(x), device=x.device),
            halved_last=torch.ones(len(x), dtype=torch.bool, device=x.device),
            checked_loss=loss.clone(),
        )
        # Per iteration, what the schedule (fixed by `steps` alone) says, as device tensors a replay reads:
        # the momentum (1 on the first step) and whether a checkpoint follows, with its threshold rho * period.
        def scalar(value, dtype=x.dtype):
            return torch.tensor(value, dtype=dtype, device=x.device)

        schedule, since_check = [], 0
        for i in range(o.steps - 1):  # the last iterate needs no gradient: `steps` gradient computations in all
            since_check += 1
            at_check = since_check == period
            momentum = 1.0 if i == 0 else MOMENTUM
            schedule.append((scalar(momentum), scalar(at_check, torch.bool), scalar(o.rho * period)))
            if at_check:
                since_check, period = 0, max(period - decrement, min_period)
        step = self.step_graph(model, "iteration", self._iteration(model))
        for a, at_check, threshold in schedule:
            state = State(*step(x, y, a, at_check, threshold, *state))

        # The last iterate: the step and its loss, no gradient.
        s = state
        a = MOMENTUM if o.steps > 1 else 1.0
        z = project(x, s.adv + s.step * normalized(s.grad, o.norm), o.eps, o.norm)
        adv = project(x, s.adv + (z - s.adv) * a + (s.adv - s.previous) * (1 - a), o.eps, o.norm)
        logits = predict(model, adv)
        loss = loss_fn(logits)
        now_fooled = logits.argmax(1) != y
        fooling = torch.where(per_image(now_fooled, x), adv, s.fooling)
        fooled = s.fooled | now_fooled
        best = torch.where(per_image(loss > s.best_loss, x), adv, s.best)
        adversarial = torch.where(per_image(fooled, x), fooling, best)
        return adversarial[:n], fooled[:n], o.steps

    def _iteration(self, model):
        """One APGD iteration but the last, as a function of tensors only (a StepGraph replays it): the momentum
        step `a` from the state, the new iterate's gradient and loss, the bookkeeping of the fooling and best
        iterates and of the loss rises, and where `at_check`, the checkpoint; all torch.where, no host read."""
        o = self.options

        def iteration(x, y, a, at_check, threshold, *state):
            s = State(*state)
            z = project(x, s.adv + s.step * normalized(s.grad, o.norm), o.eps, o.norm)
            adv = project(x, s.adv + (z - s.adv) * a + (s.adv - s.previous) * (1 - a), o.eps, o.norm)
            grad, logits, loss = input_gradient(model, adv, LOSSES[o.loss](y), o.gradient)
            now_fooled = logits.argmax(1) != y
            improved = loss > s.best_loss
            best = torch.where(per_image(improved, x), adv, s.best)
            best_loss = torch.where(improved, loss, s.best_loss)
            best_grad = torch.where(per_image(improved, x), grad, s.best_grad)
            rises = s.rises + (loss > s.last_loss).float()
            # The checkpoint: halve the step where the loss rose on at most rho of the steps since the last one,
            # or where it was not halved last time and the best loss has not improved; those images jump back
            # to their best point and its gradient (`previous` stays: the momentum term uses x_{k-1}).
            halve = (rises <= threshold) | (~s.halved_last & (best_loss <= s.checked_loss))
            back = per_image(halve & at_check, x)
            return State(
                adv=torch.where(back, best, adv),
                previous=s.adv.clone(),  # a copy: a replay's outputs must not alias its inputs
                grad=torch.where(back, best_grad, grad),
                step=torch.where(back, s.step / 2.0, s.step),
                fooling=torch.where(per_image(now_fooled, x), adv, s.fooling),
                fooled=s.fooled | now_fooled,
                best=best,
                best_loss=best_loss,
                best_grad=best_grad,
                last_loss=loss,
                rises=torch.where(at_check, torch.zeros_like(rises), rises),
                halved_last=torch.where(at_check, halve, s.halved_last),
                checked_loss=torch.where(at_check, best_loss, s.checked_loss),
            )

        return iteration
