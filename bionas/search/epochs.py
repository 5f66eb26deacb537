"""EpochSearch: the epoch loop a search strategy shares with darts, egnas and random.

A strategy that trains the supernet epoch by epoch subclasses `EpochSearch`
(public as `bionas.EpochSearch`) and implements `train_step`; where it needs
more than the weights' SGD, schedule and loader, `prepare(run)` (objects with a
`state_dict` go in `run.checkpointed`, further loaders in `run.loaders`); where it
needs them, `before_epoch`/`after_epoch` (record fields of their own) and,
where it differs from the DARTS rule over softmax(alphas), `epoch_genotype`.
The base class does the rest identically for every strategy:

    state = checkpoint.load()           resume: supernet, optimizers, schedulers, strategy
                                        state, history, seconds; continue at epoch + 1
    for each remaining epoch:
        train_epoch                     (loaders set to the epoch: order and augmentation are
                                        functions of (seed, epoch) only)
        validate on the architecture part (eval mode, no augmentation)
        record = one JSON-ready dict    runtime.record(record), then checkpoint.save(state, epoch)

so a search killed at any point and resumed from its checkpoint repeats exactly what an
uninterrupted one does (CPU, same seed).

Under torchrun every rank runs the same loop on its own shard of the data. The step
helpers (`optimizer_step`, `weight_step`) average the gradients over the ranks before
stepping, and `Meter` and `score` sum over them, so a strategy whose steps go through
them is correct in a data-parallel run without knowing it is one.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from pydantic import Field

from bionas import distributed
from bionas.checkpoint import Checkpointer, load_model_state
from bionas.data import Loader
from bionas.graphs import CudaBackend, LearningRates, StepGraph, capturable_optimizer_args, mark_stepped
from bionas.plugin import PluginOptions
from bionas.runtime import Runtime
from bionas.search.base import SearchData, SearchResult, SearchStrategy
from bionas.space import Genotype, Supernet
from bionas.space.genotype import CELL_TYPES
from bionas.training import LOG_EVERY, Bar, autocast, check_finite, eval_mode

Weights = dict[str, torch.Tensor]  # mixing weights by cell type, as Supernet.forward takes them


class Stateful(Protocol):
    """What a checkpointed object has: an optimizer, a learning-rate scheduler."""

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> Any: ...


class WeightTrainingOptions(PluginOptions):
    """What every strategy that trains the supernet's weights by SGD shares (DARTS's defaults)."""

    epochs: int = Field(default=50, gt=0, description="Search epochs (DARTS: 50).")
    batch_size: int = Field(default=64, gt=0, description="Minibatch of the weight steps (DARTS: 64).")
    lr: float = Field(default=0.025, gt=0, description="Initial learning rate of the weights (DARTS: 0.025).")
    lr_min: float = Field(default=0.001, ge=0, description="Final learning rate of the cosine schedule (DARTS: 0.001).")
    momentum: float = Field(default=0.9, ge=0, lt=1, description="SGD momentum of the weights (DARTS: 0.9).")
    weight_decay: float = Field(default=3e-4, ge=0, description="Weight decay of the weights (DARTS: 3e-4).")
    grad_clip: float | None = Field(
        default=5.0, gt=0, description="Gradient-norm clip of the weight steps (DARTS: 5); null = off."
    )
    eval_batch_size: int = Field(
        default=256, gt=0, description="Minibatch of the validation pass after each epoch (eval mode, no gradients: "
        "the accuracy does not depend on it, and larger batches cost less per image).",
    )
    bn_recalibration: int = Field(
        default=0, ge=0, description="Batches of the weights part whose BatchNorm statistics replace the running "
        "ones before each validation (0 = off, as DARTS): in a short search the running statistics lag behind "
        "weights that move fast, and the validation accuracy reads far below what the supernet does.",
    )


@dataclass
class SearchRun:
    """One call of `search`: the supernet, its data and runtime, and what the strategy keeps.

    By lifetime:
    * `optimizer`, `scheduler`: the weights' SGD and its schedule (EpochSearch.prepare);
      `checkpointed`: further objects with `state_dict` (darts: "arch_optimizer").
      All of them are checkpointed every epoch.
    * `state`: the strategy's own values across epochs, tensors and JSON (random: the
      selected "genotype"); checkpointed every epoch.
    * `loader`: batches of the weights part; `loaders`: further loaders (darts: "arch",
      egnas: "fitness"). Made once per search.
    * `epoch_values`: per-epoch objects (iterators, generators): emptied when an epoch
      starts, never checkpointed.

    Under runtime.cuda_graphs (one process: a data-parallel run steps eagerly) the steps run as CUDA graph
    replays: `graph(name, fn)` gives the run's StepGraph of that name, all of them in one memory pool (they
    never run concurrently), and the optimizers hold their learning rates in tensors (`hold_learning_rates`)
    that `train_epoch` refills from the schedule.
    """

    supernet: Supernet
    data: SearchData
    runtime: Runtime
    optimizer: torch.optim.Optimizer | None = None
    scheduler: Stateful | None = None
    checkpointed: dict[str, Stateful] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    loader: Loader | None = None
    loaders: dict[str, Loader] = field(default_factory=dict)
    epoch_values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        # Walking the supernet's parameters costs ~30 ms on the paper's space, and the set never
        # changes during a search (nothing toggles requires_grad; to() and load_state_dict keep them).
        self._weights = [p for p in self.supernet.weight_parameters() if p.requires_grad]
        # runtime.compile: the forward at the alphas (every step of darts and egnas) is compiled; a forward
        # at given mixing weights runs eagerly (their active candidates vary: one graph each).
        self._compiled = torch.compile(self.supernet) if self.runtime.compile else None
        self.graphs_on = self.runtime.cuda_graphs and self.runtime.world_size == 1
        self._graphs: dict[str, StepGraph] = {}
        # One memory pool and one capture stream for the run's graphs (the PyTorch docs: captures that share a
        # pool share their stream); they never run concurrently.
        on_cuda = self.graphs_on and self.device.type == "cuda"
        self._pool = torch.cuda.graph_pool_handle() if on_cuda else None
        self._backend = CudaBackend() if on_cuda else None
        self.learning_rates: list[LearningRates] = []

    def graph(self, name: str, fn: Callable) -> StepGraph:
        """The run's StepGraph `name`, made from `fn` at its first use (later calls' `fn` is not used);
        without runtime.cuda_graphs it calls `fn`. One name, one kind of call: same mode, same grad mode."""
        if name not in self._graphs:
            versioned = [*self.supernet.parameters(), *self.supernet.buffers()] if self.graphs_on else []
            self._graphs[name] = StepGraph(fn, self.graphs_on, pool=self._pool, backend=self._backend,
                                           versioned=versioned)
        return self._graphs[name]

    def hold_learning_rates(self, optimizer: torch.optim.Optimizer) -> None:
        """Under runtime.cuda_graphs, hold `optimizer`'s learning rates in tensors a replay reads (made with
        capturable_optimizer_args); `train_epoch` refills them after the schedule's step."""
        self.learning_rates.append(LearningRates(optimizer, self.device, self.graphs_on))

    @property
    def device(self) -> torch.device:
        return self.runtime.device

    def weight_parameters(self) -> list[torch.nn.Parameter]:
        """The trainable non-architecture parameters, as when the run was made (one list, not to be changed)."""
        return self._weights

    def images(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.runtime.channels_last else x

    def loss_and_logits(self, x: torch.Tensor, y: torch.Tensor, weights: Weights | None = None,
                        skip_zero: bool = True):
        """Cross-entropy (in float32) and logits of a batch, under the run's autocast (`skip_zero`: Supernet.forward's)."""
        with autocast(self.device, self.runtime.amp, cache=not self.graphs_on):
            if weights is None and self._compiled is not None:
                logits = self._compiled(self.images(x), None)
            else:
                logits = self.supernet(self.images(x), weights, skip_zero)
        return F.cross_entropy(logits.float(), y), logits

    def stateful(self) -> dict[str, Stateful]:
        """Every checkpointed object by name: optimizer, scheduler and `checkpointed`."""
        named = {"optimizer": self.optimizer, "scheduler": self.scheduler, **self.checkpointed}
        return {name: obj for name, obj in named.items() if obj is not None}


class Meter:
    """Summed loss and correct predictions, kept on the device; read on the host when asked."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.count = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        n = len(labels)
        self.loss += loss.detach().float() * n
        self.correct += (logits.detach().argmax(1) == labels).sum()
        self.count += n

    def read(self) -> tuple[float, float]:
        """(mean loss, accuracy) over every rank's batches: one host-device sync (and one all-reduce)."""
        loss, correct, count = distributed.sum_over_ranks(self.loss, self.correct, self.count)
        count = max(count, 1)
        return loss / count, correct / count

    def status(self, step: int, stage: str, epoch: int) -> str | None:
        """Every LOG_EVERY steps: read, check for divergence, and give the bar's status text."""
        if (step + 1) % LOG_EVERY:
            return None
        loss, accuracy = self.read()
        check_finite(loss, stage, epoch)
        return f"loss {loss:.3f} acc {accuracy:.1%}"


def late_start_errors(field: str, start: int, epochs: int) -> list[str]:
    """A first architecture epoch at or after the last epoch (a default tuned for 50 epochs, kept when
    `epochs` was cut) leaves the alphas at their random start: the genotype would be a random one."""
    if start < epochs:
        return []
    return [f"options.{field}: {start} is not below epochs ({epochs}): the architecture would never be updated "
            f"and the genotype would come from the random initial alphas; give {field} < epochs"]


def sgd(run: SearchRun, options: WeightTrainingOptions, replayed: bool | None = None):
    """DARTS's weight optimizer (classical momentum, every weight decayed) and its cosine schedule; `replayed`
    (default: under runtime.cuda_graphs) makes it one a captured step can run (fused, tensor learning rate)."""
    # timm (and torchvision under it) more than doubles the import time of torch: only a search pays it.
    from timm.scheduler import create_scheduler_v2

    # foreach: a few operations for all weights, not a few per weight (CUDA's default; the same values);
    # under CUDA graphs fused, which reads a tensor learning rate on the device
    replayed = run.graphs_on if replayed is None else replayed
    kind = capturable_optimizer_args(torch.optim.SGD, True) if replayed else {"foreach": True}
    optimizer = torch.optim.SGD(run.weight_parameters(), lr=options.lr, momentum=options.momentum,
                                weight_decay=options.weight_decay, **kind)
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=options.epochs, min_lr=options.lr_min)
    if replayed:
        run.hold_learning_rates(optimizer)  # after the scheduler: it reads the float base values
    return optimizer, scheduler


def optimizer_step(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor],
                   grad_clip: float | None = None) -> None:
    """Step `optimizer` on the gradients `params` hold: first averaged over the ranks of a
    data-parallel run (every rank takes the same step), then norm-clipped when `grad_clip` is set."""
    distributed.average_gradients(params)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    mark_stepped(optimizer)


def backward_to(loss: torch.Tensor, params: Sequence[torch.Tensor]) -> None:
    """`loss.backward(inputs=params)`, with fewer operators when no parameter holds a gradient yet.

    Then the gradients come from `torch.autograd.grad` and are assigned as they are: the same
    values, without the detach that autograd dispatches per parameter as it stores a fresh gradient
    (3,473 per weight step of the paper's space: benchmarks/search_cost.py). As autograd's own
    accumulation, a gradient that another parameter received too, or laid out unlike its parameter
    (e.g. expanded), is copied into one laid out like it. A gradient already held is added to, by
    `backward`.
    """
    if any(p.grad is not None for p in params):
        loss.backward(inputs=list(params))
        return
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    assigned = set()
    for param, grad in zip(params, grads):
        if grad is None:
            continue
        if id(grad) in assigned or not _laid_out_like(grad, param):
            grad = torch.empty_like(param).copy_(grad)
        assigned.add(id(grad))
        param.grad = grad


def _laid_out_like(grad: torch.Tensor, param: torch.Tensor) -> bool:
    """Whether autograd would store `grad` for `param` as it is: the strides of empty_like(param) (the
    parameter's own when it is dense, else contiguous), those of sizes 1 aside but never 0."""
    strides = grad.stride()
    if strides == param.stride() and 0 not in strides:  # nearly always
        return True
    dense = param.is_contiguous() or param.is_contiguous(memory_format=torch.channels_last)
    wanted = param.stride() if dense else torch.empty_like(param).stride()
    return all(g == w if size != 1 else g != 0 for size, g, w in zip(grad.shape, strides, wanted))


def weight_step(run: SearchRun, optimizer, x, y, grad_clip: float | None, weights: Weights | None = None):
    """One SGD step of the supernet's weights on a batch (the architecture stays as it is).

    Gradients flow to the weights only (the learning rules' backward); returns (loss, logits), detached.
    """
    params = run.weight_parameters()
    loss, logits = run.loss_and_logits(x, y, weights)
    optimizer.zero_grad(set_to_none=True)
    backward_to(loss, params)
    optimizer_step(optimizer, params, grad_clip)
    return loss.detach(), logits.detach()


def graphed_weight_step(run: SearchRun, x, y, grad_clip: float | None):
    """`weight_step` at the alphas with the run's SGD: under runtime.cuda_graphs one graph replay."""
    return run.graph("weight_step", lambda x, y: weight_step(run, run.optimizer, x, y, grad_clip))(x, y)


def batches(loader, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless batches of `loader` for one epoch: pass p uses loader epoch `epoch + p * 2**32`,
    so what a step sees depends on (seed, epoch, step) only."""
    passes = 0
    while True:
        loader.set_epoch(epoch + (passes << 32))
        yield from loader
        passes += 1


@torch.no_grad()
def score(run: SearchRun, batch_list, weights: Weights | Callable[[int], Weights] | None = None,
          name: str = "score") -> tuple[float, float]:
    """(mean loss, accuracy) of the supernet in eval mode over `batch_list`; `weights` are mixing
    weights, or a function of the batch index giving them (None: softmax of the alphas). Each batch a
    `forward_pass` (its graph `name`); one host read at the end."""
    meter = Meter(run.device)
    with eval_mode(run.supernet):
        for i, (x, y) in enumerate(batch_list):
            w = weights(i) if callable(weights) else weights
            meter.add(*forward_pass(run, x, y, w, name), y)
    return meter.read()


def forward_pass(run: SearchRun, x, y, weights: Weights | None = None, name: str = "score"):
    """(loss, logits) of a forward-only pass (the caller holds eval mode and no_grad), at the alphas or at given
    mixing weights. Under runtime.cuda_graphs a replay of the run's graph `name` (given weights: `name` +
    "_given"): given weights are copied into its static inputs and mask every candidate (skip_zero False), so
    which candidates run is no host decision; otherwise the candidates of weight 0 are skipped, as always.
    The outputs are a graph's static tensors: use them before the next replay."""
    if weights is None:
        return run.graph(name, lambda x, y: run.loss_and_logits(x, y))(x, y)
    if not run.graphs_on:  # the candidates that run chosen on the host (Supernet._mixing)
        return run.loss_and_logits(x, y, weights)
    masked = run.graph(f"{name}_given", lambda x, y, normal, reduce: run.loss_and_logits(
        x, y, {"normal": normal, "reduce": reduce}, skip_zero=False))
    return masked(x, y, *(weights[kind].to(run.device, torch.float32) for kind in CELL_TYPES))


@torch.no_grad()
def recalibrate_batch_norm(run: SearchRun, batch_list) -> None:
    """Replace the running statistics of every BatchNorm of the supernet by their plain average over the
    training-mode forwards of `batch_list` (at the current alphas); each layer's momentum is kept."""
    norms = [m for m in run.supernet.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    training = run.supernet.training
    run.supernet.train()  # batch statistics, which update the running ones
    try:
        for x, y in batch_list:
            run.loss_and_logits(x, y)
    finally:
        run.supernet.train(training)
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum


def softmax_alphas(supernet) -> dict[str, list[list[float]]]:
    """The mixing weights softmax(alphas) of both cell types, as nested lists."""
    with torch.no_grad():
        return {kind: F.softmax(getattr(supernet, f"alphas_{kind}").float(), dim=-1).cpu().tolist()
                for kind in CELL_TYPES}


def genotype_summary(genotype: Genotype) -> str:
    """Counts of the rules on the kept edges of both cells, parameter-free ops as 'free': `usf 5 fa 3 free 8`."""
    return " ".join(f"{name} {n}" for name, n in genotype.rule_counts().items())


class EpochSearch(SearchStrategy):
    """Base of the strategies that train the supernet epoch by epoch; see the module docstring."""

    Options = WeightTrainingOptions  # every epoch-based strategy's options; subclasses extend them
    # Whether runtime.cuda_graphs applies: a strategy whose steps run other kernels per step says False.
    replayable = True

    # -- what a strategy implements ---------------------------------------------------------------

    def prepare(self, run: SearchRun) -> None:
        """Create optimizers and schedulers (run.optimizer, run.scheduler, run.checkpointed) and loaders
        (run.loader, run.loaders); the default: the weights' SGD and cosine schedule, and the weights
        part's loader."""
        run.optimizer, run.scheduler = sgd(run, self.options)
        run.loader = run.data.loader("weights", self.options.batch_size)

    def train_step(self, run: SearchRun, epoch: int, x: torch.Tensor, y: torch.Tensor):
        """One step on a batch of the weights part; returns the weight step's (loss, logits).

        Step through `weight_step` or `optimizer_step`: they average the gradients over the ranks.
        """
        raise NotImplementedError

    def before_epoch(self, run: SearchRun, epoch: int) -> dict[str, Any]:
        """Before the epoch's steps (the epoch's lr is set); returns fields for the epoch's record."""
        return {}

    def after_epoch(self, run: SearchRun, epoch: int) -> dict[str, Any]:
        """After the epoch's steps, before validation; returns fields for the epoch's record."""
        return {}

    def train_epoch(self, run: SearchRun, epoch: int, bar: Bar) -> dict[str, Any]:
        """One epoch of steps; returns the record's train_loss, train_accuracy, lr and the hooks' fields."""
        run.scheduler.step(epoch)
        lr = run.optimizer.param_groups[0]["lr"]  # the schedule's float
        for rates in run.learning_rates:  # CUDA graphs: into the tensors the replays read
            rates.update()
        run.epoch_values = {}
        fields = self.before_epoch(run, epoch)
        run.loader.set_epoch(epoch)
        meter = Meter(run.device)
        for step, (x, y) in enumerate(run.loader):
            loss, logits = self.train_step(run, epoch, x, y)
            meter.add(loss, logits, y)
            bar.advance(1, meter.status(step, "search", epoch))
        train_loss, train_accuracy = meter.read()
        return {"train_loss": train_loss, "train_accuracy": train_accuracy, "lr": lr, **fields,
                **self.after_epoch(run, epoch)}

    def validate(self, run: SearchRun, epoch: int) -> tuple[float, float]:
        """(loss, accuracy) on the architecture part after the epoch; default: softmax(alphas), eval mode,
        after `bn_recalibration` batches of the weights part (in their fixed order) set the BatchNorm statistics."""
        if batches := self.options.bn_recalibration:
            if "bn_recalibration" not in run.loaders:
                run.loaders["bn_recalibration"] = run.data.loader("weights", self.options.batch_size, train=False)
            recalibrate_batch_norm(run, itertools.islice(run.loaders["bn_recalibration"], batches))
        if "validation" not in run.loaders:
            run.loaders["validation"] = run.data.loader("arch", self.options.eval_batch_size, train=False)
        return score(run, run.loaders["validation"])

    def epoch_genotype(self, run: SearchRun, epoch: int) -> Genotype | None:
        """The genotype the search holds after `epoch`: default the DARTS rule over the alphas."""
        return run.supernet.genotype()

    def epoch_alphas(self, run: SearchRun) -> dict[str, Any] | None:
        alphas = softmax_alphas(run.supernet)
        if run.supernet.edge_normalization:
            alphas["edge_weights"] = {k: run.supernet.edge_weights(k).detach().cpu().tolist() for k in CELL_TYPES}
        return alphas

    # -- shared -----------------------------------------------------------------------------------

    def arch_eval_loader(self, run: SearchRun):
        """The whole architecture part in a fixed order, without augmentation, in batches of `batch_size`
        (random search scores sampled architectures on it; validation uses `eval_batch_size`)."""
        if "arch_eval" not in run.loaders:
            run.loaders["arch_eval"] = run.data.loader("arch", self.options.batch_size, train=False)
        return run.loaders["arch_eval"]

    def start(self, supernet: Supernet, data: SearchData, runtime: Runtime) -> SearchRun:
        supernet.to(runtime.device)
        if runtime.channels_last:
            supernet.to(memory_format=torch.channels_last)
        supernet.train()
        return SearchRun(supernet, data, runtime if self.replayable else runtime.with_changes(cuda_graphs=False))

    def search(self, supernet: Supernet, data: SearchData, runtime: Runtime,
               checkpoint: Checkpointer | None = None) -> SearchResult:
        run = self.start(supernet, data, runtime)
        self.prepare(run)
        history: list[dict[str, Any]] = []
        seconds, first = 0.0, 0
        state = checkpoint.load(run.device) if checkpoint is not None else None
        if state is not None:
            with checkpoint.restoring():
                load_model_state(supernet, state["supernet"], "search checkpoint")
                for name, obj in run.stateful().items():
                    obj.load_state_dict(state["stateful"][name])
                run.state = state["extra"]
                history, seconds, first = state["history"], state["seconds"], state["epoch"] + 1
        epochs = self.options.epochs
        for epoch in range(first, epochs):
            started = time.perf_counter()
            with Bar(self.steps_per_epoch(run), f"search {self.name} {epoch + 1}/{epochs}", runtime.quiet) as bar:
                fields = self.train_epoch(run, epoch, bar)
                check_finite(fields["train_loss"], "search", epoch)
                valid_loss, valid_accuracy = self.validate(run, epoch)
                genotype = self.epoch_genotype(run, epoch)
                summary = f" | {genotype_summary(genotype)}" if genotype is not None else ""
                bar.advance(0, f"loss {fields['train_loss']:.3f} acc {fields['train_accuracy']:.1%} "
                               f"valid {valid_accuracy:.1%}{summary}")
            seconds += time.perf_counter() - started
            record = {"stage": "search", "epoch": epoch, "strategy": self.name, **fields,
                      "valid_loss": valid_loss, "valid_accuracy": valid_accuracy, "alphas": self.epoch_alphas(run),
                      "genotype": genotype.to_dict() if genotype is not None else None, "seconds": seconds}
            history.append(record)
            runtime.record(record)
            if checkpoint is not None:
                # The file keys ("stateful", "extra") are those of earlier versions: their checkpoints resume.
                checkpoint.save({"supernet": supernet.state_dict(),
                                 "stateful": {name: obj.state_dict() for name, obj in run.stateful().items()},
                                 "extra": run.state, "history": history, "seconds": seconds, "epoch": epoch}, epoch)
        return SearchResult(self.result_genotype(run, history), history, seconds)

    def steps_per_epoch(self, run: SearchRun) -> int:
        return len(run.loader)

    def result_genotype(self, run: SearchRun, history: list[dict[str, Any]]) -> Genotype:
        """The last epoch's genotype (also when a finished search is resumed)."""
        return Genotype.from_dict(history[-1]["genotype"], check_plugins=False)
