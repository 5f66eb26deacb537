"""darts: differentiable architecture search (Liu, Simonyan & Yang, ICLR 2019), first and second order.

Every step (after `warmup_epochs`) first updates the architecture on a batch of the
architecture part, then the weights on a batch of the weight part (DARTS train_search.py):

* first order: alpha <- Adam(grad_alpha L_val(w, alpha));
* second order: the gradient at the weights after one virtual SGD step,
      w' = w - xi (momentum * buffer + grad_w L_train(w, alpha) + weight_decay * w),   xi = current lr,
      grad = grad_alpha L_val(w', alpha)
             - xi [grad_alpha L_train(w+, alpha) - grad_alpha L_train(w-, alpha)] / (2 eps),
      w+- = w +- eps v,  v = grad_w' L_val(w', alpha),  eps = 0.01 / |v|
  (DARTS architect.py `_compute_unrolled_model`, `_hessian_vector_product`).

With learning rules, every gradient above is what the rules' backward gives (option
`arch_gradient: rules`, the paper's setting) or the true one (`exact`); see docs/search.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from pydantic import Field

from bionas.graphs import capturable_optimizer_args
from bionas.rules import exact_gradients, hold_feedback, no_weight_gradients
from bionas.search.epochs import (
    EpochSearch,
    SearchRun,
    WeightTrainingOptions,
    backward_to,
    batches,
    graphed_weight_step,
    late_start_errors,
    optimizer_step,
    weight_step,
)

HVP_R = 0.01  # DARTS: eps = 0.01 / |v|

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _virtual_step(weights, grads, buffers, xi: float, momentum: float, weight_decay: float) -> None:
    """w <- w - xi (momentum * buffer + dL_train/dw + weight_decay * w) in place; None grads and buffers
    count as 0. Thousands of tensors: one foreach call per operation, the same operations in the same
    order as per tensor, so the same values bit for bit."""
    with torch.no_grad():
        steps = torch._foreach_mul(weights, weight_decay)
        if has_grad := [i for i, g in enumerate(grads) if g is not None]:
            torch._foreach_add_([steps[i] for i in has_grad], [grads[i] for i in has_grad])
        if has_buffer := [i for i, b in enumerate(buffers) if b is not None]:
            pushes = torch._foreach_mul([buffers[i] for i in has_buffer], momentum)
            torch._foreach_add_([steps[i] for i in has_buffer], pushes)
        torch._foreach_mul_(steps, xi)
        torch._foreach_sub_(weights, steps)


def unrolled_arch_gradients(
    loss_fn: LossFn,
    arch: Sequence[torch.Tensor],
    weights: Sequence[torch.Tensor],
    train_batch: tuple[torch.Tensor, torch.Tensor],
    valid_batch: tuple[torch.Tensor, torch.Tensor],
    xi: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    buffers: Sequence[torch.Tensor | None] | None = None,
    r: float = HVP_R,
) -> list[torch.Tensor]:
    """DARTS's second-order architecture gradient, the Hessian-vector product by central differences.

    `loss_fn(x, y)` runs the model with its current parameters; `weights` are changed in place
    for the virtual step and the two perturbed passes, and restored exactly (from a copy) before
    returning. `buffers`: the weight optimizer's momentum buffers (None entries: no buffer yet).
    Returns one gradient per tensor of `arch`.
    """
    weights = list(weights)
    buffers = list(buffers) if buffers is not None else [None] * len(weights)
    saved = [w.detach().clone() for w in weights]
    try:
        grads = torch.autograd.grad(loss_fn(*train_batch), weights, allow_unused=True)
        _virtual_step(weights, grads, buffers, xi, momentum, weight_decay)
        grads = torch.autograd.grad(loss_fn(*valid_batch), [*arch, *weights], allow_unused=True)
        d_arch = [torch.zeros_like(a) if g is None else g for a, g in zip(arch, grads[: len(arch)])]
        v = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, grads[len(arch):])]
        # |v| in float64 from the per-tensor norms: one call rather than a few ops per tensor
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(v, 2, dtype=torch.float64)))
        eps = (r / norm.clamp_min(1e-30)).to(saved[0].dtype)  # a zero v gives a zero correction below
        differences = []
        for sign in (1, -1):
            with torch.no_grad():  # w = w0 + sign * eps * v
                torch._foreach_copy_(weights, saved)
                torch._foreach_add_(weights, torch._foreach_mul(v, sign * eps))
            with no_weight_gradients():  # these passes differentiate the alphas only
                grads = torch.autograd.grad(loss_fn(*train_batch), arch, allow_unused=True)
            differences.append([torch.zeros_like(a) if g is None else g for a, g in zip(arch, grads)])
        return [d - xi * (p - n) / (2 * eps) for d, p, n in zip(d_arch, *differences)]
    finally:
        with torch.no_grad():
            torch._foreach_copy_(weights, saved)


class Darts(EpochSearch):
    name = "darts"
    description = "DARTS: alphas by gradient on the architecture part, first order (default) or second order (unrolled)."

    class Options(WeightTrainingOptions):
        order: Literal["first", "second"] = Field(
            default="first",
            description="first: the gradient at the current weights (the BioNAS paper's setting); second: at the "
            "weights after a virtual SGD step (unrolled, finite-difference Hessian-vector product).",
        )
        arch_lr: float = Field(default=3e-4, gt=0, description="Adam learning rate of the alphas (DARTS: 3e-4).")
        arch_betas: tuple[float, float] = Field(default=(0.5, 0.999), description="Adam betas of the alphas (DARTS).")
        arch_weight_decay: float = Field(default=1e-3, ge=0, description="Adam weight decay of the alphas (DARTS).")
        arch_batch_size: int | None = Field(
            default=None, gt=0, description="Minibatch of the architecture steps; null = batch_size (DARTS)."
        )
        warmup_epochs: int = Field(
            default=0, ge=0, description="First epochs that train the weights only (no architecture step)."
        )
        arch_gradient: Literal["rules", "exact"] = Field(
            default="rules",
            description="Gradients of the architecture step: through the learning rules' backward (as the "
            "paper's code), or the true gradient of the loss (bionas.exact_gradients).",
        )

    @classmethod
    def spec_errors(cls, options, spec) -> list[str]:
        return late_start_errors("warmup_epochs", options.warmup_epochs, options.epochs)

    def prepare(self, run: SearchRun) -> None:
        super().prepare(run)
        o = self.options
        # under CUDA graphs fused and capturable: the step count and lr on the device (a plain Adam reads its
        # step count on the host twice per step)
        kind = capturable_optimizer_args(torch.optim.Adam, run.graphs_on)
        arch_optimizer = torch.optim.Adam(run.supernet.arch_parameters(), lr=o.arch_lr, betas=o.arch_betas,
                                          weight_decay=o.arch_weight_decay, **kind)
        run.checkpointed["arch_optimizer"] = arch_optimizer
        run.hold_learning_rates(arch_optimizer)
        run.loaders["arch"] = run.data.loader("arch", o.arch_batch_size or o.batch_size)

    def before_epoch(self, run: SearchRun, epoch: int) -> dict:
        updates = epoch >= self.options.warmup_epochs
        run.epoch_values["arch_batches"] = batches(run.loaders["arch"], epoch) if updates else None
        return {"arch_updates": updates}

    def train_step(self, run: SearchRun, epoch: int, x, y):
        arch_batches = run.epoch_values["arch_batches"]
        if arch_batches is None:
            return graphed_weight_step(run, x, y, self.options.grad_clip)
        step = run.graph("darts_step", lambda x, y, xa, ya: self.step(run, (x, y), (xa, ya)))
        return step(x, y, *next(arch_batches))

    def step(self, run: SearchRun, train_batch, valid_batch):
        """The architecture step on `valid_batch`, then the weight step on `train_batch`; returns the weight
        step's (loss, logits). Under runtime.cuda_graphs both are one graph replay, the lr (the second
        order's xi) the tensor the schedule fills."""
        optimizer = run.optimizer
        self.arch_step(run, train_batch, valid_batch, optimizer.param_groups[0]["lr"])
        return weight_step(run, optimizer, *train_batch, self.options.grad_clip)

    def arch_step(self, run: SearchRun, train_batch, valid_batch, lr: float | torch.Tensor) -> None:
        supernet, arch_optimizer = run.supernet, run.checkpointed["arch_optimizer"]
        arch = supernet.arch_parameters()
        exact = exact_gradients(supernet) if self.options.arch_gradient == "exact" else contextlib.nullcontext()
        arch_optimizer.zero_grad(set_to_none=True)
        with exact:
            if self.options.order == "first":
                with no_weight_gradients():  # the rule layers compute no weight gradient for this step
                    loss, _ = run.loss_and_logits(*valid_batch)
                backward_to(loss, arch)
            else:
                grads = self.unrolled(run, train_batch, valid_batch, lr)
                for a, g in zip(arch, grads):
                    a.grad = g
        # Data-parallel: the mean over the ranks' batches (second order: of each rank's unrolled gradient).
        optimizer_step(arch_optimizer, arch)

    def unrolled(self, run: SearchRun, train_batch, valid_batch, xi: float, r: float = HVP_R) -> list[torch.Tensor]:
        """The second-order gradient at the weight optimizer's state. Its passes run without autocast:
        bf16 rounding would swamp the finite difference."""
        o, supernet, optimizer = self.options, run.supernet, run.optimizer
        weights = run.weight_parameters()
        buffers = [optimizer.state.get(w, {}).get("momentum_buffer") for w in weights]

        def loss_fn(x, y):
            return torch.nn.functional.cross_entropy(supernet(run.images(x)).float(), y)

        # The perturbed weights are not training steps: a rule drawing feedback per step (brsf) keeps its B.
        with hold_feedback(supernet):
            return unrolled_arch_gradients(loss_fn, supernet.arch_parameters(), weights, train_batch, valid_batch,
                                           xi, o.momentum, o.weight_decay, buffers, r)
