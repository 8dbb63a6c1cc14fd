"""The canvas animation's payload (``charts.animation``): what the browser decodes is bit for bit the
float32 frames, shapes and labels line up, the optional layers are optional, the thinned points
are evenly spaced, the axes cover what is drawn, and bad input says what is wrong."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from charts import BASELINE_COLOR, DATA_COLOR, SAMPLE_COLOR, X0_COLOR, TimeAxis, class_color
from charts.animation import MAX_TRAILS, animation_payload, decode_points, evenly_spaced, reverse_payload
from diffusion.trajectory import Trajectory

K, N = 12, 50


def _run(seed: int = 0, k: int = K, n: int = N):
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(300, 2)) * 0.5 + 2.0
    frames = rng.normal(size=(k, n, 2)) * np.linspace(3, 1, k)[:, None, None]
    labels = [f"t = {t}" for t in np.linspace(999, 0, k).round().astype(int)]
    return frames, labels, data


def test_frames_round_trip_exactly_through_base64_float32():
    frames, labels, data = _run()
    frames[3, 7] = np.nan  # a diverged point travels as NaN (the canvas skips it)
    payload = animation_payload(frames, labels, data, predicted_x0=frames * 0.5)
    payload = json.loads(json.dumps(payload))  # JSON-able, and what the browser gets
    decoded = decode_points(payload["frames"])
    assert decoded.dtype == np.float32 and decoded.shape == (K, N, 2)
    np.testing.assert_array_equal(decoded, frames.astype(np.float32))  # NaN == NaN here
    np.testing.assert_array_equal(decode_points(payload["predicted_x0"]), (frames * 0.5).astype(np.float32))
    np.testing.assert_array_equal(decode_points(payload["data"]), data.astype(np.float32))
    # the browser's view: little-endian float32, C order (k, point, xy), 4 bytes a coordinate
    raw = base64.b64decode(payload["frames"]["b64"])
    assert len(raw) == K * N * 2 * 4
    assert np.frombuffer(raw, "<f4")[(5 * N + 9) * 2 + 1] == np.float32(frames[5, 9, 1])


def test_shapes_labels_colours_and_display():
    frames, labels, data = _run()
    payload = animation_payload(frames, labels, data, title="Reverse", trails=8, show_x0=True, frame_ms=16)
    assert (payload["num_frames"], payload["num_points"], payload["total_points"]) == (K, N, N)
    assert payload["labels"] == labels and payload["labels"][0] == "t = 999" and payload["labels"][-1] == "t = 0"
    assert payload["title"] == "Reverse"
    assert payload["display"] == {"trails": 8, "show_x0": True, "frame_ms": 16, "frame": 0}
    assert payload["colors"].items() >= {"sample": SAMPLE_COLOR, "data": DATA_COLOR, "x0": X0_COLOR,
                                         "baseline": BASELINE_COLOR}.items()
    assert animation_payload(frames, labels, data, start_at_end=True)["display"]["frame"] == K - 1


def test_baseline_and_predicted_x0_are_optional():
    frames, labels, data = _run()
    plain = animation_payload(frames, labels, data)
    assert plain["predicted_x0"] is None and plain["baseline"] is None
    baseline = _run(seed=1, n=30)[0]  # another run: the same frame times, fewer points
    both = animation_payload(frames, labels, data, predicted_x0=frames, baseline=baseline)
    np.testing.assert_array_equal(decode_points(both["baseline"]), baseline.astype(np.float32))
    assert decode_points(both["predicted_x0"]).shape == (K, N, 2)
    # the frames' digest tells the browser whether to start over: a baseline is part of it, a title not
    assert both["digest"] != plain["digest"]
    assert animation_payload(frames, labels, data, title="other", trails=3)["digest"] == plain["digest"]
    assert animation_payload(frames * 2, labels, data)["digest"] != plain["digest"]


def test_animated_keeps_evenly_spaced_points_in_every_layer():
    frames, labels, data = _run(n=101)
    baseline = _run(seed=2, n=101)[0]
    payload = animation_payload(frames, labels, data, predicted_x0=-frames, baseline=baseline, animated=11)
    shown = np.arange(0, 101, 10)  # 11 of 101, first and last included, every 10th
    np.testing.assert_array_equal(evenly_spaced(101, 11), shown)
    assert payload["num_points"] == 11 and payload["total_points"] == 101 and payload["animated"] == 11
    np.testing.assert_array_equal(decode_points(payload["frames"]), frames[:, shown].astype(np.float32))
    np.testing.assert_array_equal(decode_points(payload["predicted_x0"]), -frames[:, shown].astype(np.float32))
    np.testing.assert_array_equal(decode_points(payload["baseline"]), baseline[:, shown].astype(np.float32))
    # a baseline of another size is thinned to as many points, evenly too
    small = _run(seed=3, n=21)[0]
    thinned = decode_points(animation_payload(frames, labels, data, baseline=small, animated=11)["baseline"])
    np.testing.assert_array_equal(thinned, small[:, evenly_spaced(21, 11)].astype(np.float32))
    # more than there are: all of them
    assert animation_payload(frames, labels, data, animated=500)["num_points"] == 101


def test_axes_are_equal_and_cover_the_data_and_the_end_frames():
    frames, labels, data = _run()
    frames[0] += 5  # x_T far from the data
    payload = animation_payload(frames, labels, data, animated=3)  # ranges from all points, before thinning
    (x_low, x_high), (y_low, y_high) = payload["x_range"], payload["y_range"]
    assert x_high - x_low == pytest.approx(y_high - y_low)  # one scale for x and y
    drawn = np.concatenate([data, frames[0], frames[-1]])
    outside = ~((drawn[:, 0] >= x_low) & (drawn[:, 0] <= x_high) & (drawn[:, 1] >= y_low) & (drawn[:, 1] <= y_high))
    # axis_range covers the 0.5-99.5 percentiles in x and in y (padded): at most 0.5 % beyond each of 4 sides
    assert outside.sum() <= 0.02 * len(drawn)
    assert x_low < data[:, 0].min() and data[:, 0].max() < x_high  # the data's compact cloud, whole
    assert x_high > np.percentile(frames[0][:, 0], 90)  # and the far-off x_T


def test_reverse_payload_matches_the_trajectory():
    frames, _, data = _run()
    times = np.linspace(1000, 0, K).round()
    run = Trajectory(frames=frames, frame_times=times, predicted_x0=frames * 0.9)
    pinned = Trajectory(frames=frames + 1, frame_times=times, predicted_x0=frames)
    payload = reverse_payload(run, data, trails=2, baseline=pinned)
    assert payload["labels"][0] == "t = 1000" and payload["labels"][-1] == "t = 0"
    assert payload["predicted_x0"] is not None and payload["display"]["show_x0"] is False  # sent, shown on demand
    np.testing.assert_array_equal(decode_points(payload["baseline"]), (frames + 1).astype(np.float32))
    other_times = Trajectory(frames=frames, frame_times=times[::-1], predicted_x0=frames)
    assert reverse_payload(run, data, baseline=other_times)["baseline"] is None  # not the same frame times
    flow = reverse_payload(run, data, axis=TimeAxis(1000, continuous=True))
    assert flow["labels"][0] == "t = 1.000"


@pytest.mark.parametrize(("change", "message"), [
    ({"frames": np.zeros((K, N))}, r"frames must have shape \(frames, points, 2\), got \(12, 50\)"),
    ({"frames": np.zeros((K, N, 3))}, r"frames must have shape \(frames, points, 2\), got \(12, 50, 3\)"),
    ({"frames": np.zeros((0, N, 2))}, r"frames needs at least one frame"),
    ({"predicted_x0": np.zeros((K, N - 1, 2))}, r"predicted_x0 must match the frames' shape: expected \(12, 50, 2\), got \(12, 49, 2\)"),
    ({"baseline": np.zeros((K - 1, 7, 2))}, r"baseline must match the frames' number of frames \(12\)"),
    ({"data": np.zeros((5, 3))}, r"data must have shape \(points, 2\), got \(5, 3\)"),
    ({"labels": ["t = 0"]}, r"labels must name each of the 12 frames, got 1 labels"),
    ({"trails": MAX_TRAILS + 1}, r"trails must be in 0..32, got 33"),
    ({"frame_ms": 0}, r"frame_ms must be a positive number of milliseconds, got 0"),
    ({"animated": 0}, r"animated must be None \(all points\) or at least 1, got 0"),
])
def test_bad_input_is_a_clear_value_error(change, message):
    frames, labels, data = _run()
    arguments = {"frames": frames, "labels": labels, "data": data} | change
    with pytest.raises(ValueError, match=message):
        animation_payload(arguments.pop("frames"), arguments.pop("labels"), arguments.pop("data"), **arguments)


def test_a_conditional_models_points_carry_their_classes_through_thinning():
    frames = np.random.default_rng(0).normal(size=(3, 10, 2)).astype(np.float32)
    labels = ["t = 2", "t = 1", "t = 0"]
    classes = np.arange(10) % 3
    payload = animation_payload(frames, labels, frames[-1], classes=classes, animated=4)
    shown = evenly_spaced(10, 4)
    assert payload["classes"] == classes[shown].tolist()
    assert payload["class_colors"] == [class_color(k) for k in range(3)]
    assert payload["digest"] != animation_payload(frames, labels, frames[-1], animated=4)["digest"]
    assert animation_payload(frames, labels, frames[-1])["classes"] is None
    with pytest.raises(ValueError, match=r"classes must give one class per point \(10\), got shape \(9,\)"):
        animation_payload(frames, labels, frames[-1], classes=classes[:9])
