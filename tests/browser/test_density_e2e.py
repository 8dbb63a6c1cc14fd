"""The density view in Chromium: the learned log-density beside the data, and the trajectory probe
answering a click. Screenshots go to artifacts/browser/density_*.png, to be looked at."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from .conftest import BROWSER_ARTIFACTS
from .dashboard_page import DashboardPage

pytestmark = pytest.mark.browser

TRAINING_TIMEOUT_MS = 150_000

# The probe chart's traces as Plotly holds them: the start marker and the ODE path's two ends.
_PROBE_JS = """d => {
  const by = name => d._fullData.find(t => t.name === name);
  const start = by('start'), ode = by('ODE path');
  const at = (t, i) => [Number(t.x[i]), Number(t.y[i])];
  return {start: start ? at(start, 0) : null,
          first: ode ? at(ode, 0) : null, last: ode ? at(ode, ode.x.length - 1) : null,
          stochastic: d._fullData.filter(t => t.legendgroup === 'stochastic').length};
}"""


@pytest.mark.parametrize(("name", "query"), [("gaussian", "?view=density&preset=improved"),
                                             ("moons", "?view=density&dataset=moons&epochs=3000")])
def test_the_density_view_draws_both_maps_and_the_probe_follows_a_click(dashboard: DashboardPage, name, query):
    app = dashboard
    app.open(query)
    app.wait_for_finished(TRAINING_TIMEOUT_MS)
    maps = app.chart("density_chart")
    expect(maps).to_be_visible()
    heatmaps = app.plotted(maps, "d => d.data.filter(t => t.type === 'heatmap').map(t => t.name)")
    assert heatmaps == (["learned: log p_model", "true: log p_data"] if name == "gaussian" else ["learned: log p_model"])
    expect(app.page.get_by_text("NLL (nats per point)")).to_be_visible()
    app.chart("density_chart").scroll_into_view_if_needed()
    app.screenshot(BROWSER_ARTIFACTS / f"density_{name}_maps.png")

    probe = app.chart("probe_chart")
    probe.scroll_into_view_if_needed()
    before = app.plotted(probe, _PROBE_JS)
    assert before["stochastic"] == 5 and before["last"] == pytest.approx(before["start"], abs=1e-4)  # from x_T

    # a click on the chart picks the target under it as x_T; the worker's path starts there
    box = app.page.locator(".st-key-probe_chart .nsewdrag").filter(visible=True).first.bounding_box()
    app.page.mouse.click(box["x"] + 0.25 * box["width"], box["y"] + 0.3 * box["height"])
    app.page.wait_for_function(
        """([js, old]) => { const d = [...document.querySelectorAll('.st-key-probe_chart .js-plotly-plot')]
             .find(e => e.offsetParent !== null);
           if (!d || !d._fullData) return false;
           const s = d._fullData.find(t => t.name === 'start');
           return s && (Math.abs(Number(s.x[0]) - old[0]) > 1e-6 || Math.abs(Number(s.y[0]) - old[1]) > 1e-6); }""",
        arg=[_PROBE_JS, before["start"]], timeout=60_000)
    app.settle()
    after = app.plotted(app.chart("probe_chart"), _PROBE_JS)
    assert after["start"] != before["start"]
    assert after["last"] == pytest.approx(after["start"], abs=1e-4)  # the ODE path runs from the clicked x_T
    expect(app.chart("probe_log_p")).to_be_visible()
    app.chart("probe_chart").scroll_into_view_if_needed()
    app.screenshot(BROWSER_ARTIFACTS / f"density_{name}_probe.png")
