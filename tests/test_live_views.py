"""The live views of a run on the page (AppTest): samples of the current weights, their quality
curve, and the loss by noise level against its floor, while training and once finished."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from diffusion.config import DataConfig, ScheduleConfig
from diffusion.datasets import make_dataset
from diffusion.monitoring import PREVIEW_POINTS, loss_floor_by_bin
from diffusion.paths import level_weights
from diffusion.schedules import NoiseSchedule
from tests.pages import (  # noqa: F401
    computing,
    echarts,
    fresh_caches,
    has_points,
    open_page,
    open_tab,
    poll_until,
    series,
    wait_finished,
)
from ui import panels

pytestmark = pytest.mark.usefixtures("fresh_caches")


def _decode(values):
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).astype(np.float64)
    return np.asarray(values, dtype=np.float64)


def chart(at, trace_name: str) -> dict:
    for element in at.get("plotly_chart"):
        spec = json.loads(element.proto.spec)
        if any(trace.get("name") == trace_name for trace in spec["data"]):
            return spec
    raise AssertionError(f"no chart with a trace named {trace_name!r}")


def trace(spec: dict, name: str) -> dict:
    return next(t for t in spec["data"] if t.get("name") == name)


def test_a_finished_run_shows_its_quality_curve_and_its_loss_by_noise_level_with_the_exact_floor():
    at = wait_finished(open_page())  # the reference Gaussian, T = 100
    charts = echarts(at)
    steps = [step for step, _ in series(charts["quality_chart"], "energy distance / floor")]
    assert steps[-1] == 150 and np.all(np.diff(steps) > 0)  # the last preview is of the final weights
    by_t = charts["loss_by_t_chart"]
    assert len(series(by_t, "loss, last 200 steps")) == 20
    expected = loss_floor_by_bin(make_dataset(DataConfig("gaussian")), NoiseSchedule.from_config(
        ScheduleConfig(num_timesteps=100)), 20).values
    np.testing.assert_allclose(series(by_t, "irreducible loss"), expected, rtol=1e-3)  # sent to 4 digits
    captions = " ".join(c.value for c in at.caption)
    assert "irreducible loss of each bin (exact:" in captions
    assert "preview_chart" not in charts  # finished: the samples column shows the reverse process


def test_with_low_noise_emphasis_the_floors_and_their_captions_weigh_the_levels_as_drawn():
    """p = 2: the loss curve's floor is the irreducible loss averaged with the levels' draw
    probabilities, the bins' floors are the weighted ones, and both captions say so."""
    at = wait_finished(open_page(time_power="2"))  # the reference Gaussian, T = 100
    schedule = NoiseSchedule.from_config(ScheduleConfig(num_timesteps=100))
    gaussian = make_dataset(DataConfig("gaussian"))
    mean = float(np.average(gaussian.irreducible_loss(schedule), weights=level_weights(100, 2.0)))
    assert mean > 1.2 * float(np.mean(gaussian.irreducible_loss(schedule)))  # the weighting shows (quiet levels: eps is hard)
    charts = echarts(at)
    assert any(s.get("name") == f"irreducible loss {mean:.3f}" for s in charts["loss_chart"]["series"])
    expected = loss_floor_by_bin(gaussian, schedule, 20, time_power=2.0).values
    np.testing.assert_allclose(series(charts["loss_by_t_chart"], "irreducible loss"), expected, rtol=1e-3)
    captions = " ".join(c.value for c in at.caption)
    assert f"the irreducible loss {mean:.3f}" in captions
    assert "averaged over t as training draws it, Low-noise emphasis p = 2" in captions
    assert "each level weighted as often as training draws it (p = 2)" in captions


def test_the_live_samples_show_the_current_weights_while_a_run_trains():
    at = open_page(epochs="20000")  # long enough to be caught training
    poll_until(at, lambda at: has_points(at, "preview_chart", "preview samples"))
    preview = echarts(at)["preview_chart"]
    points = series(preview, "preview samples")
    assert len(points) == PREVIEW_POINTS
    assert preview["title"]["text"].startswith("Live samples at step ")
    assert f"{PREVIEW_POINTS} points from the current weights" in " ".join(c.value for c in at.caption)
    panels.registry().reset()


def test_data_without_a_known_density_has_no_loss_floor_and_an_empirical_ideal_field_and_says_why():
    """Two moons, one finished run (the empirical ideal of its field is the costly part)."""
    at = wait_finished(open_page(dataset="moons"))
    by_t = echarts(at)["loss_by_t_chart"]
    assert series(by_t, "irreducible loss") == [] and len(series(by_t, "loss, last 200 steps")) == 20
    assert any("no floor is drawn: this data's density" in c.value for c in at.caption)
    poll_until(open_tab(at, "field"), lambda at: not computing(at))
    assert any("for this sample of 20,000 points, not the shape itself" in c.value for c in at.caption)


def test_uploaded_points_get_previews_in_their_own_units():
    at = open_page(dataset="points", epochs="20000")
    rows = "\n".join(f"{5 + np.cos(i / 9):.4f},{-3 + np.sin(i / 9):.4f}" for i in range(200))
    at.file_uploader(key="points_file").upload("ring.csv", f"x,y\n{rows}\n".encode(), "text/csv").run()
    poll_until(at, lambda at: has_points(at, "preview_chart", "preview samples"))
    points = np.array(series(echarts(at)["preview_chart"], "preview samples"), dtype=float)
    assert len(points) == PREVIEW_POINTS
    assert abs(points[:, 0].mean() - 5.0) < 2.0 and abs(points[:, 1].mean() + 3.0) < 2.0  # the file's units
    panels.registry().reset()


def test_the_field_view_has_every_noise_level_in_its_frames_and_names_its_ideal_denoiser():
    at = wait_finished(open_page(view="field"))
    poll_until(at, lambda at: not computing(at))
    field = chart(at, "learned ε")
    assert len(field["frames"]) == 20 and field["frames"][0]["name"] == "t = 0" and field["frames"][-1]["name"] == "t = 99"
    assert [t.get("name") for t in field["data"]] == ["|learned − ideal|", "data at t", "learned ε", "ideal ε"]
    assert any("The ideal denoiser here is exact (closed form for this Gaussian)" in c.value for c in at.caption)
    errors = _decode(trace(chart(at, "mean error"), "mean error")["y"])
    assert len(errors) == 20 and np.isfinite(errors).all()
    at.radio(key="field").set_value("score").run()  # display only: the same run, drawn as a score
    assert [t.get("name") for t in chart(at, "learned score")["data"]][2:] == ["learned score", "ideal score"]


def test_the_drift_view_compares_every_kept_frame_with_the_true_noised_data():
    at = wait_finished(open_page(view="field"))  # 5 frames kept: all compared
    poll_until(at, lambda at: not computing(at))
    drift = chart(at, "drift")
    times = _decode(trace(drift, "drift")["x"])
    assert list(times) == [100, 75, 50, 25, 0]
    assert [f["name"] for f in drift["frames"]] == ["t = 100", "t = 75", "t = 50", "t = 25", "t = 0"]
    ratio = _decode(trace(drift, "drift")["y"])
    assert ratio[0] > 10  # T = 100 leaves q(x_T) far from the N(0, I) the sampler starts from


def test_a_schedule_shorter_than_the_bins_gets_a_bin_per_step():
    at = wait_finished(open_page(T="7"))
    assert len(series(echarts(at)["loss_by_t_chart"], "loss, last 200 steps")) == 7
