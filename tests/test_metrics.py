"""Metrics: each statistic against an independent numpy version, and the noise floor."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusion.config import DataConfig
from diffusion.datasets import REFERENCE_GAUSSIAN, GaussianMixture, make_dataset
from diffusion.metrics import (
    Comparison,
    energy_distance,
    evaluate,
    mean_error,
    mean_pairwise_distance,
    rbf_mmd,
    sliced_wasserstein,
    std_error,
)

Z = 4.5  # standard errors allowed per statistic


def _pairwise_mean(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).mean())


def _energy_distance_np(x: np.ndarray, y: np.ndarray) -> float:
    # README: 2 mean|x - y| - mean|x - x'| - mean|y - y'|, V-statistic (diagonals included)
    return 2 * _pairwise_mean(x, y) - _pairwise_mean(x, x) - _pairwise_mean(y, y)


def _draw(gen, seed, n, shift=0.0):
    return REFERENCE_GAUSSIAN.sample(n, gen(seed)).double() + shift


def test_energy_distance_matches_the_definition(gen):
    x, y = _draw(gen, 0, 300), _draw(gen, 1, 200, shift=0.3)
    assert energy_distance(x, y) == pytest.approx(_energy_distance_np(x.numpy(), y.numpy()), rel=1e-9, abs=1e-12)


def test_energy_distance_identity_symmetry_and_shift(gen):
    x, y = _draw(gen, 0, 400), _draw(gen, 1, 400)
    assert abs(energy_distance(x, x)) < 1e-12
    assert energy_distance(x, y) == pytest.approx(energy_distance(y, x), rel=1e-12)
    assert energy_distance(x, y) >= 0
    # translating both sets changes nothing; translating one makes them far apart
    assert energy_distance(x + 5, y + 5) == pytest.approx(energy_distance(x, y), rel=1e-6)
    assert energy_distance(x, y + 1.0) > 20 * energy_distance(x, y)
    # accepts numpy and float32 too
    assert energy_distance(x.float().numpy(), y.float()) == pytest.approx(energy_distance(x, y), rel=1e-5)


def test_energy_distance_floor_formula_holds_on_average(gen):
    """E[E(X, Y)] = (1/n + 1/m) E|X - X'| for independent true sets (V-statistic: the diagonal terms
    remove 1/n of the within-set means). Averaging 400 independent small pairs, the mean must sit
    within Z standard errors (from the spread of the 400 values) of the floor."""
    n, m = 60, 40
    g = gen(0)
    values = np.array(
        [energy_distance(REFERENCE_GAUSSIAN.sample(n, g), REFERENCE_GAUSSIAN.sample(m, g)) for _ in range(400)]
    )
    floor = (1 / n + 1 / m) * 0.5 * math.sqrt(math.pi)
    assert abs(values.mean() - floor) < Z * values.std(ddof=1) / math.sqrt(len(values))


def test_mean_pairwise_distance_of_the_reference_gaussian(gen):
    # |X - X'| for N(mu, s^2 I) in 2-D is Rayleigh with scale s sqrt(2): mean s sqrt(pi)
    assert mean_pairwise_distance(REFERENCE_GAUSSIAN, gen(0)) == pytest.approx(0.5 * math.sqrt(math.pi), rel=1e-12)
    assert REFERENCE_GAUSSIAN.mean_pairwise_distance() == pytest.approx(0.886226925, rel=1e-8)


def test_mean_pairwise_distance_by_monte_carlo_where_there_is_no_closed_form(gen):
    # Two identical components are the same Gaussian, but take the Monte Carlo path (n pairs).
    twin = GaussianMixture(((2.0, 2.0), (2.0, 2.0)), (0.5, 0.5), (0.5, 0.5))
    assert twin.mean_pairwise_distance() is None
    n = 200_000
    rayleigh_sd = 0.5 * math.sqrt(2) * math.sqrt((4 - math.pi) / 2)
    estimate = mean_pairwise_distance(twin, gen(1), n=n)
    assert abs(estimate - 0.5 * math.sqrt(math.pi)) < Z * rayleigh_sd / math.sqrt(n)
    ring = mean_pairwise_distance(make_dataset(DataConfig("ring")), gen(2), n=20_000)
    assert 2.0 < ring < 3.0  # eight modes on a circle of radius 2: mostly chords of length 1.5..4


def test_rbf_mmd_matches_the_definition_and_vanishes_on_identical_sets(gen):
    x, y = _draw(gen, 0, 150).numpy(), _draw(gen, 1, 120, shift=0.2).numpy()
    h = 0.5

    def k(a, b):
        return np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * h * h)).mean()

    assert rbf_mmd(x, y, bandwidth=h) == pytest.approx(k(x, x) + k(y, y) - 2 * k(x, y), rel=1e-9)
    assert abs(rbf_mmd(x, x)) < 1e-12
    assert rbf_mmd(x, y + 2.0) > 10 * rbf_mmd(x, y)


def test_sliced_wasserstein_of_a_translated_copy(gen):
    """For y = x + d every projection is shifted by <d, u>, so SW2^2 = mean_u <d, u>^2, whose
    expectation over uniform unit u in 2-D is |d|^2 / 2; with 128 directions the mean of cos^2
    (variance 1/8) has standard error sqrt(1/8 / 128) = 0.031."""
    x = _draw(gen, 0, 500)
    d = torch.tensor([0.6, -0.8], dtype=torch.float64)  # |d| = 1
    sw = sliced_wasserstein(x, x + d)
    assert abs(sw**2 - 0.5) < Z * 0.031
    assert sliced_wasserstein(x, x) == 0.0
    assert sliced_wasserstein(x, x[torch.randperm(500, generator=gen(1))]) == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(x, x + d, seed=3) == sliced_wasserstein(x, x + d, seed=3)  # seeded directions


def test_sliced_wasserstein_with_unequal_sizes(gen):
    x, y = _draw(gen, 0, 300), _draw(gen, 1, 700)
    assert 0 <= sliced_wasserstein(x, y) < 0.15  # same distribution: only sampling noise
    assert sliced_wasserstein(x, y + 1.0) > 0.5


def test_mean_and_std_error(gen):
    x = _draw(gen, 0, 1000)
    assert mean_error(x, x + torch.tensor([0.3, 0.4], dtype=torch.float64)) == pytest.approx(0.5, rel=1e-9)
    std = x.std(0)
    assert std_error(x, 2 * x) == pytest.approx(float(std.norm()), rel=1e-9)
    assert mean_error(x, x) == 0.0 and std_error(x, x) == 0.0


def test_comparison_ratio():
    assert Comparison(0.004, 0.002).ratio == pytest.approx(2.0)
    assert Comparison(0.004, 0.0).ratio == float("inf")


def test_fresh_true_draws_score_about_one(gen):
    """A perfect sampler: evaluate() on fresh true points. Each ratio's expectation is exactly 1
    (floor formula above); over k seeds the mean is tested against 1 with a t-bound from the
    ratios' own spread (sd about 0.4: the statistic is a weighted sum of chi-squares)."""
    ratios = np.array(
        [
            evaluate(REFERENCE_GAUSSIAN.sample(500, gen(100 + k)), REFERENCE_GAUSSIAN, seed=k).energy_distance.ratio
            for k in range(8)
        ]
    )
    se = ratios.std(ddof=1) / math.sqrt(len(ratios))
    assert abs(ratios.mean() - 1.0) < 5 * se  # t with 7 dof: P(|t| > 5) ~ 0.002
    assert ratios.max() < 4.0


def test_evaluate_fields_and_a_shifted_set(gen):
    samples = REFERENCE_GAUSSIAN.sample(500, gen(0)).numpy()
    shifted = evaluate(samples + np.array([0.5, 0.0], dtype=np.float32), REFERENCE_GAUSSIAN, seed=1)
    good = evaluate(samples, REFERENCE_GAUSSIAN, seed=1)
    assert shifted.energy_distance.ratio > 10 * max(good.energy_distance.ratio, 1.0)
    assert shifted.mean_error.value == pytest.approx(0.5, abs=Z * 0.5 * math.sqrt(2 / 500))
    floor_expected = (2 / 500) * 0.5 * math.sqrt(math.pi)
    assert good.energy_distance.floor == pytest.approx(floor_expected, rel=1e-12)
    np.testing.assert_allclose(good.mean, samples.astype(np.float64).mean(0), rtol=1e-9)
    np.testing.assert_allclose(good.std, samples.astype(np.float64).std(0, ddof=1), rtol=1e-9)
    # data moments from 100 000 fresh points: SE 0.0016 (mean), 0.0011 (std)
    np.testing.assert_allclose(good.data_mean, [2.0, 2.0], atol=Z * 0.5 / math.sqrt(1e5))
    np.testing.assert_allclose(good.data_std, [0.5, 0.5], atol=Z * 0.5 / math.sqrt(2e5))
    out = good.to_dict()
    for key in [
        "energy_distance",
        "energy_distance_floor",
        "energy_distance_ratio",
        "mean",
        "std",
        "sliced_wasserstein",
        "mmd",
        "mean_error",
        "std_error",
    ]:
        assert key in out
    assert out["energy_distance_floor"] == good.energy_distance.floor


def test_evaluate_is_seeded(gen):
    samples = REFERENCE_GAUSSIAN.sample(200, gen(0))
    a, b = evaluate(samples, REFERENCE_GAUSSIAN, seed=3), evaluate(samples, REFERENCE_GAUSSIAN, seed=3)
    assert a == b


def test_evaluate_refuses_non_finite_samples():
    samples = np.full((10, 2), 2.0)
    samples[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        evaluate(samples, REFERENCE_GAUSSIAN)
