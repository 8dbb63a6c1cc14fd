"""The page's layout as a person meets it: the first view at 1400 x 900, and the lazy tabs below it,
each named in the link. Screenshots of each go to artifacts/browser/ (first_view_*.png, tab_*.png)
to be looked at; the tests assert what must hold in them."""

from __future__ import annotations

import pytest
from playwright.sync_api import Locator, expect

from .conftest import BROWSER_ARTIFACTS
from .dashboard_page import DashboardPage

pytestmark = pytest.mark.browser

TRAINING_TIMEOUT_MS = 150_000
FIRST_VIEW = {"width": 1400, "height": 900}

# What each tab holds: its headings, and the keys of its charts (ECharts or Plotly).
TAB_HEADINGS = {
    "quality": [],
    "samples": ["Results", "Downloads"],
    "noise": ["Noise schedule", "Data and forward process"],
    "field": ["The learned field against the ideal one", "Forward against reverse: where sampling drifts"],
    "density": ["The density the model learned", "Trajectory probe"],
    "compare": ["Your runs", "Sampling budget"],
}
LIVE_CHARTS = {"quality": ["quality_chart", "loss_by_t_chart"]}  # keyed ECharts
PLOTLY_CHARTS = {"samples": 1, "noise": 2, "field": 3, "density": 3}  # Plotly charts in the tab
FIELD_KEYS = ("field_chart", "field_error_chart", "drift_chart")


def _tab_panel(app: DashboardPage) -> Locator:
    """The open tab's panel (the others are empty: the tabs are lazy)."""
    return app.page.get_by_role("tabpanel").filter(visible=True)


def _expect_tab_content(app: DashboardPage, view: str) -> None:
    panel = _tab_panel(app)
    for heading in TAB_HEADINGS[view]:
        expect(panel.get_by_role("heading", name=heading)).to_be_visible()
    for key in LIVE_CHARTS.get(view, []):
        expect(app.echart(key)).to_have_count(1)
    plotly = PLOTLY_CHARTS.get(view, 0)
    if view == "compare":  # the budget's chart once computed for this run (by an earlier test on this server), else its button
        computed = panel.get_by_role("button", name="Compute the sampling budget").count() == 0
        plotly = 1 if computed else 0
    expect(panel.get_by_test_id("stPlotlyChart")).to_have_count(plotly)
    for other, keys in LIVE_CHARTS.items():
        if other != view:
            for key in keys:
                expect(app.page.locator(f".st-key-{key}")).to_have_count(0)


def _inside_viewport(app: DashboardPage, element: Locator, what: str) -> None:
    box = element.bounding_box()
    assert box is not None, f"{what} is not drawn"
    height = app.page.viewport_size["height"]
    assert 0 <= box["y"] and box["y"] + box["height"] <= height, \
        f"{what} spans y = {box['y']:.0f} to {box['y'] + box['height']:.0f}, not inside the first {height} px"


def test_a_link_opens_the_tab_it_names(dashboard: DashboardPage):
    app = dashboard
    app.open("?view=field")
    app.wait_for_finished(TRAINING_TIMEOUT_MS)  # and the field tab's worker results
    expect(app.tab("field")).to_have_attribute("aria-selected", "true")
    expect(app.tab("quality")).to_have_attribute("aria-selected", "false")
    _expect_tab_content(app, "field")
    for key in FIELD_KEYS:
        expect(app.chart(key)).to_be_visible()
    assert app.query() == {"view": "field"}

    # a click on another tab builds that one alone and names it in the address bar
    app.open_tab("noise")
    app.expect_query({"view": "noise"})
    _expect_tab_content(app, "noise")
    for key in FIELD_KEYS:
        expect(app.page.locator(f".st-key-{key}")).to_have_count(0)

    app.open_tab("quality")  # the default tab: the link names no view
    app.expect_query({})
    _expect_tab_content(app, "quality")


def test_each_tab_shows_its_views(dashboard: DashboardPage):
    """Click through every tab on the finished reference run; screenshot each (whole page)."""
    app = dashboard
    app.open()
    app.wait_for_finished(TRAINING_TIMEOUT_MS)
    for view in ("quality", "samples", "noise", "field", "density", "compare"):
        if view != "quality":
            app.open_tab(view)
            app.expect_query({"view": view})
            app.wait_for_finished(TRAINING_TIMEOUT_MS)  # a view computed by a worker draws its progress first
        _expect_tab_content(app, view)
        app.screenshot(BROWSER_ARTIFACTS / f"tab_{view}.png", whole_page=True)


@pytest.mark.parametrize(("name", "query"), [("gaussian", ""), ("moons", "?dataset=moons&seed=202&epochs=8000")])
def test_the_first_view_fits_1400_by_900(dashboard: DashboardPage, name: str, query: str):
    """Training beside the samples above the fold: the loss chart and the whole animation with its
    controls inside a 1400 x 900 window (while a new run trains: its live samples)."""
    app = dashboard
    app.page.set_viewport_size(FIRST_VIEW)
    app.open(query or None)
    expect(app.page.get_by_role("heading", name="Training")).to_be_visible()
    if query:  # a configuration no other test trains: watch it train first
        expect(app.progress).to_contain_text("Training")
        expect(app.page.get_by_role("heading", name="Live samples")).to_be_visible()
        expect(app.echart("preview_chart")).to_have_count(1)
        _inside_viewport(app, app.echart("preview_chart"), "the live samples")
        _inside_viewport(app, app.loss_chart, "the loss chart")
        app.screenshot(BROWSER_ARTIFACTS / f"first_view_{name}_training.png")
    app.wait_for_finished(TRAINING_TIMEOUT_MS)
    _inside_viewport(app, app.loss_chart, "the loss chart")
    _inside_viewport(app, app.animation, "the reverse animation with its controls")
    _inside_viewport(app, app.progress, "the progress bar")
    expect(app.page.locator(".st-key-preview_chart")).to_have_count(0)  # the live samples gave way to the animation
    app.screenshot(BROWSER_ARTIFACTS / f"first_view_{name}.png")
