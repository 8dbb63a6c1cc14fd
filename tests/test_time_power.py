"""The Low-noise emphasis p (``train.time_power``): training draws its time as u^p of a uniform u.
Checked: the level probabilities' closed form, both paths' draws against it (binomial standard
errors), p = 1 drawing exactly what it drew before, and the loss floors weighted the way the levels
are drawn (the ideal denoiser's loss under the skewed draws averages to the weighted floor)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusion.config import DataConfig, ExperimentConfig, reference
from diffusion.datasets import REFERENCE_GAUSSIAN, make_dataset
from diffusion.monitoring import loss_floor_by_bin
from diffusion.objectives import path_of
from diffusion.paths import level_weights
from diffusion.schedules import make_schedule
from diffusion.training import Trainer

Z = 5.0  # binomial / Monte Carlo standard errors allowed
N = 200_000


def test_level_weights_closed_form():
    for T, p in ((1000, 1.0), (1000, 2.0), (100, 0.5), (7, 3.0)):
        w = level_weights(T, p)
        assert w.shape == (T,) and w.sum() == pytest.approx(1.0, abs=1e-12) and np.all(w > 0)
        k = np.arange(T + 1)
        assert np.cumsum(np.r_[0, w]) == pytest.approx((k / T) ** (1 / p), abs=1e-12)
    assert level_weights(1000, 1.0) == pytest.approx(np.full(1000, 1e-3), rel=1e-9)
    # p = 2: the quietest tenth of the levels holds sqrt(0.1) of the draws
    assert level_weights(1000, 2.0)[:100].sum() == pytest.approx(math.sqrt(0.1), rel=1e-12)


def _counts_match(levels: torch.Tensor, weights: np.ndarray) -> float:
    """The largest deviation of a level's count from its expectation, in binomial standard errors."""
    counts = np.bincount(levels.numpy(), minlength=len(weights))
    n = len(levels)
    return float(np.max(np.abs(counts - n * weights) / np.sqrt(n * weights * (1 - weights))))


@pytest.mark.parametrize("p", [0.5, 2.0, 3.0])
def test_ddpm_draws_levels_as_weighted(p):
    path = make_schedule("linear", 100, 1e-4, 0.02)
    x0 = torch.zeros(N, 2)
    t, level, eps = path.training_draw(x0, torch.Generator().manual_seed(1), "independent", p)
    assert torch.equal(t, level) and t.dtype == torch.long and int(t.min()) >= 0 and int(t.max()) <= 99
    assert _counts_match(level, level_weights(100, p)) < Z
    assert eps.shape == (N, 2)


@pytest.mark.parametrize("p", [0.5, 2.0])
def test_flow_draws_times_as_weighted(p):
    path = path_of(reference().replace(schedule={"objective": "flow", "num_timesteps": 50}, sampler={"kind": "euler"}).schedule)
    t, level, _ = path.training_draw(torch.zeros(N, 2), torch.Generator().manual_seed(2), "independent", p)
    assert t.dtype == torch.float32 and float(t.min()) >= 0 and float(t.max()) < 1
    for x in (0.01, 0.1, 0.5, 0.9):  # P(u^p < x) = x^(1/p)
        share, expected = float((t < x).double().mean()), x ** (1 / p)
        assert abs(share - expected) < Z * math.sqrt(expected * (1 - expected) / N), x
    assert torch.equal(level, (t * 50).long().clamp(max=49))
    assert _counts_match(level, level_weights(50, p)) < Z


def test_power_one_draws_what_it_always_drew():
    """p = 1 is the reference's stream: randint for DDPM, rand for flow, then the noise."""
    x0 = torch.zeros(64, 2)
    ddpm = make_schedule("linear", 1000, 1e-4, 0.02)
    t, _, eps = ddpm.training_draw(x0, torch.Generator().manual_seed(3), "independent")
    g = torch.Generator().manual_seed(3)
    assert torch.equal(t, torch.randint(0, 1000, (64,), generator=g)) and torch.equal(eps, torch.randn(64, 2, generator=g))
    flow = path_of(reference().replace(schedule={"objective": "flow"}, sampler={"kind": "euler"}).schedule)
    t, _, _ = flow.training_draw(x0, torch.Generator().manual_seed(3), "independent", 1.0)
    assert torch.equal(t, torch.rand(64, generator=torch.Generator().manual_seed(3)))


def test_trainer_draws_with_the_setting():
    """A run with p = 2 trains on lower levels (its records' t), reproducibly; p = 1 is the default."""
    assert reference().train.time_power == 1.0
    config = reference().replace(train={"epochs": 30, "time_power": 2.0})
    first, second = Trainer(config), Trainer(config)
    t1 = torch.cat([r.t for r in first.run()])
    t2 = torch.cat([r.t for r in second.run()])
    assert torch.equal(t1, t2)
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(),
                                                 strict=True))
    share = float((t1 < 100).double().mean())  # expected sqrt(0.1) = 0.316 of 30 x 128 draws
    assert abs(share - math.sqrt(0.1)) < Z * math.sqrt(0.316 * 0.684 / len(t1))


def test_time_power_out_of_range_says_what_is_allowed():
    with pytest.raises(ValueError, match=r"time_power.*0\.25.*4"):
        ExperimentConfig().replace(train={"time_power": 5.0})
    with pytest.raises(ValueError, match=r"time_power"):
        ExperimentConfig().replace(train={"time_power": 0.0})


def test_ideal_loss_under_skewed_draws_averages_to_the_weighted_floor(schedule, gen):
    """The perfect denoiser's per-sample loss, at levels drawn with p = 2, averages to the floor
    weighted by ``level_weights`` (Z standard errors of the draws' own spread), and the uniform
    average is far from it: the weighting is what the loss curve is compared with."""
    g = gen(4)
    x0 = REFERENCE_GAUSSIAN.sample(N, g).double()
    t, _, eps = schedule.training_draw(x0, g, "independent", 2.0)
    eps = eps.double()
    x_t = schedule.x_t(x0, t, eps)
    loss = (eps - REFERENCE_GAUSSIAN.optimal_target(x_t, t, schedule)).square().mean(1)
    se = float(loss.std()) / math.sqrt(N)
    per_t = REFERENCE_GAUSSIAN.irreducible_loss(schedule)
    weighted = float(np.average(per_t, weights=level_weights(1000, 2.0)))
    assert abs(float(loss.mean()) - weighted) < Z * se
    assert abs(float(per_t.mean()) - weighted) > 20 * se

    binned = loss_floor_by_bin(REFERENCE_GAUSSIAN, schedule, 20, time_power=2.0)
    for b, (a, e) in enumerate(zip(binned.t_start, binned.t_end, strict=True)):
        w = level_weights(1000, 2.0)[a:e]
        assert binned.values[b] == pytest.approx(float((per_t[a:e] * w).sum() / w.sum()), rel=1e-12)
        inside = (t >= int(a)) & (t < int(e))  # the draws' own mean in the bin
        assert abs(float(loss[inside].mean()) - binned.values[b]) < Z * float(loss[inside].std()) / math.sqrt(int(inside.sum()))


def test_mixture_floor_weighted_like_the_draws():
    """The ring's numerical floor per bin with p = 2 against one bin per level (p = 1) weighted
    directly (T = 100, 5 bins of 20 levels): within Z of both estimates' standard errors; p = 1 in
    the first bin is a different number (the weighting is not a no-op there)."""
    path = make_schedule("linear", 100, 1e-4, 0.02)
    ring = make_dataset(DataConfig("ring"))
    skewed = loss_floor_by_bin(ring, path, 5, draws_per_bin=20_000, time_power=2.0)
    uniform = loss_floor_by_bin(ring, path, 5, draws_per_bin=20_000, seed=1)
    per_level = loss_floor_by_bin(ring, path, 100, draws_per_bin=4_000, seed=2)
    w = level_weights(100, 2.0)
    for b in range(5):
        a, e = int(skewed.t_start[b]), int(skewed.t_end[b])
        share = w[a:e] / w[a:e].sum()
        direct = float((per_level.values[a:e] * share).sum())
        direct_se = float(np.sqrt(((per_level.standard_error[a:e] * share) ** 2).sum()))
        assert abs(skewed.values[b] - direct) < Z * math.hypot(skewed.standard_error[b], direct_se), b
    assert abs(skewed.values[0] - uniform.values[0]) > Z * math.hypot(skewed.standard_error[0], uniform.standard_error[0])
