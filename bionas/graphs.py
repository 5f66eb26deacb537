"""CUDA graph replay of a step: warm up, capture once, then replay (docs/scaling.md, "CUDA graphs").

A step of the search or the retrain is thousands of small kernels; launched one by one from Python,
the GPU waits for the host. `StepGraph(fn, enabled)` runs `fn(*inputs)`, a function of tensors only:

* the first `warmup` calls eagerly on a side stream (lazy state: optimizer moments, cuBLAS workspaces;
  the stream the capture will use, so their handles exist before it);
* the next call captures `fn` on static copies of its inputs (`torch.cuda.graph`), then replays it;
* every later call copies its inputs into those static buffers (`copy_`) and replays. The outputs are
  the static output tensors: valid until the next replay of a graph of the same memory pool.
* a call whose inputs differ in shape, dtype, stride or device from the first call's (a short last
  batch) runs `fn` eagerly: the data are all used, in the same order as without graphs.

Off CUDA or when `enabled` is False it is `fn(*inputs)` and nothing else. What `fn` must be for a replay
to compute what an eager call would: no host read (`.item()`, a data-dependent shape), no Python state
that decides which kernels run, random numbers from the default CUDA generator (registered with every
capture, so each replay draws new numbers; other generators: pass `generators`), optimizers whose
hyperparameters a replay reads from device memory (`capturable_optimizer_args`, `LearningRates`), and
gradients set to None before the capture, so that backward allocates them from the graph's pool and
every replay rewrites them in place (`zero_grad(set_to_none=True)` at the start of `fn` does that).

Version counters: a replay writes tensors without changing their `_version`, and a fused optimizer's step
does not change it either (torch 2.14), while the rules' host-side clock of `weight_update` mode
(bionas.rules.seeding.new_training_step) reads versions to notice a training step. So a StepGraph bumps the
counters of its `versioned` tensors (a model's parameters and buffers) before its capture (the capture then
records the recomputation, never a cache hit that later replays would read stale) and after every replay
(eager code after it sees new values); `mark_stepped` does it after a fused optimizer's step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from torch.autograd.graph import increment_version

from bionas.errors import BionasError

WARMUP = 3  # eager calls before the capture (the PyTorch docs' whole-network example: 3)


class GraphCaptureError(BionasError):
    """A step could not be captured (it read a tensor on the host, or did something else a capture forbids)."""


def signature(inputs: Sequence[torch.Tensor]) -> tuple:
    """What a replay fixes about its inputs: shape, stride, dtype and device of each."""
    return tuple((t.shape, t.stride(), t.dtype, t.device) for t in inputs)


class CaptureBackend(Protocol):
    """How a StepGraph warms up, captures and replays (CudaBackend; tests use a stand-in). A capture records
    and runs nothing: the replay that follows it computes the capturing call's step."""

    def warm_up(self, fn: Callable, inputs: Sequence[torch.Tensor]) -> Any: ...

    def capture(self, fn: Callable, inputs: Sequence[torch.Tensor], pool: Any) -> tuple[Any, Any]: ...

    def replay(self, graph: Any) -> None: ...


class CudaBackend:
    """torch.cuda.graph as the PyTorch docs' whole-network capture does it, warm-up and capture on one
    side stream."""

    def __init__(self, generators: Sequence[torch.Generator] = ()):
        self.stream = torch.cuda.Stream()
        self.generators = list(generators)

    def warm_up(self, fn, inputs):
        # The side stream waits for the inputs; the caller's stream for the results. A result freed by the
        # caller is reused by this stream only after its next wait, which follows the caller's reads.
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            outputs = fn(*inputs)
        torch.cuda.current_stream().wait_stream(self.stream)
        return outputs

    def capture(self, fn, inputs, pool):
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:  # the default CUDA generator is registered by the capture itself
            graph.register_generator_state(generator)
        with torch.cuda.graph(graph, pool=pool, stream=self.stream):
            outputs = fn(*inputs)
        return graph, outputs

    def replay(self, graph):
        graph.replay()


class StepGraph:
    """`fn(*inputs)` as a CUDA graph replay; see the module docstring.

    `pool`: a memory pool (torch.cuda.graph_pool_handle()) shared with other graphs that never run
    concurrently with this one; `backend`: how to capture (default CudaBackend on a CUDA device);
    `versioned`: tensors whose version counters it bumps before the capture and after each replay.
    The counters `warmups`, `replays` and `eager_calls` say what the calls did.
    """

    def __init__(self, fn: Callable, enabled: bool, *, warmup: int = WARMUP, pool: Any = None,
                 backend: CaptureBackend | None = None, generators: Sequence[torch.Generator] = (),
                 versioned: Sequence[torch.Tensor] = ()):
        self.fn = fn
        self.versioned = list(versioned)
        self.enabled = enabled
        self.warmup = warmup
        self.pool = pool
        self._backend = backend
        self._generators = generators
        self._signature: tuple | None = None
        self._graph: Any = None
        self._static_inputs: list[torch.Tensor] = []
        self._static_outputs: Any = None
        self.warmups = self.replays = self.eager_calls = 0

    def __call__(self, *inputs: torch.Tensor) -> Any:
        if not self.enabled:
            return self.fn(*inputs)
        key = signature(inputs)
        if self._signature is None:
            self._signature = key
        elif key != self._signature:  # e.g. a short last batch: its own shapes, run as they are
            self.eager_calls += 1
            return self.fn(*inputs)
        backend = self._backend_for(inputs)
        if backend is None:  # not on CUDA: nothing to capture
            return self.fn(*inputs)
        if self.warmups < self.warmup:
            self.warmups += 1
            return backend.warm_up(self.fn, inputs)
        if self._graph is None:
            # Static copies laid out as the inputs (strides included: channels_last batches stay so), filled
            # before the capture: a capture runs nothing, the replay below computes this call's step.
            self._static_inputs = [torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device)
                                   .copy_(t) for t in inputs]
            if self.versioned:
                increment_version(self.versioned)
            try:
                self._graph, self._static_outputs = backend.capture(self.fn, self._static_inputs, self.pool)
            except RuntimeError as exc:
                raise GraphCaptureError(
                    f"runtime.cuda_graphs: capturing the step {getattr(self.fn, '__qualname__', self.fn)} failed "
                    f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); run with "
                    "runtime.cuda_graphs: false") from exc
        else:
            for static, given in zip(self._static_inputs, inputs):
                static.copy_(given)
        backend.replay(self._graph)
        if self.versioned:
            increment_version(self.versioned)
        self.replays += 1
        return self._static_outputs

    @property
    def captured(self) -> bool:
        return self._graph is not None

    def _backend_for(self, inputs: Sequence[torch.Tensor]) -> CaptureBackend | None:
        if self._backend is None and any(t.device.type == "cuda" for t in inputs):
            self._backend = CudaBackend(self._generators)
        return self._backend


def mark_stepped(optimizer: torch.optim.Optimizer) -> None:
    """After `optimizer.step()`: a fused optimizer's kernels leave its parameters' version counters as they were;
    bump those of the parameters it stepped (those with a gradient), so caches keyed on versions see the new
    values. Python only (no kernel); nothing for other optimizers, whose in-place operations bump them."""
    if any(group.get("fused") for group in optimizer.param_groups):
        increment_version([p for group in optimizer.param_groups for p in group["params"] if p.grad is not None])


class LearningRates:
    """The optimizer's per-group learning rates held in tensors on `device`, which a captured step reads.

    A schedule writes floats into `param_groups` (timm) and a resumed state writes its own values;
    `update()`, after either, fills each group's tensor with the current value and puts that same tensor
    back, so a graph captured once follows the schedule with no new capture. Off CUDA graphs the
    optimizer is left alone (`enabled` False): float learning rates, as always.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device, enabled: bool):
        self.optimizer = optimizer
        self.tensors = ([torch.tensor(float(g["lr"]), dtype=torch.float32, device=device)
                         for g in optimizer.param_groups] if enabled else [])
        self.update()

    def update(self) -> None:
        for group, tensor in zip(self.optimizer.param_groups, self.tensors):
            if group["lr"] is not tensor:
                tensor.fill_(group["lr"])
                group["lr"] = tensor


def capturable_optimizer_args(optimizer_class: type, enabled: bool) -> dict[str, Any]:
    """Constructor arguments that let `optimizer_class` step inside a captured graph with a tensor learning
    rate and no host read: SGD fused (its foreach path reads a tensor lr with .item()), Adam and AdamW fused
    and capturable (the step count on the device; fused runs on the CPU too, capturable alone does not).
    None for other optimizers: their steps run eagerly."""
    if not enabled:
        return {}
    if issubclass(optimizer_class, torch.optim.SGD):
        return {"fused": True, "foreach": False}
    if issubclass(optimizer_class, (torch.optim.Adam, torch.optim.AdamW)):
        return {"fused": True, "foreach": False, "capturable": True}
    return None
