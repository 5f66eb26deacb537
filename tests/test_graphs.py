"""bionas.graphs on the CPU: when StepGraph warms up, captures, replays or runs eagerly, and what a replay
reads (its static input buffers), through a capture backend that replays by calling the function again on
those buffers; the tensor learning rates a captured step reads. The real capture: tests/test_cuda_graphs.py."""

import pytest
import torch

from bionas.graphs import GraphCaptureError, LearningRates, StepGraph, capturable_optimizer_args
from sync_support import forbid_host_syncs


class CallAgain:
    """A capture backend for the CPU: the 'capture' runs the step (this call's), each later 'replay' runs it again
    on the static inputs and writes the results into the outputs the capture returned, as a replay rewrites
    its static outputs."""

    def __init__(self):
        self.events = []

    def warm_up(self, fn, inputs):
        self.events.append("warm_up")
        return fn(*inputs)

    def capture(self, fn, inputs, pool):
        self.events.append("capture")
        outputs = fn(*inputs)
        captured = [True]  # the replay right after the capture: its step already ran

        def replay():
            if captured.pop() if captured else False:
                return
            for static, new in zip(outputs, fn(*inputs)):
                static.copy_(new)

        return replay, outputs

    def replay(self, graph):
        self.events.append("replay")
        graph()


def scaled_sum(x, y):
    return (x * 2).sum(0), y + 1


def test_warms_up_then_captures_once_and_replays_on_new_data_in_static_buffers():
    backend = CallAgain()
    step = StepGraph(scaled_sum, True, warmup=2, backend=backend)
    results = []
    for i in range(5):
        x, y = torch.full((3, 2), float(i)), torch.tensor([i])
        results.append([t.clone() for t in step(x, y)])
        assert torch.equal(results[-1][0], torch.full((2,), 6.0 * i)) and results[-1][1].item() == i + 1
    assert backend.events == ["warm_up", "warm_up", "capture", "replay", "replay", "replay"]
    assert (step.warmups, step.replays, step.eager_calls) == (2, 3, 0) and step.captured
    # the replays return the same (static) tensors, refilled
    assert step(torch.ones(3, 2), torch.tensor([7]))[0] is step(torch.ones(3, 2), torch.tensor([8]))[0]


def test_inputs_unlike_the_first_calls_run_eagerly_without_touching_the_graph():
    backend = CallAgain()
    step = StepGraph(scaled_sum, True, warmup=1, backend=backend)
    step(torch.ones(4, 2), torch.tensor([0]))  # warm-up: fixes the signature
    step(torch.ones(4, 2), torch.tensor([0]))  # capture + replay
    short = step(torch.ones(3, 2), torch.tensor([0]))  # a short last batch
    strided = step(torch.ones(2, 4).t(), torch.tensor([0]))  # same shape, other strides
    assert torch.equal(short[0], torch.full((2,), 6.0)) and torch.equal(strided[0], torch.full((2,), 8.0))
    assert step.eager_calls == 2 and backend.events == ["warm_up", "capture", "replay"]
    # a short batch before the capture does not become the captured shape either
    step = StepGraph(scaled_sum, True, warmup=1, backend=CallAgain())
    step(torch.ones(4, 2), torch.tensor([0]))
    step(torch.ones(3, 2), torch.tensor([0]))
    step(torch.ones(4, 2), torch.tensor([0]))
    assert (step.warmups, step.eager_calls, step.replays) == (1, 1, 1)


def test_disabled_or_off_cuda_it_is_the_plain_call():
    calls = []

    def fn(x):
        calls.append(x)
        return x + 1

    for step in (StepGraph(fn, False, backend=CallAgain()), StepGraph(fn, True)):  # the latter: CPU inputs
        for _ in range(5):
            assert step(torch.zeros(2)).tolist() == [1.0, 1.0]
        assert not step.captured and step.replays == 0
    assert len(calls) == 10


def test_static_inputs_keep_the_inputs_layout():
    backend = CallAgain()
    seen = []

    def fn(x):
        seen.append(x.is_contiguous(memory_format=torch.channels_last))
        return (x.sum(),)

    step = StepGraph(fn, True, warmup=0, backend=backend)
    for _ in range(2):
        step(torch.randn(2, 3, 4, 4).contiguous(memory_format=torch.channels_last))
    assert seen == [True, True]  # the capture and a replay, on a channels_last static buffer


def test_learning_rates_follow_the_schedule_in_one_tensor_that_the_step_reads_without_a_host_read():
    from timm.scheduler import create_scheduler_v2

    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.5, momentum=0.9, **capturable_optimizer_args(torch.optim.SGD, True))
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=4, min_lr=0.1)
    rates = LearningRates(optimizer, torch.device("cpu"), True)
    held = rates.tensors[0]
    for epoch in range(4):
        scheduler.step(epoch)
        expected = optimizer.param_groups[0]["lr"]  # timm wrote a float
        rates.update()
        assert optimizer.param_groups[0]["lr"] is held and held.item() == pytest.approx(expected)
        before = weight.detach().clone()
        weight.grad = torch.ones(3)
        with forbid_host_syncs():
            optimizer.step()
        if epoch == 0:
            assert torch.allclose(before - weight.detach(), torch.full((3,), expected))  # no momentum yet
    # a resumed state replaces the group's lr: update() puts the held tensor back with the loaded value
    state = optimizer.state_dict()
    state["param_groups"][0]["lr"] = torch.tensor(0.25)
    optimizer.load_state_dict(state)
    rates.update()
    assert optimizer.param_groups[0]["lr"] is held and held.item() == 0.25
    # off CUDA graphs nothing changes
    assert isinstance(LearningRates(torch.optim.SGD([weight], lr=0.1), torch.device("cpu"), False)
                      .optimizer.param_groups[0]["lr"], float)


def test_capturable_optimizers_step_without_host_reads():
    weight = torch.nn.Parameter(torch.ones(3))
    for cls in (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW):
        optimizer = cls([weight], lr=torch.tensor(0.1), **capturable_optimizer_args(cls, True))
        weight.grad = torch.ones(3)
        optimizer.step()  # the first step makes the state
        with forbid_host_syncs():
            optimizer.step()
    assert capturable_optimizer_args(torch.optim.RMSprop, True) is None
    assert capturable_optimizer_args(torch.optim.RMSprop, False) == {}


def test_a_step_that_cannot_be_captured_is_a_clear_error():
    class Refuses(CallAgain):
        def capture(self, fn, inputs, pool):
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")

    step = StepGraph(scaled_sum, True, warmup=1, backend=Refuses())
    step(torch.ones(2, 2), torch.tensor([0]))
    with pytest.raises(GraphCaptureError, match="runtime.cuda_graphs: capturing the step scaled_sum failed "
                       r"\(CUDA error: operation not permitted when stream is capturing\); run with"):
        step(torch.ones(2, 2), torch.tensor([0]))
