"""The ECharts options of the live charts (charts/live.py): content against the inputs, JSON that
ECharts and Streamlit accept (no NaN), and the same series list whatever is missing."""

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from charts import FLOOR_COLOR, TimeAxis, live


def direct_ema(values, weight):
    """a_i = w a_{i-1} + (1 - w) v_i from a_{-1} = 0, over 1 - w^(i+1): one step at a time."""
    out, average = [], 0.0
    for i, v in enumerate(values):
        average = weight * average + (1 - weight) * v
        out.append(average / (1 - weight ** (i + 1)))
    return np.array(out)


def ys(series):
    return np.array([np.nan if y is None else y for _, y in series["data"]], dtype=np.float64)


def xs(series):
    return [x for x, _ in series["data"]]


def noisy_loss(n, seed=0):
    steps = np.arange(1, n + 1)
    return (0.4 + np.exp(-steps / (n / 5))) * np.exp(0.3 * np.random.default_rng(seed).standard_normal(n))


# --- numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [0.0, 0.01, 0.5, 0.9, 0.99])
def test_the_moving_average_is_the_recursion_computed_step_by_step(weight):
    """Several blocks (w = 0.01 makes blocks of 50 steps, 0.99 of 22,912): the carry between blocks is right."""
    values = noisy_loss(3000)
    np.testing.assert_allclose(live.ema(values, weight), direct_ema(values, weight), rtol=1e-12)


def test_a_non_finite_loss_spoils_the_average_from_there_on_as_the_recursion_does():
    values = np.array([1.0, 2.0, np.nan, 3.0])
    got = live.ema(values, 0.5)
    np.testing.assert_allclose(got[:2], direct_ema(values[:2], 0.5))
    assert np.isnan(got[2:]).all()


def test_the_moving_average_rejects_a_weight_outside_0_1():
    with pytest.raises(ValueError, match=r"weight must be in \[0, 1\); got 1"):
        live.ema(np.ones(3), 1)


def test_decimation_keeps_the_ends_the_minimum_and_every_block_s_extremes():
    n = 10 * live.MAX_POINTS + 7
    values = noisy_loss(n, seed=1)
    values[12_345] = 0.001  # the minimum, inside a block
    values[777] = 50.0  # a spike
    values[5000] = np.nan  # never a block's extreme
    kept = live.decimate(values)
    assert len(kept) <= live.MAX_POINTS and np.all(np.diff(kept) > 0)
    assert {0, n - 1, 12_345, 777} <= set(kept.tolist()) and 5000 not in kept
    size = live._block_size(n)
    for start in range(1, n - 1, size):  # each block's lowest and highest value is drawn
        end = min(start + size, n - 1)  # the blocks lie between the first and the last value
        block, drawn = values[start:end], values[kept[(kept >= start) & (kept < end)]]
        assert np.nanmin(drawn) == np.nanmin(block) and np.nanmax(drawn) == np.nanmax(block)


def test_a_short_series_is_not_decimated():
    assert live.decimate(np.ones(live.MAX_POINTS)).tolist() == list(range(live.MAX_POINTS))


def test_values_are_sent_to_four_significant_digits_and_non_finite_ones_as_null():
    assert live.rounded([0.123456, -0.000123456, 123456.0, 0.0, 1.0, np.nan, np.inf, -np.inf]) == \
        [0.1235, -0.0001235, 123500.0, 0.0, 1.0, None, None, None]
    assert all(type(v) is float for v in live.rounded(np.float32([0.1, 2.5])))


# --- the loss ------------------------------------------------------------------------------------


def test_a_short_run_draws_every_step_raw_and_smoothed():
    losses = noisy_loss(500)
    spec = live.loss_spec(losses, smoothing=0.8, total_steps=2000)
    raw, smoothed, baseline, floor = spec["series"]
    assert xs(raw) == xs(smoothed) == list(range(1, 501))  # optimizer steps are 1-based
    np.testing.assert_allclose(ys(raw), losses, rtol=5e-4)
    np.testing.assert_allclose(ys(smoothed), direct_ema(losses, 0.8), rtol=5e-5)
    assert raw["name"] == "loss" and smoothed["name"] == "smoothed (0.8)"
    assert baseline["data"] == [] and floor["data"] == []
    assert spec["xAxis"]["min"] == 0 and spec["xAxis"]["max"] == 2000  # the curve grows into the run's length
    assert spec["legend"]["data"] == ["loss", "smoothed (0.8)"]  # absent series have no legend entry


def test_smoothing_0_draws_no_smoothed_line_as_the_plotly_chart():
    spec = live.loss_spec(noisy_loss(30), smoothing=0.0)
    assert spec["series"][1]["data"] == [] and spec["legend"]["data"] == ["loss"]


def test_a_long_run_is_decimated_after_smoothing_every_step():
    losses = noisy_loss(20_000, seed=2)
    raw, smoothed, *_ = live.loss_spec(losses, smoothing=0.9)["series"]
    drawn = np.array(xs(raw)) - 1
    assert len(drawn) <= live.MAX_POINTS and drawn[0] == 0 and drawn[-1] == 19_999
    assert losses.argmin() in drawn and raw["name"] == f"loss (low & high of each {live._block_size(20_000)} steps)"
    np.testing.assert_allclose(ys(smoothed), direct_ema(losses, 0.9)[drawn], rtol=5e-5)


@pytest.mark.parametrize("log_y", [False, True])
def test_the_y_axis_type_is_always_stated_and_described(log_y):
    spec = live.loss_spec(noisy_loss(100), log_y=log_y)
    assert spec["yAxis"]["type"] == ("log" if log_y else "value")
    assert ("log axis" if log_y else "linear axis") in spec["aria"]["label"]["description"]


def test_a_log_axis_spans_the_values_drawn_widened_to_1_2_5_numbers_not_whole_decades():
    losses = np.array([2.4, 1.0, 0.3, 0.23])
    assert {k: live.loss_spec(losses, log_y=True, floor=0.21)["yAxis"][k] for k in ("min", "max")} == \
        {"min": 0.2, "max": 5.0}
    assert "min" not in live.loss_spec(losses)["yAxis"]  # a linear axis keeps ECharts' range
    assert "min" not in live.loss_spec(np.ones(3), log_y=True)["yAxis"]  # one value: no range of its own


def test_the_floor_is_a_dashed_line_across_the_whole_run():
    spec = live.loss_spec(noisy_loss(100), floor=0.4123456, total_steps=3000)
    floor = spec["series"][3]
    assert floor["data"] == [[0, 0.412346], [3000, 0.412346]]
    assert floor["name"] == "irreducible loss 0.412" and floor["lineStyle"]["type"] == "dashed"
    assert floor["lineStyle"]["color"] == FLOOR_COLOR
    assert spec["aria"]["label"]["description"] == \
        "loss: 100 steps of 3000, linear axis, floor 0.412, no baseline, smoothed " + \
        f"{direct_ema(noisy_loss(100), 0.9)[-1]:.4g}"


def test_the_baseline_is_its_own_loss_smoothed_and_dotted():
    losses, baseline = noisy_loss(300), noisy_loss(800, seed=3)
    series = live.loss_spec(losses, smoothing=0.2, baseline=baseline)["series"][2]
    assert series["lineStyle"]["type"] == "dotted" and xs(series) == list(range(1, 801))
    np.testing.assert_allclose(ys(series), direct_ema(baseline, 0.5), rtol=5e-5)  # at least 0.5, as the Plotly chart


def test_every_loss_chart_has_the_same_series_in_the_same_order():
    """So that a chart drawn by merging options could never keep a series of the last one."""
    bare = live.loss_spec(noisy_loss(50))
    full = live.loss_spec(noisy_loss(50), log_y=True, floor=0.3, baseline=noisy_loss(70))
    shape = [[(s["type"], s["lineStyle"].get("type"), s["lineStyle"]["color"]) for s in spec["series"]]
             for spec in (bare, full)]
    assert shape[0] == shape[1] and len(shape[0]) == 4


def test_a_non_finite_loss_is_a_gap_and_the_spec_is_still_json():
    losses = noisy_loss(100)
    losses[40] = np.inf
    spec = live.loss_spec(losses, log_y=True)
    assert spec["series"][0]["data"][40] == [41, None]
    json.dumps(spec, allow_nan=False)


# --- the other three -----------------------------------------------------------------------------


def test_the_preview_has_fixed_axes_and_an_equal_aspect_plot_area():
    rng = np.random.default_rng(4)
    data, samples = rng.normal(size=(300, 2)), rng.normal(size=(50, 2))
    spec = live.preview_spec(samples, data, ([-3.0, 5.0], [-2.0, 2.0]), "Live samples at step 10")
    assert (spec["xAxis"]["min"], spec["xAxis"]["max"], spec["yAxis"]["min"], spec["yAxis"]["max"]) == (-3, 5, -2, 2)
    assert spec["grid"]["width"] / spec["grid"]["height"] == pytest.approx(8 / 4, abs=0.01)
    assert spec["grid"]["height"] <= live.PREVIEW_HEIGHT
    faint, drawn = spec["series"]
    np.testing.assert_allclose(np.array(drawn["data"]), samples, rtol=5e-4, atol=1e-12)
    assert len(faint["data"]) == 300 and faint["silent"] and spec["title"]["text"] == "Live samples at step 10"


def test_quality_is_the_ratio_of_distance_to_floor_on_a_log_axis_with_a_line_at_one():
    previews = np.array([[100, 0.5, 0.01, 0.2], [200, 0.03, 0.01, 0.2]])
    spec = live.quality_spec(previews, 1000)
    ratio, floor = spec["series"]
    assert ratio["data"] == [[100, 50.0], [200, 3.0]] and floor["data"] == [[0, 1.0], [1000, 1.0]]
    assert spec["yAxis"]["type"] == "log" and spec["xAxis"]["max"] == 1000
    assert spec["aria"]["label"]["description"] == "quality: 2 previews, last 3 x floor at step 200"


@pytest.mark.parametrize("continuous", [False, True])
def test_the_loss_by_noise_level_names_each_bin_by_its_times(continuous):
    axis = TimeAxis(100, continuous)
    t_start, t_end = np.array([0, 50, 99]), np.array([50, 99, 100])
    recent, floor = np.array([0.2, np.nan, 0.9]), np.array([0.1, 0.5, 0.8])
    spec = live.loss_by_t_spec(t_start, t_end, recent, floor, 200, axis)
    bars, floor_line = spec["series"]
    assert spec["xAxis"]["type"] == "category" and spec["xAxis"]["name"] == axis.title
    assert spec["xAxis"]["data"] == (["0.00–0.50", "0.50–0.99", "0.99–1.00"] if continuous else ["0–49", "50–98", "99"])
    assert bars["data"] == [0.2, None, 0.9] and floor_line["data"] == [0.1, 0.5, 0.8]
    assert floor_line["lineStyle"]["type"] == "dashed" and bars["name"] == "loss, last 200 steps"
    assert spec["aria"]["label"]["description"].endswith(f"highest at t {spec['xAxis']['data'][2]} (0.9)")
    without = live.loss_by_t_spec(t_start, t_end, recent, None, 200, axis)
    assert without["series"][1]["data"] == [] and "no floor" in without["aria"]["label"]["description"]


# --- every spec ----------------------------------------------------------------------------------

EMPTY = np.zeros(0)
SPECS = {
    "loss": lambda: live.loss_spec(noisy_loss(3000), log_y=True, floor=0.4, total_steps=5000, baseline=noisy_loss(900)),
    "loss, no steps": lambda: live.loss_spec(EMPTY, floor=0.4, total_steps=5000),
    "loss, no steps nor total": lambda: live.loss_spec(EMPTY, log_y=True),
    "loss, floor NaN": lambda: live.loss_spec(noisy_loss(10), floor=float("nan")),
    "preview": lambda: live.preview_spec(np.ones((5, 2)), np.zeros((9, 2)), ([-1, 1], [-1, 1]), "Live samples"),
    "preview, none yet": lambda: live.preview_spec(None, np.zeros((9, 2)), ([-1, 1], [-1, 1]), ""),
    "quality": lambda: live.quality_spec(np.array([[10, 0.1, 0.0, 0.1]]), 100),  # a zero floor: inf -> null
    "quality, none yet": lambda: live.quality_spec(np.zeros((0, 4)), 100),
    "loss by t": lambda: live.loss_by_t_spec(np.arange(0, 100, 10), np.arange(10, 110, 10), np.linspace(1, 0.1, 10),
                                             np.full(10, np.nan), 50),
    "loss by t, none yet": lambda: live.loss_by_t_spec(np.arange(0, 100, 10), np.arange(10, 110, 10),
                                                       np.full(10, np.nan), None, 50),
    "loss by t, no bins": lambda: live.loss_by_t_spec(EMPTY, EMPTY, EMPTY, None, 50),
}


@pytest.mark.parametrize("name", SPECS)
def test_every_spec_is_json_without_nan_paints_at_once_and_describes_itself(name):
    spec = SPECS[name]()
    text = json.dumps(spec, allow_nan=False)  # Streamlit serialises with allow_nan=False too
    assert json.loads(text) == spec  # nothing but JSON types: tuples or numpy scalars would not round-trip
    assert spec["animation"] is False
    assert spec["aria"]["enabled"] and spec["aria"]["label"]["description"]
    assert all(isinstance(axis["type"], str) for axis in (spec["xAxis"], spec["yAxis"]))
    title = spec["title"]["text"]
    if "none yet" in name or "no steps" in name or "no bins" in name:
        assert title.endswith(": none yet"), title
    else:
        assert "none yet" not in title


def test_the_module_imports_neither_plotly_nor_streamlit():
    tree = ast.parse(Path(live.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "math", "numpy", "charts"}, imported
