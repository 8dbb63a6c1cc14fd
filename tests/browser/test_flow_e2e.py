"""Flow matching beside DDPM in a real browser: train the Gaussian with `improved`, pin it, train
it with `flow`, and compare the loss, the samples, the field and the sampling budget."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from .conftest import BROWSER_ARTIFACTS
from .dashboard_page import DashboardPage

pytestmark = pytest.mark.browser

TRAINING_TIMEOUT_MS = 150_000


def _compute_budget(app: DashboardPage) -> None:
    """Click, then wait for the worker's budget: the page shows its progress, then reruns with the chart."""
    app.act(lambda: app.page.get_by_role("button", name="Compute the sampling budget").click(), timeout_ms=120_000)
    expect(app.chart("budget_chart")).to_be_visible(timeout=120_000)
    app.settle()


def test_train_improved_and_flow_pin_one_and_compare_them(dashboard: DashboardPage):
    app = dashboard
    app.open("?preset=improved&pace=false")
    app.wait_for_finished(TRAINING_TIMEOUT_MS)
    app.open_tab("noise")
    expect(app.page.get_by_role("heading", name="Noise schedule")).to_be_visible()
    app.open_tab("compare")
    _compute_budget(app)
    ddpm_families = {name for name, _ in app.traces(app.chart("budget_chart"))}
    assert {"DDPM", "DDIM η=0", "DDIM η=1"} <= ddpm_families
    # still the improved run's settings (the history's last run, the one pinned, is the run on screen)
    assert app.query() == {"preset": "improved", "pace": "false", "view": "compare"}, app.page.url
    app.act(lambda: app.page.get_by_role("button", name="Pin as baseline").click())
    expect(app.page.get_by_text("Baseline pinned")).to_be_visible()

    app.choose("Preset", "flow")
    app.expect_query({"preset": "flow", "view": "compare"})  # a preset resets every setting, pace too, but not the tab
    app.wait_for_finished(TRAINING_TIMEOUT_MS)
    # the sidebar shows only the objective's samplers and settings
    expect(app.sidebar.get_by_role("radio", name="Flow matching (predict the velocity)")).to_be_checked()
    expect(app.sidebar.get_by_role("spinbutton", name="β start")).to_be_disabled()
    expect(app.page.get_by_text("10 Heun steps (19 model calls)")).to_be_visible()

    # loss: the baseline's curve under this run's
    lengths = app.series_lengths("loss_chart")
    assert lengths["baseline (smoothed)"] > 0, lengths
    expect(app.loss_chart).to_have_attribute("aria-label", re.compile(r", baseline \d+ steps"))

    # samples: the reverse animation runs on t from 1 to 0, and lands on the Gaussian at (2, 2)
    names = app.frame_names()
    assert names[0] == "t = 1.000" and names[-1] == "t = 0.000", names
    xs, ys = app.frame_points(-1)
    samples = app.animation_payload()["total_points"]
    assert len(xs) == samples  # "Points animated" (1,000) moves every sample
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    assert abs(mean_x - 2) < 0.1 and abs(mean_y - 2) < 0.1, (mean_x, mean_y)  # std of a mean: 0.5 / sqrt(1000)

    # the budget: Euler and Heun, with the pinned DDPM run's rows on the same axis of model calls
    _compute_budget(app)
    budget = {name for name, _ in app.traces(app.chart("budget_chart"))}
    assert {"Euler (flow)", "Heun (flow)", "DDPM · baseline", "DDIM η=0 · baseline"} <= budget, budget
    expect(app.page.get_by_text("Dotted: the pinned baseline's budget")).to_be_visible()
    app.screenshot(BROWSER_ARTIFACTS / "flow_beside_improved.png", whole_page=True)

    # the path: flow matching's, not a noise schedule
    app.open_tab("noise")
    expect(app.page.get_by_role("heading", name="Flow matching's path")).to_be_visible()
    # the loss by level on t in [0, 1]
    app.open_tab("quality")
    by_t = app.chart_spec("loss_by_t_chart")
    assert by_t["xAxis"]["name"] == "time t (0 = data, 1 = noise)", by_t["xAxis"]
    last_bin = by_t["xAxis"]["data"][-1]
    assert last_bin.endswith("–1.00"), by_t["xAxis"]["data"]
    # the field is the velocity, against its ideal
    app.open_tab("field")
    app.wait_for_finished(TRAINING_TIMEOUT_MS)
    field = [name for name, _ in app.traces(app.chart("field_chart"))]
    assert "learned v" in field and "ideal v" in field, field
    app.check_clean()
