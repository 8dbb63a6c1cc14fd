"""Monitoring: the loss floor per noise level against Monte Carlo, the binned loss against a direct
recomputation, and live previews that are repeatable, honest about their floor and harmless."""

from __future__ import annotations

import csv
import io
import math
import pickle

import numpy as np
import pytest
import torch

from diffusion.config import DataConfig, PointSet, SamplerConfig, reference
from diffusion.datasets import REFERENCE_GAUSSIAN, GaussianMixture, make_dataset
from diffusion.denoiser import Denoiser
from diffusion.forward import q_sample
from diffusion.metrics import energy_distance
from diffusion.monitoring import (
    LOSS_BY_T_COLUMNS,
    PREVIEW_COLUMNS,
    LossByT,
    Previewer,
    bin_edges,
    first_tail_step,
    live_model,
    loss_by_t_rows,
    loss_floor_by_bin,
    preview_rows,
    preview_steps,
)
from diffusion.schedules import ddim_step, make_schedule, timesteps
from diffusion.training import Trainer

Z = 4.0  # standard errors allowed where a Monte Carlo value meets its expectation
SMALL = reference().replace(schedule={"num_timesteps": 100}, train={"epochs": 50}).training


def _within(estimate: float, expected: float, standard_error: float) -> bool:
    return abs(estimate - expected) <= Z * standard_error


def _floor_draws(dataset, schedule, t: torch.Tensor, generator) -> torch.Tensor:
    """||eps - eps*(x_t, t)||^2 / 2 at fresh (x_0, eps), one value per t, float64."""
    x0 = dataset.sample(len(t), generator).double()
    noise = torch.randn(len(t), 2, generator=generator, dtype=torch.float64)
    abar = torch.tensor(schedule.float64["alphas_cumprod"])[t][:, None]  # float64: only MC error is left
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    return (noise - dataset.optimal_eps(x_t, t, schedule)).square().mean(1)


# --- the floor -----------------------------------------------------------------------------------


def test_gaussian_floor_per_t_matches_monte_carlo(schedule, gen):
    """abar s^2 / (abar s^2 + 1 - abar) against the mean of ||eps - eps*||^2 / 2 over 20,000 draws,
    at single t's and per bin (t uniform in the bin); Z standard errors of each sample's own spread."""
    exact = REFERENCE_GAUSSIAN.irreducible_loss(schedule)
    g = gen(1)
    for t in (0, 10, 100, 300, 600, 999):
        draws = _floor_draws(REFERENCE_GAUSSIAN, schedule, torch.full((20_000,), t), g)
        assert _within(draws.mean().item(), exact[t], draws.std().item() / math.sqrt(len(draws))), t
    floor = loss_floor_by_bin(REFERENCE_GAUSSIAN, schedule, 20)
    assert floor.kind == "exact" and floor.description.startswith("exact")
    assert np.all(floor.standard_error == 0)
    for b, (a, e) in enumerate(zip(floor.t_start, floor.t_end, strict=True)):
        assert floor.values[b] == pytest.approx(exact[a:e].mean(), rel=1e-12)
        t = torch.randint(int(a), int(e), (20_000,), generator=g)
        draws = _floor_draws(REFERENCE_GAUSSIAN, schedule, t, g)
        assert _within(draws.mean().item(), floor.values[b], draws.std().item() / math.sqrt(len(draws))), b
    # the bins together: uniform t over 0..T-1, the README's 0.173 for the reference
    assert float(np.mean(floor.values)) == pytest.approx(0.173, abs=0.001)


def test_mixture_floor_matches_an_independent_monte_carlo(schedule, gen):
    """The ring's Rao-Blackwellised numerical floor against the plain estimator
    ||eps - eps*||^2 / 2 with t drawn uniformly in each bin (different draws, another seed)."""
    ring = make_dataset(DataConfig("ring"))
    floor = loss_floor_by_bin(ring, schedule, 10)
    assert floor.kind == "numerical" and "Monte Carlo" in floor.description
    relative = floor.standard_error / floor.values
    assert np.all(relative < 0.005)  # "well under 1%"
    g = gen(7)
    for b, (a, e) in enumerate(zip(floor.t_start, floor.t_end, strict=True)):
        t = torch.randint(int(a), int(e), (20_000,), generator=g)
        draws = _floor_draws(ring, schedule, t, g)
        se = math.hypot(draws.std().item() / math.sqrt(len(draws)), floor.standard_error[b])
        assert _within(draws.mean().item(), floor.values[b], se), (b, draws.mean().item(), floor.values[b])


def test_mixture_floor_of_one_repeated_component_is_the_gaussian_closed_form(schedule):
    """Two identical components: the posterior over components carries no information, the
    between-component term is 0 and each draw's estimate is abar s^2 / (abar s^2 + 1 - abar) itself;
    t cycles evenly through each bin, so the numerical value is the exact bin mean."""
    twins = GaussianMixture(((2.0, 2.0), (2.0, 2.0)), (0.5, 0.5), (0.5, 0.5))
    numerical = loss_floor_by_bin(twins, schedule, 20, draws_per_bin=1000)
    exact = loss_floor_by_bin(REFERENCE_GAUSSIAN, schedule, 20)
    assert numerical.kind == "numerical"
    np.testing.assert_allclose(numerical.values, exact.values, rtol=1e-10, atol=1e-15)


def test_floor_is_unknown_for_shapes_and_point_sets(schedule):
    points = DataConfig("points", PointSet.from_array(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0]])))
    for data in (DataConfig("moons"), points):
        floor = loss_floor_by_bin(data, schedule, 20)
        assert floor.values is None and floor.kind is None and floor.description.startswith("unknown")
        assert len(floor.t_start) == 20


# --- the binned loss -----------------------------------------------------------------------------


def _recorded_triples(trainer: Trainer):
    """Run ``trainer`` to the end and return (step, t, loss) per sample, from the records, plus the
    records. Each record's per-sample losses average to its training loss."""
    steps, ts, losses, records = [], [], [], []
    for record in trainer.run():
        t, loss = record.t, record.sample_losses
        assert t.shape == loss.shape == (trainer.config.train.batch_size,)
        assert t.dtype == torch.int64 and loss.dtype == torch.float32
        # float32 values summed in float64: only the trainer's float32 mean rounds
        assert loss.double().mean().item() == pytest.approx(record.loss, rel=1e-6)
        steps.append(np.full(len(t), record.step))
        ts.append(t.numpy())
        losses.append(loss.numpy())
        records.append(record)
    return np.concatenate(steps), np.concatenate(ts), np.concatenate(losses), records


def test_the_records_per_sample_losses_are_the_models_on_the_steps_draws():
    """Replay each step's draws from a copy of the trainer's generator and evaluate the weights
    before the step with autograd's ``forward``: the same t, and the same per-sample losses (to
    float32 rounding: ``forward`` and the hand-written pass run different kernels)."""
    trainer = Trainer(SMALL)
    run = trainer.run(max_steps=8)
    for _ in range(8):
        g = torch.Generator().manual_seed(0)
        g.set_state(trainer.generator.get_state())  # the draws the step is about to make
        x0 = trainer.dataset.sample(trainer.config.train.batch_size, g)
        t = torch.randint(0, trainer.schedule.num_timesteps, (len(x0),), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        with torch.no_grad():
            noise_pred = trainer.model(q_sample(trainer.schedule, x0, t, noise), t)
            expected = (noise_pred - noise).square().mean(dim=1)  # l_i = ||eps_theta_i - eps_i||^2 / 2
        record = next(run)
        assert torch.equal(record.t, t)
        torch.testing.assert_close(record.sample_losses, expected, rtol=1e-5, atol=1e-7)


def _direct(steps, ts, losses, t_start, t_end, keep):
    """Mean and count per bin over the triples selected by ``keep``, one bin at a time."""
    means, counts = [], []
    for a, e in zip(t_start, t_end, strict=True):
        chosen = losses[keep & (ts >= a) & (ts < e)].astype(np.float64)
        means.append(chosen.mean() if len(chosen) else np.nan)
        counts.append(len(chosen))
    return np.array(means), np.array(counts)


def test_binned_loss_equals_a_direct_recomputation_from_the_recorded_pairs():
    trainer = Trainer(SMALL)
    steps, ts, losses, records = _recorded_triples(trainer)
    T, total = SMALL.schedule.num_timesteps, SMALL.total_steps
    acc = LossByT.for_run(T, total, num_bins=7, window=12)  # 7 bins of 100: widths 14 and 15
    assert acc.tail_start == first_tail_step(total) == 41  # the last 20% of 50 steps: 41..50
    checked = 0
    for record in records:
        mine = steps == record.step
        acc.update(record.step, ts[mine], losses[mine])
        if record.step in (5, 12, 13, 30, 44, 50):  # before, at and after the window fills and wraps
            snap = acc.snapshot()
            seen = steps <= record.step
            mean, count = _direct(steps, ts, losses, snap.t_start, snap.t_end, seen & (steps > record.step - 12))
            np.testing.assert_array_equal(snap.recent_count, count)
            np.testing.assert_allclose(snap.recent_loss, mean, rtol=1e-12)
            mean, count = _direct(steps, ts, losses, snap.t_start, snap.t_end, seen & (steps >= 41))
            np.testing.assert_array_equal(snap.tail_count, count)
            np.testing.assert_allclose(snap.tail_loss, mean, rtol=1e-12)  # NaN where nothing yet
            checked += 1
    assert checked == 6
    assert np.isnan(acc.snapshot().tail_loss).sum() == 0 and acc.snapshot().tail_count.sum() == 10 * 128


def test_binned_loss_by_hand_and_its_edges():
    acc = LossByT(10, 3, window=2)  # bins [0, 3), [3, 7), [7, 10)
    np.testing.assert_array_equal(acc.t_start, [0, 3, 7])
    np.testing.assert_array_equal(acc.t_end, [3, 7, 10])
    acc.update(1, np.array([0, 2, 9]), np.array([1.0, 3.0, 5.0]))
    acc.update(2, np.array([3, 6]), np.array([2.0, 4.0]))
    acc.update(3, np.array([0]), np.array([7.0]))
    snap = acc.snapshot()
    np.testing.assert_array_equal(snap.recent_loss, [7.0, 3.0, np.nan])  # steps 2 and 3
    np.testing.assert_array_equal(snap.recent_count, [1, 2, 0])
    np.testing.assert_array_equal(snap.tail_loss, [11 / 3, 3.0, 5.0])  # tail_start 1: everything
    with pytest.raises(ValueError):
        snap.recent_loss[0] = 1.0  # read-only
    # skipped steps drop out of the window by step number, not by row
    acc.update(7, np.array([9]), np.array([1.0]))
    np.testing.assert_array_equal(acc.snapshot().recent_count, [0, 0, 1])


def test_binned_loss_resumes_exactly_from_its_state(gen):
    g = gen(3)
    batches = [(torch.randint(0, 1000, (64,), generator=g), torch.rand(64, generator=g)) for _ in range(40)]
    one_go = LossByT.for_run(1000, 40, window=15)
    for step, (t, loss) in enumerate(batches, start=1):
        one_go.update(step, t, loss)
    first = LossByT.for_run(1000, 40, window=15)
    for step, (t, loss) in enumerate(batches[:17], start=1):
        first.update(step, t, loss)
    resumed = LossByT.from_state_dict(pickle.loads(pickle.dumps(first.state_dict())))
    for step, (t, loss) in enumerate(batches[17:], start=18):
        resumed.update(step, t, loss)
    a, b = one_go.snapshot(), pickle.loads(pickle.dumps(resumed)).snapshot()
    for name in ("recent_loss", "recent_count", "tail_loss", "tail_count", "t_start", "t_end"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))  # bit for bit
    assert (a.step, a.tail_start, a.window) == (b.step, b.tail_start, b.window) == (40, 33, 15)


def test_binned_loss_rejects_bad_input():
    acc = LossByT(100, 20)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 99\]"):
        acc.update(1, np.array([0, 100]), np.ones(2))
    with pytest.raises(ValueError, match=r"t must lie in \[0, 99\]"):
        acc.update(1, np.array([-1, 5]), np.ones(2))
    with pytest.raises(ValueError, match="shape"):
        acc.update(1, np.array([1, 2]), np.ones(3))
    acc.update(1, np.array([1]), np.ones(1))
    with pytest.raises(ValueError, match="step must increase"):
        acc.update(1, np.array([1]), np.ones(1))
    assert acc.snapshot().recent_count.sum() == 1  # the rejected updates left nothing behind
    with pytest.raises(ValueError, match="num_bins must be a whole number from 1 to num_timesteps"):
        bin_edges(10, 11)
    with pytest.raises(ValueError, match="window"):
        LossByT(100, 20, window=0)


# --- previews ------------------------------------------------------------------------------------


def _model(seed: int, T: int = 1000) -> Denoiser:
    return Denoiser(reference().denoiser, T, torch.Generator().manual_seed(seed))


def test_every_preview_starts_from_the_same_x_T(schedule, exact_eps):
    previewer = Previewer(schedule, REFERENCE_GAUSSIAN, seed=5, num_points=200, sample_steps=20)
    x_T = previewer.x_T
    starts, outputs = [], []
    for model in (_model(0), _model(1), exact_eps, _model(0)):
        eps_fn = model.at_fixed_times() if isinstance(model, Denoiser) else model

        def recording(x, t, eps_fn=eps_fn):
            if t == schedule.num_timesteps - 1:  # the first DDIM step
                starts.append(x.clone())
            return eps_fn(x, t)

        outputs.append(previewer.preview(recording).points)
    assert len(starts) == 4
    for start in starts:
        assert torch.equal(start, x_T)
    assert torch.equal(previewer.x_T, x_T)
    assert not np.array_equal(outputs[0], outputs[1])  # the weights do show
    np.testing.assert_array_equal(outputs[0], outputs[3])  # and nothing else does


def test_previews_never_change_the_trained_weights():
    """Training with previews of the live weights every 7 steps ends bit-identical to training
    without: weights, weight average, optimizer state, losses, random stream and modes."""
    key = reference().replace(schedule={"num_timesteps": 100}, train={"epochs": 120, "ema_decay": 0.99}).training
    plain, watched = Trainer(key), Trainer(key)
    previewer = Previewer(watched.schedule, watched.dataset, num_points=100, sample_steps=10)
    previews = []
    for record in watched.run():
        if record.step % 7 == 0:
            previews.append(previewer.preview(live_model(watched), record.step))
            previews.append(previewer.preview(watched.model, record.step))
    plain.train()
    assert len(previews) == 2 * (120 // 7)
    assert watched.losses == plain.losses
    for a, b in zip(watched.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(watched.ema_model.parameters(), plain.ema_model.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(watched.optimizer.exp_avg_sqs, plain.optimizer.exp_avg_sqs, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(watched.generator.get_state(), plain.generator.get_state())
    assert watched.model.training == plain.model.training
    assert watched.ema_model.training == plain.ema_model.training
    assert live_model(watched) is watched.ema_model and all(p.step % 7 == 0 for p in previews)


def test_a_preview_leaves_the_mode_and_grad_state_alone(schedule):
    model = _model(0)
    for training in (True, False):
        model.train(training)
        Previewer(schedule, REFERENCE_GAUSSIAN, num_points=50, sample_steps=5).preview(model)
        assert model.training is training
    assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
    assert all(p.requires_grad for p in model.parameters())


def _ddim_affine_map(schedule, exact_eps, steps: int) -> tuple[float, float]:
    """For Gaussian data the exact eps* is affine in x_t, so DDIM with it is x_0 = a x_T + b (b on
    the diagonal): (a, b) in float64, from the images of 0 and e_1."""
    times = timesteps(schedule, SamplerConfig(kind="ddim", sample_steps=steps))
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    for i, t in enumerate(times):
        t_prev = int(times[i + 1]) if i + 1 < len(times) else -1
        x = ddim_step(schedule, exact_eps(x, int(t)), int(t), t_prev, x, 0.0, None)
    return float(x[1, 0] - x[0, 0]), float(x[0, 0])


def _mean_norm(delta: float, sigma: float) -> float:
    """E|Z| for Z ~ N(delta, sigma^2 I) in 2-D (the Rice mean), by quadrature of its density
    r / sigma^2 exp(-(r^2 + delta^2) / (2 sigma^2)) I_0(r delta / sigma^2) over r."""
    r = np.linspace(0.0, delta + 14 * sigma, 200_001)
    density = r / sigma**2 * np.exp(-(r**2 + delta**2) / (2 * sigma**2)) * np.i0(r * delta / sigma**2)
    return float(np.trapezoid(r * density, r))


def test_a_preview_of_the_exact_denoiser_scores_what_30_ddim_steps_predict(schedule, exact_eps):
    """DDIM with 30 steps of the exact eps* is not exact: it maps x_T ~ N(0, I) to N(b, a^2 I) with
    a = 0.4535 (not s = 0.5) and b = 1.9942 (not 2). The expected preview score is then
        E[E] = 2 E|X - Y| - sqrt(pi) a - sqrt(pi) s + sqrt(pi) a / n + sqrt(pi) s / m
    (X ~ N(b, a^2 I), Y ~ N(mu, s^2 I); the last two terms: the V-statistic's diagonals), about 1.33
    times the floor for n = m = 300. The mean over 30 independent previewers must sit within Z
    standard errors (from the 30 ratios' spread) of that, and 50 steps must come closer to 1."""
    n = m = 300
    s, mu = 0.5, 2.0
    a, b = _ddim_affine_map(schedule, exact_eps, 30)
    assert a == pytest.approx(0.4535, abs=1e-4) and b == pytest.approx(1.9942, abs=1e-4)
    root_pi = math.sqrt(math.pi)
    between = _mean_norm(math.sqrt(2) * abs(b - mu), math.sqrt(a**2 + s**2))
    expected = 2 * between - root_pi * a - root_pi * s + root_pi * a / n + root_pi * s / m
    floor = (1 / n + 1 / m) * root_pi * s
    expected_ratio = expected / floor
    assert 1.25 < expected_ratio < 1.40
    ratios = []
    for seed in range(30):
        previewer = Previewer(schedule, REFERENCE_GAUSSIAN, seed=seed, num_points=n, sample_steps=30)
        preview = previewer.preview(exact_eps)
        assert preview.floor == pytest.approx(floor, rel=1e-12)
        ratios.append(preview.ratio)
    ratios = np.array(ratios)
    assert _within(ratios.mean(), expected_ratio, ratios.std(ddof=1) / math.sqrt(len(ratios)))
    a50, b50 = _ddim_affine_map(schedule, exact_eps, 50)
    assert abs(a50 - s) < abs(a - s) / 1.5


def test_a_preview_is_a_function_of_the_seed_and_the_weights(schedule):
    model = _model(2)
    first = Previewer(schedule, REFERENCE_GAUSSIAN, seed=11).preview(model, step=3)
    again = Previewer(schedule, REFERENCE_GAUSSIAN, seed=11).preview(model, step=3)
    other = Previewer(schedule, REFERENCE_GAUSSIAN, seed=12).preview(model, step=3)
    np.testing.assert_array_equal(first.points, again.points)
    assert (first.energy_distance, first.floor, first.step) == (again.energy_distance, again.floor, 3)
    assert not np.array_equal(first.points, other.points)
    assert first.points.shape == (300, 2) and first.points.dtype == np.float32
    assert not first.points.flags.writeable


def test_the_preview_score_is_the_energy_distance_averaged_over_the_reference_sets(schedule, gen):
    """Recompute with ``metrics.energy_distance`` from the documented draw order: x_T, then the
    reference sets."""
    previewer = Previewer(schedule, REFERENCE_GAUSSIAN, seed=4, num_points=120, reference_size=90)
    g = gen(4)
    assert torch.equal(torch.randn(120, 2, generator=g), previewer.x_T)
    refs = [REFERENCE_GAUSSIAN.sample(90, g) for _ in range(3)]
    x = REFERENCE_GAUSSIAN.sample(120, gen(99)) * 1.1
    direct = float(np.mean([energy_distance(x, y) for y in refs]))
    assert previewer.score(x) == pytest.approx(direct, rel=1e-10)
    assert previewer.floor == pytest.approx((1 / 120 + 1 / 90) * 0.5 * math.sqrt(math.pi), rel=1e-12)
    assert math.isnan(previewer.score(torch.full((120, 2), float("nan"))))


def test_previews_of_a_point_set_score_true_draws_at_their_floor(schedule, gen):
    """For an uploaded point set the set itself is the data: E|X - X'| is the V-statistic over all
    its pairs (draws with replacement), and draws from the set score 1.0 times the floor on average
    (within Z standard errors over 40 previewers)."""
    cloud = np.concatenate([np.random.default_rng(0).normal(size=(150, 2)), [[4.0, 4.0]] * 50])
    data = DataConfig("points", PointSet.from_array(cloud))
    points = make_dataset(data).points.double()
    ratios = []
    for seed in range(40):
        previewer = Previewer(schedule, data, seed=seed, num_points=200)
        ratios.append(previewer.score(make_dataset(data).sample(200, gen(1000 + seed))) / previewer.floor)
    assert previewer.mean_pairwise_distance == pytest.approx(torch.cdist(points, points).mean().item(), rel=1e-12)
    ratios = np.array(ratios)
    assert _within(ratios.mean(), 1.0, ratios.std(ddof=1) / math.sqrt(len(ratios)))
    preview = previewer.preview(_model(0))  # and a model's preview runs
    assert preview.points.shape == (200, 2) and preview.ratio > 0


def test_fixed_preview_steps_are_evenly_spaced_and_end_at_the_last_step():
    assert preview_steps(1000) == list(range(50, 1001, 50))
    assert preview_steps(1001) == [*range(51, 1001, 51), 1001]  # 19 multiples of 51, then the end
    assert preview_steps(7) == [1, 2, 3, 4, 5, 6, 7] and preview_steps(1) == [1]
    assert preview_steps(10, count=3) == [4, 8, 10]
    for total in range(1, 2000):
        steps = preview_steps(total)
        assert steps[-1] == total and len(steps) <= 20 and steps == sorted(set(steps))
        every = steps[0]
        assert all(b - a == every for a, b in zip(steps[:-2], steps[1:-1], strict=True))  # evenly spaced
    with pytest.raises(ValueError, match="total_steps must be a whole number"):
        preview_steps(0)
    with pytest.raises(ValueError, match="count must be a whole number"):
        preview_steps(10, count=0)


def test_previewer_rejects_bad_settings(schedule):
    with pytest.raises(ValueError, match="sample_steps must be from 1 to 1000"):
        Previewer(schedule, REFERENCE_GAUSSIAN, sample_steps=0)
    with pytest.raises(ValueError, match="num_points"):
        Previewer(schedule, REFERENCE_GAUSSIAN, num_points=1)


# --- the command's files -------------------------------------------------------------------------


def _csv(rows, columns) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def test_csv_rows():
    schedule = make_schedule("linear", 100)
    acc = LossByT.for_run(100, 10, num_bins=4)
    for step in range(1, 11):
        acc.update(step, np.array([step, 60]), np.array([0.5, 0.25]))
    floor = loss_floor_by_bin(REFERENCE_GAUSSIAN, schedule, 4)
    text = _csv(loss_by_t_rows(acc.snapshot(), floor), LOSS_BY_T_COLUMNS)
    lines = text.splitlines()
    assert lines[0] == "t_start,t_end,loss,floor"
    assert lines[1] == f"0,25,0.5,{float(floor.values[0])!r}"  # steps 9, 10 (the last 20%): t = 9, 10
    assert lines[2] == f"25,50,,{float(floor.values[1])!r}"  # no sample: empty
    assert lines[3] == f"50,75,0.25,{float(floor.values[2])!r}"
    unknown = _csv(loss_by_t_rows(acc.snapshot(), loss_floor_by_bin(DataConfig("moons"), schedule, 4)), LOSS_BY_T_COLUMNS)
    assert unknown.splitlines()[1] == "0,25,0.5,"
    with pytest.raises(ValueError, match="binned differently"):
        loss_by_t_rows(acc.snapshot(), loss_floor_by_bin(REFERENCE_GAUSSIAN, schedule, 5))
    previewer = Previewer(schedule, REFERENCE_GAUSSIAN, num_points=20, sample_steps=3)
    previews = [previewer.preview(_model(0, 100), step) for step in (10, 20)]
    rows = preview_rows(previews)
    assert _csv(rows, PREVIEW_COLUMNS).splitlines()[0] == "step,energy_distance,floor"
    assert [r["step"] for r in rows] == [10, 20] and rows[1]["floor"] == previews[1].floor
