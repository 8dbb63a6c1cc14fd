"""The density view on the page (AppTest): the learned and true log-density, NLL against the
data's entropy as the worker computed them, and the trajectory probe following a picked start."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from diffusion.likelihood import network_model, probe
from diffusion.objectives import path_of
from runtime import tasks
from tests.pages import animation, computing, fresh_caches, open_page, poll_until, wait_finished  # noqa: F401
from ui import density, panels

pytestmark = pytest.mark.usefixtures("fresh_caches")


def _decode(values) -> np.ndarray:
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).astype(np.float64)
    return np.asarray(values, dtype=np.float64)


def _charts(at) -> dict[str, dict]:
    """Plotly charts by their first trace's name."""
    out = {}
    for element in at.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        out[spec["data"][0].get("name")] = spec
    return out


def _trace(spec: dict, name: str) -> dict:
    return next(t for t in spec["data"] if t.get("name") == name)


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _settled(at):
    return poll_until(at, lambda at: not computing(at) and len(at.get("plotly_chart")) >= 3)


def test_the_density_view_shows_the_workers_nll_beside_the_exact_entropy_and_both_maps():
    at = _settled(wait_finished(open_page(view="density", preset="improved")))
    assert not at.exception
    assert [s.value for s in at.subheader][-2:] == ["The density the model learned", "Trajectory probe"]
    (key,) = panels.registry()._finished  # the one finished run
    run = panels.registry().finished(key)
    steps = at.session_state["ode_steps"]
    view = tasks.compute_density(tasks.Density(steps), key, tasks.model_from(key, run.weights), lambda *a: None)
    nll = view.nll
    metrics = _metrics(at)
    assert metrics["NLL (nats per point)"] == f"{nll.nll.value:.3f} ± {nll.nll.error:.3f}"
    assert metrics["Data entropy H"] == f"{np.log(2 * np.pi * np.e * 0.25):.3f}"  # exact, no error shown
    assert metrics["KL(data ‖ model), paired"] == f"{nll.kl.value:.3f} ± {nll.kl.error:.3f}"
    assert metrics["ODE solver's error"] == f"{nll.solver_error:.4f}"
    maps = _charts(at)["learned: log p_model"]
    heatmaps = [t for t in maps["data"] if t["type"] == "heatmap"]
    assert [t["name"] for t in heatmaps] == ["learned: log p_model", "true: log p_data"]
    top = max(view.log_p_model.max(), view.log_p_true.max())
    np.testing.assert_allclose(_decode(heatmaps[1]["z"]).reshape(60, 60),
                               np.clip(view.log_p_true, top - 10, None), rtol=1e-5)


def test_a_shape_without_a_closed_form_density_has_one_map_and_no_entropy():
    at = _settled(wait_finished(open_page(view="density", dataset="moons")))
    metrics = _metrics(at)
    assert metrics["Data entropy H"] == "unknown" and metrics["KL(data ‖ model), paired"] == "unknown"
    heatmaps = [t for t in _charts(at)["learned: log p_model"]["data"] if t["type"] == "heatmap"]
    assert [t["name"] for t in heatmaps] == ["learned: log p_model"]
    assert any("no closed-form density" in c.value for c in at.caption)


def test_the_probe_follows_the_picked_start_and_the_other_direction_starts_from_the_data():
    at = _settled(wait_finished(open_page(view="density")))
    (key,) = panels.registry()._finished
    model = network_model(tasks.model_from(key, panels.registry().finished(key).weights))
    at.session_state[f"probe_start_noise_{density.run_digest(key)}"] = (1.0, -0.5)  # what a click in the chart stores
    at = _settled(at.run())
    spec = _charts(at)["learned log p"]
    ode = np.stack([_decode(_trace(spec, "ODE path")["x"]), _decode(_trace(spec, "ODE path")["y"])], 1)
    expected = probe(model, path_of(key.schedule), (1.0, -0.5), from_prior=True).ode
    np.testing.assert_allclose(ode, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ode[-1], [1.0, -0.5], atol=1e-6)  # it ends where it started: at x_T
    assert len([t for t in spec["data"] if t.get("legendgroup") == "stochastic"]) == 5
    log_p = _charts(at)["log p along the ODE path"]["data"][0]
    assert len(_decode(log_p["y"])) == len(ode)
    at.radio(key="probe_from").set_value("data")
    at = _settled(at.run())
    spec = _charts(at)["learned log p"]
    start = _trace(spec, "start")
    ode_x = _decode(_trace(spec, "ODE path")["x"])
    assert ode_x[0] == pytest.approx(start["x"][0], abs=1e-5)  # from a data point, towards the noise


def test_a_density_too_costly_for_the_page_is_refused_in_words_and_nothing_is_computed():
    at = wait_finished(open_page(view="density", preset="improved", hidden="512", depth="8", ode_steps="256",
                                 epochs="2"))
    assert any("more than this page allows" in c.value and "Likelihood ODE steps" in c.value for c in at.caption)
    assert not any(isinstance(k[2], tasks.Density) for k in panels.registry()._results)


def test_dpm_solver_samples_on_the_page_with_its_steps_and_calls():
    at = wait_finished(open_page(sampler="dpm_solver", sample_steps="12"))
    assert not at.exception
    assert at.selectbox(key="sampler").value == "dpm_solver"
    payload = animation(at)
    assert payload is not None and payload["num_frames"] <= 13  # 12 steps: at most 13 frames kept
    assert any("12 DPM-Solver++ steps (12 model calls)" in c.value for c in at.caption)
