"""The score the presets are tuned and shown by (``bench/quality.py``): an unbiased estimate of the
command's energy-distance ratio (1000 samples against 1000 fresh true points), with the true side's
luck taken out by one large true set."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bench import quality
from diffusion.datasets import REFERENCE_GAUSSIAN
from diffusion.metrics import energy_distance


def _t_bound(values: np.ndarray) -> float:
    return 5 * values.std(ddof=1) / math.sqrt(len(values))  # t with >= 11 dof: P(|t| > 5) < 0.001


def test_the_large_true_set_is_built_once_and_its_mean_distance_is_all_pairs():
    truth = quality.truth("gaussian")
    assert quality.truth("gaussian") is truth and len(truth.points) == quality.TRUE_SIZE
    few = truth.points[:300]
    assert quality.mean_distance(few, few, block=64) == pytest.approx(torch.cdist(few, few).mean().item(), rel=1e-12)
    assert truth.pairwise == REFERENCE_GAUSSIAN.mean_pairwise_distance()  # closed form: s sqrt(pi)


def test_a_perfect_sampler_scores_one_on_average():
    scored = quality.fresh_score("gaussian", seed=0, draws=12)
    for scores in (np.array(scored.ratios), np.array(scored.blurs)):
        assert abs(scores.mean() - 1.0) < _t_bound(scores)


def test_the_score_estimates_the_commands_expected_ratio_for_an_imperfect_sampler():
    """Samples 0.06 off the mean: each set's score and its energy distance against a fresh
    1000-point true set over 2 D / 1000 have the same expectation; a fixed big true set only removes
    that set's own spread."""
    g = torch.Generator().manual_seed(11)
    sets = [REFERENCE_GAUSSIAN.sample(1000, g).double() + 0.06 for _ in range(12)]
    floor = 2 * REFERENCE_GAUSSIAN.mean_pairwise_distance() / 1000
    fresh = np.array([energy_distance(x, REFERENCE_GAUSSIAN.sample(1000, g)) / floor for x in sets])
    scores = np.array([quality.ratio(x, "gaussian") for x in sets])
    assert scores.mean() > 2.5  # far from a perfect sampler's 1.0 ...
    difference = fresh - scores  # ... and paired on the same sample sets
    assert abs(difference.mean()) < _t_bound(difference)
    assert scores.std() < fresh.std()  # the true side's spread is gone


def test_the_blur_ratio_grows_with_the_blur_the_energy_distance_hardly_sees():
    """The spiral's points moved off it by Gaussian noise of sigma: the blur ratio grows with sigma
    and is well above a fresh draw's 1 at sigma = 0.1, where
    the energy-distance score of the same set is still within the spread of a fresh draw's."""
    g = torch.Generator().manual_seed(12)
    data = quality.make_dataset(quality.data_config("spiral"))
    blurs, ratios = [], []
    for sigma in (0.0, 0.1, 0.2):
        x = data.sample(1000, g).double()
        x = x + sigma * torch.randn(x.shape, generator=g, dtype=torch.float64)
        blurs.append(quality.blur(x, "spiral"))
        ratios.append(quality.ratio(x, "spiral"))
    assert blurs[0] < 1.3 and 2 < blurs[1] < blurs[2]
    assert ratios[1] < 1.5  # a fresh draw's single-set score spreads by 0.2 - 0.5 around 1


def test_the_perfect_model_is_sampled_with_the_noise_the_presets_model_gets(monkeypatch):
    """``ideal_score`` exists to show the luck of a run's noise, so each of its sample sets must
    start from the generator state that ``score`` gives the trained model's set of the same index."""
    import types

    from diffusion import improved, samplers

    seen: dict[str, list] = {"model": [], "ideal": []}

    def recorder(who):
        def fake_sample(model_fn, path, config, generator, **kwargs):
            seen[who].append((config.seed, generator.initial_seed(), torch.randn(3, generator=generator).tolist()))
            return types.SimpleNamespace(samples=quality.truth("gaussian").points[:quality.SIZE])
        return fake_sample

    monkeypatch.setattr(samplers, "sample", recorder("model"))  # what sample_model calls
    monkeypatch.setattr(quality, "sample", recorder("ideal"))
    config = improved().replace(train={"epochs": 2})
    quality.score(config, "gaussian", seed=7, draws=3)
    scored = quality.ideal_score(config, "gaussian", seed=7, draws=3)
    assert len(seen["model"]) == 3 and seen["ideal"] == seen["model"]
    assert [seed for seed, *_ in seen["model"]] == [7, 7 + quality.DRAW_SEED_STRIDE, 7 + 2 * quality.DRAW_SEED_STRIDE]
    assert len(scored.ratios) == 3


def test_there_is_no_perfect_model_score_without_an_exact_ideal_or_with_noise_that_depends_on_the_run():
    from diffusion import improved

    assert quality.ideal_score(improved(), "spiral", seed=0, draws=1) is None  # only an empirical ideal
    assert quality.ideal_score(improved().replace(sampler={"common_noise": False}), "gaussian", seed=0, draws=1) is None
