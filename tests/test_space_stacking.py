"""Rule-batched candidates: stacked and one-by-one give the same outputs, gradients and statistics."""

import copy

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import bionas
from bionas.rules import exact_gradients, no_weight_gradients
from bionas.space import MixedEdge, SearchSpace, Supernet, stacking
from bionas.space.stacking import batched_pass, set_rule_batching

STACKABLE = ["bp", "fa", "usf", "brsf", "frsf"]
PARAMETRIC_OPS = ["skip_connect", "sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "dil_conv_5x5"]
# every parametric op under every stackable rule, and the parameter-free ops beside them
EVERY_PAIR = {"ops": ["none", "max_pool_3x3", "avg_pool_3x3", *PARAMETRIC_OPS], "rules": STACKABLE, "exclude": []}


def edge_pair(space: SearchSpace, channels: int, stride: int, k: int = 1) -> tuple[MixedEdge, MixedEdge]:
    """(stacked, one-by-one) copies of one float64 edge."""
    torch.manual_seed(0)
    stacked = MixedEdge(space, channels, stride, k).double()
    return stacked, set_rule_batching(copy.deepcopy(stacked), False)


def run(edge: MixedEdge, x: torch.Tensor, w: torch.Tensor, grad: torch.Tensor):
    """Output and the gradients of <out, grad> with respect to x, the mixing weights and every parameter."""
    x, w = x.clone().requires_grad_(), w.clone().requires_grad_()
    out = edge(x, w)
    params = [p for p in edge.parameters()]
    grads = torch.autograd.grad((out * grad).sum(), [x, w, *params], allow_unused=True)
    return out, grads


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("stride, size", [(1, 8), (2, 8), (1, 7), (2, 7)])
def test_stacked_candidates_equal_one_by_one(k, stride, size):
    # every op x rule pair, partial channels, both strides, even and odd sizes (the CPU paths that
    # undilate a convolution need even ones), in training mode: outputs, input / alpha / weight
    # gradients and the BatchNorm statistics left behind
    space = SearchSpace(EVERY_PAIR)
    stacked, single = edge_pair(space, 8, stride, k)
    plan = stacked._plan(stacked.default_active, torch.ones(space.num_candidates, dtype=torch.float64))
    assert len(plan.stacks) == (5 if stride == 2 else 4)  # skip_connect stacks where it is a FactorizedReduce
    x = torch.randn(3, 8, size, size, dtype=torch.float64)
    w = torch.softmax(torch.randn(space.num_candidates, dtype=torch.float64), 0)
    out_size = -(-size // stride)
    grad = torch.randn(3, 8, out_size, out_size, dtype=torch.float64)
    out_s, grads_s = run(stacked, x, w, grad)
    out_1, grads_1 = run(single, x, w, grad)
    torch.testing.assert_close(out_s, out_1)
    for g_s, g_1 in zip(grads_s, grads_1):
        torch.testing.assert_close(g_s, g_1)
    for (name, b_s), b_1 in zip(stacked.named_buffers(), single.buffers()):
        torch.testing.assert_close(b_s, b_1, msg=name)


def test_batchnorm_statistics_and_eval_mode_match(monkeypatch):
    monkeypatch.setattr(stacking, "STACK_FORWARD_ONLY_ON_CPU", True)  # the passes without gradients stack too
    space = SearchSpace(EVERY_PAIR)
    stacked, single = edge_pair(space, 4, 1)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    w = torch.softmax(torch.randn(space.num_candidates, dtype=torch.float64), 0)
    for _ in range(2):  # two training passes: the statistics move, and the stacked copies stay in step
        stacked(x, w), single(x, w)
    state_s, state_1 = stacked.state_dict(), single.state_dict()
    assert state_s.keys() == state_1.keys()
    for key in state_s:
        torch.testing.assert_close(state_s[key], state_1[key], msg=key)
    assert int(state_s["ops.8.3.num_batches_tracked"]) == 2
    stacked.eval(), single.eval()
    with torch.no_grad():  # evaluation with mixing weights that need no gradient (EG-NAS scoring)
        torch.testing.assert_close(stacked(x, w), single(x, w))
    # the statistics loaded from elsewhere are what the stacked path uses next
    single.load_state_dict({k: v + 1 if "running_mean" in k else v for k, v in state_1.items()})
    stacked.load_state_dict(single.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(stacked(x, w), single(x, w))


def test_a_one_hot_row_runs_one_candidate_and_two_run_stacked():
    space = SearchSpace()
    edge = MixedEdge(space, 4, 1)
    chosen = space.index("sep_conv_3x3", "usf")
    w = torch.zeros(space.num_candidates)
    assert edge._plan((chosen,), w).stacks == []  # one active candidate: run as it is
    pair = (chosen, space.index("sep_conv_3x3", "fa"))
    (form, members, from_relu), = edge._plan(pair, w).stacks
    assert members == list(pair) and from_relu


def test_rules_that_cannot_stack_run_one_by_one():
    space = SearchSpace({"ops": ["sep_conv_3x3"], "rules": ["usf", "dfa", "hebbian", "pc", "fa"], "exclude": []})
    edge = MixedEdge(space, 4, 1)
    plan = edge._plan(edge.default_active, torch.ones(space.num_candidates))
    (_, members, _), = plan.stacks
    assert [space.candidates[i].rule for i in members] == ["usf", "fa"]
    assert sorted(space.candidates[i].rule for i in plan.from_relu + plan.plain) == ["dfa", "hebbian", "pc"]


def test_a_plugin_feedback_rule_stacks_unless_it_has_its_own_forward():
    class Plain(bionas.FeedbackRule):
        name = "plain_feedback"
        description = "B = 2 W."

        def feedback(self, layer):
            return 2 * layer.weight

    class OwnForward(Plain):
        name = "own_forward"

        def layer_forward(self, layer, x):
            return super().layer_forward(layer, x)

    class Declared(OwnForward):
        name = "declared"
        stackable = True

    assert Plain.stackable and not OwnForward.stackable and Declared.stackable
    assert not bionas.get_rule("dfa").stackable and not bionas.get_rule("hebbian").stackable
    assert not bionas.get_rule("pc").stackable and bionas.get_rule("bp").stackable


@pytest.mark.parametrize("context", ["exact", "no_weight_gradients"])
def test_exact_gradients_and_no_weight_gradients_hold_stacked(context):
    space = SearchSpace(EVERY_PAIR)
    stacked, single = edge_pair(space, 4, 2)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    w = torch.softmax(torch.randn(space.num_candidates, dtype=torch.float64), 0)
    grad = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    results = []
    for edge in (stacked, single):
        with exact_gradients(edge) if context == "exact" else no_weight_gradients():
            results.append(run(edge, x, w, grad))
    (out_s, grads_s), (out_1, grads_1) = results
    torch.testing.assert_close(out_s, out_1)
    for g_s, g_1 in zip(grads_s, grads_1):
        torch.testing.assert_close(g_s, g_1)
    ruled = [g for g, p in zip(grads_s[2:], stacked.parameters()) if p.dim() == 4 and g is not None]
    if context == "no_weight_gradients":  # only bp layers (plain) still get theirs
        bp = {id(p) for i, c in enumerate(space.candidates) if c.rule == "bp" for p in stacked.ops[i].parameters()}
        assert all(g is None for g, p in zip(grads_s[2:], stacked.parameters()) if id(p) not in bp)
    else:
        assert len(ruled) == len([p for p in stacked.parameters() if p.dim() == 4])


@pytest.mark.parametrize("rule", ["usf", "frsf", "brsf", "fa"])
def test_feedback_many_equals_feedback_layer_by_layer(rule):
    torch.manual_seed(0)
    learning_rule = bionas.get_rule(rule, **({} if rule == "usf" else {"seed": 3}))
    layers = [learning_rule.wrap(nn.Conv2d(4, 4, 3, groups=g)) for g in (1, 2, 4)]
    twins = copy.deepcopy(layers)
    optimizer = torch.optim.SGD([p for layer in layers + twins for p in layer.parameters()], lr=0.1)
    for _ in range(2):  # brsf: a new draw after each optimizer step, the same within one
        for _ in range(2):
            many = learning_rule.feedback_many(layers)
            one_by_one = [learning_rule.feedback(layer) for layer in twins]
            for a, b in zip(many, one_by_one):
                assert torch.equal(a, b)
        for layer, twin in zip(layers, twins):
            layer.weight.grad = torch.randn_like(layer.weight)
            twin.weight.grad = layer.weight.grad.clone()
        optimizer.step()
    for a, b in zip(layers, twins):
        assert a.state_dict().keys() == b.state_dict().keys()
        assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_feedback_is_made_before_the_stacked_convs_run():
    # Every stacked conv gets its feedback as a tensor when it runs (made when the pass starts, or on
    # the spot inside an enclosing pass): a backward from inside an unfinished pass has it, and
    # gives the gradients of a finished one.
    space = SearchSpace({"ops": ["sep_conv_3x3"], "rules": ["usf", "fa"]})
    edge = MixedEdge(space, 4, 1)
    x = torch.randn(2, 4, 5, 5)
    grads = []
    for inside in (True, False):
        w = torch.full((2,), 0.5, requires_grad=True)
        with batched_pass():
            out = edge(x, w)
            if inside:
                out.sum().backward()
        if not inside:
            out.sum().backward()
        grads.append(w.grad)
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=0)


def test_each_candidate_keeps_its_own_parameters_and_state_dict():
    # after a training step through the stacked path, every candidate's state_dict is the one-by-one
    # twin's, with the same parameter count, and loads strictly into a freshly built candidate module
    # (what a derived network builds for it)
    space = SearchSpace(EVERY_PAIR)
    stacked, single = edge_pair(space, 4, 2, k=1)
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    w = torch.softmax(torch.randn(space.num_candidates, dtype=torch.float64), 0)
    for edge in (stacked, single):
        optimizer = torch.optim.SGD(edge.parameters(), lr=0.1, momentum=0.9)
        edge(x, w).square().sum().backward()
        optimizer.step()
    assert sum(p.numel() for p in stacked.parameters()) == sum(p.numel() for p in single.parameters())
    for i, (op_s, op_1) in enumerate(zip(stacked.ops, single.ops)):
        state_s, state_1 = op_s.state_dict(), op_1.state_dict()
        assert list(state_s) == list(state_1)
        for key in state_s:
            torch.testing.assert_close(state_s[key], state_1[key], msg=f"candidate {i} {key}")
        fresh = space.build_candidate(i, 4, 2).double()
        fresh.load_state_dict(state_s)  # strict: the same keys and shapes
        assert all(torch.equal(a, b) for a, b in zip(state_s.values(), fresh.state_dict().values()))


def test_a_rule_that_cannot_stack_runs_per_candidate_with_the_same_result():
    # dfa, hebbian, pc and a plugin rule with its own forward beside stackable ones: the plan runs them one
    # by one, and the edge's output and gradients equal those of an edge run wholly one by one
    class OwnForward(bionas.FeedbackRule):
        name = "own_forward_stacking_test"
        description = "B = W, by its own forward."

        def feedback(self, layer):
            return layer.weight

        def layer_forward(self, layer, x):
            return super().layer_forward(layer, x)

    class Plugin:
        @bionas.hookimpl
        def bionas_register_rules(self, register):
            register(OwnForward)

    registry = bionas.registry.get_registry()
    plugin = registry.register_plugin(Plugin(), "own-forward-rule")
    try:
        space = SearchSpace({"ops": ["sep_conv_3x3"], "rules": ["usf", "fa", "hebbian", OwnForward.name], "exclude": []})
        stacked, single = edge_pair(space, 4, 1)
        plan = stacked._plan(stacked.default_active, torch.ones(space.num_candidates, dtype=torch.float64))
        (_, members, _), = plan.stacks
        assert [space.candidates[i].rule for i in members] == ["usf", "fa"]
        x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
        w = torch.softmax(torch.randn(space.num_candidates, dtype=torch.float64), 0)
        grad = torch.randn(2, 4, 6, 6, dtype=torch.float64)
        (out_s, grads_s), (out_1, grads_1) = run(stacked, x, w, grad), run(single, x, w, grad)
        torch.testing.assert_close(out_s, out_1)
        for g_s, g_1 in zip(grads_s, grads_1):
            torch.testing.assert_close(g_s, g_1)
    finally:
        registry.unregister_plugin(plugin)


class _Convolutions(TorchDispatchMode):
    """Counts the convolutions dispatched."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten.convolution.default
        return func(*args, **(kwargs or {}))


def _convs(module: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in module.modules())


def test_a_one_hot_architecture_runs_only_its_candidates():
    # random search's training and evaluation: of each edge only the chosen candidate runs, by itself
    from bionas_search.random_search import sample_weights

    torch.manual_seed(0)
    space = SearchSpace({"channels": 4, "cells": 3, "nodes": 2})  # the paper's 22 candidates
    supernet = Supernet(space, 10).eval()
    weights = sample_weights(space, torch.Generator().manual_seed(1))
    called = set()
    edges = [(cell, e, edge) for cell in supernet.cells for e, edge in enumerate(cell.edges)]
    for *_, edge in edges:
        for op in edge.ops:
            op.register_forward_hook(lambda module, args, out: called.add(id(module)))
    chosen = []
    for cell, e, edge in edges:
        row = weights["reduce" if cell.reduction else "normal"][e]
        chosen += [edge.ops[i] for i in row.nonzero().flatten().tolist()]
    with torch.no_grad(), _Convolutions() as counter:
        supernet(torch.randn(2, 3, 8, 8), weights)
    assert called <= {id(op) for op in chosen}
    outside_edges = _convs(supernet) - sum(_convs(edge) for *_, edge in edges)
    assert counter.count == outside_edges + sum(_convs(op) for op in chosen)


def test_population_scoring_gives_the_same_stacked_or_one_by_one(monkeypatch):
    # EG-NAS scores dense mixing weights (every candidate active) in eval mode without gradients: one by
    # one on the CPU, where stacking them measured no cheaper; stacked elsewhere, with the same result
    from bionas_search.egnas import candidate_weights

    space = SearchSpace({"channels": 4, "cells": 3, "nodes": 2})

    def build():
        torch.manual_seed(0)
        return Supernet(space, 10).double().eval()

    stacked, single = build(), set_rule_batching(build(), False)
    assert all(torch.equal(a, b) for a, b in zip(stacked.state_dict().values(), single.state_dict().values()))
    z = torch.randn(2 * stacked.alphas_normal.numel(), generator=torch.Generator().manual_seed(2)).numpy()
    _, mixing = candidate_weights(z, stacked.alphas_normal.shape)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    edges = [edge for cell in stacked.cells for edge in cell.edges]
    with torch.no_grad():
        by_default = stacked(x, mixing)
    assert not any(plan.stacks for edge in edges for plan in edge._plans.values())
    monkeypatch.setattr(stacking, "STACK_FORWARD_ONLY_ON_CPU", True)  # as off the CPU
    with torch.no_grad():
        torch.testing.assert_close(stacked(x, mixing), single(x, mixing))
    assert any(plan.stacks for edge in edges for plan in edge._plans.values())
    torch.testing.assert_close(by_default, single(x, mixing))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_repeat_channels_and_sum_candidates_are_each_other_s_backward_in_few_operators(layout):
    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.total += 1
            return func(*args, **(kwargs or {}))

    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5).contiguous(memory_format=layout).requires_grad_()
    weights, ones = torch.randn(1, 12, 1, 1), torch.ones(2, 3, 4, 5).contiguous(memory_format=layout)
    with Count() as count:
        stacked = stacking.repeat_channels(x, 4)
        total = stacking.sum_candidates(stacked * weights, 4, x)
        total.backward(ones)
    assert torch.equal(stacked, x.repeat(1, 4, 1, 1)) and stacked.is_contiguous(memory_format=layout)
    expected = (x.repeat(1, 4, 1, 1) * weights).unflatten(1, (4, 3)).sum(1)
    torch.testing.assert_close(total, expected, rtol=0, atol=1e-6)
    assert total.is_contiguous(memory_format=layout)
    torch.testing.assert_close(x.grad, weights.view(4, 3).sum(0).view(1, 3, 1, 1).expand_as(x), rtol=0, atol=1e-6)
    # each way: a cat, the mul, a sum with its view (and channels_last, its output); x's gradient stored
    assert count.total <= 11  # as chains of views they were more than twice as many
