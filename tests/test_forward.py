"""Forward process q: exact formula for given noise, and sample statistics with tolerances from
standard errors (mean: sd / sqrt(n); variance: var * sqrt(2 / (n - 1)) for a Gaussian)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusion.forward import forward_trajectory, q_sample
from diffusion.schedules import make_schedule

Z = 4.5  # standard errors allowed per statistic: a false alarm has probability < 1e-5 each


def _assert_gaussian_stats(x: torch.Tensor, mean: np.ndarray, var: float, what: str = ""):
    """Per-axis sample mean and variance of x (n, 2) against N(mean, var I)."""
    x = x.double().numpy()
    n = len(x)
    se_mean = math.sqrt(var / n)
    se_var = var * math.sqrt(2 / (n - 1))
    assert np.all(np.abs(x.mean(0) - mean) < Z * se_mean), f"{what} mean {x.mean(0)} vs {mean}"
    assert np.all(np.abs(x.var(0, ddof=1) - var) < Z * se_var), f"{what} var {x.var(0, ddof=1)} vs {var}"


def test_q_sample_is_the_closed_form_for_given_noise(schedule, gen):
    g = gen(0)
    x0 = torch.randn(500, 2, generator=g) * 0.5 + 2
    noise = torch.randn(500, 2, generator=g)
    t = torch.randint(0, 1000, (500,), generator=g)
    abar = torch.tensor(schedule.float64["alphas_cumprod"])[t][:, None]
    expected = abar.sqrt() * x0.double() + (1 - abar).sqrt() * noise.double()  # eq. 4
    torch.testing.assert_close(q_sample(schedule, x0, t, noise).double(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("t", [0, 10, 100, 500, 999])
def test_q_sample_statistics_match_q_xt_given_x0(schedule, gen, t):
    g = gen(t)
    n = 20_000
    x0 = torch.tensor([2.0, -1.0]).expand(n, 2)
    noise = torch.randn(n, 2, generator=g)
    x_t = q_sample(schedule, x0, torch.full((n,), t), noise)
    abar = schedule.float64["alphas_cumprod"][t]
    _assert_gaussian_stats(x_t, math.sqrt(abar) * np.array([2.0, -1.0]), 1 - abar, f"t={t}")


def test_the_schedules_posterior_columns_are_q_of_x_prev_given_x_t_and_x0(schedule, gen):
    """Check eq. 7 by simulation: draw x_{t-1} ~ q(x_{t-1} | x_0), then x_t ~ q(x_t | x_{t-1}); the
    regression of x_{t-1} on x_t (x_0 fixed) has slope coef2 and residual variance beta-tilde."""
    g = gen(1)
    t, n = 300, 50_000
    x0 = torch.full((n, 2), 1.5, dtype=torch.float64)
    abar_prev = schedule.float64["alphas_cumprod"][t - 1]
    beta = schedule.float64["betas"][t]
    x_prev = math.sqrt(abar_prev) * x0 + math.sqrt(1 - abar_prev) * torch.randn(n, 2, generator=g, dtype=torch.float64)
    x_t = math.sqrt(1 - beta) * x_prev + math.sqrt(beta) * torch.randn(n, 2, generator=g, dtype=torch.float64)
    table = schedule.float64
    mean = table["posterior_mean_coef1"][t] * x0 + table["posterior_mean_coef2"][t] * x_t
    var = float(table["posterior_variance"][t])
    residual = (x_prev - mean).numpy()
    se_mean = math.sqrt(var / n)
    assert np.all(np.abs(residual.mean(0)) < Z * se_mean)
    assert np.all(np.abs(residual.var(0, ddof=1) - var) < Z * var * math.sqrt(2 / (n - 1)))


def test_forward_trajectory_frames_and_times(gen):
    s = make_schedule("linear", 100, 1e-4, 0.02)
    x0 = torch.randn(64, 2, generator=gen(0))
    before = x0.clone()
    frames, times = forward_trajectory(s, x0, num_frames=11, generator=gen(1))
    assert frames.shape == (11, 64, 2)
    assert list(times) == list(range(0, 101, 10))  # evenly spaced over the T + 1 states
    assert torch.equal(frames[0], x0)  # the first frame is the data itself
    assert torch.equal(x0, before)  # and the data is not modified in place


def test_forward_trajectory_with_more_frames_than_states_keeps_every_state(gen):
    s = make_schedule("linear", 5, 1e-4, 0.02)
    frames, times = forward_trajectory(s, torch.zeros(3, 2), num_frames=50, generator=gen(0))
    assert frames.shape[0] == len(times) == 6
    assert list(times) == [0, 1, 2, 3, 4, 5]


def test_forward_trajectory_is_deterministic_per_generator(gen):
    s = make_schedule("linear", 50, 1e-4, 0.02)
    x0 = torch.randn(32, 2, generator=gen(0))
    a, _ = forward_trajectory(s, x0, 6, gen(7))
    b, _ = forward_trajectory(s, x0, 6, gen(7))
    c, _ = forward_trajectory(s, x0, 6, gen(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_forward_trajectory_marginals_follow_q_xt_given_x0(gen):
    """The Markov chain x_{t} = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) z, run step by step, must have
    the marginal N(sqrt(abar_t) x_0, (1 - abar_t) I) at every kept frame, including the last."""
    T, n = 100, 20_000  # abar_T = 0.364: the final frame still carries signal to check
    s = make_schedule("linear", T, 1e-4, 0.02)
    x0 = torch.tensor([2.0, 2.0]).expand(n, 2).contiguous()
    frames, times = forward_trajectory(s, x0, num_frames=5, generator=gen(3))
    assert times[-1] == T
    for frame, time in zip(frames[1:], times[1:], strict=True):
        abar = s.float64["alphas_cumprod"][time - 1]  # state `time` is paper x_time = index time-1
        _assert_gaussian_stats(frame, math.sqrt(abar) * np.array([2.0, 2.0]), 1 - abar, f"frame t={time}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_forward_trajectory_on_cuda_matches_the_cpu(gen):
    s = make_schedule("linear", 50, 1e-4, 0.02)
    x0 = torch.randn(16, 2, generator=gen(0))
    cpu, _ = forward_trajectory(s, x0, 5, gen(1))
    cuda, _ = forward_trajectory(s.to("cuda"), x0.cuda(), 5, gen(1))
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-5, atol=1e-5)
