"""Datasets: seeded sampling, the exact eps* and irreducible loss, and the user's CSV points."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from diffusion.config import DataConfig, PointSet
from diffusion.datasets import (
    REFERENCE_GAUSSIAN,
    FixedPoints,
    GaussianMixture,
    PointsError,
    load_points,
    make_dataset,
)
from diffusion.schedules import make_schedule

SYNTHETIC = ["gaussian", "ring", "moons", "swiss_roll", "circles", "checkerboard", "spiral"]
Z = 4.5  # standard errors allowed per statistic


def read_csv(data: bytes | str, *, standardize: bool = True) -> np.ndarray:
    """The points ``load_points`` reads from a CSV file, as the model trains on them: (N, 2) float32."""
    return load_points(data, standardize=standardize).points.array


def _points_config(n=40, seed=0):
    return DataConfig("points", PointSet.from_array(np.random.default_rng(seed).normal(size=(n, 2))))


# ---------------------------------------------------------------------------------------------
# Sampling


@pytest.mark.parametrize("name", SYNTHETIC + ["points"])
def test_every_dataset_samples_finite_points_deterministically(name, gen):
    dataset = make_dataset(_points_config() if name == "points" else DataConfig(name))
    a = dataset.sample(512, gen(0))
    assert a.shape == (512, 2) and a.dtype == torch.float32
    assert torch.isfinite(a).all()
    assert torch.equal(a, dataset.sample(512, gen(0)))  # same generator seed, same bits
    assert not torch.equal(a, dataset.sample(512, gen(1)))  # another seed, other points


@pytest.mark.parametrize("name", SYNTHETIC)
def test_sampling_leaves_the_global_rng_alone(name, gen):
    before = torch.get_rng_state()
    make_dataset(DataConfig(name)).sample(100, gen(0))
    assert torch.equal(torch.get_rng_state(), before)


def test_reference_gaussian_draws_like_the_reference_script(gen):
    # The seed script: torch.randn(n, 2) * 0.5 + [2, 2], here from an explicit generator.
    expected = torch.randn(300, 2, generator=gen(5)) * 0.5 + torch.tensor([2.0, 2.0])
    assert torch.equal(REFERENCE_GAUSSIAN.sample(300, gen(5)), expected)


@pytest.mark.parametrize(
    "mixture",
    [
        REFERENCE_GAUSSIAN,
        make_dataset(DataConfig("ring")),
        GaussianMixture(((-1.0, 0.0), (1.5, 1.0)), (0.3, 0.6), (0.3, 0.7)),
    ],
    ids=["gaussian", "ring", "two-component"],
)
def test_mixture_samples_match_their_stated_mean_and_std(mixture, gen):
    n = 40_000
    x = mixture.sample(n, gen(11)).double().numpy()
    std = np.asarray(mixture.std)
    assert np.all(np.abs(x.mean(0) - mixture.mean) < Z * std / math.sqrt(n))
    # SE of a sample std is sd * sqrt((kurtosis - 1) / (4 n)); a mixture's kurtosis stays below 3 here
    # (ring: bimodal projections, < 3), so sd / sqrt(2 n) would be too tight only for heavy tails.
    assert np.all(np.abs(x.std(0, ddof=1) - std) < Z * std / math.sqrt(2 * n))


def test_ring_has_eight_modes_on_the_circle_of_radius_two(gen):
    x = make_dataset(DataConfig("ring")).sample(4000, gen(0))
    radius = x.norm(dim=1)
    assert (radius - 2).abs().max() < 6 * 0.15 * 1.5  # radial noise of std 0.15 (chi with 2 dof tail)
    angle = torch.atan2(x[:, 1], x[:, 0]) % (2 * math.pi)
    modes = torch.round(angle / (math.pi / 4)) % 8
    counts = torch.bincount(modes.long(), minlength=8).double()
    # multinomial counts: each ~ 500 +- sqrt(4000 * 1/8 * 7/8) = 21
    assert ((counts - 500).abs() < Z * 21).all()


def test_checkerboard_points_lie_on_the_dark_squares(gen):
    x = make_dataset(DataConfig("checkerboard")).sample(5000, gen(0))
    assert (x.abs() <= 2).all()
    assert ((torch.floor(x[:, 0]) + torch.floor(x[:, 1])) % 2 == 0).all()


def test_circles_have_radii_one_and_two(gen):
    radius = make_dataset(DataConfig("circles")).sample(4000, gen(0)).norm(dim=1)
    near_one, near_two = (radius - 1).abs() < 0.4, (radius - 2).abs() < 0.4
    assert (near_one | near_two).all()
    assert abs(near_one.double().mean().item() - 0.5) < Z * 0.5 / math.sqrt(4000)


def test_fixed_points_sample_only_the_given_points(gen):
    config = _points_config(25)
    dataset = make_dataset(config)
    assert isinstance(dataset, FixedPoints)
    drawn = dataset.sample(1000, gen(0)).numpy()
    assert {tuple(p) for p in drawn} <= {tuple(p) for p in config.points.array}


# ---------------------------------------------------------------------------------------------
# eps* and the irreducible loss


def test_optimal_eps_of_the_reference_gaussian_is_the_closed_form(schedule, gen):
    g = gen(0)
    t = torch.randint(0, 1000, (400,), generator=g)
    x_t = torch.randn(400, 2, generator=g, dtype=torch.float64) * 1.5 + 1.0
    abar = torch.tensor(schedule.float64["alphas_cumprod"])[t][:, None]
    mu, s2 = torch.tensor([2.0, 2.0], dtype=torch.float64), 0.25
    expected = (1 - abar).sqrt() * (x_t - abar.sqrt() * mu) / (abar * s2 + 1 - abar)
    got = REFERENCE_GAUSSIAN.optimal_eps(x_t, t, schedule)
    assert got.dtype == torch.float64 and got.shape == (400, 2)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)
    # a shared scalar t and float32 input work too, and give x_t's dtype back
    one = REFERENCE_GAUSSIAN.optimal_eps(x_t[:5].float(), torch.tensor(7), schedule)
    assert one.dtype == torch.float32
    torch.testing.assert_close(
        one.double(), REFERENCE_GAUSSIAN.optimal_eps(x_t[:5], torch.full((5,), 7), schedule), rtol=1e-6, atol=1e-6
    )


def _brute_force_eps(mixture: GaussianMixture, x_t: np.ndarray, abar: float, box: float, step: float) -> np.ndarray:
    """E[eps | x_t] by integrating over x_0 on a grid with Bayes' rule, no component formulas:
    p(x_0 | x_t) ∝ p(x_0) N(x_t; sqrt(abar) x_0, (1 - abar) I);
    E[eps | x_t] = (x_t - sqrt(abar) E[x_0 | x_t]) / sqrt(1 - abar)."""
    axis = np.arange(-box, box + step / 2, step)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)  # (G, 2)
    log_prior = np.logaddexp.reduce(
        [
            math.log(w) - ((grid - np.array(mu)) ** 2).sum(1) / (2 * s * s) - math.log(2 * math.pi * s * s)
            for mu, s, w in zip(mixture.means, mixture.stds, mixture.weights, strict=True)
        ],
        axis=0,
    )
    out = []
    for x in x_t:
        log_post = log_prior - ((x - math.sqrt(abar) * grid) ** 2).sum(1) / (2 * (1 - abar))
        w = np.exp(log_post - log_post.max())
        x0_mean = (w[:, None] * grid).sum(0) / w.sum()
        out.append((x - math.sqrt(abar) * x0_mean) / math.sqrt(1 - abar))
    return np.array(out)


@pytest.mark.parametrize(
    "mixture, box, step",
    [
        (make_dataset(DataConfig("ring")), 3.0, 0.01),
        (GaussianMixture(((-1.0, 0.0), (1.5, 1.0)), (0.3, 0.6), (0.3, 0.7)), 5.0, 0.02),
    ],
    ids=["ring", "unequal-two-component"],
)
@pytest.mark.parametrize("t", [20, 150, 400, 900])
def test_optimal_eps_of_a_mixture_matches_numerical_bayes(mixture, box, step, t, schedule, gen):
    g = gen(t)
    abar = schedule.float64["alphas_cumprod"][t]
    x0 = mixture.sample(6, g).double()
    x_t = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * torch.randn(6, 2, generator=g, dtype=torch.float64)
    x_t = torch.cat([x_t, torch.tensor([[0.0, 0.0], [0.3, -2.5]], dtype=torch.float64)])  # between modes too
    got = mixture.optimal_eps(x_t, torch.full((len(x_t),), t), schedule).numpy()
    # The grid resolves the narrowest posterior (sd >= 0.04 at t=20) with >= 4 points per sd, where a
    # Riemann sum of a Gaussian is exact to far below 1e-6.
    expected = _brute_force_eps(mixture, x_t.numpy(), abar, box, step)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_irreducible_loss_of_the_reference_gaussian(schedule):
    loss = REFERENCE_GAUSSIAN.irreducible_loss(schedule)
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    np.testing.assert_allclose(loss, abar * 0.25 / (abar * 0.25 + 1 - abar), rtol=1e-9)
    assert loss.shape == (1000,)
    assert abs(loss.mean() - 0.173) < 5e-4  # README: "about 0.173" for the reference


@pytest.mark.parametrize("t", [5, 100, 300, 999])
def test_irreducible_loss_is_the_mse_of_eps_star(schedule, gen, t):
    """Monte Carlo: E[(eps - eps*)^2] per dimension. The residual is N(0, L) per dimension, so the
    mean of 2n squares has standard error L * sqrt(2 / (2n))."""
    g, n = gen(t), 20_000
    abar = schedule.float64["alphas_cumprod"][t]
    x0 = REFERENCE_GAUSSIAN.sample(n, g).double()
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x_t = math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps
    mse = float(((eps - REFERENCE_GAUSSIAN.optimal_eps(x_t, torch.full((n,), t), schedule)) ** 2).mean())
    L = REFERENCE_GAUSSIAN.irreducible_loss(schedule)[t]
    assert abs(mse - L) < Z * L / math.sqrt(n)


def test_irreducible_loss_of_a_mixture_agrees_with_the_gaussian_closed_form(gen):
    """Two identical components are the reference Gaussian: the Monte Carlo path (n draws per t)
    must agree with the closed form within its standard error L / sqrt(n)."""
    s = make_schedule("linear", 50, 1e-4, 0.02)
    twin = GaussianMixture(((2.0, 2.0), (2.0, 2.0)), (0.5, 0.5), (0.4, 0.6))
    n = 4096
    mc = twin.irreducible_loss(s, n=n, generator=gen(0))
    exact = REFERENCE_GAUSSIAN.irreducible_loss(s)
    assert mc.shape == exact.shape == (50,)
    assert np.all(np.abs(mc - exact) < Z * exact / math.sqrt(n))


def test_irreducible_loss_of_the_ring_is_a_fraction_of_the_unit_noise():
    loss = make_dataset(DataConfig("ring")).irreducible_loss(make_schedule("linear", 100, 1e-4, 0.02), n=1024)
    assert np.all((loss > 0) & (loss < 1))


# ---------------------------------------------------------------------------------------------
# The user's CSV


def test_csv_reads_and_standardizes():
    text = "x,y\n1,2\n3,4\n5,0\n-1,-2\n"
    raw = read_csv(text, standardize=False)
    assert raw.dtype == np.float32 and raw.shape == (4, 2)
    np.testing.assert_array_equal(raw, [[1, 2], [3, 4], [5, 0], [-1, -2]])
    std = read_csv(text.encode())
    centred = raw - raw.mean(0)
    np.testing.assert_allclose(std, centred / np.sqrt((centred**2).mean()), rtol=1e-6)
    np.testing.assert_allclose(std.mean(0), 0.0, atol=1e-6)
    assert np.sqrt((std.astype(np.float64) ** 2).mean()) == pytest.approx(1.0, rel=1e-6)


def test_csv_accepts_the_usual_variations():
    text = "\ufeffid, X , Y ,label\r\n0,1.5,2,a\r\n\r\n1,-3e2,4,b\r\n"  # BOM, spaces, case, CRLF, blank line
    np.testing.assert_array_equal(read_csv(text.encode("utf-8"), standardize=False), [[1.5, 2], [-300, 4]])


def test_load_points_gives_a_points_data_config():
    config = load_points("x,y\n0,0\n1,1\n2,0\n")
    assert config.name == "points" and config.is_fixed and len(config.points) == 3


@pytest.mark.parametrize(
    "data, expected",
    [
        (b"", "empty"),
        (b"a,b\n1,2\n3,4\n", "columns x and y"),
        (b"x,z\n1,2\n3,4\n", "columns x and y"),
        (b"x,y\n1,2\n3,four\n", "line 3"),
        (b"x,y\n1,2\n3\n", "line 3"),
        (b"x,y\n1,2\nnan,4\n", "NaN or inf"),
        (b"x,y\n1,2\n3,inf\n", "NaN or inf"),
        (b"x,y\n1,2\n3,1e999\n", "NaN or inf"),
        (b"x,y\n1,2\n", "at least 2"),
        (b"x,y\n", "at least 2"),
        (b"x,y\n1,1\n1,1\n", "identical"),
        (b"x,y\n1e300,1\n1,1\n", "1e15"),
        ("x,y\n1,2\n3,4\n".encode("utf-16"), "UTF-8"),
        (b"x,y\n1,2\n\xe9,4\n", "UTF-8"),  # latin-1 byte
        (b"x,y\n1,2\n\x003,4\n", "binary"),
        (bytes(range(256)) * 4, "UTF-8"),  # random binary
    ],
    ids=[
        "empty",
        "wrong-columns",
        "missing-y",
        "text-cell",
        "short-row",
        "nan",
        "inf",
        "overflow",
        "one-point",
        "no-points",
        "identical",
        "huge",
        "utf16",
        "latin1",
        "nul-bytes",
        "binary",
    ],
)
def test_csv_errors_say_what_is_wrong(data, expected):
    with pytest.raises(PointsError, match=expected):
        read_csv(data)


def test_points_error_is_a_value_error():
    assert issubclass(PointsError, ValueError)


def test_nan_line_number_counts_blank_lines():
    with pytest.raises(PointsError, match="line 5 "):
        read_csv("x,y\n1,2\n\n3,4\nnan,1\n")


@settings(max_examples=40, deadline=None, database=None)
@given(arrays(np.float32, st.tuples(st.integers(2, 30), st.just(2)), elements=st.floats(-1e6, 1e6, width=32)))
def test_csv_round_trip_of_any_finite_points(points):
    text = "x,y\n" + "".join(f"{x!r},{y!r}\n" for x, y in points.tolist())
    np.testing.assert_array_equal(read_csv(text, standardize=False), points)
