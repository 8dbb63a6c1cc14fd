"""A drawing as a point set: strokes (polylines) and dots, given as arrays, to 2-D points.

Whatever drew them (the page's canvas, ``ui/canvas.py``; a notebook; a plotted curve), strokes
come in as (n, 2) arrays of vertices and dots as (k, 2) centres, in drawing units: the page's are
centred with y up and half the canvas's longer side = 1. Like an uploaded file, the points are
standardised for training and outputs go back to drawing units (``points_in_user_units``).

Points are laid out evenly along the drawing's total stroke length: with ``count`` points the
k-th sits at arc length (k + 1/2) · L / count, so each stroke gets a share proportional to its
length and consecutive points on a stroke are L / count apart. A dot counts as a stroke of length
``DOT_LENGTH``: its share of points all sit at its centre, and the jitter spreads them into a
small blob; so does a stroke shorter than ``resolution`` (a click without moving). Jitter is
Gaussian, std ``jitter`` per axis, each coordinate clipped to ±3 · jitter, so every point is
within 3 · jitter of the drawing on each axis (3√2 · jitter in distance).

Pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .config import MAX_POINTS

MIN_COUNT = 2  # fewer points than this is no distribution
DOT_LENGTH = 0.25  # a dot weighs as much as a stroke this long (drawing units)
JITTER_CLIP = 3.0  # jitter is clipped at this many standard deviations
RESOLUTION = 0.01  # default: a stroke shorter than this is a dot, a drawing narrower than it one spot


class DrawingError(ValueError):
    """A drawing that can't become a point set; the message says what is wrong and what to do."""


class EmptyDrawingError(DrawingError):
    """Nothing is drawn yet: the page shows this as a hint rather than an error."""


def _check(count: int, jitter: float, resolution: float) -> None:
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or not MIN_COUNT <= count <= MAX_POINTS:
        raise DrawingError(f"the number of points must be a whole number from {MIN_COUNT} to {MAX_POINTS:,}; got {count!r}")
    if not (isinstance(jitter, int | float | np.floating) and math.isfinite(jitter) and jitter >= 0):
        raise DrawingError(f"the jitter must be a finite number >= 0 (drawing units); got {jitter!r}")
    if not (isinstance(resolution, int | float | np.floating) and math.isfinite(resolution) and resolution > 0):
        raise DrawingError(f"the resolution must be a finite number > 0 (drawing units); got {resolution!r}")


def _vertices(array: np.ndarray, what: str) -> np.ndarray:
    """``array`` as (n, 2) float64 with n >= 1 finite rows, or a DrawingError naming ``what``."""
    vertices = np.asarray(array, dtype=np.float64)
    if vertices.ndim != 2 or vertices.shape[1] != 2 or not len(vertices) or not np.isfinite(vertices).all():
        raise DrawingError(f"{what} must be an (n, 2) array of finite numbers with n >= 1; got shape {vertices.shape}")
    return vertices


def points_from_strokes(strokes: Sequence[np.ndarray], dots: np.ndarray | Sequence = (), *, count: int,
                        jitter: float, seed: int, resolution: float = RESOLUTION) -> np.ndarray:  # (count, 2) float64
    """``labelled_points_from_strokes`` without the labels."""
    return labelled_points_from_strokes(strokes, dots, count=count, jitter=jitter, seed=seed, resolution=resolution)[0]


def labelled_points_from_strokes(
    strokes: Sequence[np.ndarray], dots: np.ndarray | Sequence = (), *, count: int, jitter: float, seed: int,
    resolution: float = RESOLUTION, stroke_labels: Sequence[int] | None = None, dot_labels: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # (count, 2) float64, (count,) int64
    """``count`` points spaced evenly along ``strokes`` and on ``dots``, jittered, in drawing units.

    ``strokes``: polylines, each (n, 2), its vertices in drawing order; ``dots``: (k, 2) centres.
    Each point also gets the label of the stroke or dot it lies on (``stroke_labels``, ``dot_labels``:
    one per stroke and per dot, e.g. the colour it was drawn in; default all 0).
    A stroke shorter than ``resolution`` counts as a dot at its mean; a drawing narrower than
    ``resolution`` both ways has no spread and is refused. The jitter is drawn from
    ``np.random.default_rng(seed)``: the same strokes, dots, count, jitter and seed give the same
    bits. Raises ``DrawingError`` (``EmptyDrawingError`` when nothing is drawn) with what to do."""
    _check(count, jitter, resolution)
    lines = [_vertices(line, "a stroke") for line in strokes]
    centres = list(_vertices(dots, "the dots")) if len(dots) else []
    line_labels = [0] * len(lines) if stroke_labels is None else [int(k) for k in stroke_labels]
    centre_labels = [0] * len(centres) if dot_labels is None else [int(k) for k in dot_labels]
    if len(line_labels) != len(lines) or len(centre_labels) != len(centres):
        raise DrawingError(f"labels must give one class per stroke ({len(lines)}) and per dot ({len(centres)}); "
                           f"got {len(line_labels)} and {len(centre_labels)}")
    if not lines and not centres:
        raise EmptyDrawingError("the drawing is empty: draw a stroke or a few points")
    kept, kept_labels = [], []
    for line, label in zip(lines, line_labels, strict=True):  # a stroke of (almost) no length is a dot
        if np.linalg.norm(np.diff(line, axis=0), axis=1).sum() < resolution:
            centres.append(line.mean(0))
            centre_labels.append(label)
        else:
            kept.append(line)
            kept_labels.append(label)
    every_vertex = np.concatenate([*kept, *(c[None] for c in centres)])
    if np.ptp(every_vertex, axis=0).max() < resolution:
        if not lines and len(centres) == 1:
            what = "the drawing is a single point"
        elif len(lines) == 1 and len(centres) == 1:
            what = "the stroke has zero length (a click without moving)"
        else:
            what = "everything drawn is at one spot"
        raise DrawingError(f"{what}, so the data would have no spread; draw a longer stroke or add points elsewhere")

    # Segments; a dot is a segment from its centre to itself, weighing DOT_LENGTH.
    dot_array = np.array(centres).reshape(-1, 2)
    start = np.concatenate([*(line[:-1] for line in kept), dot_array])  # (S, 2)
    end = np.concatenate([*(line[1:] for line in kept), dot_array])  # (S, 2)
    weight = np.linalg.norm(end - start, axis=1)  # (S,)
    weight[len(weight) - len(dot_array):] = DOT_LENGTH
    owner = np.array([*(k for line, k in zip(kept, kept_labels, strict=True) for _ in range(len(line) - 1)),
                      *centre_labels], dtype=np.int64)  # (S,) the label of each segment
    cumulative = np.concatenate([[0.0], np.cumsum(weight)])  # (S + 1,)
    s = (np.arange(count) + 0.5) * cumulative[-1] / count  # arc-length positions, (count,)
    segment = np.clip(np.searchsorted(cumulative, s, side="right") - 1, 0, len(weight) - 1)
    along = np.divide(s - cumulative[segment], weight[segment], out=np.zeros(count), where=weight[segment] > 0)
    points = start[segment] + along[:, None] * (end[segment] - start[segment])  # (count, 2)

    rng = np.random.default_rng(seed)
    noise = np.clip(rng.standard_normal((count, 2)), -JITTER_CLIP, JITTER_CLIP)
    return points + float(jitter) * noise, owner[segment]


def to_csv(points: np.ndarray, labels: np.ndarray | None = None, names: Sequence[str] = ()) -> str:
    """The points as CSV text with a header row x,y, each number written exactly (17 significant
    digits): ``diffusion.datasets.load_points`` reads back the very same float64 values. With
    ``labels`` (indices into ``names``) a third column, label, names each point's class."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if labels is None:
        return "x,y\n" + "".join(f"{x:.17g},{y:.17g}\n" for x, y in points)
    return "x,y,label\n" + "".join(f"{x:.17g},{y:.17g},{names[k]}\n" for (x, y), k in zip(points, labels, strict=True))
