"""The reverse animation as data for a canvas in the browser (``ui/animation.py`` draws it).

Plotly's SVG animation repaints every trace through the DOM and played 60 frames x 1000 points at
about 17 fps here; the same frames sent once to a 2-D canvas painted with ``requestAnimationFrame``
played at 60 fps (measured in headless Chromium). This module builds what that canvas needs: a
JSON-able dict, numpy only (no plotly, no streamlit of its own; the colours come from ``charts``).

Arrays travel as base64 of little-endian float32, C order, with their shape (``encode_points``);
the browser reads them with ``new Float32Array(bytes.buffer)``. ~5.3 bytes of JSON a coordinate.
"""

from __future__ import annotations

import base64
import hashlib

import numpy as np

from charts import BASELINE_COLOR, DATA_COLOR, PLAY_MS, SAMPLE_COLOR, X0_COLOR, TimeAxis, axis_range, class_color
from diffusion.trajectory import Trajectory

MAX_TRAILS = 32  # the canvas's trails control goes 0..MAX_TRAILS
TRAIL_COLOR = "#444444"
REVERSE_TITLE = "Reverse process: noise x_T → samples x₀"
PAYLOAD_VERSION = 1


def encode_points(points: np.ndarray) -> dict:
    """{"shape": [...], "b64": base64 of little-endian float32, C order}. NaN stays NaN (the canvas
    skips non-finite points)."""
    array = np.ascontiguousarray(points, dtype="<f4")
    return {"shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode("ascii")}


def decode_points(encoded: dict) -> np.ndarray:
    """The inverse of ``encode_points`` (what the browser does, for tests and notebooks)."""
    raw = base64.b64decode(encoded["b64"])
    return np.frombuffer(raw, dtype="<f4").reshape(encoded["shape"])


def _frames_of(name: str, value, frames_shape: tuple[int, ...] | None = None, *, same_points: bool = True) -> np.ndarray:
    """``value`` as float32 (K, N, 2), or a ValueError that names the argument and its shape."""
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != 3 or array.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (frames, points, 2), got {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name} needs at least one frame of at least one point, got {array.shape}")
    if frames_shape is not None:
        expected = frames_shape if same_points else (frames_shape[0], array.shape[1], 2)
        if array.shape != expected:
            what = "frames' shape" if same_points else f"frames' number of frames ({frames_shape[0]})"
            raise ValueError(f"{name} must match the {what}: expected {expected}, got {array.shape}")
    return array


def evenly_spaced(total: int, count: int) -> np.ndarray:
    """``count`` indices spread evenly over 0..total-1, first and last included (the choice of
    ``charts.animation_figure``: the same points move in every view)."""
    return np.linspace(0, total - 1, count).round().astype(int)


def animation_payload(
    frames: np.ndarray,
    labels: list[str],
    data: np.ndarray,
    *,
    predicted_x0: np.ndarray | None = None,
    baseline: np.ndarray | None = None,
    title: str = REVERSE_TITLE,
    trails: int = 0,
    show_x0: bool = False,
    frame_ms: int = PLAY_MS,
    animated: int | None = None,
    start_at_end: bool = False,
    marker_size: int = 4,
    classes: np.ndarray | None = None,
) -> dict:
    """What the canvas animation draws, as a JSON-able dict.

    frames: (K, N, 2) x_t at each frame, in order of play (x_T first for the reverse process);
    labels: K names, e.g. "t = 999"; data: (D, 2) the faint data points; predicted_x0: (K, N, 2)
    x̂_0 at each frame; baseline: (K, M, 2) a pinned run's frames at the same frame times.

    Display choices (the browser's controls start there and change them without the server):
    ``trails`` points (evenly chosen) draw their whole path so far, 0..MAX_TRAILS; ``show_x0``;
    ``frame_ms`` per frame; ``animated``: how many points move (evenly spaced, the same ones in
    x_t and x̂_0, and in a baseline of as many points; a baseline of another size keeps as many,
    evenly spaced; None, all), the others are not sent. ``start_at_end``: show the last frame
    first. ``classes``: (N,) each point's class (a conditional model's samples), drawn in its
    class's colour (``charts.class_color``) instead of the one sample colour. Axes are fixed, equal in x and y, covering the data, the first and the last frame
    (``charts.axis_range``, before thinning)."""
    frames = _frames_of("frames", frames)
    num_frames = frames.shape[0]
    x0 = None if predicted_x0 is None else _frames_of("predicted_x0", predicted_x0, frames.shape)
    base = None if baseline is None else _frames_of("baseline", baseline, frames.shape, same_points=False)
    data = np.asarray(data, dtype=np.float32)
    if data.ndim != 2 or data.shape[1] != 2:
        raise ValueError(f"data must have shape (points, 2), got {data.shape}")
    labels = [str(label) for label in labels]
    if len(labels) != num_frames:
        raise ValueError(f"labels must name each of the {num_frames} frames, got {len(labels)} labels")
    if not 0 <= int(trails) <= MAX_TRAILS:
        raise ValueError(f"trails must be in 0..{MAX_TRAILS}, got {trails}")
    if int(frame_ms) < 1:
        raise ValueError(f"frame_ms must be a positive number of milliseconds, got {frame_ms}")
    if animated is not None and int(animated) < 1:
        raise ValueError(f"animated must be None (all points) or at least 1, got {animated}")
    if classes is not None:
        classes = np.asarray(classes, dtype=np.int64)
        if classes.shape != (frames.shape[1],):
            raise ValueError(f"classes must give one class per point ({frames.shape[1]}), got shape {classes.shape}")
        palette = [class_color(k) for k in range(int(classes.max()) + 1)]  # every class drawn, before thinning

    x_range, y_range = axis_range(data, frames[0], frames[-1])  # before thinning: the same axes as every view
    total = frames.shape[1]
    if animated is not None and int(animated) < total:
        shown = evenly_spaced(total, int(animated))
        frames = frames[:, shown]  # (K, n, 2)
        x0 = None if x0 is None else x0[:, shown]
        classes = None if classes is None else classes[shown]
        if base is not None:  # the same points when it has as many (a run with the same seed), else as many, evenly
            base = base[:, shown] if base.shape[1] == total else base[:, evenly_spaced(base.shape[1], min(len(shown), base.shape[1]))]

    encoded = {"frames": encode_points(frames), "data": encode_points(data),
               "predicted_x0": None if x0 is None else encode_points(x0),
               "baseline": None if base is None else encode_points(base)}
    digest = hashlib.blake2b(digest_size=12)
    for name in ("frames", "predicted_x0", "baseline", "data"):
        digest.update(name.encode() + (encoded[name]["b64"].encode() if encoded[name] else b"-"))
    digest.update("\x1f".join(labels).encode())
    if classes is not None:
        digest.update(classes.tobytes())
    return {
        "version": PAYLOAD_VERSION,
        "title": str(title),
        "labels": labels,
        "num_frames": num_frames,
        "num_points": int(frames.shape[1]),
        "total_points": int(total),
        **encoded,
        "digest": digest.hexdigest(),  # the browser restarts playback only when this changes
        "x_range": [float(v) for v in x_range],
        "y_range": [float(v) for v in y_range],
        "colors": {"sample": SAMPLE_COLOR, "data": DATA_COLOR, "x0": X0_COLOR, "baseline": BASELINE_COLOR,
                   "trail": TRAIL_COLOR},
        "marker_size": int(marker_size),
        "classes": None if classes is None else classes.tolist(),
        "class_colors": None if classes is None else palette,
        "display": {"trails": int(trails), "show_x0": bool(show_x0), "frame_ms": int(frame_ms),
                    "frame": num_frames - 1 if start_at_end else 0},
        "animated": None if animated is None else int(animated),
    }


def reverse_payload(trajectory: Trajectory, data: np.ndarray, *, trails: int = 0, show_x0: bool = False,
                    frame_ms: int = PLAY_MS, animated: int | None = None, baseline: Trajectory | None = None,
                    axis: TimeAxis | None = None, title: str = "Reverse process: noise x_T → samples x₀") -> dict:
    """The reverse animation of ``charts.reverse_figure``, for the canvas: x̂_0 is always sent (the
    browser's toggle shows it), a baseline only if its frame times are the trajectory's. It opens
    on the samples (the last frame); ▶ plays from the noise."""
    axis = axis or TimeAxis(1000)
    labels = [axis.label(axis.frame(t)) for t in trajectory.frame_times]
    same_times = baseline is not None and np.array_equal(baseline.frame_times, trajectory.frame_times)
    return animation_payload(trajectory.frames, labels, data, title=title, start_at_end=True,
                             predicted_x0=trajectory.predicted_x0, classes=trajectory.labels,
                             baseline=baseline.frames if same_times else None, trails=trails, show_x0=show_x0,
                             frame_ms=frame_ms, animated=animated)
