"""The density a model defines (``diffusion.likelihood``): the probability-flow ODE with the exact
divergence, against closed forms.

With the ideal field of one Gaussian N(mu, s0^2 I) the ODE's flow map is affine, so the density the
solve should give is known exactly (``gaussian_model_log_density``); for flow matching, whose prior
at t = 1 is exactly N(0, I), that is the data's own density, mixtures included. Heun's error falls
as h^2: the error of the solve with 2N steps is about |p_2N - p_N| / 3, and the tolerances below are
that estimate (with a factor 2 of slack; over the points, its mean and its largest, since at a
point where the h^2 term happens to vanish the estimate says nothing), not a number picked to pass."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math

import numpy as np
import pytest
import torch

from cli import command as cli
from diffusion import likelihood as L
from diffusion.config import DataConfig, SamplerConfig, ScheduleConfig, improved
from diffusion.datasets import make_dataset
from diffusion.ideal import ideal_denoiser
from diffusion.objectives import path_of
from diffusion.samplers import sample
from diffusion.schedules import ddim_step, dpm_solver_step, log_snr_spaced_timesteps
from diffusion.training import Trainer

GAUSSIAN = make_dataset(DataConfig(name="gaussian"))  # N((2, 2), 0.5^2 I), the reference data
RING = make_dataset(DataConfig(name="ring"))
PATHS = {"ddpm": path_of(ScheduleConfig()), "flow": path_of(ScheduleConfig(objective="flow"))}


def _points(dataset, n=200, seed=1) -> np.ndarray:
    return dataset.sample(n, torch.Generator().manual_seed(seed)).double().numpy()


@pytest.mark.parametrize("objective", ["ddpm", "flow"])
def test_the_ideal_gaussian_fields_density_is_the_closed_form_within_heuns_error(objective):
    path, x = PATHS[objective], _points(GAUSSIAN)
    model = L.ideal_model(GAUSSIAN, path)
    exact = L.gaussian_model_log_density(np.array(GAUSSIAN.means[0]), GAUSSIAN.stds[0], path, 32, x)
    coarse, fine = L.log_likelihood(model, path, x, 32), L.log_likelihood(model, path, x, 64)
    estimate = np.abs(fine - coarse) / 3  # the error of the fine solve, by Heun's order
    assert np.abs(fine - exact).mean() <= 2 * estimate.mean() and np.abs(fine - exact).max() <= 2 * estimate.max()
    extrapolated, error = L.extrapolated_log_likelihood(model, path, x, 32)
    np.testing.assert_allclose(error, estimate, rtol=1e-12)
    assert np.abs(extrapolated - exact).mean() < np.abs(fine - exact).mean() / 3  # Richardson cancels h^2
    # second order: doubling the steps divides the error by about 4
    finer = L.log_likelihood(model, path, x, 128)
    assert 3.0 < np.abs(fine - exact).mean() / np.abs(finer - exact).mean() < 5.0


def test_flow_matchings_ideal_density_is_the_datas_own_for_a_gaussian_and_a_mixture():
    path = PATHS["flow"]
    for data in (GAUSSIAN, RING):
        x = _points(data)
        value, error = L.extrapolated_log_likelihood(L.ideal_model(data, path), path, x, 32)
        truth = L.true_log_density(data, x)
        assert np.abs(value - truth).mean() <= 2 * error.mean() and np.abs(value - truth).max() <= 2 * error.max()


def test_ddpms_ideal_density_differs_from_the_datas_only_by_the_prior_at_t():
    """At level T - 1, a_T = sqrt(abar_T) = 0.0064: the prior N(0, I) against the true N(a_T mu, v)."""
    path, x = PATHS["ddpm"], _points(GAUSSIAN)
    exact = L.gaussian_model_log_density(np.array(GAUSSIAN.means[0]), GAUSSIAN.stds[0], path, 8, x)
    a, s, _ = path.ode_point(float(path.ode_nodes(8)[-1]))
    v, mu, s0 = a * a * 0.25 + s * s, np.array([2.0, 2.0]), 0.5
    end = a * mu + math.sqrt(v) / s0 * (x - mu)
    true_end = -((end - a * mu) ** 2).sum(1) / (2 * v) - math.log(2 * math.pi * v)  # N(a mu, v I) there
    np.testing.assert_allclose(exact - L.true_log_density(GAUSSIAN, x), (-(end**2).sum(1) / 2 - math.log(2 * math.pi))
                               - true_end, atol=1e-9)


def test_the_entropy_is_exact_for_a_gaussian_and_a_monte_carlo_estimate_for_a_mixture():
    h = L.data_entropy(GAUSSIAN)
    assert h.error == 0 and h.value == pytest.approx(math.log(2 * math.pi * math.e * 0.25), abs=1e-12)
    monte_carlo = L._mean(-L.true_log_density(GAUSSIAN, _points(GAUSSIAN, 20_000, 3)))
    assert abs(monte_carlo.value - h.value) < 4 * monte_carlo.error
    # eight components 1.5 apart at s = 0.15 hardly overlap: H = log 8 + log(2 pi e s^2)
    ring = L.data_entropy(RING)
    assert 0 < ring.error < 0.02
    assert abs(ring.value - (math.log(8) + math.log(2 * math.pi * math.e * 0.15**2))) < 4 * ring.error
    assert L.data_entropy(make_dataset(DataConfig(name="moons"))) is None


def test_the_ideal_flow_model_has_no_divergence_from_the_data_within_its_standard_error():
    path = PATHS["flow"]
    report = L.nll_report(L.ideal_model(RING, path), path, RING, num_points=400, steps=32)
    assert abs(report.kl.value) < 4 * report.kl.error + 2 * report.solver_error
    assert report.nll.value == pytest.approx(report.entropy.value, abs=4 * (report.nll.error + report.entropy.error))
    keys = report.to_dict()
    assert {"nll", "nll_se", "entropy", "entropy_se", "kl_estimate", "kl_estimate_se", "ode_error"} <= set(keys)


def test_a_longer_trained_model_comes_closer_to_the_datas_entropy():
    """With x as the network's only view of the point: the preset's Fourier features of x make the
    field rough in x, and at 16 steps the solve's own error (about 0.8 nats at 1000 steps of
    training) would hide the difference (README, "Good samples on every dataset")."""
    path, reports = PATHS["ddpm"], []
    for epochs in (40, 1000):
        trainer = Trainer(improved().replace(denoiser={"position_embedding": "none", "hidden": 128},
                                             train={"epochs": epochs, "lr": 3e-3}))  # the preset's first version
        for _ in trainer.run():
            pass
        model = L.network_model(trainer.sampling_model())
        reports.append(L.nll_report(model, path, GAUSSIAN, num_points=500, steps=16))
    short, long = (r.kl for r in reports)
    assert short.value - long.value > 4 * math.hypot(short.error, long.error) + 2 * reports[0].solver_error
    assert long.value > -4 * long.error - 2 * reports[1].solver_error  # KL >= 0, within its errors


def test_the_density_grid_has_the_true_density_where_known_and_none_where_not():
    path = PATHS["flow"]
    grid = L.density_grid(L.ideal_model(GAUSSIAN, path), path, GAUSSIAN, num=12, steps=16)
    assert grid.log_p_model.shape == grid.log_p_true.shape == (12, 12)
    assert np.abs(grid.log_p_model - grid.log_p_true).max() < 2 * grid.solver_error * 10 + 1e-4
    rows = grid.rows()
    assert len(rows) == 144 and rows[1][0] > rows[0][0] and rows[1][1] == rows[0][1]  # x fastest


@pytest.mark.parametrize("from_prior", [True, False])
def test_the_probe_follows_the_affine_flow_of_a_gaussian(from_prior):
    """Flow matching's ideal map for N(mu, s0^2 I) is x_1 = (x_0 - mu) / s0, straight lines."""
    path, mu, s0 = PATHS["flow"], np.array([2.0, 2.0]), 0.5
    start = np.array([0.5, -1.0]) if from_prior else np.array([2.3, 1.6])
    found = L.probe(L.ideal_model(GAUSSIAN, path), path, start, from_prior=from_prior, steps=40, paths=3)
    data_end, prior_end = (mu + s0 * start, start) if from_prior else (start, (start - mu) / s0)
    np.testing.assert_allclose(found.ode[0], data_end, atol=1e-3)
    np.testing.assert_allclose(found.ode[-1], prior_end, atol=1e-3)
    assert found.log_p[0] == pytest.approx(float(L.true_log_density(GAUSSIAN, found.ode[:1])[0]), abs=1e-3)
    assert found.stochastic.shape == (3, 41, 2)
    np.testing.assert_allclose(found.stochastic[:, -1 if from_prior else 0], np.tile(start, (3, 1)))
    assert found.time[0] == 0 and found.time[-1] == 1 and np.all(np.diff(found.time) > 0)


def test_the_probes_stochastic_paths_from_pure_noise_land_on_the_data():
    """At t = 1 of flow matching x_1 says nothing of x_0, so paths from one x_1 end as N(mu, s0^2 I)."""
    path = PATHS["flow"]
    found = L.probe(L.ideal_model(GAUSSIAN, path), path, [1.0, 1.0], from_prior=True, steps=50, paths=2000)
    ends = found.stochastic[:, 0]
    n = len(ends)
    assert np.all(np.abs(ends.mean(0) - 2.0) < 4.5 * 0.5 / math.sqrt(n))
    assert np.all(np.abs(ends.std(0) - 0.5) < 4.5 * 0.5 / math.sqrt(2 * n) + 0.02)  # + the 50 steps' bias


# --- DPM-Solver++ 2M, the second-order ODE sampler for DDPM ------------------------------------------


def test_dpm_solvers_first_step_is_ddims(schedule, gen):
    x, eps = (torch.randn(64, 2, generator=gen(s), dtype=torch.float64) for s in (0, 1))
    for t, t_prev in ((999, 800), (500, 3), (10, -1)):
        got, _ = dpm_solver_step(schedule, eps, t, t_prev, x, None)
        torch.testing.assert_close(got, ddim_step(schedule, eps, t, t_prev, x, 0.0, None), rtol=1e-12, atol=1e-12)


def test_dpm_solvers_steps_are_even_in_log_snr(schedule):
    levels = log_snr_spaced_timesteps(schedule, 10)
    assert levels[0] == 999 and levels[-1] == 0 and np.all(np.diff(levels) < 0)
    lam = schedule.log_snr[levels] / 2
    steps = np.diff(lam)
    assert steps.max() / steps.min() < 1.5  # even up to rounding to whole levels


def test_dpm_solver_converges_at_second_order_with_the_ideal_denoiser():
    path = PATHS["ddpm"]
    ideal = ideal_denoiser(DataConfig(name="gaussian"), path)

    def samples(kind, steps):
        config = SamplerConfig(kind=kind, sample_steps=steps, num_samples=500, num_frames=2)
        return sample(ideal, path, config, torch.Generator().manual_seed(0)).samples

    # the same ODE: 1000 steps of either solver agree
    reference = samples("dpm_solver", 1000)
    assert np.abs(samples("ddim", 1000) - reference).max() < 0.05
    errors = {n: np.abs(samples("dpm_solver", n) - reference).mean() for n in (20, 40)}
    ddim = np.abs(samples("ddim", 20) - reference).mean()
    assert errors[40] < errors[20] / 2.5  # about 4 for second order (whole levels blur it)
    assert errors[20] < ddim / 5


# --- the command ------------------------------------------------------------------------------------


def _command(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(argv) == 0
    return out.getvalue()


SMALL = ["--timesteps", "100", "--epochs", "100", "--samples", "100", "--frames", "2", "--device", "cpu",
         "--ode-steps", "16"]


def test_the_command_reports_the_likelihood_beside_the_entropy_and_writes_the_density_grid(tmp_path):
    report = json.loads(_command([*SMALL, "--likelihood", "--json", "--out", str(tmp_path)]))
    assert report["entropy"] == pytest.approx(math.log(2 * math.pi * math.e * 0.25)) and report["entropy_se"] == 0
    assert report["ode_steps"] == 16 and report["likelihood_points"] == 1000
    assert report["nll_se"] > 0 and report["kl_estimate_se"] > 0 and report["ode_error"] >= 0
    with open(tmp_path / "density.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["x", "y", "log_p_model", "log_p_true"] and len(rows) == 60 * 60
    x = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    np.testing.assert_allclose([float(r["log_p_true"]) for r in rows], L.true_log_density(GAUSSIAN, x), rtol=1e-9)
    assert np.all(np.isfinite([float(r["log_p_model"]) for r in rows]))


def test_the_command_leaves_the_true_density_empty_where_it_is_unknown(tmp_path):
    report = json.loads(_command([*SMALL, "--dataset", "moons", "--likelihood", "--json", "--out", str(tmp_path)]))
    assert report["entropy"] is None and report["kl_estimate"] is None and report["nll"] is not None
    with open(tmp_path / "density.csv", newline="") as f:
        assert {r["log_p_true"] for r in csv.DictReader(f)} == {""}
    text = _command([*SMALL, "--dataset", "moons", "--likelihood"])
    assert "entropy unknown" in text and "nll " in text


def test_dpm_solver_converges_on_the_cosine_schedule_too():
    """The cosine schedule's clipped last betas drop lambda to about -10 over its last levels; the
    steps stop at lambda = -5.5 there (but for the first, from level T - 1), so they are not wasted."""
    path = path_of(ScheduleConfig(kind="cosine"))
    levels = log_snr_spaced_timesteps(path, 20)
    assert levels[0] == 999 and levels[1] < 995
    ideal = ideal_denoiser(DataConfig(name="gaussian"), path)

    def samples(kind, steps):
        config = SamplerConfig(kind=kind, sample_steps=steps, num_samples=500, num_frames=2)
        return sample(ideal, path, config, torch.Generator().manual_seed(0)).samples

    reference = samples("ddim", 1000)
    errors = [np.abs(samples("dpm_solver", n) - reference).mean() for n in (10, 20, 40)]
    assert errors[0] > errors[1] > errors[2] and errors[2] < errors[1] / 2.5
