"""The op plugins and the joint (op, rule) space: 22 candidates, stable order, exclude errors at their path."""

import pytest
import torch
from space_support import layer_rules, rules  # noqa: F401  (fixture)
from torch import nn

import bionas
from bionas.errors import SpecError
from bionas.space import SearchSpace
from bionas.spec import load_spec
from bionas_ops import DARTS_OPS

PAPER_CANDIDATES = (
    ["none", "max_pool_3x3", "avg_pool_3x3", "skip_connect/usf", "skip_connect/brsf", "skip_connect/frsf"]
    + [f"{op}/{r}" for op in DARTS_OPS[4:] for r in ("usf", "brsf", "frsf", "fa")]
)


def test_the_eight_darts_ops_are_registered_with_their_kind():
    ops = {info.name: info.cls for info in bionas.list_plugins("op")}
    assert set(DARTS_OPS) <= set(ops)
    assert [name for name in DARTS_OPS if ops[name].parametric] == DARTS_OPS[3:]
    assert [name for name in DARTS_OPS if ops[name].zero] == ["none"]


def test_paper_space_has_22_candidates_in_the_documented_order(rules):
    space = SearchSpace()
    assert space.num_candidates == 22
    assert space.labels == PAPER_CANDIDATES  # ops in spec order, then rules in spec order, minus (skip, fa)


def test_bp_over_the_darts_ops_is_the_darts_space(rules):
    space = SearchSpace({"rules": ["bp"]})
    assert space.labels == ["none", "max_pool_3x3", "avg_pool_3x3"] + [f"{op}/bp" for op in DARTS_OPS[3:]]


def test_every_rule_and_an_empty_exclude(rules):
    space = SearchSpace({"rules": rules, "exclude": []})
    assert space.num_candidates == 3 + 5 * len(rules)
    assert space.index("dil_conv_5x5", "pc") == space.num_candidates - 1


def test_exclude_pairs_are_checked_at_their_path(rules):
    def errors(**space):
        with pytest.raises(SpecError) as err:
            load_spec({"name": "t", "dataset": "d", "genotype": "g.json", "space": space})
        return err.value.errors

    assert errors(rules=["bp"], exclude=[["skip_connect", "bp"], ["sep_conv_3x3", "fa"], ["conv", "bp"]]) == [
        "space.exclude[1]: rule 'fa' is not in space.rules (bp)",
        f"space.exclude[2]: op 'conv' is not in space.ops ({', '.join(DARTS_OPS)})",
    ]
    assert errors(rules=["fa", {"name": "fa"}]) == ["space.rules[1]: rule 'fa' is listed twice"]
    with pytest.raises(SpecError, match=r"space.exclude\[0\]: op 'none' is parameter-free"):
        SearchSpace({"exclude": [["none", "fa"]]})


def test_non_default_rule_options_are_kept_with_the_candidate(toy_plugins, rules):
    space = SearchSpace({"ops": ["toy_op", "skip_connect"], "rules": [{"name": "toy_rule", "options": {"scale": 0.5}}]})
    toy_op, skip = space.candidates
    assert (toy_op.rule, toy_op.rule_ref) == (None, None)
    assert skip.rule_ref == {"name": "toy_rule", "options": {"scale": 0.5}}
    default = SearchSpace({"ops": ["skip_connect"], "rules": [{"name": "toy_rule", "options": {"scale": 1.0}}]})
    assert default.candidates[0].rule_ref == "toy_rule"  # defaults are not recorded


def test_one_rule_with_two_option_sets_gives_two_candidates(toy_plugins, rules):
    half = {"name": "toy_rule", "options": {"scale": 0.5}}
    space = SearchSpace({"ops": ["skip_connect"], "rules": [half, "toy_rule"]})
    assert space.labels == ["skip_connect/toy_rule{'scale': 0.5}", "skip_connect/toy_rule"]
    assert space.index("skip_connect", "toy_rule", {"scale": 0.5}) == 0
    with pytest.raises(SpecError, match=r"space.rules\[1\]: rule 'toy_rule' is listed twice \(options equal after"):
        SearchSpace({"ops": ["skip_connect"], "rules": ["toy_rule", {"name": "toy_rule", "options": {"scale": 1.0}}]})


@pytest.mark.parametrize("size", [32, 28, 7, 8])
@pytest.mark.parametrize("stride", [1, 2])
def test_every_op_keeps_channels_and_maps_size_to_ceil_size_over_stride(rules, size, stride):
    space = SearchSpace({"rules": ["usf"]})
    x = torch.randn(2, 4, size, size)
    out_size = -(-size // stride)
    for i, candidate in enumerate(space.candidates):
        for affine in (False, True):
            out = space.build_candidate(i, 4, stride, affine)(x)
            assert out.shape == (2, 4, out_size, out_size), (candidate.label, affine)


def test_search_pools_are_followed_by_a_batchnorm_and_derived_pools_are_not(rules):
    space = SearchSpace({"rules": ["bp"]})
    searched = space.build_candidate(space.index("max_pool_3x3"), 4, 1, affine=False)
    derived = space.build_candidate(space.index("max_pool_3x3"), 4, 1, affine=True)
    assert isinstance(searched[1], nn.BatchNorm2d) and not searched[1].affine
    assert isinstance(derived, nn.MaxPool2d)


@pytest.mark.parametrize("stride", [1, 2])
def test_max_pool_without_gradients_gives_torch_s_values_and_with_them_torch_s_gradients(stride):
    from bionas_ops import MaxPool2d3x3

    pool = MaxPool2d3x3(stride)
    for shape in [(2, 3, 7, 7), (2, 3, 8, 5), (1, 2, 1, 1)]:
        x = torch.randn(shape)
        for layout in (torch.contiguous_format, torch.channels_last):
            x = x.contiguous(memory_format=layout)
            with torch.no_grad():  # the shifted-maxima path
                assert torch.equal(pool(x), torch.nn.functional.max_pool2d(x, 3, stride, 1))
    x = torch.randn(2, 3, 7, 7, requires_grad=True)
    reference = x.detach().clone().requires_grad_()
    pool(x).square().sum().backward()
    torch.nn.functional.max_pool2d(reference, 3, stride, 1).square().sum().backward()
    assert torch.equal(x.grad, reference.grad)


def test_every_conv_of_a_candidate_learns_by_its_rule_factorized_reduce_too(rules):
    space = SearchSpace({"rules": rules, "exclude": []})
    for i, candidate in enumerate(space.candidates):
        for stride in (1, 2):
            found = layer_rules(space.build_candidate(i, 4, stride))
            if candidate.rule is None or (candidate.op == "skip_connect" and stride == 1):
                assert found == {}, candidate.label  # parameter-free, or the identity
            else:
                assert found and set(found.values()) == {candidate.rule}, (candidate.label, stride, found)
    skip = space.build_candidate(space.index("skip_connect", "frsf"), 4, 2)
    assert len(layer_rules(skip)) == 2  # FactorizedReduce's two convs
