"""Noise schedules against closed forms, an independent float64 derivation and known spot values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from diffusion.schedules import make_schedule

KINDS = ["linear", "quadratic", "cosine", "sigmoid"]
FIELDS = ["betas", "alphas", "alphas_cumprod", "posterior_variance"]

# float32 holds ~7 significant digits: the float64 table rounded to float32 is within 2^-24 relative.
F32 = dict(rtol=2e-7, atol=0.0)


def _f64(tensor: torch.Tensor) -> np.ndarray:
    return tensor.double().numpy()


def test_linear_betas_equal_torch_linspace(schedule):
    expected = torch.linspace(1e-4, 0.02, 1000)  # what the reference script uses (float32)
    torch.testing.assert_close(schedule.betas, expected, rtol=1e-6, atol=0.0)
    assert schedule.betas[0].item() == pytest.approx(1e-4, rel=1e-7)
    assert schedule.betas[-1].item() == pytest.approx(0.02, rel=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_tables_are_derived_in_float64_and_rounded_once_to_float32(kind):
    s = make_schedule(kind, 1000, 1e-4, 0.02)
    betas = s.float64["betas"]
    assert betas.dtype == np.float64
    np.testing.assert_allclose(_f64(s.betas), betas, **F32)
    # Rounded once from float64: 1 - beta keeps full relative precision even where beta -> 0.999
    # (cosine), which a float32 subtraction would not.
    np.testing.assert_allclose(_f64(s.alphas), 1.0 - betas, **F32)
    abar = np.cumprod(1.0 - betas)  # independent float64 cumulative product
    np.testing.assert_allclose(_f64(s.alphas_cumprod), abar, **F32)
    np.testing.assert_allclose(s.float64["alphas_cumprod"], abar, rtol=1e-12)


@pytest.mark.parametrize(
    "T, quoted, half_unit",
    # The README's figures, each within half a unit of its last quoted digit.
    [(10, 0.904, 5e-4), (50, 0.603, 5e-4), (100, 0.364, 5e-4), (250, 0.080, 5e-4), (1000, 4.0e-5, 5e-7)],
)
def test_terminal_alpha_bar_spot_values_from_the_reference_readme(T, quoted, half_unit):
    s = make_schedule("linear", T, 1e-4, 0.02)
    assert abs(s.terminal_alpha_bar - quoted) <= half_unit
    assert s.alphas_cumprod[-1].item() == pytest.approx(s.terminal_alpha_bar, rel=1e-6)


def test_linear_alphas_cumprod_closed_form_at_every_t():
    # abar_t = prod_{i<=t} (1 - beta_i), beta_i = b0 + (b1 - b0) i / (T - 1); computed term by term.
    T, b0, b1 = 200, 1e-4, 0.02
    s = make_schedule("linear", T, b0, b1)
    abar, expected = 1.0, []
    for i in range(T):
        abar *= 1.0 - (b0 + (b1 - b0) * i / (T - 1))
        expected.append(abar)
    np.testing.assert_allclose(_f64(s.alphas_cumprod), expected, **F32)
    np.testing.assert_allclose(s.float64["alphas_cumprod"], expected, rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_posterior_coefficients_match_gaussian_conditioning(kind):
    """Eq. 6-7 of Ho et al. re-derived by conditioning the joint Gaussian of (x_{t-1}, x_t) | x_0:
    Var x_{t-1} = P = 1 - abar_{t-1}, Cov = sqrt(alpha_t) P, Var x_t = 1 - abar_t, so
    mean = sqrt(abar_{t-1}) x_0 + c (x_t - sqrt(abar_t) x_0) with c = sqrt(alpha_t) P / (1 - abar_t)
    and variance P - alpha_t P^2 / (1 - abar_t)."""
    s = make_schedule(kind, 500, 1e-4, 0.02)
    betas = s.float64["betas"]
    alphas = 1.0 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    P = 1.0 - abar_prev
    coef_xt = np.sqrt(alphas) * P / (1.0 - abar)
    coef_x0 = np.sqrt(abar_prev) - coef_xt * np.sqrt(abar)
    variance = P - alphas * P**2 / (1.0 - abar)

    np.testing.assert_allclose(s.float64["posterior_mean_coef2"], coef_xt, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(s.float64["posterior_mean_coef1"], coef_x0, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(s.float64["posterior_variance"], variance, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(_f64(s.posterior_variance), variance, rtol=2e-7, atol=1e-15)
    np.testing.assert_allclose(_f64(s.posterior_mean_coef1), coef_x0, rtol=2e-7, atol=1e-12)
    np.testing.assert_allclose(_f64(s.posterior_mean_coef2), coef_xt, rtol=2e-7, atol=1e-15)
    assert s.posterior_variance[0].item() == 0.0  # q(x_0 | x_1, x_0) is a point mass
    assert (s.posterior_variance[1:] <= s.betas[1:]).all()  # beta-tilde <= beta (Ho et al. 3.2)


def test_alphas_cumprod_prev_and_square_roots(schedule):
    np.testing.assert_allclose(_f64(schedule.alphas_cumprod_prev[1:]), _f64(schedule.alphas_cumprod[:-1]), **F32)
    assert schedule.alphas_cumprod_prev[0].item() == 1.0
    abar = schedule.float64["alphas_cumprod"]
    np.testing.assert_allclose(_f64(schedule.sqrt_alphas_cumprod), np.sqrt(abar), **F32)
    np.testing.assert_allclose(_f64(schedule.sqrt_one_minus_alphas_cumprod), np.sqrt(1 - abar), **F32)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", [1, 2, 10, 1000, 4000])
def test_every_kind_is_a_valid_schedule(kind, T):
    s = make_schedule(kind, T, 1e-4, 0.02)
    for name in FIELDS:
        tensor = getattr(s, name)
        assert tensor.dtype == torch.float32 and tensor.shape == (T,), name
        assert torch.isfinite(tensor).all(), name
    assert s.num_timesteps == T
    betas = s.float64["betas"]
    assert ((betas > 0) & (betas < 1)).all()
    abar = s.float64["alphas_cumprod"]
    assert ((abar > 0) & (abar <= 1)).all()
    assert (np.diff(abar) < 0).all()  # strictly decreasing: every step adds noise
    assert (s.alphas_cumprod[1:] <= s.alphas_cumprod[:-1]).all()
    assert 0 < s.terminal_alpha_bar == pytest.approx(abar[-1], rel=1e-12)


@pytest.mark.parametrize(
    "kind, low, high",
    [
        ("linear", 3.9e-5, 4.1e-5),  # README: 4.0e-5
        ("quadratic", 5e-4, 1e-3),  # smaller betas early: more signal left
        ("sigmoid", 3e-5, 5e-5),
        ("cosine", 0.0, 1e-8),  # ends by construction at (nearly) pure noise
    ],
)
def test_terminal_alpha_bar_of_every_kind_at_T_1000(kind, low, high):
    s = make_schedule(kind, 1000, 1e-4, 0.02)
    assert low < s.terminal_alpha_bar < high
    # SNR(T) = abar_T / (1 - abar_T), what the UI warns on.
    assert s.terminal_snr == pytest.approx(s.terminal_alpha_bar / (1 - s.terminal_alpha_bar), rel=1e-12)
    np.testing.assert_allclose(s.snr, s.float64["alphas_cumprod"] / (1 - s.float64["alphas_cumprod"]), rtol=1e-12)


def test_short_linear_schedules_are_far_from_noise_and_the_snr_says_so():
    short, full = make_schedule("linear", 10, 1e-4, 0.02), make_schedule("linear", 1000, 1e-4, 0.02)
    assert short.terminal_snr > 9.0  # abar_T = 0.904: x_T is mostly signal
    assert full.terminal_snr < 1e-4
    assert np.all(np.diff(full.snr) < 0)


def test_cosine_follows_nichol_dhariwal_alpha_bar():
    # abar(t) = f(t) / f(0), f(t) = cos^2(((t / T) + s) / (1 + s) * pi / 2), s = 0.008 (eq. 17);
    # betas are clipped at 0.999 only at the very end, so compare where the clip is inactive.
    T, s_off = 1000, 0.008
    s = make_schedule("cosine", T, 1e-4, 0.02)
    f = np.cos(((np.arange(T + 1) / T) + s_off) / (1 + s_off) * np.pi / 2) ** 2
    expected = f[1:] / f[0]
    unclipped = 1 - expected / np.concatenate([[1.0], expected[:-1]]) < 0.999
    np.testing.assert_allclose(s.float64["alphas_cumprod"][unclipped], expected[unclipped], rtol=1e-9)
    assert unclipped[:-1].all() and s.float64["betas"].max() <= 0.999


def test_quadratic_is_linear_in_sqrt_beta_and_sigmoid_stays_in_range():
    q = make_schedule("quadratic", 100, 1e-4, 0.02).float64["betas"]
    assert q[0] == pytest.approx(1e-4) and q[-1] == pytest.approx(0.02)
    np.testing.assert_allclose(np.diff(np.sqrt(q), 2), 0.0, atol=1e-12)
    sig = make_schedule("sigmoid", 100, 1e-4, 0.02).float64["betas"]
    assert (sig >= 1e-4).all() and (sig <= 0.02).all() and (np.diff(sig) > 0).all()


def test_to_returns_a_new_schedule_and_leaves_the_original_alone(schedule):
    moved = schedule.to("cpu")
    assert moved is not schedule
    assert moved.device == torch.device("cpu")
    for name in FIELDS:
        assert torch.equal(getattr(moved, name), getattr(schedule, name))
        assert getattr(moved, name).dtype == torch.float32
    assert moved.num_timesteps == schedule.num_timesteps
    assert moved.terminal_alpha_bar == schedule.terminal_alpha_bar


def test_to_copy_shares_no_storage():
    original = make_schedule("linear", 10, 1e-4, 0.02)
    moved = original.to("cpu")
    moved.betas.mul_(2.0)
    assert original.betas[0].item() == pytest.approx(1e-4, rel=1e-6)


def test_schedules_are_independent_objects():
    a, b = make_schedule(), make_schedule()
    assert a.betas.data_ptr() != b.betas.data_ptr()  # no shared module-level tensors
    with pytest.raises(ValueError):
        a.float64["betas"][0] = 1.0  # the float64 table is read-only
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.betas = torch.zeros(1000)  # frozen


@pytest.mark.parametrize(
    "args, field",
    [
        (("exponential", 1000, 1e-4, 0.02), "schedule.kind"),
        (("linear", 0, 1e-4, 0.02), "schedule.num_timesteps"),
        (("linear", -5, 1e-4, 0.02), "schedule.num_timesteps"),
        (("linear", 1000, 0.02, 1e-4), "schedule.beta_end"),
        (("linear", 1000, 0.0, 0.02), "schedule.beta_start"),
        (("linear", 1000, 1e-4, 1.0), "schedule.beta_end"),
    ],
)
def test_make_schedule_rejects_bad_arguments(args, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        make_schedule(*args)
