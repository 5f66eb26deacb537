"""random: random search (Li & Talwalkar, UAI 2019), with weight sharing or plain.

weight_sharing (liamcli/randomNAS_release, searchers/random_weight_share.py and
benchmarks/cnn/darts/darts_wrapper_discrete.py):

* every minibatch trains one uniformly sampled architecture: per cell type and intermediate
  node, 2 distinct incoming edges, each with a uniformly chosen candidate other than the zero
  op, as one-hot mixing weights, so only the chosen candidates run;
* after the last epoch, `samples` random architectures are scored with the shared weights on
  the same `eval_batches` batches of the architecture part, the `top_k` best re-scored on the
  whole architecture part, and the best of those returned.

plain: `sample_genotypes(space, n, seed)` (bionas/space/sampling.py) draws architectures the
same way; `search` returns the first (seeded by the run's seed) for the caller to train.
"""

from __future__ import annotations

import itertools
import time
from typing import Any, Literal

from pydantic import Field

from bionas.search import SearchResult
from bionas.search.epochs import EpochSearch, SearchRun, WeightTrainingOptions, score, sgd, weight_step
from bionas.seeds import stream_generator
from bionas.space import Genotype, derive_genotype
from bionas.space.sampling import sample_genotypes, sample_weights
from bionas.training import Bar

_TRAIN, _VALID, _SELECT = 21, 22, 23  # random streams of this strategy (24: sample_genotypes')


class RandomSearch(EpochSearch):
    name = "random"
    description = "Random search: weight sharing (one random architecture per minibatch, best of many scored) or plain."

    class Options(WeightTrainingOptions):
        mode: Literal["weight_sharing", "plain"] = Field(
            default="weight_sharing",
            description="weight_sharing: train the supernet on random architectures, return the best of `samples` "
            "scored with the shared weights; plain: return one random genotype for the caller to train.",
        )
        epochs: int = Field(default=100, gt=0, description="Epochs of weight-sharing training "
                            "(randomNAS_release random_weight_share.py: 100).")
        grad_clip: float | None = Field(
            default=1.0, gt=0, description="Gradient-norm clip (randomNAS_release run_stage1.sh, CNN: 1); null = off."
        )
        samples: int = Field(default=1000, gt=0, description="Architectures scored with the shared weights (1000).")
        eval_batches: int = Field(default=10, gt=0, description="Batches of the architecture part each sample is "
                                  "scored on, the same for every sample (randomNAS_release: 10).")
        top_k: int = Field(default=10, gt=0, description="Best samples re-scored on the whole architecture part (10).")

    # Under runtime.cuda_graphs the scoring passes (validation, selection) replay with the sample masking every
    # candidate: in eval mode without gradients that computes what skipping the unsampled ones does. The weight
    # step stays eager (docs/search.md, "Random search under CUDA graphs"): masked, the unsampled candidates
    # would still train (zero gradients decayed and carried by momentum, BatchNorm statistics moved, hebbian's
    # gradient made in the forward), so it would no longer train only the sampled path.

    def search(self, supernet, data, runtime, checkpoint=None) -> SearchResult:
        if self.options.mode == "weight_sharing":
            return super().search(supernet, data, runtime, checkpoint)
        started = time.perf_counter()
        genotype = sample_genotypes(supernet.space, 1, data.seed)[0]
        seconds = time.perf_counter() - started
        record = {"stage": "search", "epoch": 0, "strategy": self.name, "mode": "plain",
                  "note": "a uniformly sampled genotype, untrained: the caller retrains it",
                  "genotype": genotype.to_dict(), "seconds": seconds}
        runtime.record(record)
        return SearchResult(genotype, [record], seconds)

    def prepare(self, run: SearchRun) -> None:
        # The weight step is eager, also under runtime.cuda_graphs, with today's foreach SGD: the fused one a
        # capture needs fails on a parameter whose first gradient comes after its first step (a candidate
        # sampled later), and every parameter of the eager step but the sampled path's has none.
        run.optimizer, run.scheduler = sgd(run, self.options, replayed=False)
        run.loader = run.data.loader("weights", self.options.batch_size)

    def before_epoch(self, run: SearchRun, epoch: int) -> dict[str, Any]:
        run.epoch_values["sampler"] = stream_generator(run.data.seed, epoch, _TRAIN)
        return {}

    def train_step(self, run: SearchRun, epoch: int, x, y):
        weights = sample_weights(run.supernet.space, run.epoch_values["sampler"])
        return weight_step(run, run.optimizer, x, y, self.options.grad_clip, weights)

    def after_epoch(self, run: SearchRun, epoch: int) -> dict[str, Any]:
        return {"selection": self.select(run) if epoch == self.options.epochs - 1 else None}

    def validate(self, run: SearchRun, epoch: int) -> tuple[float, float]:
        """The expected accuracy of a random architecture: each batch under its own sample."""
        gen = stream_generator(run.data.seed, epoch, _VALID)
        return score(run, self.arch_eval_loader(run), lambda i: sample_weights(run.supernet.space, gen),
                     name="sample_score")

    def select(self, run: SearchRun) -> dict[str, Any]:
        """Score `samples` architectures on `eval_batches` batches, re-score the top_k on the whole
        architecture part; the best (accuracy, then loss, then sample order) goes to run.state."""
        o, space = self.options, run.supernet.space
        gen = stream_generator(run.data.seed, _SELECT)
        candidates = [sample_weights(space, gen) for _ in range(o.samples)]
        few = list(itertools.islice(self.arch_eval_loader(run), o.eval_batches))
        top_k = min(o.top_k, o.samples)
        with Bar(o.samples + top_k, "random: scoring samples", run.runtime.quiet) as bar:
            quick = []
            for w in candidates:
                quick.append(score(run, few, w, name="sample_score"))
                bar.advance(1)
            top = sorted(range(o.samples), key=lambda i: (-quick[i][1], quick[i][0], i))[:top_k]
            full = {}
            for i in top:
                full[i] = score(run, self.arch_eval_loader(run), candidates[i], name="sample_score")
                bar.advance(1)
        best = min(top, key=lambda i: (-full[i][1], full[i][0], i))
        run.state["genotype"] = derive_genotype(space, candidates[best]).to_dict()
        return {"samples": o.samples, "sample": best, "quick_accuracy": quick[best][1],
                "valid_loss": full[best][0], "valid_accuracy": full[best][1],
                "top": [{"sample": i, "quick_accuracy": quick[i][1], "valid_accuracy": full[i][1]} for i in top]}

    def epoch_genotype(self, run: SearchRun, epoch: int) -> Genotype | None:
        """None until the last epoch's selection chose one."""
        if epoch == self.options.epochs - 1:
            return Genotype.from_dict(run.state["genotype"], check_plugins=False)
        return None

    def epoch_alphas(self, run: SearchRun) -> None:
        return None  # random search has no architecture weights
