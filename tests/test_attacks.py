"""The attacks: formulas, budgets, range, determinism, modes, and strength on small models."""

import pytest
import torch
import torch.nn.functional as F
from attack_models import OnePixelModel, mlp, shuffled, train
from torch import nn

import bionas
from bionas.attacks import WHITE_BOX_EXACT, WHITE_BOX_RULE, AttackError, lp_norm


@pytest.fixture(scope="module")
def digits(mnist_tensors):
    """2,000 shuffled training digits and 200 test digits."""
    images, labels = shuffled(*mnist_tensors)
    return images[:2000], labels[:2000], images[4000:4200], labels[4000:4200]


@pytest.fixture(scope="module")
def trained(digits):
    """A 784-64-10 MLP trained with backprop (about 90% test accuracy)."""
    x, y, _, _ = digits
    return train(mlp(), x, y, steps=300)


def small(name, **options):
    """Each attack at a budget small enough for tests."""
    quick = {"apgd": {"steps": 10}, "square": {"queries": 50}, "onepixel": {"population": 20, "generations": 3}}
    return bionas.get_attack(name, **{**quick.get(name, {}), **options})


ALL = [
    ("fgsm", {}),
    ("pgd", {}),
    ("pgd", {"norm": "l2", "eps": 1.5, "restarts": 2}),
    ("apgd", {}),
    ("apgd", {"norm": "l2", "eps": 1.5, "loss": "dlr"}),
    ("square", {"eps": 0.1}),
    ("onepixel", {}),
    ("transfer", {"attack": "pgd", "attack_options": {"steps": 3}}),
]


def prepare(name, options):
    attack = small(name, **options)
    if name == "transfer":
        attack = attack.with_surrogate(mlp(seed=1), label="untrained MLP")
    return attack


def test_fgsm_equals_its_formula(trained, digits):
    x, y = digits[2][:64], digits[3][:64]
    eps = 0.1
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(trained(xr), y), xr)
    expected = (x + eps * grad.sign()).clamp(0, 1)
    assert torch.equal(bionas.get_attack("fgsm", eps=eps)(trained, x, y), expected)


@pytest.mark.parametrize("norm, eps, alpha", [("linf", 0.1, 0.02), ("l2", 1.0, 0.25)])
def test_pgd_without_random_start_equals_a_manual_loop(trained, digits, norm, eps, alpha):
    x, y = digits[2][:64], digits[3][:64]
    adv = x.clone()
    for _ in range(7):
        adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(trained(adv), y, reduction="sum"), adv)
        with torch.no_grad():
            if norm == "linf":
                step = g.sign()
            else:
                step = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            delta = adv + alpha * step - x
            if norm == "linf":
                delta = delta.clamp(-eps, eps)
            else:
                delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1).view(-1, 1, 1, 1)
            adv = (x + delta).clamp(0, 1)
    pgd = bionas.get_attack("pgd", eps=eps, norm=norm, alpha=alpha, steps=7, random_start=False)
    assert torch.equal(pgd(trained, x, y), adv)


def test_pgd_default_step_is_the_published_one_at_8_255():
    assert bionas.get_attack("pgd").step_size == pytest.approx(2 / 255)
    assert bionas.get_attack("pgd", eps="8/255", steps=20).step_size == pytest.approx(1 / 255)


@pytest.mark.parametrize(
    "name, options", ALL, ids=lambda v: v if isinstance(v, str) else "-".join(map(str, v.values()))
)
def test_every_attack_keeps_budget_range_inputs_and_mode(trained, digits, name, options):
    x, y = digits[2][:32], digits[3][:32]
    x_before, y_before = x.clone(), y.clone()
    model = nn.Sequential(trained, nn.Dropout(0.5))  # eval mode during the attack, or dropout changes outputs
    model.train()
    attack = prepare(name, options)
    result = attack.run(model, x, y)
    adv = result.adversarial
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert model.training and model[1].training and model[0].training
    assert all(p.grad is None for p in model.parameters())
    assert not adv.requires_grad and adv.shape == x.shape
    assert adv.min() >= 0 and adv.max() <= 1
    attack.check_result(x, adv)  # raises when outside the budget
    if attack.budget == "eps":
        assert (lp_norm(adv - x, attack.norm) <= attack.budget_value + 1e-6).all()
    else:
        changed = (adv != x).flatten(1).sum(dim=1)
        assert (changed <= attack.options.pixels).all()
    assert result.work.shape == (32,) and (result.work >= 1).all()


def test_check_result_rejects_images_outside_budget_or_range():
    pgd = bionas.get_attack("pgd", eps=0.1)
    x = torch.full((2, 1, 4, 4), 0.5)
    with pytest.raises(AttackError, match="left its budget"):
        pgd.check_result(x, x + 0.2)
    with pytest.raises(AttackError, match=r"outside \[0, 1\]"):
        pgd.check_result(x, x * 3)


def test_attacks_refuse_images_outside_0_1(trained):
    with pytest.raises(AttackError, match="normalization belongs inside the model"):
        bionas.get_attack("fgsm")(trained, torch.randn(2, 1, 28, 28), torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize(
    "name, options", [a for a in ALL if a[0] not in ("fgsm",)], ids=lambda v: v if isinstance(v, str) else ""
)
def test_seeds_make_results_repeatable(trained, digits, name, options):
    x, y = digits[2][:16], digits[3][:16]
    attack = prepare(name, options)
    first = attack.run(trained, x, y, seed=3).adversarial
    assert torch.equal(first, attack.run(trained, x, y, seed=3).adversarial)
    # The seed option (a transfer attack's: its base attack's) is the default seed of run().
    if name == "transfer":
        seeded = attack.with_options(attack_options={**attack.options.attack_options, "seed": 3})
    else:
        seeded = attack.with_options(seed=3)
    assert seeded.seed == 3
    assert torch.equal(first, seeded.run(trained, x, y).adversarial)
    assert not torch.equal(first, attack.run(trained, x, y, seed=4).adversarial)


@pytest.mark.parametrize("channels", [1, 3])
def test_square_spends_no_query_on_an_unchanged_image(channels):
    # Black images under a model that is never fooled: no candidate is ever kept, so the best stays
    # the first query. A window of -eps on black pixels leaves the image unchanged: it must be redrawn.
    class NeverFooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.queries = []

        def forward(self, x):
            self.queries.append(x.clone())
            return torch.eye(10)[torch.zeros(len(x), dtype=torch.long)] * 5  # class 0, margin 5

    model = NeverFooled()
    x, y = torch.zeros(8, channels, 12, 12), torch.zeros(8, dtype=torch.long)
    result = bionas.get_attack("square", eps=0.1, queries=60).run(model, x, y)
    first, later = model.queries[0], torch.stack(model.queries[1:])
    assert len(later) == 59 and result.work.tolist() == [60.0] * 8
    assert (later != first).flatten(2).any(2).all()  # every query differs from the best image
    model.queries.clear()  # AutoAttack's Square spends queries on such windows
    bionas.get_attack("square", eps=0.1, queries=60, redraw=False).run(model, x, y)
    first, later = model.queries[0], torch.stack(model.queries[1:])
    assert not (later != first).flatten(2).any(2).all()


def test_square_draws_window_signs_uniformly_among_those_that_change_it():
    """The redraw of the paper's code, done without a loop: uniform over the sign choices that change
    the window, counted against an enumeration of all 2^C choices."""
    from bionas_attacks.square import signs_that_change

    # Per channel: which of +eps / -eps leaves its (1 x 1) window unchanged.
    patterns = [
        [(True, False), (False, True), (True, False)],  # only (+, -, +) changes nothing: 7 choices left
        [(False, False)] * 3,  # every choice changes it: 8
        [(True, True), (True, True), (True, False)],  # the last channel must go to -eps: 4
        [(True, True), (True, False), (False, False)],  # the last channel always changes it: 8
        [(True, True)] * 3,  # nothing can change it (eps 0): a uniform draw of all 8
    ]
    draws = 4000
    still = torch.tensor(patterns).repeat(draws, 1, 1)  # m x C x (up, down)
    old = torch.full((len(still), 3, 1, 1), 0.5)
    raised = torch.where(still[..., 0, None, None], old, old + 0.1)
    lowered = torch.where(still[..., 1, None, None], old, old - 0.1)
    plus = signs_that_change(raised, lowered, old, torch.Generator().manual_seed(0))
    choice = (plus.long() * torch.tensor([4, 2, 1])).sum(1).view(draws, len(patterns))
    for k, pattern in enumerate(patterns):
        frequencies = torch.bincount(choice[:, k], minlength=8).float() / draws
        allowed = []
        for index in range(8):
            signs = [(index >> (2 - j)) & 1 for j in range(3)]  # 1: +eps
            unchanged = all(pattern[j][0] if s else pattern[j][1] for j, s in enumerate(signs))
            allowed.append(not unchanged)
        expected = torch.tensor(allowed, dtype=torch.float) if any(allowed) else torch.ones(8)
        expected /= expected.sum()
        assert (frequencies - expected).abs().max() < 0.025, (pattern, frequencies, expected)

    one = torch.tensor([[(True, False)], [(False, True)], [(False, False)], [(True, True)]]).repeat(draws, 1, 1)
    old = torch.full((len(one), 1, 1, 1), 0.5)
    plus = signs_that_change(
        torch.where(one[..., 0, None, None], old, old + 0.1),
        torch.where(one[..., 1, None, None], old, old - 0.1),
        old,
        torch.Generator().manual_seed(1),
    ).view(draws, 4).float().mean(0)
    assert plus[0] == 0 and plus[1] == 1 and (plus[2:] - 0.5).abs().max() < 0.03


@pytest.mark.parametrize("name, options", [("square", {"eps": 0.1, "queries": 100}), ("onepixel", {})])
def test_black_box_work_counts_every_image_the_model_was_asked_about(trained, digits, name, options):
    x, y = digits[2][:40], digits[3][:40]
    asked = []
    model = nn.Sequential(trained)
    model.register_forward_hook(lambda module, inputs, output: asked.append(len(inputs[0])))
    attack = small(name, **options)
    result = attack.run(model, x, y)
    budget = 100 if name == "square" else 20 * (3 + 1)  # onepixel: population x (initial + generations)
    fooled = trained(result.adversarial).argmax(1) != y
    assert sum(asked) == result.work.sum() and (result.work <= budget).all()
    assert fooled.any() and (result.work[fooled] < budget).any()  # fooled images stop early
    assert (result.work[~fooled] == budget).all()  # the others spend the whole budget


def test_eps_accepts_fractions_and_threat_models_are_labelled():
    pgd = bionas.get_attack("pgd", eps="8/255", gradient="rule")
    assert pgd.options.eps == pytest.approx(8 / 255)
    assert pgd.threat_model == WHITE_BOX_RULE and not pgd.is_robustness_claim
    assert bionas.get_attack("apgd").threat_model == WHITE_BOX_EXACT
    assert bionas.get_attack("square").threat_model == "black-box (score queries)"
    transfer = bionas.get_attack("transfer").with_surrogate(mlp(), label="bp MLP")
    assert transfer.threat_model == "transfer (surrogate: bp MLP)" and transfer.is_robustness_claim
    with pytest.raises(bionas.SpecError, match="eps"):
        bionas.get_attack("pgd", eps="8/x")


def test_onepixel_finds_the_one_pixel_that_fools_a_constructed_model():
    model = OnePixelModel(row=5, col=2)
    x = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.4
    y = torch.zeros(12, dtype=torch.long)
    attack = bionas.get_attack("onepixel", population=40, generations=30)
    result = attack.run(model, x, y)
    adv = result.adversarial
    assert (model(adv).argmax(1) == 1).all()
    changed = (adv != x).any(dim=1)  # N x H x W
    assert changed.flatten(1).sum(1).eq(1).all() and changed[:, 5, 2].all()
    assert (result.work < 40 * 31).any()  # stopped early for the images it fooled early


def test_onepixel_population_is_evaluated_as_big_batches(trained, digits, monkeypatch):
    """No Python loop over images or candidates: one forward per chunk of the whole population."""
    x, y = digits[2][:10], digits[3][:10]
    calls = []
    model = nn.Sequential(trained)
    model.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    bionas.get_attack("onepixel", population=50, generations=2, chunk=10_000)(model, x, y)
    assert calls[0] == 10 * 50 and len(calls) <= 3


def test_onepixel_sizes_its_chunk_by_the_model_activations(trained, digits):
    """By default the first pass (32 images) measures the bytes of every module's output per image;
    the chunk then holds 16 MiB of them."""
    x, y = digits[2][:10], digits[3][:10]
    calls = []
    model = nn.Sequential(trained)  # modules: this, trained, flatten, linear 64, relu, linear 10
    model.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    bionas.get_attack("onepixel", population=300, generations=0)(model, x, y)
    per_image = 4 * (784 + 10 + 10 + 784 + 64 + 64 + 10)  # the input, then each module's output
    chunk = 16 * 2**20 // per_image
    assert calls == [32, chunk, 3000 - 32 - chunk]


def test_apgd_is_at_least_as_strong_as_pgd_at_equal_steps(trained, digits):
    x, y = digits[2], digits[3]
    clean = trained(x).argmax(1) == y
    x, y = x[clean], y[clean]

    def accuracy(attack):
        return (trained(attack(trained, x, y)).argmax(1) == y).float().mean().item()

    for steps in (5, 20):
        pgd = accuracy(bionas.get_attack("pgd", eps=0.06, steps=steps))
        apgd = accuracy(bionas.get_attack("apgd", eps=0.06, steps=steps))
        assert apgd <= pgd, (steps, apgd, pgd)


def test_transfer_runs_the_base_attack_on_the_surrogate(trained, digits):
    x, y = digits[2][:16], digits[3][:16]
    surrogate = mlp(seed=1)
    transfer = bionas.get_attack("transfer", attack="pgd", attack_options={"steps": 4}, eps=0.1).with_surrogate(
        surrogate
    )
    expected = bionas.get_attack("pgd", steps=4, eps=0.1).run(surrogate, x, y, seed=5).adversarial
    assert torch.equal(transfer.run(trained, x, y, seed=5).adversarial, expected)
    assert transfer.label == "transfer (pgd)" and transfer.work_unit == "surrogate steps"


def test_transfer_without_surrogate_says_how_to_give_one(trained, digits, tmp_path):
    x, y = digits[2][:4], digits[3][:4]
    with pytest.raises(AttackError, match="with_surrogate"):
        bionas.get_attack("transfer")(trained, x, y)
    with pytest.raises(bionas.BionasError, match="no trained network at .*model.safetensors"):
        bionas.get_attack("transfer", surrogate=str(tmp_path))(trained, x, y)
    with pytest.raises(AttackError, match="itself"):
        bionas.get_attack("transfer").with_surrogate(trained)(trained, x, y)


def test_transfer_validates_its_base_attack():
    with pytest.raises(bionas.SpecError, match="steps"):
        bionas.get_attack("transfer", attack="pgd", attack_options={"steps": 0})
    with pytest.raises(bionas.SpecError, match="no eps budget"):
        bionas.get_attack("transfer", attack="onepixel")
    with pytest.raises(bionas.SpecError, match="Did you mean: pgd"):
        bionas.get_attack("transfer", attack="pdg")


def test_dlr_needs_three_classes():
    model = OnePixelModel(0, 0)
    with pytest.raises(AttackError, match="3 classes"):
        bionas.get_attack("apgd", loss="dlr", steps=2)(
            model, torch.rand(2, 1, 4, 4) * 0.4, torch.zeros(2, dtype=torch.long)
        )


def test_a_plugin_implementing_only_call_still_runs(toy_plugins):
    attack = bionas.get_attack("toy_attack")
    x = torch.rand(3, 1, 4, 4)
    result = attack.run(nn.Flatten(), x, torch.zeros(3, dtype=torch.long))
    assert torch.equal(result.adversarial, x) and result.work.isnan().all()
