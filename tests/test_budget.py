"""The sampling budget: each row is exactly a direct sampler call scored as the results panel scores
a run; respaced DDPM against its formula and against DDIM at eta 1; the step lists; the command's
--budget in its three forms (budget.csv, --json, a table)."""

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
from diffusion.budget import (
    BUDGET_COLUMNS,
    BudgetRow,
    budget_plan,
    budget_rows,
    budget_steps,
    energy_scorer,
    iter_budget,
    row_config,
)
from diffusion.config import DataConfig, DenoiserConfig, SamplerConfig
from diffusion.datasets import REFERENCE_GAUSSIAN, make_dataset
from diffusion.denoiser import Denoiser
from diffusion.metrics import evaluate
from diffusion.samplers import sample, sample_model
from diffusion.schedules import NoiseSchedule, ddim_step, ddpm_step, make_schedule, timesteps

T = 100  # a short schedule keeps the full budget quick
DDPM_FAMILIES, DDPM_STEPS = NoiseSchedule.budget_families, NoiseSchedule.budget_steps  # DDPM, DDIM at eta 0 and 1


@pytest.fixture(scope="module")
def short():
    return make_schedule("linear", T, 1e-4, 0.2)


@pytest.fixture(scope="module")
def short_eps(short):
    """eps* of the reference Gaussian on the short schedule."""
    return lambda x, t: REFERENCE_GAUSSIAN.optimal_eps(x, torch.full((len(x),), t), short)


# ---------------------------------------------------------------------------------------------
# Step lists and the plan


@pytest.mark.parametrize("num_timesteps, expected", [
    (1000, (5, 10, 20, 50, 100, 200, 500, 1000)),
    (500, (5, 10, 20, 50, 100, 200, 500)),  # T = 500 once, not twice
    (300, (5, 10, 20, 50, 100, 200, 300)),
    (100, (5, 10, 20, 50, 100)),
    (7, (5, 7)),
    (3, (3,)),
    (1, (1,)),
])
def test_default_steps_stop_at_T_without_repeats(num_timesteps, expected):
    assert budget_steps(num_timesteps, None, DDPM_STEPS) == expected


def test_given_steps_are_sorted_deduplicated_and_capped_at_T():
    assert budget_steps(100, [50, 5, 50, 400, 1, 100], DDPM_STEPS) == (1, 5, 50, 100)
    assert budget_steps(4, [10, 20], DDPM_STEPS) == ()


@pytest.mark.parametrize("steps", [[0], [-5], [2.5], [True], ["10"]])
def test_bad_steps_are_refused_in_words(steps):
    with pytest.raises(ValueError, match="steps must be whole numbers of at least 1"):
        budget_steps(100, steps, DDPM_STEPS)


@pytest.mark.parametrize("families, match", [
    ((("ddpm", 0.0),), "DDPM takes no eta"),
    ((("dpm_solver", 0.0),), r"DPM-Solver\+\+ 2M takes no eta"),
    ((("ddim", None),), r"DDIM's eta must be in \[0, 1\]"),
    ((("ddim", 1.5),), r"DDIM's eta must be in \[0, 1\]"),
    ((("plms", None),), "sampler must be 'ddpm' or 'ddim' or 'dpm_solver'"),
    ((("ddpm", None), ("euler", None)), r"samplers must all be of one objective .*got \['ddpm', 'euler'\]"),
])
def test_bad_families_are_refused_in_words(families, match):
    with pytest.raises(ValueError, match=match):
        budget_plan(100, families=families)


def test_the_plan_goes_family_by_family_fewest_steps_first():
    plan = budget_plan(20, [20, 5, 10], families=DDPM_FAMILIES)
    assert plan == [("ddpm", None, 5), ("ddpm", None, 10), ("ddpm", None, 20), ("ddim", 0.0, 5), ("ddim", 0.0, 10),
                    ("ddim", 0.0, 20), ("ddim", 1.0, 5), ("ddim", 1.0, 10), ("ddim", 1.0, 20),
                    ("dpm_solver", None, 5), ("dpm_solver", None, 10), ("dpm_solver", None, 20)]


# ---------------------------------------------------------------------------------------------
# Respaced DDPM (Nichol & Dhariwal 2021)


def test_ddpm_respaced_to_T_steps_is_plain_ddpm_bit_for_bit(short, short_eps, gen):
    config = SamplerConfig(kind="ddpm", num_samples=60, num_frames=2)
    assert list(timesteps(short, config, T)) == list(timesteps(short, config))
    plain = sample(short_eps, short, config, gen(3)).samples
    np.testing.assert_array_equal(sample(short_eps, short, config, gen(3), sample_steps=T).samples, plain)


@pytest.mark.parametrize("variance", ["beta", "posterior"])
@pytest.mark.parametrize("t, t_prev", [(99, 74), (50, 10), (8, -1)])
def test_a_respaced_ddpm_step_uses_the_betas_of_the_kept_times(short, gen, variance, t, t_prev):
    g = gen(0)
    x, eps, z = (torch.randn(16, 2, generator=g, dtype=torch.float64) for _ in range(3))
    abar = np.cumprod(1 - np.linspace(1e-4, 0.2, T))
    a_t, a_prev = abar[t], abar[t_prev] if t_prev >= 0 else 1.0
    beta = 1 - a_t / a_prev
    sigma2 = 0.0 if t_prev < 0 else (beta if variance == "beta" else (1 - a_prev) / (1 - a_t) * beta)
    expected = (x - beta / math.sqrt(1 - a_t) * eps) / math.sqrt(1 - beta) + math.sqrt(sigma2) * z
    torch.testing.assert_close(ddpm_step(short, eps, t, x, z, variance, t_prev=t_prev), expected, rtol=1e-9, atol=1e-9)
    if variance == "posterior":  # Song et al.: DDIM at eta 1 is this chain
        torch.testing.assert_close(ddim_step(short, eps, t, t_prev, x, 1.0, z), expected, rtol=1e-9, atol=1e-9)


def test_respaced_ddpm_with_the_posterior_variance_samples_as_ddim_at_eta_1(short, short_eps, gen):
    config = SamplerConfig(kind="ddpm", variance="posterior", num_samples=200, num_frames=2)
    ddim = SamplerConfig(kind="ddim", sample_steps=10, eta=1.0, num_samples=200, num_frames=2)
    a = sample(short_eps, short, config, gen(1), sample_steps=10).samples
    b = sample(short_eps, short, ddim, gen(1)).samples
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Rows


def test_the_scorer_is_evaluate_s_energy_distance(gen):
    for dataset in (REFERENCE_GAUSSIAN, make_dataset(DataConfig("moons"))):  # closed-form and sampled E|X-X'|
        score = energy_scorer(dataset, 300)
        for seed in (0, 1):
            points = dataset.sample(300, gen(seed)).numpy() + 0.1 * seed
            assert score(points) == evaluate(points, dataset).energy_distance


@pytest.fixture(scope="module")
def rows(short, short_eps):
    return budget_rows(short_eps, short, REFERENCE_GAUSSIAN, num_samples=200, seed=5, steps=[5, 20, T])


def test_each_row_is_a_direct_sampler_call_scored_as_the_panel_does(short, short_eps, rows):
    assert [(r.sampler, r.eta, r.steps) for r in rows] == budget_plan(T, [5, 20, T], families=DDPM_FAMILIES)
    for r in rows:
        config = SamplerConfig(kind=r.sampler, eta=r.eta or 0.0, sample_steps=r.steps, num_samples=200, num_frames=2,
                               seed=5)
        assert config == row_config(r.sampler, r.eta, r.steps, num_samples=200, seed=5)
        samples = sample(short_eps, short, config, torch.Generator().manual_seed(5), sample_steps=r.steps).samples
        score = evaluate(samples, REFERENCE_GAUSSIAN).energy_distance
        assert (r.energy_distance, r.floor) == (score.value, score.floor)
        assert r.ratio == score.ratio and r.seconds > 0


def test_model_calls_are_counted_and_equal_the_steps(rows):
    assert all(r.model_calls == r.steps for r in rows)


def test_more_steps_score_better_with_the_exact_eps(rows):
    by = {(r.sampler, r.eta, r.steps): r.ratio for r in rows}
    for kind, eta in (("ddpm", None), ("ddim", 0.0), ("ddim", 1.0)):
        assert by[(kind, eta, 5)] > by[(kind, eta, T)]
    assert by[("ddpm", None, T)] < 3  # near the floor: 200 points, the exact eps*


def test_iter_budget_yields_rows_one_by_one_and_budget_rows_reports_progress(short, short_eps):
    rows = iter_budget(short_eps, short, REFERENCE_GAUSSIAN, num_samples=50, steps=[5, 10], families=[("ddim", 0.0)])
    first = next(rows)
    assert isinstance(first, BudgetRow) and (first.sampler, first.eta, first.steps) == ("ddim", 0.0, 5)
    assert [r.steps for r in rows] == [10]
    seen = []
    budget_rows(short_eps, short, REFERENCE_GAUSSIAN, num_samples=50, steps=[5, 10], on_progress=lambda *a: seen.append(a))
    assert seen == [(i, 8) for i in range(1, 9)]  # 4 families x 2 step counts


def test_a_model_row_equals_sample_model_with_the_same_config(short, gen):
    model = Denoiser(DenoiserConfig(), T, gen(0)).eval()
    (row,) = budget_rows(model, short, REFERENCE_GAUSSIAN, num_samples=100, seed=9, steps=[T], families=[("ddpm", None)])
    trajectory = sample_model(model, short, SamplerConfig(num_samples=100, seed=9))
    assert row.energy_distance == evaluate(trajectory.samples, REFERENCE_GAUSSIAN).energy_distance.value


def test_non_finite_samples_score_nan_instead_of_failing(short):
    (row,) = budget_rows(lambda x, t: torch.full_like(x, math.inf), short, REFERENCE_GAUSSIAN, num_samples=20,
                         steps=[5], families=[("ddim", 0.0)])
    assert math.isnan(row.energy_distance) and math.isnan(row.ratio) and row.model_calls == 5


def test_a_row_as_a_dict_has_the_csv_columns(rows):
    assert tuple(rows[0].to_dict()) == BUDGET_COLUMNS
    by_kind = {r.sampler: r.to_dict() for r in rows}
    assert by_kind["ddpm"]["eta"] is None and by_kind["dpm_solver"]["eta"] is None
    assert [r.to_dict()["eta"] for r in rows if r.sampler == "ddim"][-1] == 1.0


# ---------------------------------------------------------------------------------------------
# The command

SMALL = ["--timesteps", "100", "--epochs", "50", "--samples", "100", "--frames", "2", "--device", "cpu"]
PLAN = budget_plan(100, families=DDPM_FAMILIES)  # 5, 10, 20, 50, 100 for each of the four families


def _run(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(argv) == 0
    return out.getvalue()


def test_the_command_writes_budget_csv(tmp_path):
    _run([*SMALL, "--budget", "--out", str(tmp_path)])
    with open(tmp_path / "budget.csv", newline="") as f:
        reader = csv.DictReader(f)
        got = list(reader)
    assert tuple(reader.fieldnames) == BUDGET_COLUMNS
    assert [(r["sampler"], r["eta"], int(r["steps"])) for r in got] == [
        (kind, "" if eta is None else str(eta), steps) for kind, eta, steps in PLAN]
    assert all(int(r["model_calls"]) == int(r["steps"]) for r in got)
    assert all(float(r["floor"]) > 0 and float(r["energy_distance"]) > 0 for r in got)


def test_the_command_reports_the_budget_in_json_and_ddpm_at_T_is_the_run_s_own_score():
    report = json.loads(_run([*SMALL, "--budget", "--json"]))
    budget = report["budget"]
    assert [(r["sampler"], r["eta"], r["steps"]) for r in budget] == PLAN
    assert all(set(r) == set(BUDGET_COLUMNS) for r in budget)
    (full,) = [r for r in budget if r["sampler"] == "ddpm" and r["steps"] == 100]
    # the same samples as the run's own (same seed, x_T and noise): the same energy distance
    assert full["energy_distance"] == report["metrics"]["energy_distance"]
    assert full["floor"] == report["metrics"]["energy_distance_floor"]


def test_the_command_prints_the_budget_as_a_table():
    lines = _run([*SMALL, "--budget"]).splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:3] == ["sampler", "eta", "steps"])
    table = lines[start + 1:]
    assert len(table) == len(PLAN)
    assert [(c[0], int(c[-6])) for c in (line.split() for line in table)] == [(k, s) for k, _, s in PLAN]


def test_without_budget_nothing_is_computed(tmp_path):
    report = json.loads(_run([*SMALL, "--json", "--out", str(tmp_path)]))
    assert "budget" not in report and not (tmp_path / "budget.csv").exists()
