"""The supernet: the DARTS parameter count, exact mixed edges, weight overrides, every rule, an MNIST step."""

import pytest
import torch
import torch.nn.functional as F
from space_support import layer_rules, rules  # noqa: F401  (fixture)
from torch import nn

from bionas.rules import rule_of
from bionas.space import DARTS_V2, Genotype, MixedEdge, Network, SearchSpace, Supernet, count_parameters
from bionas.space.candidates import FIXED_LAYERS as FIXED
from bionas.space.blocks import num_edges

TINY = {"channels": 4, "cells": 3}  # reductions at cells 1 and 2
DFA_GENOTYPE = {
    **{k: v for k, v in DARTS_V2.to_dict().items() if k != "fixed_rules"},
    "fixed_rules": dict.fromkeys(FIXED, "dfa"),
    "normal": [{**e, "rule": e["rule"] and "dfa"} for e in DARTS_V2.to_dict()["normal"]],
    "reduce": [{**e, "rule": e["rule"] and "dfa"} for e in DARTS_V2.to_dict()["reduce"]],
}


def test_darts_supernet_parameter_count(rules):
    # DARTS train_search.py, C=16, 8 cells, 10 classes: "param size = 1.930618MB" (alphas not counted).
    net = Supernet(SearchSpace({"rules": ["bp"], "channels": 16, "cells": 8}), num_classes=10)
    assert count_parameters(net) == 1_930_618
    # PC-DARTS train_search.py, K=4: "param size = 0.299578MB" (betas not counted either)
    pc_darts = {"partial_channels": 4, "edge_normalization": True}
    space = SearchSpace({"rules": ["bp"], "channels": 16, "cells": 8, **pc_darts})
    assert count_parameters(Supernet(space, num_classes=10)) == 299_578


def test_alphas_and_weights_are_separate_parameter_groups(rules):
    net = Supernet(SearchSpace({**TINY, "edge_normalization": True}), num_classes=10)
    alphas_normal, alphas_reduce, betas_normal, betas_reduce = net.arch_parameters()
    assert alphas_normal.shape == alphas_reduce.shape == (14, 22)
    assert betas_normal.shape == betas_reduce.shape == (14,)
    assert 0 < alphas_normal.abs().max() < 0.01  # DARTS: 1e-3 * randn
    weights = net.weight_parameters()
    assert {id(p) for p in weights} | {id(p) for p in net.arch_parameters()} == {id(p) for p in net.parameters()}
    assert not {id(p) for p in weights} & {id(p) for p in net.arch_parameters()}


def naive_mix(edge: MixedEdge, x, weights):
    """DARTS MixedOp: sum over every candidate, the zero op included, nothing shared."""
    return sum(w * op(x) for w, op in zip(weights, edge.ops))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("space_rules", [["usf", "brsf", "frsf", "fa"], ["pc", "hebbian", "bp"]])
def test_mixed_edge_equals_the_plain_weighted_sum(rules, stride, space_rules):
    # pc works on an op as a whole, so its candidates must not share the leading ReLU
    torch.manual_seed(0)
    space = SearchSpace({"rules": space_rules})
    edge = MixedEdge(space, channels=4, stride=stride)
    x = torch.randn(3, 4, 7, 7, requires_grad=True)
    w = torch.softmax(torch.randn(space.num_candidates), 0).requires_grad_()
    fast = edge(x, w)
    grads_fast = torch.autograd.grad(fast.square().sum(), [x, w])
    slow = naive_mix(edge, x, w)
    grads_slow = torch.autograd.grad(slow.square().sum(), [x, w])
    torch.testing.assert_close(fast, slow)
    for a, b in zip(grads_fast, grads_slow):
        torch.testing.assert_close(a, b)


def conv_calls(module: nn.Module) -> dict[int, int]:
    """Count forward calls of every conv by id, via hooks (returns the live counter)."""
    calls = {}
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            layer.register_forward_hook(lambda m, i, o: calls.__setitem__(id(m), calls.get(id(m), 0) + 1))
    return calls


def test_one_hot_weights_run_only_the_chosen_candidates(rules):
    torch.manual_seed(0)
    space = SearchSpace(TINY)
    net = Supernet(space, num_classes=10, in_channels=1)
    choice = space.index("sep_conv_5x5", "frsf")
    one_hot = F.one_hot(torch.full((14,), choice), space.num_candidates).float()
    weights = {"normal": one_hot, "reduce": one_hot}
    calls = conv_calls(net)
    x = torch.rand(2, 1, 8, 8)
    net.eval()
    out = net(x, weights)
    chosen = {id(c) for cell in net.cells for e in cell.edges for c in e.ops[choice].modules()}
    edge_convs = {id(c) for cell in net.cells for e in cell.edges for c in e.modules() if isinstance(c, nn.Conv2d)}
    assert chosen & edge_convs and {k for k in calls if k in edge_convs} == chosen & edge_convs
    # the same numbers as running every candidate with those weights
    torch.testing.assert_close(out, net(x, {k: w.clone().requires_grad_() for k, w in weights.items()}))


@pytest.mark.parametrize("model", ["supernet", "network"])
def test_dfa_layers_get_the_output_error_through_the_output_tap(rules, model):
    torch.manual_seed(0)
    if model == "supernet":
        net = Supernet(SearchSpace({**TINY, "rules": ["dfa"], "fixed_rules": dict.fromkeys(FIXED, "dfa")}), 10)
    else:
        net = Network(Genotype.from_dict(DFA_GENOTYPE), channels=4, cells=3)
    x, y = torch.rand(2, 3, 8, 8), torch.tensor([1, 2])
    F.cross_entropy(net(x), y).backward()
    dfa_weights = [m.weight for m in net.modules() if isinstance(m, nn.Conv2d) and rule_of(m) is not None]
    assert dfa_weights and all(w.grad is not None and w.grad.abs().sum() > 0 for w in dfa_weights)
    net.output_tap = nn.Identity()  # without the tap, dfa layers have no error to learn from
    with pytest.raises(Exception, match="(?i)tap"):
        F.cross_entropy(net(x), y).backward()


def test_weights_must_have_the_alphas_shape(rules):
    net = Supernet(SearchSpace(TINY), num_classes=10)
    with pytest.raises(ValueError, match=r"weights\['normal'\] has shape \(14, 8\), expected \(14, 22\)"):
        net(torch.rand(1, 3, 8, 8), {"normal": torch.rand(14, 8), "reduce": torch.rand(14, 22)})


def test_forward_backward_with_every_rule(rules):
    torch.manual_seed(0)
    space = SearchSpace({**TINY, "rules": rules, "exclude": []})
    net = Supernet(space, num_classes=10, in_channels=1, mean=[0.13], std=[0.31])
    out = net(torch.rand(2, 1, 8, 8))
    F.cross_entropy(out, torch.tensor([1, 2])).backward()
    assert out.shape == (2, 10)
    assert all(p.grad is not None for p in net.arch_parameters())
    for rule in rules:  # every rule's candidates took part
        index = space.index("sep_conv_3x3", rule)
        chosen = [p for cell in net.cells for e in cell.edges for p in e.ops[index].parameters()]
        assert chosen and all(p.grad is not None for p in chosen), rule


@pytest.mark.parametrize("options", [{"partial_channels": 2}, {"edge_normalization": True, "nodes": 3},
                                     {"partial_channels": 2, "edge_normalization": True, "nodes": 2}])  # fmt: skip
def test_partial_channels_edge_normalization_and_other_node_counts(rules, options):
    space = SearchSpace({**TINY, "channels": 8, **options})
    net = Supernet(space, num_classes=10)
    nodes = options.get("nodes", 4)
    assert net.alphas_normal.shape == (num_edges(nodes), 22)
    out = net(torch.rand(2, 3, 9, 9))  # odd sizes work
    out.sum().backward()
    assert out.shape == (2, 10) and all(p.grad is not None for p in net.arch_parameters())
    assert len(net.genotype().normal) == 2 * nodes


def test_fixed_layers_learn_by_their_rules(rules):
    space = SearchSpace({**TINY, "fixed_rules": {"stem": "fa", "preprocess": "usf", "classifier": "frsf"}})
    net = Supernet(space, num_classes=10)
    assert set(layer_rules(net.stem).values()) == {"fa"}
    assert set(layer_rules(net.classifier).values()) == {"frsf"}
    preprocess = [*layer_rules(net.cells[2].preprocess0).values(), *layer_rules(net.cells[2].preprocess1).values()]
    assert preprocess == ["usf"] * 3  # a FactorizedReduce (2 convs) after a reduction cell, and a 1x1 conv
    for cell in net.cells:
        for edge in cell.edges:
            for candidate, op in zip(space.candidates, edge.ops):
                assert set(layer_rules(op).values()) <= {candidate.rule}


def test_a_supernet_step_on_mnist_reduces_the_loss(rules, mnist_tensors):
    torch.manual_seed(0)
    channels_last = torch.channels_last  # several times faster on CPU too
    images = mnist_tensors[0][:32].contiguous(memory_format=channels_last)
    labels = mnist_tensors[1][:32]
    space = SearchSpace({**TINY, "channels": 8, "rules": ["bp"]})
    net = Supernet(space, 10, in_channels=1, mean=[0.13], std=[0.31]).to(memory_format=channels_last)
    # DARTS search weights: SGD momentum 0.9, weight decay 3e-4, gradient clip 5
    optimizer = torch.optim.SGD(net.weight_parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    losses = []
    for _ in range(4):
        optimizer.zero_grad()
        loss = F.cross_entropy(net(images), labels)
        loss.backward()
        nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
        optimizer.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 0.1, losses


@pytest.mark.parametrize("channels, k", [(6, 4), (5, 2), (10, 3)])
def test_partial_channels_must_divide_the_channels(channels, k):
    from bionas.errors import SpecError

    space = SearchSpace({**TINY, "channels": channels, "partial_channels": k})
    with pytest.raises(SpecError, match=rf"space.channels: {channels} is not a multiple of partial_channels {k} "):
        Supernet(space, 10, in_channels=1)


@pytest.mark.parametrize("channels, k", [(4, 4), (6, 2), (3, 1)])
def test_an_odd_share_per_edge_trains(channels, k):
    # Stride-2 skips (FactorizedReduce, which halves) only run in reduction cells, where the share 2C/K is even.
    space = SearchSpace({**TINY, "channels": channels, "partial_channels": k})
    net = Supernet(space, 10, in_channels=1)
    net(torch.rand(2, 1, 16, 16)).logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in net.weight_parameters() if p.requires_grad)
