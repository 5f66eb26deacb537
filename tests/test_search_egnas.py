"""egnas: the compound fitness, the candidate's mixing weights and the alpha update against their formulas."""

import math

import numpy as np
import pytest
import torch
from search_support import mnist, run_search  # noqa: F401  (fixture)

from bionas_search.egnas import candidate_mixing, compound_fitness, similarity, update_alphas


def cos(a, b):
    return sum(x * y for x, y in zip(a, b)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def test_compound_fitness_pushes_good_candidates_away_and_pulls_poor_ones_in():
    # f = CE + lambda * s if acc >= acc0 (as good as the current alpha or better), else CE - lambda * s
    assert compound_fitness(2.0, 0.50, 0.25, 0.75, 0.4) == pytest.approx(2.0 + 0.4 * 0.75)
    assert compound_fitness(2.0, 0.25, 0.25, 0.75, 0.4) == pytest.approx(2.0 + 0.4 * 0.75)  # a tie counts as good
    assert compound_fitness(2.0, 0.125, 0.25, 0.75, 0.4) == pytest.approx(2.0 - 0.4 * 0.75)
    assert compound_fitness(2.0, 0.125, 0.25, 0.75, 0.0) == 2.0


def test_similarity_and_mixing_follow_the_formulas():
    rng = np.random.default_rng(0)
    current = {k: rng.dirichlet(np.ones(5), size=3) for k in ("normal", "reduce")}  # softmax(alpha): 3 edges
    z = {k: rng.normal(size=(3, 5)) for k in ("normal", "reduce")}
    # s = mean over cell types of mean over edges of (cos(a_e, z_e) + 1) / 2 (scale-free in z)
    expected = np.mean([np.mean([(cos(current[k][e], z[k][e]) + 1) / 2 for e in range(3)]) for k in current])
    got = similarity({k: torch.tensor(v) for k, v in current.items()}, {k: torch.tensor(3.0 * v) for k, v in z.items()})
    assert float(got) == pytest.approx(expected, rel=1e-12)
    # m = softmax(z_e / |z_e|)
    row = z["normal"][1]
    u = row / np.sqrt((row**2).sum())
    expected_m = np.exp(u) / np.exp(u).sum()
    np.testing.assert_allclose(candidate_mixing(torch.tensor(z["normal"]))[1].numpy(), expected_m, rtol=1e-12)


def test_alpha_update_adds_step_times_the_mixing_weights():
    alphas = {"normal": torch.zeros(2, 3), "reduce": torch.ones(2, 3)}
    mixing = {"normal": torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]), "reduce": torch.full((2, 3), 1 / 3)}
    update_alphas(alphas, mixing, 0.1)
    torch.testing.assert_close(alphas["normal"], torch.tensor([[0.02, 0.03, 0.05], [0.1, 0.0, 0.0]]))
    torch.testing.assert_close(alphas["reduce"], torch.full((2, 3), 1 + 0.1 / 3))


def test_an_epoch_s_update_is_a_step_along_a_unit_row_softmax(mnist):
    # alpha changes only by the evolution (weights by SGD): delta / step = softmax(u), |u_e| = 1, so each
    # row sums to 1 and its entries' ratios are within e^2; sigma = max(1 / (epoch + 1), sigma_min)
    options = {"epochs": 1, "batch_size": 16, "start_epoch": 0, "population": 4, "samplings": 2,
               "fitness_batch_size": 16, "alpha_step": 0.1}  # fmt: skip
    before = run_search("egnas", {**options, "start_epoch": 5}, mnist, space={"channels": 8})[1]
    result, after = run_search("egnas", options, mnist, space={"channels": 8})
    for kind in ("normal", "reduce"):
        delta = (getattr(after, f"alphas_{kind}") - getattr(before, f"alphas_{kind}")).detach() / 0.1
        torch.testing.assert_close(delta.sum(-1), torch.ones(delta.shape[0]), rtol=0, atol=1e-5)
        assert (delta.max(-1).values / delta.min(-1).values <= math.exp(2) + 1e-4).all()
    evolution = result.history[0]["evolution"]
    assert evolution["sigma"] == 1.0 and evolution["sampling"] in (0, 1)
    assert 0 <= evolution["current_accuracy"] <= 1 and 0 <= evolution["best_accuracy"] <= 1
