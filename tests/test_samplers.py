"""Samplers: the pure steps against independently written formulas, and each full sampler driven
by the exact eps* of the reference Gaussian (no training), against the exact answer.

With eps*(x, t) = c_t (x - sqrt(abar_t) mu), c_t = sqrt(1 - abar_t) / (abar_t s^2 + 1 - abar_t),
every sampler step is affine in x plus Gaussian noise, so starting from x_T ~ N(0, I) the output
is exactly Gaussian per axis with a mean and variance we can propagate in float64 (below). That
gives two separate checks: the implementation against that exact answer (within standard errors of
n points), and the exact answer against the data N([2, 2], 0.25 I) (the method's own bias: finite
T, x_T ~ N(0, I) instead of q(x_T), DDIM's coarse steps)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffusion.config import DenoiserConfig, SamplerConfig
from diffusion.denoiser import Denoiser
from diffusion.samplers import iter_sample, sample, sample_model
from diffusion.schedules import ddim_step, ddpm_step, predicted_x0, timesteps

MU, S = 2.0, 0.5
Z = 4.5  # standard errors allowed per statistic


def _abar(schedule) -> np.ndarray:
    return np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))  # independent of the package's table


# ---------------------------------------------------------------------------------------------
# Pure steps


def _x_eps_z(gen, n=32):
    g = gen(0)
    return [torch.randn(n, 2, generator=g, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize("variance", ["beta", "posterior"])
@pytest.mark.parametrize("t", [0, 1, 2, 500, 999])
def test_ddpm_step_is_algorithm_2(schedule, gen, variance, t):
    x, eps, z = _x_eps_z(gen)
    abar = _abar(schedule)
    beta = 1e-4 + (0.02 - 1e-4) * t / 999
    abar_prev = abar[t - 1] if t > 0 else 1.0
    mean = (x - beta / math.sqrt(1 - abar[t]) * eps) / math.sqrt(1 - beta)
    sigma2 = beta if variance == "beta" else (1 - abar_prev) / (1 - abar[t]) * beta
    expected = mean + (math.sqrt(sigma2) * z if t > 0 else 0.0)
    got = ddpm_step(schedule, eps, t, x, z, variance)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


def test_ddpm_step_adds_no_noise_at_t0(schedule, gen):
    x, eps, z = _x_eps_z(gen)
    a = ddpm_step(schedule, eps, 0, x, z, "beta")
    assert torch.equal(a, ddpm_step(schedule, eps, 0, x, None, "beta"))
    assert torch.equal(a, ddpm_step(schedule, eps, 0, x, 5 * z, "posterior"))


def test_ddpm_step_does_not_modify_its_inputs(schedule, gen):
    x, eps, z = _x_eps_z(gen)
    copies = [x.clone(), eps.clone(), z.clone()]
    ddpm_step(schedule, eps, 10, x, z, "beta")
    ddim_step(schedule, eps, 10, 5, x, 0.5, z)
    assert all(torch.equal(a, b) for a, b in zip([x, eps, z], copies, strict=True))


@pytest.mark.parametrize("eta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("t, t_prev", [(999, 979), (500, 100), (20, 0), (5, -1), (0, -1)])
def test_ddim_step_is_song_eq_12(schedule, gen, eta, t, t_prev):
    x, eps, z = _x_eps_z(gen)
    abar = _abar(schedule)
    a_t = abar[t]
    a_prev = abar[t_prev] if t_prev >= 0 else 1.0
    x0_hat = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
    sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
    expected = math.sqrt(a_prev) * x0_hat + math.sqrt(1 - a_prev - sigma**2) * eps + sigma * z
    got = ddim_step(schedule, eps, t, t_prev, x, eta, z)
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-7)


def test_ddim_last_step_returns_the_predicted_x0(schedule, gen):
    x, eps, z = _x_eps_z(gen)
    for t in [0, 3, 400]:
        got = ddim_step(schedule, eps, t, -1, x, 1.0, z)  # sigma = 0 when abar_prev = 1
        torch.testing.assert_close(got, predicted_x0(schedule, x, eps, t), rtol=1e-12, atol=1e-12)


def test_ddim_eta0_is_deterministic(schedule, gen):
    x, eps, z = _x_eps_z(gen)
    a = ddim_step(schedule, eps, 700, 650, x, 0.0, None)
    assert torch.equal(a, ddim_step(schedule, eps, 700, 650, x, 0.0, z))
    assert torch.equal(a, ddim_step(schedule, eps, 700, 650, x, 0.0, None))


@pytest.mark.parametrize("t", [1, 2, 300, 999])
def test_ddim_eta1_on_consecutive_steps_is_ddpm_with_posterior_variance(schedule, gen, t):
    # Song et al.: eta = 1 with no skipped steps recovers DDPM's posterior q(x_{t-1} | x_t, x0_hat).
    x, eps, z = _x_eps_z(gen)
    torch.testing.assert_close(
        ddim_step(schedule, eps, t, t - 1, x, 1.0, z),
        ddpm_step(schedule, eps, t, x, z, "posterior"),
        rtol=1e-7,
        atol=1e-8,
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda s, x: ddpm_step(s, x, 1000, x, x), r"t must be in \[0, 999\]"),
        (lambda s, x: ddpm_step(s, x, -1, x, x), r"t must be in \[0, 999\]"),
        (lambda s, x: ddpm_step(s, x, 10, x, x, "learned"), "variance must be 'beta' or 'posterior'"),
        (lambda s, x: ddpm_step(s, x, 10, x, None), "noise is required"),
        (lambda s, x: ddim_step(s, x, 1000, 10, x, 0.0, None), r"t must be in \[0, 999\]"),
        (lambda s, x: ddim_step(s, x, 10, 10, x, 0.0, None), "t_prev must be in"),
        (lambda s, x: ddim_step(s, x, 10, 11, x, 0.0, None), "t_prev must be in"),
        (lambda s, x: ddim_step(s, x, 10, -2, x, 0.0, None), "t_prev must be in"),
        (lambda s, x: ddim_step(s, x, 10, 5, x, -0.1, x), r"eta must be in \[0, 1\]"),
        (lambda s, x: ddim_step(s, x, 10, 5, x, 1.5, x), r"eta must be in \[0, 1\]"),
        (lambda s, x: ddim_step(s, x, 10, 5, x, float("nan"), x), r"eta must be in \[0, 1\]"),
        (lambda s, x: ddim_step(s, x, 10, 5, x, 0.5, None), "noise is required"),
    ],
    ids=[
        "ddpm-t-too-big",
        "ddpm-t-negative",
        "ddpm-variance",
        "ddpm-noise",
        "ddim-t-too-big",
        "ddim-t_prev-equal",
        "ddim-t_prev-after",
        "ddim-t_prev-below-minus-1",
        "ddim-eta-negative",
        "ddim-eta-too-big",
        "ddim-eta-nan",
        "ddim-noise",
    ],
)
def test_step_errors_say_what_is_allowed(schedule, call, match):
    with pytest.raises(ValueError, match=match):
        call(schedule, torch.zeros(3, 2))


# ---------------------------------------------------------------------------------------------
# Respacing


def test_ddpm_visits_every_t_descending(schedule):
    assert list(timesteps(schedule, SamplerConfig(kind="ddpm"))) == list(range(999, -1, -1))


@pytest.mark.parametrize("steps", [2, 3, 10, 50, 333, 999, 1000])
def test_ddim_respaces_evenly_from_T_minus_1_to_0(schedule, steps):
    ts = timesteps(schedule, SamplerConfig(kind="ddim", sample_steps=steps))
    assert len(ts) == steps and ts[0] == 999 and ts[-1] == 0
    gaps = -np.diff(ts)
    assert (gaps > 0).all() and gaps.max() - gaps.min() <= 1  # as even as integers allow


def test_ddim_with_one_step_starts_from_the_last_time(schedule, exact_eps, gen):
    assert list(timesteps(schedule, SamplerConfig(kind="ddim", sample_steps=1))) == [999]
    out = sample(exact_eps, schedule, SamplerConfig(kind="ddim", sample_steps=1, num_samples=500), gen(0)).samples
    # one step from x_T gives E[x_0 | x_T], which is mu up to 1e-3 (exact propagation below)
    assert np.all(np.abs(out.mean(0) - MU) < 0.05)


# ---------------------------------------------------------------------------------------------
# Whole samplers driven by the exact eps*


def _exact_output_moments(kind: str, variance: str, ts: np.ndarray, eta: float = 0.0):
    """Per-axis mean and std of the sampler's output for eps*, starting from N(0, 1), in float64."""
    betas = np.linspace(1e-4, 0.02, 1000)
    abar = np.cumprod(1 - betas)
    m, v = 0.0, 1.0
    for i, t in enumerate(ts):
        a_t = abar[t]
        c = math.sqrt(1 - a_t) / (a_t * S * S + 1 - a_t)  # eps* = c (x - sqrt(a_t) mu)
        if kind == "ddpm":
            k = betas[t] / math.sqrt(1 - a_t)
            slope, shift = (1 - k * c) / math.sqrt(1 - betas[t]), k * c * math.sqrt(a_t) * MU / math.sqrt(1 - betas[t])
            a_prev = abar[t - 1] if t > 0 else 1.0
            var_noise = 0.0 if t == 0 else (betas[t] if variance == "beta" else (1 - a_prev) / (1 - a_t) * betas[t])
        else:
            a_prev = abar[ts[i + 1]] if i + 1 < len(ts) else 1.0
            sigma2 = eta**2 * (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
            k = math.sqrt(1 - a_prev - sigma2) - math.sqrt(a_prev) * math.sqrt(1 - a_t) / math.sqrt(a_t)
            slope, shift = math.sqrt(a_prev / a_t) + k * c, -k * c * math.sqrt(a_t) * MU
            var_noise = sigma2
        m, v = slope * m + shift, slope * slope * v + var_noise
    return m, math.sqrt(v)


# (config, allowed |exact mean - 2|, allowed |exact std - 0.5|, why)
SAMPLERS = [
    # sigma^2 = beta overestimates the reverse variance (Ho et al. 3.2): exact std 0.50075
    (SamplerConfig(kind="ddpm", variance="beta"), 1e-3, 2e-3),
    # beta-tilde underestimates it: exact std 0.49611
    (SamplerConfig(kind="ddpm", variance="posterior"), 1e-3, 5e-3),
    # 50 steps of the probability-flow ODE: discretisation shrinks the std to 0.4719, and the
    # deterministic map carries x_T's missing mean sqrt(abar_T) mu = 0.013 through: mean 1.9940
    (SamplerConfig(kind="ddim", sample_steps=50, eta=0.0), 1e-2, 3e-2),
    # eta = 1 on 50 coarse steps is the posterior variance of a 50-step chain: std 0.4432
    (SamplerConfig(kind="ddim", sample_steps=50, eta=1.0), 1e-3, 6e-2),
    # more steps close the gap: std 0.4985
    (SamplerConfig(kind="ddim", sample_steps=1000, eta=0.0), 1e-2, 3e-3),
]


@pytest.mark.parametrize(
    "config, mean_bias, std_bias",
    SAMPLERS,
    ids=["ddpm-beta", "ddpm-posterior", "ddim50-eta0", "ddim50-eta1", "ddim1000-eta0"],
)
def test_exact_eps_drives_each_sampler_to_the_data(schedule, exact_eps, gen, config, mean_bias, std_bias):
    n = 4000
    config = SamplerConfig(**{**config.__dict__, "num_samples": n, "num_frames": 5})
    out = sample(exact_eps, schedule, config, gen(2024)).samples.astype(np.float64)
    assert out.shape == (n, 2) and np.isfinite(out).all()
    exact_mean, exact_std = _exact_output_moments(config.kind, config.variance, timesteps(schedule, config), config.eta)
    se_mean, se_std = exact_std / math.sqrt(n), exact_std / math.sqrt(2 * (n - 1))
    mean, std = out.mean(0), out.std(0, ddof=1)
    # 1. the implementation does what the maths says
    assert np.all(np.abs(mean - exact_mean) < Z * se_mean), (mean, exact_mean)
    assert np.all(np.abs(std - exact_std) < Z * se_std), (std, exact_std)
    # 2. and the method recovers the data up to its known, exactly computed bias (with 1., this
    # bounds the sampled statistics' distance from the data by the triangle inequality)
    assert abs(exact_mean - MU) < mean_bias and abs(exact_std - S) < std_bias


# ---------------------------------------------------------------------------------------------
# Trajectories, seeds and shared noise


def test_trajectory_frames_from_x_T_to_x_0(schedule, exact_eps, gen):
    config = SamplerConfig(kind="ddpm", num_samples=200, num_frames=11, seed=5)
    traj = sample(exact_eps, schedule, config, gen(5))
    assert traj.frames.shape == (11, 200, 2) and traj.predicted_x0.shape == (11, 200, 2)
    assert traj.frame_times[0] == 1000 and traj.frame_times[-1] == 0
    assert (np.diff(traj.frame_times) < 0).all()
    # x_T is the generator's first draw: N(0, I)
    np.testing.assert_array_equal(traj.frames[0], torch.randn(200, 2, generator=gen(5)).numpy())
    # the samples are the sampler's last x, and the last "prediction" is x_0 itself
    *_, (_, x_0) = iter_sample(exact_eps, schedule, config, gen(5))
    np.testing.assert_array_equal(traj.samples, x_0.numpy())
    np.testing.assert_array_equal(traj.predicted_x0[-1], traj.samples)
    # the first predicted x_0 is (x_T - sqrt(1 - abar) eps*) / sqrt(abar) at t = T - 1
    x_T = torch.from_numpy(traj.frames[0]).double()
    abar = _abar(schedule)[-1]
    x0_hat = (x_T - math.sqrt(1 - abar) * exact_eps(x_T, 999)) / math.sqrt(abar)
    np.testing.assert_allclose(traj.predicted_x0[0], x0_hat.numpy(), rtol=1e-4, atol=1e-3)
    assert traj.finite


def test_fewer_states_than_frames_keeps_them_all(schedule, exact_eps, gen):
    traj = sample(exact_eps, schedule, SamplerConfig(kind="ddim", sample_steps=5, num_samples=10, num_frames=60), gen(0))
    assert traj.frames.shape[0] == 6  # x_T and the 5 states after each step
    # model times round(linspace(0, 999, 5)) = 999, 749, 500, 250, 0; a frame is labelled t + 1
    assert list(traj.frame_times) == [1000, 750, 501, 251, 1, 0]


def test_same_seed_same_samples_and_other_seed_other_samples(schedule, exact_eps, gen):
    config = SamplerConfig(kind="ddpm", num_samples=100, num_frames=3)
    a = sample(exact_eps, schedule, config, gen(1)).samples
    b = sample(exact_eps, schedule, config, gen(1)).samples
    c = sample(exact_eps, schedule, config, gen(2)).samples
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_ddpm_and_ddim_with_the_same_seed_share_x_T(schedule, exact_eps, gen):
    ddpm = sample(exact_eps, schedule, SamplerConfig(kind="ddpm", num_samples=50, num_frames=3), gen(9))
    ddim = sample(exact_eps, schedule, SamplerConfig(kind="ddim", sample_steps=20, num_samples=50, num_frames=3), gen(9))
    np.testing.assert_array_equal(ddpm.frames[0], ddim.frames[0])


def test_ddpm_uses_x_T_then_the_per_step_noise_from_the_generator(schedule, exact_eps, gen):
    """Documented order: x_T first, then all per-step noise at once, so another run can share it."""
    n = 20
    config = SamplerConfig(kind="ddpm", variance="posterior", num_samples=n, num_frames=2)
    out = sample(exact_eps, schedule, config, gen(3)).samples
    g = gen(3)
    x = torch.randn(n, 2, generator=g)
    noise = torch.randn(1000, n, 2, generator=g)
    for i, t in enumerate(range(999, -1, -1)):
        x = ddpm_step(schedule, exact_eps(x, t), t, x, noise[i], "posterior")
    np.testing.assert_allclose(out, x.numpy(), rtol=1e-6, atol=1e-6)


def test_ddim_eta0_sample_is_a_deterministic_function_of_x_T(schedule, exact_eps, gen):
    config = SamplerConfig(kind="ddim", sample_steps=25, eta=0.0, num_samples=64, num_frames=2)
    traj = sample(exact_eps, schedule, config, gen(4))
    x = torch.from_numpy(traj.frames[0].copy())
    ts = timesteps(schedule, config)
    for i, t in enumerate(ts):
        t_prev = int(ts[i + 1]) if i + 1 < len(ts) else -1
        x = ddim_step(schedule, exact_eps(x, int(t)), int(t), t_prev, x, 0.0, None)
    np.testing.assert_allclose(traj.samples, x.numpy(), rtol=1e-6, atol=1e-6)


def test_iterating_the_sampler_does_not_leak_inference_mode(schedule, exact_eps, gen):
    steps = iter_sample(exact_eps, schedule, SamplerConfig(kind="ddim", sample_steps=10, num_samples=4), gen(0))
    for _ in range(3):
        next(steps)
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    steps.close()


def test_sample_model_equals_sampling_the_forward_pass(schedule, gen):
    model = Denoiser(DenoiserConfig(time_embedding="sinusoidal"), 1000, gen(0)).eval()
    config = SamplerConfig(kind="ddim", sample_steps=20, eta=0.5, num_samples=64, num_frames=4, seed=7)

    def slow_eps(x, t):
        with torch.no_grad():
            return model(x, torch.full((len(x),), t))

    fast = sample_model(model, schedule, config).samples
    slow = sample(slow_eps, schedule, config, gen(7)).samples
    np.testing.assert_allclose(fast, slow, rtol=1e-4, atol=1e-4)
