"""Learning rules, engine side and the feedback-alignment family: exact against the formulas."""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bionas
from bionas.errors import PluginError, SpecError
from bionas.rules import FeedbackRule, LearningRule, exact_gradients, rule_of
from bionas.rules.seeding import seeded_draws

# the original nn.Conv2d warns about its own 'same' padding with an even kernel
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same'")

ALL_RULES = ["bp", "fa", "usf", "brsf", "frsf", "dfa", "hebbian", "pc"]
FEEDBACK_RULES = ["fa", "usf", "brsf", "frsf"]
INIT_RULES = [*FEEDBACK_RULES, "dfa"]  # re-initialise the layers they wrap as BioTorch does (weight_init)

# Conv2d settings the formulas must hold for: kwargs of nn.Conv2d(in_channels=4, ...)
CONVS = {
    "plain": dict(out_channels=6, kernel_size=3),
    "stride-pad-dil-groups": dict(out_channels=6, kernel_size=3, stride=2, padding=1, dilation=2, groups=2),
    "depthwise": dict(out_channels=8, kernel_size=3, padding=1, groups=4, bias=False),
    "reflect": dict(out_channels=6, kernel_size=3, padding=2, padding_mode="reflect"),
    "same-even-kernel": dict(out_channels=6, kernel_size=(2, 4), padding="same", dilation=(1, 2)),
    "asym-stride": dict(out_channels=6, kernel_size=(3, 1), stride=(2, 1), padding=(0, 1)),
}


def make_layer(kind: str) -> nn.Module:
    if kind == "linear":
        return nn.Linear(7, 5).double()
    return nn.Conv2d(4, **CONVS[kind]).double()


def rule_keeping_weights(name: str) -> LearningRule:
    """The rule, with weight_init 'keep' where it has the option: wrapping leaves the layer's forward as it was."""
    return bionas.get_rule(name, weight_init="keep") if name in INIT_RULES else bionas.get_rule(name)


def make_input(kind: str) -> torch.Tensor:
    shape = (3, 2, 7) if kind == "linear" else (2, 4, 9, 10)  # Linear: extra leading dim
    return torch.randn(shape, dtype=torch.float64, requires_grad=True)


def ordinary_grads(layer: nn.Module, x: torch.Tensor, g: torch.Tensor, weight: torch.Tensor):
    """Gradients of <layer's function with `weight` in place of W, g>, by autograd on the plain ops."""
    x = x.detach().requires_grad_()
    w = weight.detach().requires_grad_()
    b = None if layer.bias is None else layer.bias.detach().requires_grad_()
    if isinstance(layer, nn.Linear):
        y = F.linear(x, w, b)
    else:
        y = layer._conv_forward(x, w, b)
    (y * g).sum().backward()
    return x.grad, w.grad, None if b is None else b.grad


def expected_feedback(rule: str, layer: nn.Module) -> torch.Tensor:
    """B from the published formula, computed here independently of the rule code."""
    w = layer.weight.detach()
    fan_in = w[0].numel()
    fan_out = w.shape[0] * w[0, 0].numel()
    if rule == "fa":
        return layer.feedback
    if rule == "usf":
        return torch.sign(w) * math.sqrt(2.0 / (fan_in + fan_out))
    if rule == "frsf":
        return layer.feedback_magnitude * torch.sign(w)
    if rule == "brsf":  # |R_k|, R_k the seeded draw of (feedback_seed, feedback_step)
        draw_k = seeded_draws([layer.feedback_seed], [layer.feedback_step], [w.shape])[0]
        return draw_k.abs().to(w.dtype) * torch.sign(w)
    raise AssertionError(rule)


# -- registry and plugin contract -----------------------------------------------------------------


def test_every_rule_is_registered_with_documented_options():
    infos = {info.name: info for info in bionas.list_plugins("rule")}
    assert set(ALL_RULES) <= set(infos)
    for name in ALL_RULES:
        cls = infos[name].cls
        assert issubclass(cls, LearningRule) and cls.description.strip()
        assert all(f.description for f in cls.Options.model_fields.values())
    assert bionas.registry.get_registry().problems == []


def test_options_carry_published_defaults_and_are_validated():
    assert bionas.get_rule("fa").options.init == "xavier_uniform"
    assert bionas.get_rule("usf").options.scale == "xavier"
    assert bionas.get_rule("brsf").options.redraw == "optimizer_step"
    assert bionas.get_rule("hebbian").options.error == "block"
    assert all(bionas.get_rule(name).options.weight_init == "xavier_uniform" for name in INIT_RULES)
    assert bionas.get_rule("hebbian").options.temperature == 1.0
    assert bionas.get_rule("pc").options.T == 50 and bionas.get_rule("pc").options.eta == 0.1
    with pytest.raises(SpecError):
        bionas.get_rule("pc", T=0)
    with pytest.raises(SpecError):
        bionas.get_rule("hebbian", error="sometimes")
    with pytest.raises(PluginError, match="Did you mean: usf"):
        bionas.get_rule("usff")


# -- wrapping contract ----------------------------------------------------------------------------


@pytest.mark.parametrize("rule", ALL_RULES)
@pytest.mark.parametrize("kind", ["linear", *CONVS])
def test_wrap_keeps_forward_parameters_and_keys(rule, kind):
    torch.manual_seed(0)
    layer = make_layer(kind)
    original = copy.deepcopy(layer)
    params = dict(layer.named_parameters())
    keys = set(layer.state_dict())
    wrapped = rule_keeping_weights(rule).wrap(layer)
    assert wrapped is layer and isinstance(layer, type(original))
    assert dict(layer.named_parameters()) == params  # the same Parameter objects
    assert sum(p.numel() for p in layer.parameters()) == sum(p.numel() for p in original.parameters())
    assert keys <= set(layer.state_dict())
    persistent = {n for n, _ in layer.named_buffers() if n not in layer._non_persistent_buffers_set}
    assert set(layer.state_dict()) - keys == persistent
    x = make_input(kind)
    assert torch.equal(layer(x), original(x))
    layer.eval()
    assert torch.equal(layer(x), original(x))


def test_reapplying_replaces_the_rule_and_bp_unwraps():
    layer = nn.Conv2d(3, 4, 3)
    cls = type(layer)
    bionas.get_rule("fa").wrap(layer)
    bionas.get_rule("brsf").wrap(layer)
    assert type(layer).__mro__.count(nn.Conv2d) == 1 and type(layer).__bases__[1] is cls
    assert set(layer.state_dict()) == {"weight", "bias", "feedback_seed", "feedback_step"}
    assert {n for n, _ in layer.named_buffers()} == {"feedback_seed", "feedback_step", "training_step_due"}
    assert rule_of(layer).name == "brsf"
    bionas.get_rule("bp").apply(layer)
    assert type(layer) is cls and list(layer.named_buffers()) == [] and rule_of(layer) is None


def test_wrap_refuses_what_it_cannot_wrap():
    class Custom(nn.Linear):
        def forward(self, x):
            return super().forward(x) * 2

    with pytest.raises(PluginError, match="overrides forward"):
        bionas.get_rule("fa").wrap(Custom(3, 3))
    with pytest.raises(PluginError, match="neither"):
        bionas.get_rule("fa").wrap(nn.ReLU())
    model = nn.Sequential(nn.Linear(3, 3), Custom(3, 3))
    bionas.convert(model, "fa")  # skips the custom layer, converts the rest
    assert rule_of(model[0]) is not None and rule_of(model[1]) is None


def test_pickle_and_deepcopy_keep_the_rule_and_its_backward():
    torch.manual_seed(0)
    model = bionas.convert(nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 4)), "fa")
    x = torch.randn(2, 2, 4, 4, requires_grad=True)
    model(x).sum().backward()
    expected = x.grad.clone()
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert isinstance(clone[0], nn.Conv2d) and rule_of(clone[0]).name == "fa"
        x.grad = None
        clone(x).sum().backward()
        assert torch.equal(x.grad, expected)


# -- the initialisation of wrapped layers (BioTorch's) ---------------------------------------------

# The layer types of the searched cells: 1x1 conv, depthwise conv (a sep/dil conv's), and Linear.
INIT_LAYERS = {
    "1x1": lambda: nn.Conv2d(32, 32, 1, bias=False),
    "depthwise": lambda: nn.Conv2d(32, 32, 5, padding=2, groups=32, bias=False),
    "linear": lambda: nn.Linear(200, 100),
}


def xavier_bound(weight: torch.Tensor) -> float:
    fan_in, fan_out = weight[0].numel(), weight.shape[0] * weight[0, 0].numel()
    return math.sqrt(6 / (fan_in + fan_out))


@pytest.mark.parametrize("rule", FEEDBACK_RULES)
@pytest.mark.parametrize("kind", INIT_LAYERS)
def test_default_init_is_xavier_so_feedback_and_weight_have_the_same_scale(rule, kind):
    # BioTorch (layers/fa_constructor init_parameters, init "xavier"): W Xavier-uniform, bias 0, B Xavier-uniform
    # (usf: sqrt(2 / (fan_in + fan_out)) sign(W), the Xavier std), so |B| / |W| is 1 up to sampling noise:
    # E|W|^2 = E|B|^2 = n * 2 / (fan_in + fan_out); about 1% relative noise for these n (800 to 20,000).
    torch.manual_seed(0)
    layer = bionas.get_rule(rule).wrap(INIT_LAYERS[kind]())
    assert layer.weight.abs().max() <= xavier_bound(layer.weight)
    assert layer.weight.abs().max() > 0.95 * xavier_bound(layer.weight)  # uniform up to the bound
    assert layer.bias is None or not layer.bias.any()
    assert bionas.alignment(layer)[""].norm_ratio == pytest.approx(1.0, abs=0.06)


@pytest.mark.parametrize("rule", FEEDBACK_RULES)
@pytest.mark.parametrize("kind", INIT_LAYERS)
def test_keep_leaves_pytorch_s_init_and_its_scale_mismatch(rule, kind):
    # PyTorch's default init is Kaiming-uniform with a = sqrt(5): Var W = 1 / (3 fan_in). B keeps the Xavier
    # variance 2 / (fan_in + fan_out), so |B| / |W| = sqrt(6 fan_in / (fan_in + fan_out)): sqrt(3) for a square
    # 1x1 conv, sqrt(6 / (1 + C)) for a C-channel depthwise conv (fan_in k^2, fan_out C k^2).
    torch.manual_seed(0)
    layer = INIT_LAYERS[kind]()
    before = copy.deepcopy(layer.state_dict())
    bionas.get_rule(rule, weight_init="keep").wrap(layer)
    assert all(torch.equal(layer.state_dict()[k], v) for k, v in before.items())
    fan_in, fan_out = layer.weight[0].numel(), layer.weight.shape[0] * layer.weight[0, 0].numel()
    expected = math.sqrt(6 * fan_in / (fan_in + fan_out))
    assert expected == pytest.approx({"1x1": math.sqrt(3), "depthwise": math.sqrt(6 / 33), "linear": 2.0}[kind])
    assert bionas.alignment(layer)[""].norm_ratio == pytest.approx(expected, rel=0.06)


def test_dfa_reinitialises_its_layers_as_biotorch_s_dfa_layers():
    torch.manual_seed(0)
    layer = nn.Linear(200, 100)
    kept = bionas.get_rule("dfa", weight_init="keep").wrap(copy.deepcopy(layer))
    assert torch.equal(kept.weight, layer.weight) and torch.equal(kept.bias, layer.bias)
    bionas.get_rule("dfa").wrap(layer)
    assert 0.95 * xavier_bound(layer.weight) < layer.weight.abs().max() <= xavier_bound(layer.weight)
    assert not layer.bias.any() and not torch.equal(layer.weight, kept.weight)


def test_convert_keeps_the_weights_unless_asked():
    torch.manual_seed(0)
    original = tower()
    mapping = {"0": "fa", "1.0*": "usf", "1.1*": bionas.get_rule("frsf", weight_init="keep"), "3": "dfa"}
    kept = bionas.convert(copy.deepcopy(original), mapping)
    assert all(torch.equal(kept.state_dict()[k], v) for k, v in original.state_dict().items())
    fresh = bionas.convert(copy.deepcopy(original), mapping, keep_weights=False)
    for name in ("0", "1.0.0", "1.0.2", "3"):  # re-initialised: Xavier-uniform, zero bias
        layer = fresh.get_submodule(name)
        assert not torch.equal(layer.weight, original.get_submodule(name).weight)
        assert layer.weight.abs().max() <= xavier_bound(layer.weight) and not layer.bias.any()
    for name in ("1.1.0", "1.1.2"):  # this rule's weight_init is keep
        assert torch.equal(fresh.get_submodule(name).weight, original.get_submodule(name).weight)
    layer = nn.Linear(200, 100)
    weight = layer.weight.clone()
    bionas.get_rule("fa").wrap(layer)  # outside convert, wrapping initialises again
    assert not torch.equal(layer.weight, weight)


def test_a_checkpoint_restores_the_weights_the_init_replaced():
    from bionas.space import BIONAS_DARTS, Network

    torch.manual_seed(0)
    saved = Network(BIONAS_DARTS, channels=8, cells=3, in_channels=1, image_size=8)
    state = saved.state_dict()
    torch.manual_seed(1)  # another initialisation, then the checkpoint
    restored = Network(BIONAS_DARTS, channels=8, cells=3, in_channels=1, image_size=8)
    restored.load_state_dict(state)
    assert all(torch.equal(restored.state_dict()[k], v) for k, v in state.items())
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(restored.eval()(x), saved.eval()(x))


def test_networks_bionas_builds_start_with_feedback_at_the_weights_scale():
    # the searched cells' rule layers of the derived network (usf, frsf): |B| / |W| near 1 per layer type
    from bionas.space import BIONAS_DARTS, Network

    torch.manual_seed(0)
    net = Network(BIONAS_DARTS, channels=16, cells=3, in_channels=1, image_size=8)
    report = bionas.alignment(net)
    ratios = {"1x1": [], "depthwise": []}
    for name, layer in net.named_modules():
        if rule_of(layer) is not None and isinstance(layer, nn.Conv2d):
            ratios["1x1" if layer.kernel_size == (1, 1) else "depthwise"].append(report[name].norm_ratio)
    assert all(len(r) >= 4 for r in ratios.values())
    for kind, values in ratios.items():
        assert sum(values) / len(values) == pytest.approx(1.0, abs=0.05), kind


# -- the feedback-alignment family: gradients equal the formulas ---------------------------------


@pytest.mark.parametrize("rule", FEEDBACK_RULES)
@pytest.mark.parametrize("kind", ["linear", *CONVS])
def test_feedback_rule_gradients_equal_the_formula(rule, kind):
    torch.manual_seed(1)
    layer = make_layer(kind)
    bionas.get_rule(rule).wrap(layer)
    x = make_input(kind)
    y = layer(x)
    g = torch.randn_like(y)
    (y * g).sum().backward()
    b = expected_feedback(rule, layer)
    assert b.shape == layer.weight.shape and not torch.equal(b, layer.weight)
    gx, _, _ = ordinary_grads(layer, x, g, b)  # input gradient: B in place of W
    _, gw, gb = ordinary_grads(layer, x, g, layer.weight)  # ordinary local weight/bias gradients
    torch.testing.assert_close(x.grad, gx, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(layer.weight.grad, gw, rtol=1e-12, atol=1e-12)
    if layer.bias is not None:
        torch.testing.assert_close(layer.bias.grad, gb, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rule", FEEDBACK_RULES)
def test_linear_feedback_matches_the_matrix_formula(rule):
    torch.manual_seed(2)
    layer = bionas.get_rule(rule).wrap(nn.Linear(6, 4).double())
    x = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    g = torch.randn(5, 4, dtype=torch.float64)
    layer(x).backward(g)
    b = expected_feedback(rule, layer)
    torch.testing.assert_close(x.grad, g @ b, rtol=1e-12, atol=1e-12)  # B^T g, per sample
    torch.testing.assert_close(layer.weight.grad, g.t() @ x.detach(), rtol=1e-12, atol=1e-12)  # g x^T
    torch.testing.assert_close(layer.bias.grad, g.sum(0), rtol=1e-12, atol=1e-12)


def test_random_feedback_is_xavier_seeded_and_reproducible():
    def feedback(seed, rule="fa"):
        torch.manual_seed(seed)
        return bionas.get_rule(rule).wrap(nn.Linear(30, 20)).feedback

    bound = math.sqrt(6 / (30 + 20))
    b = feedback(0)
    assert b.abs().max() <= bound and b.abs().max() > 0.9 * bound
    assert torch.equal(feedback(0), b) and not torch.equal(feedback(1), b)
    rule = bionas.get_rule("fa", seed=7)
    first, second = rule.wrap(nn.Linear(30, 20)).feedback, rule.wrap(nn.Linear(30, 20)).feedback
    assert not torch.equal(first, second)  # one seed option, different layers
    again = bionas.get_rule("fa", seed=7)
    assert torch.equal(again.wrap(nn.Linear(30, 20)).feedback, first)


@pytest.mark.parametrize("shape", [(20, 30), (5, 72), (16, 3, 3, 3), (64, 1, 3, 3), (3, 4, 2, 4)])
def test_draw_is_the_xavier_formula_in_float32_whatever_the_default_dtype(shape):
    from bionas.rules.seeding import draw, fans

    fan_in, fan_out = fans(shape)
    bound, std = math.sqrt(6 / (fan_in + fan_out)), math.sqrt(2 / (fan_in + fan_out))
    uniform = torch.empty(shape).uniform_(-bound, bound, generator=torch.Generator().manual_seed(11))
    normal = torch.empty(shape).normal_(0, std, generator=torch.Generator().manual_seed(11))
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # a seed must still mean one float32 tensor
    try:
        assert torch.equal(draw(shape, 11), uniform) and draw(shape, 11).dtype == torch.float32
        assert torch.equal(draw(shape, 11, "xavier_normal"), normal)
    finally:
        torch.set_default_dtype(default)


def test_frsf_magnitude_is_fixed_and_sign_follows_the_weight():
    layer = bionas.get_rule("frsf").wrap(nn.Linear(8, 5))
    magnitude = layer.feedback_magnitude.clone()
    assert (magnitude >= 0).all()
    with torch.no_grad():
        layer.weight.neg_()
    b = rule_of(layer).feedback(layer)
    assert torch.equal(layer.feedback_magnitude, magnitude)
    assert torch.equal(b, magnitude * torch.sign(layer.weight))


def test_usf_follows_the_weight():
    layer = bionas.get_rule("usf").wrap(nn.Conv2d(3, 4, 3))
    before = rule_of(layer).feedback(layer)
    with torch.no_grad():
        layer.weight.neg_()
    assert torch.equal(rule_of(layer).feedback(layer), -before)


@pytest.mark.parametrize("init", ["xavier_uniform", "xavier_normal"])
def test_seeded_draws_follow_the_xavier_law_and_depend_on_their_own_seed_and_step_alone(init):
    from bionas.rules.seeding import fans

    shape = (16, 8, 3, 3)
    fan_in, fan_out = fans(shape)
    bound, std = math.sqrt(6 / (fan_in + fan_out)), math.sqrt(2 / (fan_in + fan_out))
    seed = torch.tensor(2**62 + 12345)  # a 63-bit seed, as mix() makes them
    draws = seeded_draws([seed] * 40, [torch.tensor(k) for k in range(40)], [shape] * 40, init)
    values = torch.cat([d.flatten() for d in draws]).double()
    n = values.numel()  # 46,080
    assert all(d.dtype == torch.float32 and d.shape == shape for d in draws)
    assert abs(values.mean()) < 5 * std / math.sqrt(n)
    assert abs(values.std() / std - 1) < 0.02
    if init == "xavier_uniform":
        assert values.abs().max() < bound and values.abs().max() > 0.999 * bound
        # uniform: each tenth of [-bound, bound] holds a tenth of the values
        counts = torch.histc(values, bins=10, min=-bound, max=bound)
        assert (counts / n - 0.1).abs().max() < 0.01
    # a draw is a function of its own (seed, step, shape): alone, or among others, the same
    alone = seeded_draws([seed], [torch.tensor(7)], [shape], init)[0]
    among = seeded_draws([torch.tensor(1), seed, seed], [torch.tensor(7), torch.tensor(7), torch.tensor(8)],
                         [(4, 4), shape, shape], init)
    assert torch.equal(alone, draws[7]) and torch.equal(among[1], alone)
    assert not torch.equal(among[2], alone)  # another step
    assert not torch.equal(seeded_draws([torch.tensor(1)], [torch.tensor(7)], [shape], init)[0], alone)
    # neighbouring draws are uncorrelated
    assert abs(torch.corrcoef(torch.stack([draws[0].flatten(), draws[1].flatten()]))[0, 1]) < 0.06


def _brsf_step(model, opt, x):
    opt.zero_grad()
    model(x).square().mean().backward()
    opt.step()


def test_brsf_redraws_once_per_training_step():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 3))
    bionas.convert(model, "brsf")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(4, 6)
    rule = rule_of(model[2])
    magnitude = lambda: rule.feedback(model[2]) / torch.sign(model[2].weight)  # noqa: E731
    model(x)
    first = magnitude()
    model(x)  # a second forward of the same step: same draw
    assert torch.equal(magnitude(), first)
    bound = math.sqrt(6 / (6 + 3))
    assert (first > 0).all() and first.max() <= bound
    _brsf_step(model, opt, x)
    model(x)
    assert not torch.equal(magnitude(), first)  # a new step: a new draw
    assert int(model[2].feedback_step) == 2


def test_brsf_checkpoint_restores_the_draw_of_the_next_step():
    torch.manual_seed(4)

    def build():
        return bionas.convert(nn.Sequential(nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 2)), "brsf")

    model = build()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(3, 5, requires_grad=True)
    for _ in range(3):
        _brsf_step(model, opt, x)
    bionas.alignment(model)  # train.py logs alignment before saving: reading B must not advance the draw
    state = copy.deepcopy(model.state_dict())
    other = build()
    other.load_state_dict(state)
    for m in (model, other):
        x.grad = None
        m(x).square().mean().backward()
        if m is model:
            expected = x.grad.clone()
    torch.testing.assert_close(x.grad, expected, rtol=0, atol=0)


def test_brsf_weight_update_mode_redraws_when_the_weight_changes():
    layer = bionas.get_rule("brsf", redraw="weight_update").wrap(nn.Linear(4, 4))
    rule = rule_of(layer)
    first = rule.feedback(layer).clone()
    assert torch.equal(rule.feedback(layer), first)
    with torch.no_grad():
        layer.weight.add_(0.0)
    assert not torch.equal(rule.feedback(layer), first)


def _brsf_model(seed: int = 5) -> nn.Module:
    torch.manual_seed(seed)
    return bionas.convert(nn.Sequential(nn.Linear(5, 5), nn.Tanh(), nn.Linear(5, 2)), "brsf")


def _draws(model: nn.Module) -> list[int]:
    return [int(m.feedback_step) for m in model if hasattr(m, "feedback_step")]


def test_brsf_does_not_redraw_when_another_optimizer_steps():
    model, x = _brsf_model(), torch.randn(3, 5)
    alphas = nn.Parameter(torch.zeros(4))  # stands for a supernet's architecture, stepped by its own optimizer
    arch_opt = torch.optim.Adam([alphas], lr=0.1)
    other = nn.Linear(3, 3)  # an unrelated model in the same process
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1)
    model(x).sum().backward()
    assert _draws(model) == [1, 1]
    for opt, params in ((arch_opt, [alphas]), (other_opt, list(other.parameters()))):
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
        model(x).sum().backward()
        assert _draws(model) == [1, 1]  # neither step trained the model's weights: the same B
    weight_opt = torch.optim.SGD(model.parameters(), lr=0.1)
    weight_opt.step()
    model(x).sum().backward()
    assert _draws(model) == [2, 2]


def test_hold_feedback_keeps_the_step_s_feedback_across_perturbed_weights():
    model, x = _brsf_model(), torch.randn(3, 5)
    layer = model[2]
    rule = rule_of(layer)
    saved = [p.detach().clone() for p in model.parameters()]
    with bionas.hold_feedback(model):
        model(x).sum().backward()
        first = rule.effective_feedback(layer) / torch.sign(layer.weight)
        for sign in (1, -1):  # finite differences: w +- eps v, then restored
            with torch.no_grad():
                for p, w in zip(model.parameters(), saved):
                    p.copy_(w + sign * 1e-3 * torch.randn_like(w))
            model(x).sum().backward()
            assert torch.equal(rule.effective_feedback(layer) / torch.sign(layer.weight), first)
        with torch.no_grad():
            for p, w in zip(model.parameters(), saved):
                p.copy_(w)
    model(x).sum().backward()  # the restored weights belong to the same step
    assert _draws(model) == [1, 1]
    torch.optim.SGD([layer.weight], lr=0.01).step()  # a training step of the last layer only
    model(x).sum().backward()
    assert _draws(model) == [1, 2]


def test_next_training_step_counts_a_step_the_weights_do_not_show():
    model, x = _brsf_model(), torch.randn(3, 5)
    model(x).sum().backward()
    model(x).sum().backward()
    assert _draws(model) == [1, 1]
    bionas.rules.next_training_step(model)  # after an optimizer that leaves the version counter as it is
    model(x).sum().backward()
    assert _draws(model) == [2, 2]


@pytest.mark.parametrize("rule", ["fa", "dfa", "hebbian"])
def test_rules_work_under_autocast(rule):
    model = bionas.convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 5)), rule)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert x.grad is None or x.grad.dtype == torch.float32
    assert model[0].weight.grad.dtype == torch.float32


def test_hebbian_conv_with_bias_works_on_a_bf16_input_under_autocast():
    # The second conv sees the first's bf16 output; y - bias would promote to float32.
    model = bionas.convert(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3, bias=True)), "hebbian")
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    for conv in (model[0], model[2]):
        assert conv.weight.grad.dtype == torch.float32 and conv.weight.grad.abs().sum() > 0


def test_a_third_party_feedback_rule_is_a_few_lines():
    class Transposed(FeedbackRule):
        name = "mirror"
        description = "B = 2 W (test rule)"

        def feedback(self, layer):
            return 2 * layer.weight

    layer = Transposed().wrap(nn.Linear(3, 2))
    x = torch.randn(4, 3, requires_grad=True)
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(4, 2) @ (2 * layer.weight.detach()))


# -- exact gradients ------------------------------------------------------------------------------


def small_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1),
        nn.BatchNorm2d(4),
        nn.Tanh(),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2, groups=2),
        nn.Tanh(),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 5),
    ).double()


def grads_of(model, x):
    x = x.detach().requires_grad_()
    model.zero_grad()
    F.cross_entropy(model(x), torch.arange(x.shape[0]) % 5).backward()
    return [x.grad] + [p.grad for p in model.parameters()]


@pytest.mark.parametrize("rule", ALL_RULES)
def test_exact_gradients_equal_backprop_and_finite_differences(rule):
    torch.manual_seed(5)
    reference = small_net()
    model = bionas.convert(copy.deepcopy(reference), rule)
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64)
    with exact_gradients(model):
        exact = grads_of(model, x)
    for got, want in zip(exact, grads_of(reference, x)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    model.eval()  # finite differences need a deterministic function (BN running stats)
    with exact_gradients(model):
        assert torch.autograd.gradcheck(
            lambda inp, *params: model(inp), (x.requires_grad_(), *model.parameters()), eps=1e-6, atol=1e-6
        )
    if rule != "bp":  # outside the context the rule's own backward is back
        model.train()
        assert not all(torch.allclose(a, b) for a, b in zip(grads_of(model, x), exact) if a is not None)


def test_exact_gradients_nest_and_restore_on_exceptions():
    model = bionas.convert(nn.Sequential(nn.Linear(3, 3)), "fa")
    with pytest.raises(ValueError):
        with exact_gradients(model):
            with exact_gradients(model):
                assert model[0]._bionas_exact == 2
            assert model[0]._bionas_exact == 1
            raise ValueError
    assert model[0]._bionas_exact == 0


# -- convert --------------------------------------------------------------------------------------


def tower() -> nn.Module:
    block = lambda: nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1))  # noqa: E731
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.Sequential(block(), block()),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )


def rules_of(model):
    return {name: (rule_of(m).name if rule_of(m) else "bp") for name, m in model.named_modules() if bionas.rules.is_layer(m)}


def test_convert_mapping_first_matching_glob_wins_ancestors_match_and_rest_keep_bp():
    model = bionas.convert(tower(), {"1.0.2": "usf", "1.0": "fa", "1.*": "frsf", "3": bionas.get_rule("dfa")})
    assert rules_of(model) == {
        "0": "bp",
        "1.0.0": "fa",
        "1.0.2": "usf",
        "1.1.0": "frsf",
        "1.1.2": "frsf",
        "3": "dfa",
    }
    bionas.convert(model, {"0": "fa"})  # a new mapping: unmatched layers go back to bp
    assert rules_of(model) == {"0": "fa", "1.0.0": "bp", "1.0.2": "bp", "1.1.0": "bp", "1.1.2": "bp", "3": "bp"}


def test_convert_gives_module_rules_the_largest_uniform_modules():
    pc = bionas.get_rule("pc", T=3)
    model = bionas.convert(tower(), {"1": pc})
    assert rule_of(model[1]) is pc and rule_of(model) is None and rule_of(model[1][0]) is None
    model = bionas.convert(tower(), "pc")
    assert rule_of(model).name == "pc"  # the whole network is one pc network
    bionas.convert(model, "fa")
    assert rule_of(model) is None and set(rules_of(model).values()) == {"fa"}


def test_convert_installs_and_removes_the_output_tap():
    from bionas.rules.tap import has_output_tap

    model = bionas.convert(tower(), {"3": "dfa"})
    assert has_output_tap(model)
    bionas.convert(model, "fa")
    assert not has_output_tap(model)
    with_tap = nn.Sequential(tower(), bionas.rules.OutputTap())
    bionas.convert(with_tap, "dfa")
    assert not with_tap._forward_hooks  # it has its own tap


def test_converted_state_dict_keys_extend_the_original_and_pretrained_weights_load():
    torch.manual_seed(6)
    original = tower()
    pretrained = original.state_dict()
    model = bionas.convert(copy.deepcopy(original), {"0": "fa", "1.0*": "brsf", "1.1*": "frsf", "3": "dfa"})
    keys = set(model.state_dict())
    assert set(pretrained) <= keys
    assert {k for k in keys - set(pretrained)} == {n for n, _ in model.named_buffers() if 'training_step_due' not in n}
    feedback = model[0].feedback.clone()
    model.load_state_dict(pretrained)  # strict: rule buffers may be missing, they keep their values
    assert torch.equal(model[0].feedback, feedback)
    with pytest.raises(RuntimeError, match="Unexpected"):
        original.load_state_dict(model.state_dict())


# -- alignment ------------------------------------------------------------------------------------


def test_alignment_reports_angle_and_norm_ratio_per_layer():
    torch.manual_seed(7)
    model = bionas.convert(tower(), {"0": "fa", "1.0.0": "usf", "1.0.2": "dfa", "1.1.0": "hebbian", "1.1.2": "pc"})
    report = bionas.alignment(model)
    assert set(report) == {"0", "1.0.0", "1.0.2", "1.1.0", "1.1.2", "3"}
    w, b = model[0].weight.detach().flatten(), model[0].feedback.flatten()
    cos = (w @ b) / (w.norm() * b.norm())
    assert report["0"].rule == "fa"
    assert report["0"].angle_deg == pytest.approx(math.degrees(math.acos(cos)), abs=1e-4)
    assert report["0"].norm_ratio == pytest.approx((b.norm() / w.norm()).item(), rel=1e-5)
    assert report["3"] == bionas.rules.LayerAlignment("bp", 0.0, 1.0)
    assert report["1.1.2"].angle_deg == pytest.approx(0.0, abs=1e-4)  # pc: the true Jacobians
    assert 0 < report["1.0.0"].angle_deg < 90  # usf: sign-concordant
    assert math.isnan(report["1.0.2"].angle_deg) and math.isnan(report["1.1.0"].norm_ratio)


def test_alignment_of_hebbian_passing_its_error_is_that_of_w():
    layer = bionas.get_rule("hebbian", error="pass").wrap(nn.Linear(4, 3))
    report = bionas.alignment(layer)[""]
    assert report.rule == "hebbian"
    assert report.angle_deg == pytest.approx(0.0, abs=1e-4) and report.norm_ratio == pytest.approx(1.0)
