"""White-box gradient attacks: FGSM and PGD (linf and l2, random start, restarts).

Gradients come from `bionas.exact_gradients` by default; `gradient: rule`
takes them through the learning rules' own backward (a separate threat model).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

import bionas
from bionas.attacks import GradientSource, Norm, input_gradient, normalized, predict, project, random_start
from bionas.fractions import Fractional
from bionas_attacks.losses import LOSSES

EPS_DESCRIPTION = "Budget: the largest perturbation norm, in [0, 1] pixel units; fractions like 8/255 accepted."
GRADIENT_DESCRIPTION = (
    "exact: the model's true gradient (bionas.exact_gradients). rule: through the learning rules' own "
    "feedback path, reported as a separate threat model that is not a robustness claim."
)


class GradientOptions(bionas.PluginOptions):
    """Options every gradient attack has."""

    eps: Fractional = Field(default=8 / 255, description=EPS_DESCRIPTION)
    gradient: GradientSource = Field(default="exact", description=GRADIENT_DESCRIPTION)


class IterativeOptions(GradientOptions):
    """Options of iterative gradient attacks (pgd, apgd)."""

    norm: Norm = Field(default="linf", description="Norm of the budget: linf or l2.")
    random_start: bool = Field(default=True, description="Start each restart at a uniformly random point of the ball.")
    restarts: int = Field(default=1, ge=1, description="Runs per image; later runs attack only images not yet fooled.")
    loss: Literal["ce", "dlr"] = Field(default="ce", description="Loss to ascend: cross-entropy or DLR (>= 3 classes).")
    seed: int = Field(
        default=0, ge=0, description="Seed of the random starts (a torch.Generator; same seed, same result)."
    )


def restart_loop(attack, model, images, labels, generator, single_run):
    """Run `single_run(model, x, y, generator, check) -> (adversarial, fooled, work)` up to `restarts` times.

    Each later run attacks only the images no earlier run fooled; an image keeps the
    result of the run that fooled it, or of the first run. Returns (adversarial, work).
    """
    adversarial = images.clone()
    fooled = torch.zeros(len(images), dtype=torch.bool, device=images.device)
    work = torch.zeros(len(images))
    for restart in range(attack.options.restarts):
        todo = (~fooled).nonzero().squeeze(1)
        if len(todo) == 0:
            break
        adv, now_fooled, spent = single_run(model, images[todo], labels[todo], generator, attack.options.restarts > 1)
        keep = now_fooled if restart > 0 else torch.ones_like(now_fooled)
        adversarial[todo[keep]] = adv[keep]
        fooled[todo] = now_fooled
        work[todo.cpu()] += spent
    return adversarial, work


class FGSM(bionas.Attack):
    """x + eps * sign(grad_x CE(f(x), y)), clamped to [0, 1] (Goodfellow et al. 2015)."""

    name = "fgsm"
    description = "Fast gradient sign method (Goodfellow et al. 2015): one linf step of size eps."
    one_step = True
    Options = GradientOptions

    def perturb(self, model, images, labels, generator):
        grad, _, _ = input_gradient(model, images, LOSSES["ce"](labels), self.options.gradient)
        adversarial = (images + self.options.eps * grad.sign()).clamp(0.0, 1.0)
        return adversarial, torch.ones(len(images))


class PGD(bionas.Attack):
    """Projected gradient ascent on the loss (Madry et al. 2018); returns each run's last iterate."""

    name = "pgd"
    description = "Projected gradient descent (Madry et al. 2018), linf or l2, random start and restarts."

    class Options(IterativeOptions):
        steps: int = Field(default=10, ge=1, description="Gradient steps per run (published: 10 or more).")
        alpha: Fractional | None = Field(
            default=None,
            description="Step size; null = 2.5 * eps / steps (Madry et al.), which is the published 2/255 "
            "at eps 8/255 with 10 steps.",
        )

    @property
    def variant(self) -> str:
        return self.name if self.options.loss == "ce" else f"{self.name}-{self.options.loss}"

    @property
    def step_size(self) -> float:
        o = self.options
        return o.alpha if o.alpha is not None else 2.5 * o.eps / o.steps

    def perturb(self, model, images, labels, generator):
        return restart_loop(self, model, images, labels, generator, self._single_run)

    def _single_run(self, model, images, labels, generator, check):
        o = self.options
        adv = random_start(images, o.eps, o.norm, generator) if o.random_start else images.clone()
        n = len(images)
        x, y, adv = self.padded(images, labels, adv)  # drawn before padding: the same start with graphs or not
        step = self.step_graph(model, "iteration", self._iteration(model))
        for _ in range(o.steps):
            adv = step(x, y, adv)
        adv = adv[:n].clone()  # a replay's output is rewritten by the next replay
        if not check:  # a single run: whether it fooled does not matter here
            return adv, torch.zeros_like(labels, dtype=torch.bool), o.steps
        return adv, predict(model, adv).argmax(1) != labels, o.steps

    def _iteration(self, model):
        """One PGD step as a function of tensors only (a StepGraph replays it): gradient, step, projection."""
        o = self.options

        def iteration(images, labels, adv):
            grad, _, _ = input_gradient(model, adv, LOSSES[o.loss](labels), o.gradient)
            return project(images, adv + self.step_size * normalized(grad, o.norm), o.eps, o.norm)

        return iteration
