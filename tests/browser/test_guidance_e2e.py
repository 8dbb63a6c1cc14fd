"""The guidance view in Chromium: a conditional model on the two moons, its samples coloured by
class at the shown scale, quality and spread against w, the guided field; moving w or picking a
class redraws without sampling again. Screenshots go to artifacts/browser/guidance_*.png. (What an
unconditional run is told is checked in AppTest, tests/test_guidance_view.py.)"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from .conftest import BROWSER_ARTIFACTS
from .dashboard_page import DashboardPage

pytestmark = pytest.mark.browser

TRAINING_TIMEOUT_MS = 150_000
# a short run and a cheap sweep (T = 200, 400 points at each of 8 scales): the view, not the model, is tested
QUERY = "?preset=improved&dataset=moons&conditional=true&epochs=1000&T=200&samples=400&view=guidance"
_SAMPLES_JS = "d => ({title: d.layout.title.text.replace(/<[^>]+>/g, ''), names: d.data.filter(t => t.showlegend !== false).map(t => t.name), " \
              "colors: d.data.filter(t => t.showlegend !== false).map(t => t.marker.color)})"


def test_the_guidance_view_draws_every_class_and_redraws_for_w_and_a_class(dashboard: DashboardPage):
    app = dashboard
    app.open(QUERY)
    app.wait_for_finished(TRAINING_TIMEOUT_MS)
    payload = app.animation_payload()  # the reverse animation above: each point in its class's colour
    assert payload["classes"][:4] == [0, 1, 0, 1] and len(set(payload["class_colors"])) == 2
    samples = app.chart("guidance_samples")
    expect(samples).to_be_visible(timeout=120_000)  # the sweep: 8 scales on a worker
    shown = app.plotted(samples, _SAMPLES_JS)
    assert shown["title"] == "Samples at w = 3"
    assert shown["names"] == ["upper moon", "lower moon"] and shown["colors"][0] != shown["colors"][1]
    curve = app.chart("guidance_curve")
    assert [name for name, _ in app.traces(curve)][:2] == ["upper moon", "upper moon"]
    expect(app.chart("guidance_field")).to_be_visible()
    expect(app.page.get_by_text("w = 1 is the class as learned")).to_be_visible()
    app.chart("guidance_samples").scroll_into_view_if_needed()
    app.screenshot(BROWSER_ARTIFACTS / "guidance_moons.png")

    mark = app.runs.mark()
    slider = app.page.get_by_role("slider", name="Guidance scale w shown")
    slider.focus()
    app.act_in_view(lambda: slider.press("ArrowLeft"))  # 3 -> 2
    app.wait_until(lambda: app.plotted(app.chart("guidance_samples"), _SAMPLES_JS)["title"] == "Samples at w = 2",
                   "the samples at w = 2")
    assert app.runs.started == mark.started  # the view's fragment redrew: no page run, nothing sampled again
    app.wait_until(lambda: app.query().get("guide_w") == "2.0", "the link to carry w = 2")

    app.act_in_view(lambda: app.page.get_by_role("radiogroup", name="Class shown").get_by_text("lower moon").click())
    app.wait_until(lambda: app.plotted(app.chart("guidance_samples"), _SAMPLES_JS)["colors"][0] == "#c8c8c8",
                   "the upper moon greyed")
    expect(app.page.get_by_text("The guided field for lower moon at w = 2")).to_be_visible()
    app.wait_until(lambda: app.query().get("guide_class") == "1", "the link to carry the lower moon")
    app.chart("guidance_field").scroll_into_view_if_needed()
    app.screenshot(BROWSER_ARTIFACTS / "guidance_moons_lower_w2.png")
