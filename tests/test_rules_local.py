"""dfa, hebbian and pc against their hand-derived updates."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bionas
from bionas.rules import OutputTap, rule_of

# -- dfa ------------------------------------------------------------------------------------------


def test_dfa_three_layer_mlp_equals_the_hand_derived_updates():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    bionas.convert(model, "dfa")
    x = torch.randn(7, 6, dtype=torch.float64, requires_grad=True)
    target = torch.tensor([0, 1, 2, 0, 1, 2, 0])
    F.cross_entropy(model(x), target).backward()

    dfa = rule_of(model[0])
    w1, b1, w2, b2, w3, b3 = (p.detach() for p in model.parameters())
    h0 = x.detach()
    a1 = h0 @ w1.T + b1
    h1 = torch.tanh(a1)
    a2 = h1 @ w2.T + b2
    h2 = torch.tanh(a2)
    a3 = h2 @ w3.T + b3
    e = (torch.softmax(a3, 1) - F.one_hot(target, 3)) / 7  # dL/dlogits
    # B_l maps e to the input of dfa layer l; the layer below receives it times f'(a)
    B3, B2, B1 = (dfa.matrix(model[i], 3, n) for i, n in ((4, 4), (2, 5), (0, 6)))
    delta3 = e  # the output layer trains on its true gradient
    delta2 = (e @ B3) * (1 - h2**2)  # (F_2 e) ⊙ f'(a_2)
    delta1 = (e @ B2) * (1 - h1**2)  # (F_1 e) ⊙ f'(a_1)
    expected = {
        "4.weight": delta3.T @ h2,
        "4.bias": delta3.sum(0),
        "2.weight": delta2.T @ h1,
        "2.bias": delta2.sum(0),
        "0.weight": delta1.T @ h0,
        "0.bias": delta1.sum(0),
    }
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(x.grad, e @ B1, rtol=1e-12, atol=1e-14)
    bound = (6 / (3 + 4)) ** 0.5
    assert B3.abs().max() <= bound  # Xavier-uniform over (outputs, inputs)


def test_dfa_conv_feedback_is_dense_over_the_whole_input():
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 3, 3, padding=1).double()
    model = bionas.convert(nn.Sequential(conv, nn.Flatten(), nn.Linear(3 * 4 * 4, 5).double()), {"0": "dfa"})
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    logits = model(x)
    g = torch.randn_like(logits)
    logits.backward(g)
    b = rule_of(conv).matrix(conv, 5, 2 * 4 * 4)
    torch.testing.assert_close(x.grad, (g @ b).view(2, 2, 4, 4), rtol=1e-12, atol=1e-14)
    assert len(torch.unique(b)) == b.numel()  # no kernel tiled over space


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize(
    "options", [dict(padding=1, padding_mode="reflect"), dict(padding=2, padding_mode="replicate"), dict(padding="same")]
)
def test_dfa_conv_with_explicit_padding_spans_the_unpadded_input(options):
    torch.manual_seed(1)
    kernel = (2, 4) if options["padding"] == "same" else 3  # even: 'same' pads one more row and column
    conv = nn.Conv2d(2, 3, kernel, **options).double()
    body = nn.Sequential(conv, nn.Flatten())
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    features = body(x).shape[1]
    model = bionas.convert(nn.Sequential(*body, nn.Linear(features, 5).double()), {"0": "dfa"})
    logits = model(x)
    g = torch.randn_like(logits)
    logits.backward(g)
    b = conv._bionas_state["matrix"][1]  # the B the backward used
    assert b.shape == (5, 2 * 4 * 4)
    assert torch.equal(b, rule_of(conv).matrix(conv, 5, 2 * 4 * 4))
    torch.testing.assert_close(x.grad, (g @ b).view(2, 2, 4, 4), rtol=0, atol=0)


def test_each_forward_pairs_with_its_own_output_error():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3), OutputTap())
    bionas.convert(model, {"0": "dfa", "2": "dfa"})
    x1, x2 = torch.randn(5, 4), torch.randn(5, 4)

    def grads(*batches):
        model.zero_grad()
        losses = [model(x).pow(3).sum() for x in batches]
        for loss in reversed(losses):  # backward in the opposite order of the forwards
            loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    together = grads(x1, x2)
    separately = [a + b for a, b in zip(grads(x1), grads(x2))]
    for a, b in zip(together, separately):
        torch.testing.assert_close(a, b)


def test_dfa_without_a_tap_raises_instead_of_doing_backprop():
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), bionas.get_rule("dfa").wrap(nn.Linear(3, 2)))
    x = torch.randn(4, 3, requires_grad=True)
    with pytest.raises(RuntimeError, match="OutputTap"):
        model(x).sum().backward()


def test_dfa_checkpoint_regenerates_the_same_matrix():
    torch.manual_seed(3)
    model = bionas.convert(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)), "dfa")
    other = bionas.convert(nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2)), "dfa")
    x = torch.randn(3, 4, requires_grad=True)
    model(x).sum().backward()
    expected = x.grad.clone()
    other.load_state_dict(model.state_dict())
    x.grad = None
    other(x).sum().backward()
    assert torch.equal(x.grad, expected)


# -- hebbian --------------------------------------------------------------------------------------


def softhebb_reference(x, layer, temperature):
    """dW of SoftHebb written out over patches: sum_{n,l} y'_k (x_{n,l} - u_k w_k), y' anti-Hebbian."""
    w = layer.weight.detach()
    if isinstance(layer, nn.Linear):
        patches = x.detach().reshape(-1, w.shape[1]).T.unsqueeze(0)  # (1, in, samples)
        groups, weights = 1, w
    else:
        patches = F.unfold(x.detach(), layer.kernel_size, layer.dilation, layer.padding, layer.stride)
        groups, weights = layer.groups, w.flatten(1)
    per_in, per_out = patches.shape[1] // groups, w.shape[0] // groups
    u = torch.cat(
        [
            torch.einsum("ki,nil->nkl", weights[g * per_out : (g + 1) * per_out], patches[:, g * per_in : (g + 1) * per_in])
            for g in range(groups)
        ],
        dim=1,
    )  # (N, out, L): the weighted input, bias excluded
    y = torch.softmax(u / temperature, dim=1)
    winner = F.one_hot(u.argmax(1), w.shape[0]).permute(0, 2, 1).bool()
    y = torch.where(winner, y, -y)
    yx = torch.cat(
        [
            torch.einsum("nkl,nil->ki", y[:, g * per_out : (g + 1) * per_out], patches[:, g * per_in : (g + 1) * per_in])
            for g in range(groups)
        ]
    )
    update = (yx - (y * u).sum((0, 2))[:, None] * weights).view_as(w)
    return update / update.abs().max()


@pytest.mark.parametrize(
    "layer",
    [
        nn.Linear(6, 4),
        nn.Conv2d(3, 5, 3),
        nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2),
        nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False),
    ],
    ids=["linear", "conv", "conv-stride-pad-dil-groups", "depthwise"],
)
def test_hebbian_pseudo_gradient_equals_the_softhebb_formula(layer):
    torch.manual_seed(4)
    layer = layer.double()
    with torch.no_grad():
        if layer.bias is not None:
            layer.bias.uniform_(-1, 1)
    bionas.get_rule("hebbian", temperature=0.7).wrap(layer)
    x = torch.randn((5, 6) if isinstance(layer, nn.Linear) else (2, layer.in_channels, 7, 7), dtype=torch.float64)
    layer(x).sum().backward()
    torch.testing.assert_close(layer.weight.grad, -softhebb_reference(x, layer, 0.7), rtol=1e-10, atol=1e-12)
    assert layer.bias is None or layer.bias.grad is None


def test_hebbian_sgd_step_moves_the_weight_along_the_update():
    torch.manual_seed(5)
    layer = bionas.get_rule("hebbian", normalize=False).wrap(nn.Linear(5, 3, bias=False).double())
    x = torch.randn(8, 5, dtype=torch.float64)
    before = layer.weight.detach().clone()
    layer(x).sum().backward()
    torch.optim.SGD(layer.parameters(), lr=0.01).step()
    u = x @ before.T
    y = torch.softmax(u, 1)
    y = torch.where(F.one_hot(u.argmax(1), 3).bool(), y, -y)
    update = y.T @ x - (y * u).sum(0)[:, None] * before  # not normalized
    torch.testing.assert_close(layer.weight.detach(), before + 0.01 * update)


def test_hebbian_block_sends_nothing_below_and_pass_sends_the_true_error():
    torch.manual_seed(6)
    below = nn.Linear(4, 4)
    model = nn.Sequential(below, nn.Tanh(), bionas.get_rule("hebbian").wrap(nn.Linear(4, 3)))
    x = torch.randn(5, 4, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is None and below.weight.grad is None and below.bias.grad is None
    assert model[2].weight.grad is not None

    layer = bionas.get_rule("hebbian", error="pass").wrap(nn.Linear(4, 3))
    x = torch.randn(5, 4, requires_grad=True)
    g = torch.randn(5, 3)
    layer(x).backward(g)
    torch.testing.assert_close(x.grad, g @ layer.weight.detach())


def test_stacked_hebbian_layers_all_learn_with_blocked_errors():
    model = bionas.convert(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)), "hebbian")
    model(torch.randn(6, 4)).sum().backward()
    assert all(layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0 for layer in model[::2])


def test_hebbian_learns_only_in_training_mode():
    layer = bionas.get_rule("hebbian").wrap(nn.Linear(4, 3)).eval()
    layer(torch.randn(2, 4)).sum().backward()
    assert layer.weight.grad is None


# -- pc -------------------------------------------------------------------------------------------


class Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + x)


def mlp():
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def resnet_like():
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), Residual(3), nn.Flatten(), nn.Linear(3 * 5 * 5, 4)
    ).double()


def all_grads(model, x, target):
    x = x.detach().requires_grad_()
    model.zero_grad()
    F.cross_entropy(model(x), target).backward()
    return [x.grad, *(p.grad for p in model.parameters())]


@pytest.mark.parametrize(
    "build, shape, pc_part, depth",
    [(mlp, (4, 5), None, 3), (resnet_like, (4, 2, 5, 5), "1", 2), (resnet_like, (4, 2, 5, 5), None, 4)],
    ids=["mlp", "residual-block-with-bn", "whole-resnet-like"],
)
def test_pc_with_eta_1_and_T_at_least_depth_reproduces_backprop(build, shape, pc_part, depth):
    torch.manual_seed(7)
    reference = build()
    x = torch.randn(shape, dtype=torch.float64)
    target = torch.arange(4) % 3
    want = all_grads(reference, x, target)
    for steps in (depth, depth + 3):
        rule = bionas.get_rule("pc", T=steps, eta=1.0)
        model = bionas.convert(copy.deepcopy(reference), {pc_part: rule} if pc_part else rule)
        for got, exp in zip(all_grads(model, x, target), want):
            torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-12)
    short = bionas.convert(copy.deepcopy(reference), bionas.get_rule("pc", T=depth - 1, eta=1.0))
    assert not all(torch.allclose(a, b) for a, b in zip(all_grads(short, x, target), want))


def test_pc_converges_to_backprop_with_small_eta():
    torch.manual_seed(8)
    reference = mlp()
    x, target = torch.randn(4, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    model = bionas.convert(copy.deepcopy(reference), bionas.get_rule("pc", T=400, eta=0.1))
    for got, exp in zip(all_grads(model, x, target), all_grads(reference, x, target)):
        torch.testing.assert_close(got, exp, rtol=1e-8, atol=1e-10)


def test_pc_single_layer_converges_geometrically():
    layer = bionas.get_rule("pc", T=3, eta=0.5).wrap(nn.Linear(3, 2).double())
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(4, 2, dtype=torch.float64)
    layer(x).backward(g)
    factor = 1 - 0.5**3  # eps_T = -(1 - (1 - eta)^T) g
    torch.testing.assert_close(x.grad, factor * g @ layer.weight.detach())
    torch.testing.assert_close(layer.weight.grad, factor * g.T @ x.detach())
