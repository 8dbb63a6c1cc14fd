"""The guidance view on the page (AppTest): the worker's sweep drawn per class, the scale and the
class shown redrawing without sampling again, and what an unconditional run is told."""

from __future__ import annotations

import json

import pytest

from runtime import tasks
from tests.pages import computing, fresh_caches, open_page, poll_until, wait_finished  # noqa: F401
from ui import panels

pytestmark = pytest.mark.usefixtures("fresh_caches")

CONDITIONAL = {"dataset": "moons", "conditional": "true", "label_dropout": "0.2", "view": "guidance"}


def _charts(at) -> dict[str, dict]:
    return {element.proto.id.rsplit("-", 1)[-1]: json.loads(element.proto.spec) for element in at.get("plotly_chart")}


def _settled(at):
    return poll_until(at, lambda at: not computing(at) and len(at.get("plotly_chart")) >= 3)


def test_the_view_draws_the_workers_sweep_and_redraws_for_w_and_a_class():
    at = _settled(wait_finished(open_page(**CONDITIONAL)))
    assert not at.exception
    assert at.subheader[-1].value == "Classifier-free guidance: what w buys, and what it costs"
    registry = panels.registry()
    (key,) = registry._finished
    run = registry.finished(key)
    (task,) = [state.task for state in registry._results.values() if isinstance(state.task, tasks.Guidance)]
    view = tasks.compute_guidance(task, key, tasks.model_from(key, run.weights), lambda *a: None)
    at3 = [r for r in view.rows if r["guidance"] == 3.0]
    caption = next(c.value for c in at.caption if c.value.startswith("Each point asks for its class"))
    assert caption.endswith(f"At w = 3: upper moon {at3[0]['energy_distance_ratio']:.2f} × floor, spread "
                            f"{at3[0]['spread_ratio']:.2f}; lower moon {at3[1]['energy_distance_ratio']:.2f} × floor, "
                            f"spread {at3[1]['spread_ratio']:.2f}.")
    charts = _charts(at)
    samples = charts["guidance_samples"]
    assert samples["layout"]["title"]["text"] == "Samples at w = 3"
    drawn = [t for t in samples["data"] if t.get("showlegend") is not False]
    assert [t["name"] for t in drawn] == ["upper moon", "lower moon"]
    computed = len(registry._results)

    at.select_slider(key="guide_w").set_value(0.5).run()
    assert _charts(at)["guidance_samples"]["layout"]["title"]["text"] == "Samples at w = 0.5"
    at.radio(key="guide_class").set_value(1).run()
    assert not at.exception
    drawn = [t for t in _charts(at)["guidance_samples"]["data"] if t.get("showlegend") is not False]
    assert [t["marker"]["color"] for t in drawn][0] == "#c8c8c8"  # the upper moon greyed, the lower in colour
    assert any(c.value.startswith("The guided field for lower moon at w = 0.5") for c in at.caption)
    assert not computing(at)
    assert len(registry._results) == computed  # redrawn from the same result, nothing sampled again
    assert at.query_params["guide_w"] == "0.5" and at.query_params["guide_class"] == "1"


def test_an_unconditional_run_says_what_guidance_needs():
    at = wait_finished(open_page(view="guidance"))
    assert not at.exception
    note = next(c.value for c in at.caption if c.value.startswith("This run was trained without classes"))
    assert "Condition on the class" in note and "conditional=true" in note
