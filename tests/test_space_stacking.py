"""Rule-batched candidates: stacked and one-by-one give the same outputs, gradients and statistics."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bionas
from bionas.rules import exact_gradients, no_weight_gradients
from bionas.space import MixedEdge, SearchSpace
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


def test_batchnorm_statistics_and_eval_mode_match():
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


def test_feedback_is_made_when_the_pass_ends():
    # The stacked convs' feedback is made at the end of the forward pass; a backward from inside
    # an unfinished pass has none, and says so.
    space = SearchSpace({"ops": ["sep_conv_3x3"], "rules": ["usf", "fa"]})
    edge = MixedEdge(space, 4, 1)
    x = torch.randn(2, 4, 5, 5)
    w = torch.full((2,), 0.5, requires_grad=True)
    with batched_pass():
        out = edge(x, w)
        with pytest.raises(RuntimeError, match="forward pass did not finish"):
            out.sum().backward()
    out = edge(x, w)
    out.sum().backward()
    assert w.grad is not None and F.relu(w.grad.abs()).sum() > 0
