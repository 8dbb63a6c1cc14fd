"""Flow matching: the path and its target, the ODE solvers, the ideal velocity, resumable training,
and the objective's settings (samplers narrowed to it, refused otherwise in words)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cli import command as cli
from diffusion.budget import budget_rows
from diffusion.config import (
    DataConfig,
    ExperimentConfig,
    SamplerConfig,
    ScheduleConfig,
    model_calls,
    reference,
)
from diffusion.datasets import GaussianMixture, make_dataset
from diffusion.denoiser import Denoiser, features_at
from diffusion.flow import FlowPath, ode_times, ot_pairing, path_sample, velocity_target
from diffusion.ideal import empirical_posterior_mean, ideal_denoiser
from diffusion.monitoring import loss_floor_by_bin
from diffusion.objectives import path_of
from diffusion.samplers import sample
from diffusion.schedules import NoiseSchedule
from diffusion.training import Trainer
from ui.controls import read_link

FLOW = ScheduleConfig(objective="flow", num_timesteps=100)
FLOW_1000 = FlowPath.from_config(ScheduleConfig(objective="flow", num_timesteps=1000))


def flow_config(**train) -> ExperimentConfig:
    return reference().replace(schedule=FLOW, sampler={"kind": "heun", "sample_steps": 10},
                               train={"epochs": 60, **train})


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the path and its target ------------------------------------------------------------------


def test_the_path_runs_straight_from_the_data_to_the_noise_at_the_target_velocity():
    x0, noise = torch.randn(50, 2, generator=gen(0)), torch.randn(50, 2, generator=gen(1))
    t = torch.rand(50, generator=gen(2))
    x_t = path_sample(x0, t, noise)
    assert torch.allclose(x_t, (1 - t)[:, None] * x0 + t[:, None] * noise, atol=0)
    assert torch.equal(path_sample(x0, torch.zeros(50), noise), x0)
    assert torch.equal(path_sample(x0, torch.ones(50), noise), noise)
    h = 1e-3  # d x_t / dt by a central difference, in float64: the same at every t
    x64, n64, t64 = x0.double(), noise.double(), t.double().clamp(h, 1 - h)
    derivative = (path_sample(x64, t64 + h, n64) - path_sample(x64, t64 - h, n64)) / (2 * h)
    assert torch.allclose(derivative, velocity_target(x64, n64), atol=1e-9)


def test_a_training_step_regresses_the_velocity_at_a_uniform_t_drawn_after_the_batch():
    """The first loss equals the MSE of the initial network on x_t = (1 - t) x0 + t eps against
    eps - x0, with x0, then t ~ U[0, 1), then eps drawn in that order from the training seed."""
    config = flow_config()
    trainer = Trainer(config)
    model = Denoiser(config.denoiser, 100, gen(config.train.seed), objective="flow")  # same initial weights
    g = gen(config.train.seed)
    Denoiser(config.denoiser, 100, g, objective="flow")  # the weights' draws come first
    x0 = make_dataset(config.data).sample(config.train.batch_size, g)
    t = torch.rand(config.train.batch_size, generator=g)
    noise = torch.randn(x0.shape, generator=g)
    expected = torch.nn.functional.mse_loss(model(path_sample(x0, t, noise), t), noise - x0).item()
    record = next(trainer.run(1))
    assert record.loss == pytest.approx(expected, rel=1e-6)
    assert torch.equal(record.t, (t * 100).long())  # its level: t in [k / T, (k + 1) / T) is level k


def test_float_times_give_the_table_rows_at_the_flow_levels():
    config = reference().replace(denoiser={"time_embedding": "sinusoidal"}).denoiser
    model = Denoiser(config, 50, gen(0), objective="flow")
    levels = torch.arange(50)
    times = (levels + 1).double() / 50
    assert torch.allclose(model.time_table, features_at(config, times), atol=0)
    x = torch.randn(50, 2, generator=gen(1))
    assert torch.allclose(model(x, levels), model(x, times.float()), atol=1e-6)
    fixed = model.at_fixed_times()
    assert torch.allclose(fixed(x[:5], 9), fixed(x[:5], 0.2), atol=1e-6)  # level 9 is t = 10 / 50


def test_the_optimal_transport_coupling_is_a_permutation_of_least_total_squared_distance():
    x0, noise = torch.randn(7, 2, generator=gen(3)), torch.randn(7, 2, generator=gen(4))
    paired = ot_pairing(x0, noise)
    assert sorted(map(tuple, paired.tolist())) == sorted(map(tuple, noise.tolist()))  # the same draws
    cost = float((x0 - paired).square().sum())
    import itertools

    best = min(float((x0 - noise[list(p)]).square().sum()) for p in itertools.permutations(range(7)))
    assert cost == pytest.approx(best, rel=1e-12)  # all 5,040 orders tried
    assert cost <= float((x0 - noise).square().sum())


@pytest.mark.parametrize("coupling", ["independent", "ot"])
def test_a_resumed_flow_run_equals_one_trained_in_one_go(coupling):
    config = flow_config(coupling=coupling, ema_decay=0.9, lr_schedule="cosine")
    one_go = Trainer(config).train()
    first = Trainer(config)
    for _ in first.run(23):
        pass
    resumed = Trainer.resume(config, first.state(), losses=first.losses)
    resumed.train()
    assert resumed.losses == one_go.losses
    for a, b in zip(resumed.model.state_dict().values(), one_go.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(resumed.ema_model.state_dict().values(), one_go.ema_model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# --- the solvers --------------------------------------------------------------------------------


MU = torch.tensor([2.0, -1.0])


def point_mass_velocity(x: torch.Tensor, t: float) -> torch.Tensor:
    """v*(x, t) = (x - mu) / t for data that is the single point mu: solutions x(t) = mu + t (x1 - mu)."""
    return (x - MU) / t


@pytest.mark.parametrize("kind", ["euler", "heun"])
@pytest.mark.parametrize("steps", [1, 2, 7, 50])
def test_euler_and_heun_are_exact_on_straight_paths_and_count_their_calls(kind, steps):
    calls = []

    def counted(x, t):
        calls.append(t)
        return point_mass_velocity(x, t)

    config = SamplerConfig(kind=kind, sample_steps=steps, num_samples=64, num_frames=200)
    trajectory = sample(counted, FLOW_1000, config, gen(0))
    x1 = torch.randn(64, 2, generator=gen(0))  # the sampler's first draw
    assert np.allclose(trajectory.samples, MU.expand(64, 2).numpy(), atol=1e-5)
    assert len(calls) == model_calls(kind, steps) == (2 * steps - 1 if kind == "heun" else steps)
    assert len(trajectory.frames) == steps + 1  # every state kept (frames >= states)
    expected_times = ode_times(steps)
    assert np.allclose(trajectory.frame_times, expected_times * 1000)
    for frame, t in zip(trajectory.frames, expected_times, strict=True):  # on the straight line at every step
        assert np.allclose(frame, (MU + t * (x1 - MU)).numpy(), atol=1e-5)


def test_heun_beats_euler_on_a_curved_field_by_its_order():
    """dx/dt = -x on [1, 0] from x1: x(0) = e x1. Euler's error falls as 1/N, Heun's as 1/N^2."""
    errors = {}
    for kind in ("euler", "heun"):
        for steps in (10, 20):
            config = SamplerConfig(kind=kind, sample_steps=steps, num_samples=8, num_frames=2)
            samples = sample(lambda x, t: x, FLOW_1000, config, gen(0)).samples  # dx/dt = x, solved backwards
            x1 = torch.randn(8, 2, generator=gen(0)).numpy()
            errors[kind, steps] = float(np.abs(samples - x1 * math.exp(-1)).max())
    assert 1.8 < errors["euler", 10] / errors["euler", 20] < 2.2
    assert 3.5 < errors["heun", 10] / errors["heun", 20] < 4.5


# --- the ideal velocity -------------------------------------------------------------------------


def test_the_ideal_velocity_of_one_gaussian_is_the_closed_form():
    """x0 ~ N(mu, s0^2 I): E[x0 | x_t] = mu + a s0^2 (x - a mu) / (a^2 s0^2 + s^2), eps* = (x - a E[x0|x]) / s."""
    schedule = path_of(FLOW)
    ideal = ideal_denoiser(DataConfig("gaussian"), schedule)
    x = torch.randn(20, 2, generator=gen(5), dtype=torch.float64) + 1
    mu, s0 = torch.tensor([2.0, 2.0], dtype=torch.float64), 0.5
    for t in (0.05, 0.5, 0.97):
        a, s = 1 - t, t
        mean = mu + a * s0**2 * (x - a * mu) / (a**2 * s0**2 + s**2)
        v = (x - a * mean) / s - mean
        assert torch.allclose(ideal.predict(x, t), v, atol=1e-12)
    level = 49  # t = 0.5
    assert torch.allclose(ideal.predict(x, level), ideal.predict(x, 0.5), atol=1e-12)


def test_the_ideal_velocity_of_the_ring_agrees_with_monte_carlo():
    """v*(x) = E[eps - x0 | x_t = x] by self-normalised importance sampling: x0_i from the data,
    weights N(x; a x0_i, s^2 I) (``empirical_posterior_mean`` over 400,000 draws). Tolerance: four
    standard errors of that estimate, from the effective sample size of its weights."""
    schedule = path_of(FLOW)
    ring = make_dataset(DataConfig("ring"))
    ideal = ideal_denoiser(DataConfig("ring"), schedule)
    draws = ring.sample(400_000, gen(6)).double()
    x = torch.tensor([[1.5, 0.2], [0.0, -2.1], [0.3, 0.4]], dtype=torch.float64)
    for t in (0.3, 0.6, 0.9):
        a, s = 1 - t, t
        mean = empirical_posterior_mean(x, draws, a, s, chunk=2**22)
        v_mc = (x - a * mean) / s - mean  # eps - x0 with eps = (x - a x0) / s, averaged by the weights
        # standard error: v is affine in x0 (v = x / s - x0 / s), so its spread is that of x0 / s
        logw = -((x[:, None, :] - a * draws[None]) ** 2).sum(-1) / (2 * s**2)
        w = torch.softmax(logw, dim=1)
        ess = 1 / (w**2).sum(1)
        spread = torch.sqrt((w[:, :, None] * (draws[None] - mean[:, None]) ** 2).sum(1)) / s  # (3, 2)
        error = (ideal.predict(x, t) - v_mc).abs()
        assert (error <= 4 * spread / ess.sqrt()[:, None] + 1e-9).all(), (t, error, spread / ess.sqrt()[:, None])


def test_the_flow_loss_floor_of_one_gaussian_is_exact_and_matches_its_definition():
    """floor(t) = E||v - v*||^2 / 2 = s0^2 / (a^2 s0^2 + s^2), checked by Monte Carlo at three t."""
    schedule = path_of(FLOW)
    gaussian: GaussianMixture = make_dataset(DataConfig("gaussian"))
    floor = gaussian.irreducible_loss(schedule)
    tau = np.arange(1, 101) / 100
    assert np.allclose(floor, 0.25 / ((1 - tau) ** 2 * 0.25 + tau**2), rtol=1e-12)
    ideal = ideal_denoiser(DataConfig("gaussian"), schedule)
    n = 200_000
    x0, eps = gaussian.sample(n, gen(7)).double(), torch.randn(n, 2, generator=gen(8), dtype=torch.float64)
    for k in (9, 49, 89):
        t = (k + 1) / 100
        x_t = (1 - t) * x0 + t * eps
        per_sample = ((eps - x0 - ideal.predict(x_t, k)) ** 2).mean(1)
        se = float(per_sample.std()) / math.sqrt(n)
        assert abs(float(per_sample.mean()) - floor[k]) < 4 * se
    binned = loss_floor_by_bin(gaussian, schedule, 20)
    assert binned.kind == "exact" and np.allclose(binned.values, floor.reshape(20, 5).mean(1))
    assert loss_floor_by_bin(gaussian, schedule, 20, coupling="ot").values is None


def test_the_ideal_velocity_drives_heun_to_the_data_and_the_budget_counts_its_calls():
    schedule = path_of(FLOW)
    dataset = make_dataset(DataConfig("gaussian"))
    ideal = ideal_denoiser(dataset, schedule)
    rows = budget_rows(ideal, schedule, dataset, num_samples=500, steps=[2, 20, 100])
    assert [(r.sampler, r.steps, r.model_calls) for r in rows] == [
        ("euler", 2, 2), ("euler", 20, 20), ("euler", 100, 100), ("heun", 2, 3), ("heun", 20, 39), ("heun", 100, 199)]
    heun_20 = next(r for r in rows if (r.sampler, r.steps) == ("heun", 20))
    # 500 perfect samples score about 1 x floor; the ratio's sd at this size is about 0.4 (see monitoring)
    assert heun_20.ratio < 2.5
    with pytest.raises(ValueError, match="do not fit the ddpm objective"):
        budget_rows(ideal, NoiseSchedule.from_config(ScheduleConfig(num_timesteps=100)), dataset,
                    families=(("euler", None),))


# --- the settings -------------------------------------------------------------------------------


def test_a_sampler_of_the_other_objective_is_refused_by_name():
    with pytest.raises(ValueError, match=r"sampler.kind must be one of euler, heun \(the samplers of the flow objective\); got 'ddpm'"):
        reference().replace(schedule={"objective": "flow"})
    with pytest.raises(ValueError, match=r"sampler.kind must be one of ddpm, ddim, dpm_solver .*got 'heun'"):
        reference().replace(sampler={"kind": "heun"})
    with pytest.raises(ValueError, match=r"sampler.sample_steps must be .* from 1 to 1000 \(at most 1000 for an ODE solver\)"):
        reference().replace(schedule={"objective": "flow"}, sampler={"kind": "euler", "sample_steps": 1001})


def test_a_link_with_a_sampler_of_the_other_objective_says_so_and_uses_the_first_of_its_own():
    _, values, problems = read_link({"objective": ["flow"], "sampler": ["ddim"]})
    assert values["sampler"] == "euler"
    assert problems == ["sampler='ddim' (not one of the samplers of the flow objective: euler, heun; euler is used)"]


def test_the_command_trains_flow_matching_and_refuses_a_mismatched_sampler(capsys):
    """``ui.command.main``, in this process (the entry point itself: test_robustness_settings)."""
    code = cli.main(["--objective", "flow", "--sampler", "heun", "--sample-steps", "5", "--epochs", "50",
                     "--timesteps", "100", "--samples", "100", "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    assert report["config"]["schedule"]["objective"] == "flow" and report["config"]["sampler"]["kind"] == "heun"
    assert len(report["loss_by_t"]) == 20 and all(row["floor"] is not None for row in report["loss_by_t"])
    code = cli.main(["--sampler", "euler"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        "error: --sampler: sampler.kind must be one of ddpm, ddim, dpm_solver (the samplers of the ddpm objective); got 'euler'"]


def test_the_drift_of_an_optimal_transport_run_is_measured_against_the_path_it_was_trained_on():
    """The perfect sampler of the OT path: x_t = (1 - t) x0 + t eps with eps paired batch by batch.
    Its frames score about 1 x floor against the OT reference, but far above it against q(x_t) of
    independent pairs mid-way (the two paths differ), and exactly alike at t = 1 and t = 0."""
    from diffusion.flow import paired_in_batches
    from diffusion.ideal import drift_curve
    from diffusion.trajectory import Trajectory

    schedule = path_of(FLOW)
    data = make_dataset(DataConfig("ring"))
    x0 = data.sample(512, gen(30)).double()
    eps = paired_in_batches(x0, torch.randn(512, 2, generator=gen(31), dtype=torch.float64), 128)
    times = np.linspace(1.0, 0.0, 6)
    frames = np.stack([((1 - t) * x0 + t * eps).numpy() for t in times])
    path = Trajectory(frames=frames, frame_times=times * 100, predicted_x0=frames)
    matched = drift_curve(path, data, schedule, seed=1, ot_batch=128)
    independent = drift_curve(path, data, schedule, seed=1)
    assert matched.ratio.max() < 3, matched.ratio  # two samples of one distribution: a few x floor at most
    assert independent.ratio[2:4].min() > 3 * matched.ratio[2:4].max(), (independent.ratio, matched.ratio)


def test_a_flow_model_file_loads_back_as_flow_matching_with_the_same_velocity():
    from diffusion.checkpoints import from_bytes, to_bytes

    config = flow_config(coupling="ot")
    trainer = Trainer(config).train()
    model, loaded = from_bytes(to_bytes(trainer.sampling_model(), config))
    assert loaded == config and model.objective == "flow"
    x = torch.randn(16, 2, generator=gen(40))
    for t in (0.05, 0.5, 1.0):
        assert torch.equal(model.at_fixed_times()(x, t), trainer.sampling_model().at_fixed_times()(x, t))
