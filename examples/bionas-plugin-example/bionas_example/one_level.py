"""A search strategy: one-level DARTS, the architecture and the weights trained together on the same batches.

DARTS splits the training data in two and alternates: weights on one part, the
architecture on the other (a bilevel problem). One-level DARTS, the single-level
alternative often used as a baseline, skips the split: every step takes a single
gradient of the training loss for the weights and the alphas and steps both (the
architecture part of the split then only scores the epochs). The epoch
loop, checkpoints, records, validation and the genotype come from
`bionas.EpochSearch`; the steps go through `bionas.optimizer_step`, which
averages gradients over the ranks, so the strategy runs under torchrun as is.
"""

import torch
from pydantic import Field

import bionas


class OneLevel(bionas.EpochSearch):
    name = "one_level"
    description = "One-level DARTS: weights and alphas stepped together on each training batch (example plugin)."

    class Options(bionas.WeightTrainingOptions):
        arch_lr: float = Field(default=3e-4, gt=0, description="Adam learning rate of the alphas (DARTS: 3e-4).")
        arch_weight_decay: float = Field(default=1e-3, ge=0, description="Adam weight decay of the alphas.")

    def prepare(self, run: bionas.SearchRun) -> None:
        super().prepare(run)  # the weights' SGD, its cosine schedule, the weights part's loader
        run.checkpointed["arch_optimizer"] = torch.optim.Adam(
            run.supernet.arch_parameters(), lr=self.options.arch_lr, betas=(0.5, 0.999),
            weight_decay=self.options.arch_weight_decay,
        )

    def train_step(self, run: bionas.SearchRun, epoch: int, x, y):
        weights, arch = run.weight_parameters(), run.supernet.arch_parameters()
        arch_optimizer = run.checkpointed["arch_optimizer"]
        loss, logits = run.loss_and_logits(x, y)
        run.optimizer.zero_grad(set_to_none=True)
        arch_optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=[*weights, *arch])
        bionas.optimizer_step(run.optimizer, weights, self.options.grad_clip)
        bionas.optimizer_step(arch_optimizer, arch)
        return loss.detach(), logits.detach()
