"""Attacks on a network trained with feedback alignment: exact gradients versus the rule's own."""

import pytest
import torch
import torch.nn.functional as F
from attack_models import mlp, shuffled, train

import bionas
from bionas.attacks import WHITE_BOX_RULE, input_gradient
from bionas.robustness import evaluate_robustness
from bionas_attacks.losses import cross_entropy


@pytest.fixture(scope="module")
def fa_network(mnist_tensors):
    """A 784-64-10 MLP trained with fa on 2,000 digits, and 200 held-out digits."""
    images, labels = shuffled(*mnist_tensors)
    model = train(bionas.convert(mlp(), "fa"), images[:2000], labels[:2000], steps=300)
    return model, images[4000:4200], labels[4000:4200]


def plain_copy(model):
    """The same forward function as a plain (backprop) network."""
    plain = mlp()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()})
    return plain.eval()


def true_gradient(model, x, y):
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)[0]


def test_exact_is_the_true_gradient_and_rule_is_the_feedback_path(fa_network):
    model, x, y = fa_network
    truth = true_gradient(plain_copy(model), x, y)
    exact, _, _ = input_gradient(model, x, cross_entropy(y), "exact")
    rule, _, _ = input_gradient(model, x, cross_entropy(y), "rule")
    assert torch.allclose(exact, truth, atol=1e-6, rtol=1e-4)
    assert F.cosine_similarity(rule.flatten(), truth.flatten(), dim=0) < 0.9
    # The rule gradient is what the network's own backward gives outside exact_gradients.
    assert torch.allclose(rule, true_gradient(model, x, y), atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("rule", ["bp", "fa", "usf", "brsf", "frsf", "dfa", "hebbian", "pc"])
def test_exact_gradients_through_every_rule_and_rule_gradients_run(rule):
    model = bionas.convert(mlp(seed=2), rule).train()
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8)
    exact, _, _ = input_gradient(model.eval(), x, cross_entropy(y), "exact")
    assert torch.allclose(exact, true_gradient(plain_copy(model), x, y), atol=1e-6, rtol=1e-4)
    model.train()
    adv = bionas.get_attack("pgd", steps=2, gradient="rule")(model, x, y)
    assert model.training and (adv - x).abs().max() <= 8 / 255 + 1e-6


def test_attacks_leave_the_rules_backward_in_place(fa_network):
    model, x, y = fa_network
    before = true_gradient(model, x[:8], y[:8])
    bionas.get_attack("pgd", steps=2)(model, x[:8], y[:8])
    assert torch.equal(true_gradient(model, x[:8], y[:8]), before)


def test_fgsm_with_rule_gradients_equals_its_formula(fa_network):
    model, x, y = fa_network
    expected = (x + 0.1 * true_gradient(model, x, y).sign()).clamp(0, 1)
    assert torch.equal(bionas.get_attack("fgsm", eps=0.1, gradient="rule")(model, x, y), expected)


def test_exact_and_rule_gradients_give_different_examples_and_exact_is_stronger(fa_network):
    model, x, y = fa_network
    clean = model(x).argmax(1) == y
    x, y = x[clean], y[clean]
    for eps in (0.05, 0.1, 0.2):
        exact = bionas.get_attack("pgd", eps=eps)(model, x, y)
        rule = bionas.get_attack("pgd", eps=eps, gradient="rule")(model, x, y)
        assert not torch.equal(exact, rule)
        exact_accuracy = (model(exact).argmax(1) == y).float().mean()
        rule_accuracy = (model(rule).argmax(1) == y).float().mean()
        assert exact_accuracy <= rule_accuracy, (eps, exact_accuracy, rule_accuracy)


def test_report_on_an_fa_network_labels_and_flags_the_rule_threat_model(fa_network):
    model, x, y = fa_network
    attacks = ["pgd", ("pgd", {"gradient": "rule"}), ("square", {"queries": 300})]
    report = evaluate_robustness(model, x, y, attacks, eps_sweep=["0.1", "0.3"], points=100)
    rule_rows = [r for r in report.rows if r.threat_model == WHITE_BOX_RULE]
    assert len(rule_rows) == 2 and not any(r.claim for r in rule_rows)
    exact_at_03 = next(r for r in report.rows if r.attack == "pgd" and r.claim and r.eps == 0.3)
    assert exact_at_03.robust_accuracy <= 0.05
    kinds = {(f.kind, f.attacks[-1]) for f in report.flags}
    assert ("stronger-than-white-box", "pgd") in kinds  # square beats rule-gradient pgd
    assert "| pgd | white-box (rule gradients) † |" in report.markdown()
