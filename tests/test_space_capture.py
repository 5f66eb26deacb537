"""What a CPU can show of a supernet step that a CUDA graph replays or torch.compile traces: after a
warm-up step no host read, the same operators every step (whether or not brsf redraws), and a
fullgraph compile of the forward without recompiles that gives the eager numbers."""

import pytest
import torch
import torch.nn.functional as F
from sync_support import forbid_host_syncs, record_ops

from bionas.rules import no_weight_gradients
from bionas.space import SearchSpace, Supernet

PC = {"name": "pc", "options": {"T": 3}}  # pc with few inference steps: the same operators, fewer of them
EVERY_RULE = ["usf", "brsf", "frsf", "fa", "bp", "dfa", "hebbian", PC]
# dfa sends the output error to its layers through a Python object filled by a later backward, pc runs
# autograd inside its backward: neither traces into one graph (both still run under a CUDA graph)
COMPILED_RULES = ["usf", "brsf", "frsf", "fa", "bp", "hebbian"]


OPS = ["max_pool_3x3", "skip_connect", "sep_conv_3x3", "dil_conv_3x3"]


def make(rules, k: int, channels_last: bool = False, ops=OPS, nodes: int = 4) -> Supernet:
    torch.manual_seed(0)
    space = SearchSpace({"channels": 4, "cells": 3, "nodes": nodes, "partial_channels": k, "exclude": [],
                         "rules": rules, "ops": ops})
    net = Supernet(space, num_classes=10, in_channels=1)
    return net.to(memory_format=torch.channels_last) if channels_last else net


def batch(seed: int):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(4, 1, 8, 8, generator=gen), torch.randint(0, 10, (4,), generator=gen)


def darts_step(net, model, optimizer, seed: int) -> torch.Tensor:
    """darts's first-order step without its optimizers' host reads: a forward and backward to the
    alphas alone (no weight gradients), then one to the weights and an SGD step (brsf redraws at
    the first forward after it, not at the second)."""
    x, y = batch(seed)
    with no_weight_gradients():
        F.cross_entropy(model(x), y).backward(inputs=net.arch_parameters())
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward(inputs=net.weight_parameters())
    optimizer.step()
    return loss.detach()


def brsf_steps(net) -> set[int]:
    return {int(m.feedback_step) for m in net.modules() if hasattr(m, "feedback_step")}


@pytest.mark.parametrize("k, channels_last", [(1, False), (2, True)])
def test_a_supernet_step_reads_nothing_on_the_host_and_dispatches_the_same_operators_every_step(k, channels_last):
    net = make(EVERY_RULE, k, channels_last)
    optimizer = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9, foreach=True)
    darts_step(net, net, optimizer, 0)  # warm-up: plans made, dfa's B drawn
    lists = []
    for seed in (1, 2, 3):  # other data every step; brsf redraws in each
        with forbid_host_syncs(), record_ops() as names:
            darts_step(net, net, optimizer, seed)
        lists.append(names)
    assert brsf_steps(net) == {4}
    assert len(lists[0]) > 1000 and lists[0] == lists[1] == lists[2]


def test_a_brsf_redraw_runs_the_same_operators_as_a_pass_without_one():
    net = make(["brsf", "usf", "bp"], 1)
    optimizer = torch.optim.SGD(net.weight_parameters(), lr=0.05)
    darts_step(net, net, optimizer, 0)
    x, y = batch(1)
    passes = []
    for _ in range(2):  # the first pass after the optimizer step redraws, the second does not
        before = brsf_steps(net)
        with record_ops() as names:
            F.cross_entropy(net(x), y).backward()
        passes.append((names, before, brsf_steps(net)))
    (first, *drawn), (second, *kept) = passes
    assert drawn == [{1}, {2}] and kept == [{2}, {2}]
    assert first == second


def weight_step(model, optimizer, seed: int) -> torch.Tensor:
    x, y = batch(seed)
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss.detach()


@pytest.mark.slow
def test_the_supernet_forward_compiles_whole_without_recompiles_and_gives_the_eager_numbers():
    torch._dynamo.reset()
    # a small supernet (tracing costs host time per operator): stacked sep_conv and FactorizedReduce groups
    small = {"k": 2, "ops": ["skip_connect", "sep_conv_3x3"], "nodes": 2}
    eager, traced = make(COMPILED_RULES, **small), make(COMPILED_RULES, **small)  # one seed: the same weights
    optimizers = [torch.optim.SGD(n.parameters(), lr=0.05, momentum=0.9) for n in (eager, traced)]
    for net, optimizer in zip((eager, traced), optimizers):
        weight_step(net, optimizer, 0)  # warm-up in eager mode: the edges' plans made
    compiled = torch.compile(traced, fullgraph=True, backend="aot_eager")
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seed in (1, 2, 3):  # new data, new weights, brsf redrawing every step
            loss_e = weight_step(eager, optimizers[0], seed)
            loss_c = weight_step(compiled, optimizers[1], seed)
            torch.testing.assert_close(loss_c, loss_e)
            for a, b in zip(traced.arch_parameters(), eager.arch_parameters()):
                torch.testing.assert_close(a.grad, b.grad)
    for (name, a), b in zip(traced.state_dict().items(), eager.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)  # weights, alphas, BatchNorm statistics, brsf's step
    assert brsf_steps(traced) == {4}


def test_given_weights_with_skip_zero_off_mask_by_arithmetic_alone():
    # one-hot rows (random search's samples): skipping the zero-weight candidates or masking them gives
    # the same logits, and masked, two different samples dispatch the same operators
    from bionas_search.random_search import sample_weights

    net = make(["usf", "fa", "bp"], 1).eval()
    gen = torch.Generator().manual_seed(0)
    samples = [sample_weights(net.space, gen) for _ in range(2)]
    x, _ = batch(0)
    lists = []
    with torch.no_grad():
        net(x, samples[0], skip_zero=False)  # warm-up: the edges' plans made
        for weights in samples:
            with record_ops() as names:
                masked = net(x, weights, skip_zero=False)
            lists.append(names)
            torch.testing.assert_close(masked, net(x, weights), rtol=0, atol=0)
    assert samples[0]["normal"].ne(samples[1]["normal"]).any() and lists[0] == lists[1]
