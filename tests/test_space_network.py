"""The derived network: the DARTS_V2 parameter count, every rule, rules of every layer, aux head, drop path."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from space_support import layer_rules, rules  # noqa: F401  (fixture)
from torch import nn

from bionas.ops import FactorizedReduce
from bionas.space import BIONAS_DARTS, DARTS_V2, Edge, Genotype, Network, count_parameters


def test_darts_v2_parameter_count(rules):
    # DARTS train.py, DARTS_V2, C=36, 20 cells, 10 classes: "param size = 3.349342MB" (auxiliary excluded).
    net = Network(DARTS_V2, channels=36, cells=20, num_classes=10, auxiliary=True)
    assert count_parameters(net) == 3_349_342
    assert count_parameters(net, exclude_auxiliary=False) == 3_349_342 + 476_426  # AuxiliaryHeadCIFAR on 576 ch


def with_rule(genotype: Genotype, rule: str) -> Genotype:
    """`genotype` with every parametric edge and every fixed layer on `rule`."""

    def cell(edges):
        return [Edge(e.op, None if e.rule is None else rule, e.source) for e in edges]

    return dataclasses.replace(
        genotype,
        normal=cell(genotype.normal),
        reduce=cell(genotype.reduce),
        fixed_rules=dict.fromkeys(genotype.fixed_rules, rule),
    )


def test_forward_backward_with_every_rule(rules):
    torch.manual_seed(0)
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([3, 4])  # digits-sized
    for rule in rules:
        net = Network(with_rule(BIONAS_DARTS, rule), channels=4, cells=3, in_channels=1, auxiliary=True, image_size=8)
        net.train()
        logits, aux = net.forward_with_aux(x)
        (F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)).backward()
        assert logits.shape == aux.shape == (2, 10)
        assert all(m.weight.grad is not None for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), rule
        if rule != "hebbian":  # SoftHebb sends no error below (its published setting): BatchNorms get none
            assert all(p.grad is not None for p in net.parameters()), rule


def test_every_layer_learns_by_its_genotype_rule(rules):
    fixed = {"stem": "fa", "preprocess": "brsf", "classifier": "dfa", "auxiliary": "hebbian"}
    genotype = dataclasses.replace(BIONAS_DARTS, fixed_rules=fixed)
    net = Network(genotype, channels=4, cells=6, auxiliary=True)
    assert set(layer_rules(net.stem).values()) == {"fa"}
    assert set(layer_rules(net.classifier).values()) == {"dfa"}
    assert set(layer_rules(net.auxiliary_head).values()) == {"hebbian"} and len(layer_rules(net.auxiliary_head)) == 3
    for i, cell in enumerate(net.cells):
        edges = genotype.reduce if cell.reduction else genotype.normal
        preprocess = [*layer_rules(cell.preprocess0).values(), *layer_rules(cell.preprocess1).values()]
        assert set(preprocess) == {"brsf"} and len(preprocess) == (3 if i in (3, 5) else 2)  # FactorizedReduce: 2
        for edge, op in zip(edges, cell.ops):
            found = layer_rules(op)
            identity = edge.op == "skip_connect" and not (cell.reduction and edge.source < 2)
            if edge.rule is None or identity:
                assert found == {} and (not identity or isinstance(op, nn.Identity))
            else:  # including skip_connect/usf from node 1 in the reduction cell: a FactorizedReduce
                assert found and set(found.values()) == {edge.rule}, (i, edge)


@pytest.mark.parametrize("size, pool", [(32, nn.AvgPool2d), (28, nn.AdaptiveAvgPool2d)])
def test_auxiliary_head_is_dartss_on_8x8_maps_and_adaptive_otherwise(rules, size, pool):
    net = Network(DARTS_V2, channels=4, cells=3, in_channels=1 if size == 28 else 3, auxiliary=True, image_size=size)
    assert isinstance(net.auxiliary_head.features[1], pool)
    net.train()
    logits, aux = net.forward_with_aux(torch.rand(2, net.stem[0].in_channels, size, size))
    assert aux.shape == (2, 10)
    assert torch.is_tensor(net(torch.rand(2, net.stem[0].in_channels, size, size)))  # plain logits
    net.eval()
    assert net.forward_with_aux(torch.rand(1, net.stem[0].in_channels, size, size))[1] is None


def test_drop_path_spares_identities_and_acts_only_in_training(rules):
    torch.manual_seed(0)
    net = Network(DARTS_V2, channels=4, cells=3)
    normal = net.cells[0]
    assert normal.droppable == [True, True, True, True, True, False, False, True]  # skip_connect at stride 1
    assert net.cells[1].droppable == [True, True, False, True, True, False, False, True]  # skips from node 2
    assert Network(BIONAS_DARTS, channels=4, cells=3).cells[1].droppable[1]  # a stride-2 skip: FactorizedReduce
    x = torch.rand(4, 3, 16, 16)
    net.drop_path_prob = 0.5
    net.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


def test_normalization_channels_last_and_odd_sizes(rules):
    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    net = Network(DARTS_V2, channels=4, cells=3, mean=mean, std=std).eval()
    x = torch.rand(2, 3, 15, 15)
    expected = net(x)
    assert torch.equal(net.normalize.mean.flatten(), torch.tensor(mean))
    net = net.to(memory_format=torch.channels_last)
    torch.testing.assert_close(net(x.contiguous(memory_format=torch.channels_last)), expected)


def test_factorized_reduce_channels_last_on_the_cpu_with_few_channels():
    # torch's CPU kernel for channels_last 1x1 stride-2 convs of <= 4 input channels corrupts memory; the
    # block runs its convs at stride 1 on every other pixel: DARTS's outputs and gradients, in either layout
    torch.manual_seed(0)
    block = FactorizedReduce(2, 4).double()
    x = torch.randn(8, 2, 9, 9, dtype=torch.float64)
    grad = torch.randn(8, 4, 5, 5, dtype=torch.float64)
    results = []
    for layout in (torch.contiguous_format, torch.channels_last):
        block.to(memory_format=layout).zero_grad()
        xx = x.clone(memory_format=layout).requires_grad_()
        out = block(xx)
        (out * grad).sum().backward()
        results.append([out.detach(), xx.grad, *(p.grad.clone() for p in block.parameters())])
    shifted = F.pad(F.relu(x)[:, :, 1:, 1:], (0, 1, 0, 1))
    darts = torch.cat([F.conv2d(F.relu(x), block.conv_1.weight.detach(), stride=2),
                       F.conv2d(shifted, block.conv_2.weight.detach(), stride=2)], 1)
    torch.testing.assert_close(results[0][0], F.batch_norm(darts, None, None, block.bn.weight.detach(),
                                                           block.bn.bias.detach(), True))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)
