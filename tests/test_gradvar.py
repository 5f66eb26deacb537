"""The gradient-variance statistic on gradients whose variance is known."""

import pytest
import torch

from bionas.analysis.gradvar import GradientMoments, gradient_variance, summarise


def test_hand_computed_example():
    # Two weights, three minibatches: per-weight means (2, 0), unbiased variances (1, 4).
    grads = [torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.0]), torch.tensor([3.0, 2.0])]
    stat = gradient_variance(grads)
    assert stat.mean_variance == pytest.approx((1 + 4) / 2)
    assert stat.mean_square == pytest.approx((4 + 0) / 2)
    assert stat.ratio == pytest.approx(5 / 4)


def test_known_gaussian_noise_is_recovered():
    torch.manual_seed(0)
    n, k, sigma = 2000, 400, 0.5
    mean = torch.full((n,), 2.0)
    grads = [mean + sigma * torch.randn(n) for _ in range(k)]
    stat = gradient_variance(grads)
    # E[v_i] = sigma^2; |m|^2/n -> 4 + sigma^2/k.
    assert stat.mean_variance == pytest.approx(sigma**2, rel=0.02)
    assert stat.ratio == pytest.approx(sigma**2 / (4 + sigma**2 / k), rel=0.02)


def test_ratio_is_scale_free_and_streaming_matches_batch():
    torch.manual_seed(1)
    grads = [torch.randn(3, 4) + 1 for _ in range(10)]
    assert gradient_variance([5 * g for g in grads]).ratio == pytest.approx(gradient_variance(grads).ratio)
    stacked = torch.stack([g.flatten().double() for g in grads])
    assert gradient_variance(grads).mean_variance == pytest.approx(stacked.var(0, unbiased=True).mean().item())


def test_network_ratio_pools_weights_of_all_layers():
    a = [torch.tensor([1.0, 3.0]), torch.tensor([3.0, 1.0])]  # mean (2, 2), var (2, 2)
    b = [torch.tensor([0.0]), torch.tensor([2.0])]  # mean 1, var 2
    layers = []
    for grads in (a, b):
        moments = GradientMoments()
        for g in grads:
            moments.add(g)
        layers.append(moments)
    assert summarise(layers).ratio == pytest.approx((2 + 2 + 2) / (4 + 4 + 1))


def test_one_gradient_is_not_enough():
    with pytest.raises(ValueError, match="at least 2"):
        gradient_variance([torch.ones(3)])
