"""egnas: the compound fitness, the candidate's mixing weights and the alpha update against their formulas."""

import math

import numpy as np
import pytest
import torch
from search_support import mnist, run_search  # noqa: F401  (fixture)

from bionas_search.egnas import (
    candidate_mixing,
    candidate_weights,
    compound_fitness,
    similarity,
    step_direction,
    update_alphas,
)


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


def softmax(v):
    e = np.exp(v - v.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_the_update_is_eg_nas_s_formula_in_both_modes():
    # EG-NAS's code: CFF returns softmax(u), explore_architecture applies softmax again, updated_alpha adds
    # step_size times that (momentum 0): alpha + step * softmax(softmax(u)); 'softmax': alpha + step * softmax(u)
    rng = np.random.default_rng(1)
    shape = (3, 22)
    z = rng.normal(size=2 * 3 * 22)
    start = {k: rng.normal(size=shape) for k in ("normal", "reduce")}
    rows = z.reshape(2, *shape)
    u = rows / np.sqrt((rows**2).sum(-1, keepdims=True))
    expected = {
        "double_softmax": {k: start[k] + 0.1 * softmax(softmax(u[i])) for i, k in enumerate(("normal", "reduce"))},
        "softmax": {k: start[k] + 0.1 * softmax(u[i]) for i, k in enumerate(("normal", "reduce"))},
    }
    for update, want in expected.items():
        alphas = {k: torch.tensor(v) for k, v in start.items()}
        update_alphas(alphas, step_direction(candidate_weights(z, shape)[1], update), 0.1)
        for kind in alphas:
            np.testing.assert_allclose(alphas[kind].numpy(), want[kind], rtol=0, atol=1e-7)  # mixing in float32
    # the second softmax of a near-uniform m is 1/n (1 + m - mean m) to first order: 1/n of its spread
    m = softmax(u)
    ratio = softmax(m).std(-1) / m.std(-1)
    np.testing.assert_allclose(ratio, 1 / 22, rtol=0.05)


def centred_log_norm(p: torch.Tensor) -> torch.Tensor:
    """|log p - mean(log p)| per row: at most 1 when p = softmax(u) with |u| = 1 (the centring shortens u)."""
    log = p.double().log()
    return (log - log.mean(-1, keepdim=True)).norm(dim=-1)


@pytest.mark.parametrize("update", ["double_softmax", "softmax"])
def test_an_epoch_s_update_is_a_step_along_the_softmax_of_a_unit_row(mnist, update):
    # alpha changes only by the evolution (weights by SGD): d = delta / step. 'softmax': d = softmax(u) with
    # |u_e| = 1. 'double_softmax': d = softmax(m), m = softmax(u), so m = log d - mean(log d) + 1/n (m sums
    # to 1) is itself such a softmax. Either way rows sum to 1. sigma = max(1 / (epoch + 1), sigma_min)
    options = {"epochs": 1, "batch_size": 16, "start_epoch": 0, "population": 4, "samplings": 2,
               "fitness_batch_size": 16, "alpha_step": 0.1, "update": update}  # fmt: skip
    before = run_search("egnas", {**options, "start_epoch": 5}, mnist, space={"channels": 8})[1]
    result, after = run_search("egnas", options, mnist, space={"channels": 8})
    for kind in ("normal", "reduce"):
        d = (getattr(after, f"alphas_{kind}") - getattr(before, f"alphas_{kind}")).detach().double() / 0.1
        torch.testing.assert_close(d.sum(-1), torch.ones(d.shape[0], dtype=d.dtype), rtol=0, atol=1e-5)
        if update == "double_softmax":
            log = d.log()
            m = log - log.mean(-1, keepdim=True) + 1 / d.shape[-1]
            assert (m > 0).all() and (centred_log_norm(m) <= 1 + 1e-3).all()
            torch.testing.assert_close(d.std(-1) / m.std(-1), torch.full_like(d[:, 0], 1 / d.shape[-1]),
                                       rtol=0.1, atol=0)  # the second softmax: 1/n of the spread
        else:
            assert (centred_log_norm(d) <= 1 + 1e-3).all()
    evolution = result.history[0]["evolution"]
    assert evolution["sigma"] == 1.0 and evolution["sampling"] in (0, 1)
    assert 0 <= evolution["current_accuracy"] <= 1 and 0 <= evolution["best_accuracy"] <= 1
