"""darts: the second order's finite-difference unrolled gradient against autograd through the virtual step; the
architecture step computes no weight gradient; rule batching changes no result."""

import contextlib

import pytest
import torch
import torch.nn.functional as F
from search_support import make_supernet, mnist, run_search, tiny_data  # noqa: F401  (fixture)
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode

import bionas
from bionas.rules import no_weight_gradients
from bionas.search import SearchData
from bionas.search.epochs import SearchRun, sgd, weight_step
from bionas.space import SearchSpace, Supernet
from bionas.space.stacking import set_rule_batching

XI, MOMENTUM, WEIGHT_DECAY = 0.5, 0.9, 3e-4


@pytest.fixture
def smooth(monkeypatch):
    """ReLU replaced by softplus everywhere: the Hessian-vector product by finite differences converges
    as eps^2 only where the loss is smooth (a ReLU kink within eps makes a jump of order 1 / eps)."""
    softplus = F.softplus
    monkeypatch.setattr(F, "relu", lambda x, inplace=False: softplus(x))


def test_second_order_gradient_equals_autograd_through_the_virtual_step(smooth):
    torch.manual_seed(0)
    # smooth ops only (no max pooling); bp, so that autograd can differentiate twice
    space = SearchSpace({"ops": ["none", "avg_pool_3x3", "skip_connect", "sep_conv_3x3"], "rules": ["bp"],
                         "channels": 4, "cells": 3, "nodes": 2})  # fmt: skip
    net = Supernet(space, 10, in_channels=1).double()
    with torch.no_grad():
        for a in net.arch_parameters():
            a.normal_()  # far from uniform mixing, so the second-order term is large
    train = torch.rand(8, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (8,))
    valid = torch.rand(8, 1, 8, 8, dtype=torch.float64), torch.randint(0, 10, (8,))
    darts = bionas.get_search("darts", order="second", momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    run = SearchRun(net, SearchData(None, torch.arange(1), torch.arange(1)), bionas.Runtime(amp="off", quiet=True))
    optimizer, _ = sgd(run, darts.options)
    run.optimizer = optimizer
    arch, names = net.arch_parameters(), [n for n, p in net.named_parameters() if not n.startswith("alphas")]
    weights = dict(zip(names, run.weight_parameters()))
    buffers = {n: 0.1 * torch.randn_like(w) for n, w in weights.items()}
    for n, w in weights.items():  # momentum buffers as a previous SGD step leaves them
        optimizer.state[w]["momentum_buffer"] = buffers[n]
    before = {n: w.detach().clone() for n, w in weights.items()}

    def loss(params, batch):
        return F.cross_entropy(functional_call(net, params, (batch[0],)), batch[1])

    # exact: d/d alpha of L_val(w - xi (momentum * buffer + dL_train/dw + wd * w), alpha), by autograd
    grads = torch.autograd.grad(loss(weights, train), list(weights.values()), create_graph=True)
    virtual = {n: w - XI * (MOMENTUM * buffers[n] + g + WEIGHT_DECAY * w) for (n, w), g in zip(weights.items(), grads)}
    exact = torch.autograd.grad(loss(virtual, valid), arch)
    first_order = torch.autograd.grad(loss({n: w.detach() for n, w in virtual.items()}, valid), arch)

    fd = darts.unrolled(run, train, valid, XI)
    coarse = darts.unrolled(run, train, valid, XI, r=0.02)
    for e, f, c, g1 in zip(exact, fd, coarse, first_order):
        implicit = (e - g1).norm()  # the second-order term: what the finite differences estimate
        assert implicit > 0.1 * e.norm()
        error, coarse_error = (f - e).norm(), (c - e).norm()
        assert error < 1e-3 * implicit, (error, implicit)
        assert coarse_error > 3 * error  # the error is the central difference's O(eps^2)
    for n, w in weights.items():  # the weights are restored exactly
        assert torch.equal(w, before[n]), n


@pytest.mark.parametrize("arch_gradient", ["rules", "exact"])
def test_second_order_steps_with_the_rules_that_are_not_gradients(mnist, arch_gradient):
    # dfa (output error through the tap), hebbian (pseudo-gradient, blocked error), pc (inference)
    space = {"rules": ["dfa", "hebbian", "pc"], "ops": ["skip_connect", "sep_conv_3x3"], "exclude": []}
    options = {"epochs": 1, "batch_size": 16, "order": "second", "arch_gradient": arch_gradient}
    result, supernet = run_search("darts", options, mnist, space=space, images=16)  # one step
    initial = make_supernet(bionas.get_search("darts"), mnist, **space)
    for before, after in zip(initial.arch_parameters(), supernet.arch_parameters()):
        assert torch.isfinite(after).all() and not torch.equal(before, after)
    assert set(result.genotype.rules_used()) <= {"dfa", "hebbian", "pc"}


@pytest.mark.parametrize("order", ["first", "second"])
def test_a_training_step_draws_brsf_feedback_once(mnist, order):
    # The architecture step (its optimizer's step, second order's perturbed weights) and the weight step of
    # one training step share one B; only the weights' optimizer step starts the next.
    darts = bionas.get_search("darts", order=order, batch_size=8)
    supernet = make_supernet(darts, mnist, rules=["brsf"], ops=["skip_connect", "sep_conv_3x3"], exclude=[])
    run = darts.start(supernet, tiny_data(mnist, images=16), bionas.Runtime(quiet=True))  # two steps
    darts.prepare(run)
    darts.before_epoch(run, 0)
    layers = [m for m in supernet.modules() if hasattr(m, "feedback_step")]
    for step, (x, y) in enumerate(run.loader, start=1):
        darts.train_step(run, 0, x, y)
        assert {int(m.feedback_step) for m in layers} == {step}


class _WeightGradientConvs(TorchDispatchMode):
    """Counts convolution backward calls that compute a weight gradient (output_mask[1])."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default and args[10][1]:
            self.count += 1
        return func(*args, **(kwargs or {}))


def arch_step_run(mnist, order: str, batching: bool):
    """A darts run prepared on a tiny supernet with every kind of rule, and two batches."""
    space = {"rules": ["usf", "brsf", "fa", "hebbian", "dfa", "pc"], "exclude": []}
    darts = bionas.get_search("darts", order=order, batch_size=8)
    supernet = set_rule_batching(make_supernet(darts, mnist, **space), batching)
    run = darts.start(supernet, tiny_data(mnist, 8), bionas.Runtime(quiet=True))
    darts.prepare(run)
    batch = next(iter(run.loader))
    return darts, run, batch, next(iter(run.loaders["arch"]))


@pytest.mark.parametrize("order", ["first", "second"])
@pytest.mark.parametrize("batching", [True, False])
def test_the_architecture_step_computes_no_weight_gradient(mnist, order, batching):
    darts, run, train_batch, valid_batch = arch_step_run(mnist, order, batching)
    weights = run.weight_parameters()
    for i, w in enumerate(weights):  # half of them hold a gradient already, the rest none
        w.grad = torch.full_like(w, 0.5) if i % 2 else None
    alphas = [a.detach().clone() for a in run.supernet.arch_parameters()]
    with _WeightGradientConvs() as counter:
        darts.arch_step(run, train_batch, valid_batch, lr=0.025)
    assert all((w.grad is None) if i % 2 == 0 else torch.equal(w.grad, torch.full_like(w, 0.5))
               for i, w in enumerate(weights))
    assert not any(torch.equal(a, b) for a, b in zip(alphas, run.supernet.arch_parameters()))
    if order == "first":  # the second order's virtual step needs the weight gradients it computes
        assert counter.count == 0
    else:
        assert counter.count > 0


def test_no_weight_gradients_changes_no_other_gradient(mnist):
    # the alpha gradient of a first-order step is the same with and without it
    grads = []
    for context in (no_weight_gradients, contextlib.nullcontext):
        darts, run, _, (x, y) = arch_step_run(mnist, "first", True)
        with context():
            loss, _ = run.loss_and_logits(x, y)
        grads.append(torch.autograd.grad(loss, run.supernet.arch_parameters()))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_search_steps_give_the_same_alphas_and_weights_stacked_or_not(mnist):
    # three darts steps (architecture, then weights) from the same state, brsf redrawing every step;
    # in float64, so that float32 rounding, which Adam's first steps amplify, does not hide a difference
    space = {"rules": ["usf", "brsf", "frsf", "fa"], "ops": ["none", "max_pool_3x3", "skip_connect", "sep_conv_3x3",
                                                            "dil_conv_3x3"]}  # fmt: skip
    finals = []
    for batching in (True, False):
        darts = bionas.get_search("darts", batch_size=16)
        supernet = set_rule_batching(make_supernet(darts, mnist, **space), batching).double()
        run = darts.start(supernet, tiny_data(mnist), bionas.Runtime(quiet=True))
        darts.prepare(run)
        for (x, y), (x_arch, y_arch) in zip(run.loader, run.loaders["arch"]):
            darts.arch_step(run, (x.double(), y), (x_arch.double(), y_arch), lr=0.025)
            weight_step(run, run.optimizer, x.double(), y, grad_clip=5.0)
        finals.append(supernet.state_dict())
    stacked, single = finals
    for key in stacked:
        torch.testing.assert_close(stacked[key], single[key], msg=key)
