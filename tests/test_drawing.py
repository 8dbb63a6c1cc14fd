"""A drawing to points. The core (``diffusion.drawing``): strokes and dots given as arrays laid out
by arc length, jitter, determinism, refusals, CSV. The page's reader of the canvas's fabric.js
JSON (``ui.canvas``): where strokes, curves, moved objects and dots land, the starters."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion.config import MAX_POINTS
from diffusion.datasets import load_points, points_in_user_units
from diffusion.drawing import (
    DOT_LENGTH,
    JITTER_CLIP,
    DrawingError,
    EmptyDrawingError,
    labelled_points_from_strokes,
    points_from_strokes,
    to_csv,
)
from ui.canvas import (
    CANVAS_SIZE,
    PEN_COLORS,
    STARTERS,
    labelled_points_from_canvas,
    points_from_canvas,
    strokes_from_canvas,
)

SIZE = (200, 200)  # 1 drawing unit = 100 px

# --- the core: strokes and dots as arrays ------------------------------------------------------------

LINE = np.array([[-0.5, 0.5], [0.5, 0.5]])  # a horizontal stroke of length 1


def test_points_on_a_straight_stroke_are_evenly_spaced_at_length_over_count():
    points = points_from_strokes([LINE], count=50, jitter=0.0, seed=0)
    assert points.shape == (50, 2)
    np.testing.assert_allclose(points[:, 1], 0.5, atol=1e-12)
    np.testing.assert_allclose(np.diff(points[:, 0]), 1.0 / 50, rtol=1e-9)
    np.testing.assert_allclose([points[0, 0], points[-1, 0]], [-0.5 + 0.01, 0.5 - 0.01], atol=1e-12)


def test_a_polyline_is_followed_vertex_to_vertex():
    corner = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])  # length 2, turning at (1, 0)
    points = points_from_strokes([corner], count=4, jitter=0.0, seed=0)
    np.testing.assert_allclose(points, [[0.25, 0.0], [0.75, 0.0], [1.0, 0.25], [1.0, 0.75]], atol=1e-12)


def test_each_stroke_gets_points_in_proportion_to_its_length():
    long, short = np.array([[-1.0, 0.8], [0.5, 0.8]]), np.array([[-1.0, -0.8], [-0.5, -0.8]])  # 1.5 and 0.5
    points = points_from_strokes([long, short], count=400, jitter=0.0, seed=0)
    assert (points[:, 1] > 0).sum() == 300 and (points[:, 1] < 0).sum() == 100


@pytest.mark.parametrize("jitter", [0.01, 0.05])
def test_jitter_keeps_every_point_within_three_jitters_of_the_stroke(jitter):
    clean = points_from_strokes([LINE], count=5000, jitter=0.0, seed=3)
    noisy = points_from_strokes([LINE], count=5000, jitter=jitter, seed=3)
    offset = noisy - clean
    assert np.abs(offset).max() <= JITTER_CLIP * jitter + 1e-12
    assert np.abs(offset[:, 1] / jitter).max() > 2.5  # the clip is reached, not a tiny noise
    # Gaussian clipped at 3 std: the std shrinks by under 1.5 %; 5000 draws give ~1 % error per axis
    np.testing.assert_allclose(offset.std(axis=0), jitter, rtol=0.05)


def test_same_seed_same_bits_other_seed_other_points():
    strokes, dots = strokes_from_canvas(STARTERS["heart"])
    a = points_from_strokes(strokes, dots, count=1000, jitter=0.02, seed=7)
    b = points_from_strokes(strokes, dots, count=1000, jitter=0.02, seed=7)
    c = points_from_strokes(strokes, dots, count=1000, jitter=0.02, seed=8)
    assert a.tobytes() == b.tobytes()
    assert not np.allclose(a, c)


@pytest.mark.parametrize("count", [2, 3, 999, 1000, 5000])
def test_count_is_the_number_of_points(count):
    assert points_from_canvas(STARTERS["smiley"], count=count, jitter=0.01, seed=0).shape == (count, 2)


def test_dots_become_equal_blobs_at_their_centres():
    points = points_from_strokes([], [[-0.5, 0.5], [0.5, -0.5]], count=400, jitter=0.02, seed=0)
    first = np.linalg.norm(points - [-0.5, 0.5], axis=1) <= JITTER_CLIP * 0.02 * np.sqrt(2)
    second = np.linalg.norm(points - [0.5, -0.5], axis=1) <= JITTER_CLIP * 0.02 * np.sqrt(2)
    assert first.sum() == 200 and second.sum() == 200
    np.testing.assert_allclose(points[first].mean(0), [-0.5, 0.5], atol=0.005)


def test_a_dot_weighs_as_much_as_a_stroke_of_dot_length():
    stroke = np.array([[-1.0, 0.8], [-1.0 + 3 * DOT_LENGTH, 0.8]])  # three dots' worth
    points = points_from_strokes([stroke], [[0.0, -0.5]], count=400, jitter=0.0, seed=0)
    assert (points[:, 1] < 0).sum() == 100


def test_a_stroke_shorter_than_the_resolution_is_a_dot_at_its_mean():
    tiny = np.array([[0.0, 0.0], [0.004, 0.0]])
    points = points_from_strokes([tiny], [[0.5, 0.0]], count=100, jitter=0.0, seed=0, resolution=0.01)
    assert sorted({tuple(np.round(p, 9)) for p in points}) == [(0.002, 0.0), (0.5, 0.0)]
    longer = points_from_strokes([tiny], [[0.5, 0.0]], count=100, jitter=0.0, seed=0, resolution=0.001)
    assert len({tuple(p) for p in longer}) > 2  # above the resolution it is a stroke


def test_nothing_given_is_an_empty_drawing():
    for strokes, dots in (([], ()), ([], np.zeros((0, 2)))):
        with pytest.raises(EmptyDrawingError, match="the drawing is empty: draw a stroke or a few points"):
            points_from_strokes(strokes, dots, count=100, jitter=0.01, seed=0)


@pytest.mark.parametrize(
    "strokes, dots, what",
    [
        ([], [[0.3, 0.3]], "the drawing is a single point"),
        ([np.array([[0.3, 0.3], [0.3, 0.3]])], (), r"the stroke has zero length \(a click without moving\)"),
        ([], [[0.3, 0.3], [0.302, 0.3]], "everything drawn is at one spot"),
        ([np.array([[0.3, 0.3], [0.3, 0.3]])], [[0.3, 0.3]], "everything drawn is at one spot"),
    ],
    ids=["one-dot", "zero-length-stroke", "two-dots-at-one-spot", "stroke-and-dot-at-one-spot"],
)
def test_a_drawing_without_spread_is_refused_saying_why(strokes, dots, what):
    with pytest.raises(DrawingError, match=f"{what}, so the data would have no spread; draw a longer stroke"):
        points_from_strokes(strokes, dots, count=100, jitter=0.01, seed=0)


@pytest.mark.parametrize("count", [0, 1, MAX_POINTS + 1, 2.5, True])
def test_count_outside_the_range_is_refused(count):
    with pytest.raises(DrawingError, match=f"the number of points must be a whole number from 2 to {MAX_POINTS:,}"):
        points_from_strokes([LINE], count=count, jitter=0.01, seed=0)


@pytest.mark.parametrize("jitter", [-0.1, float("nan"), float("inf")])
def test_bad_jitter_is_refused(jitter):
    with pytest.raises(DrawingError, match="the jitter must be a finite number >= 0"):
        points_from_strokes([LINE], count=10, jitter=jitter, seed=0)


@pytest.mark.parametrize("resolution", [0, -0.01, float("nan")])
def test_bad_resolution_is_refused(resolution):
    with pytest.raises(DrawingError, match="the resolution must be a finite number > 0"):
        points_from_strokes([LINE], count=10, jitter=0.0, seed=0, resolution=resolution)


@pytest.mark.parametrize(
    "strokes, dots, what",
    [
        ([np.array([0.0, 1.0])], (), "a stroke"),
        ([np.zeros((0, 2))], (), "a stroke"),
        ([np.array([[0.0, 0.0], [np.nan, 1.0]])], (), "a stroke"),
        ([LINE], [[0.0, 0.0, 0.0]], "the dots"),
    ],
    ids=["flat", "no-vertices", "nan", "three-columns"],
)
def test_arrays_that_are_not_n_by_2_finite_are_refused(strokes, dots, what):
    with pytest.raises(DrawingError, match=f"{what} must be an \\(n, 2\\) array of finite numbers"):
        points_from_strokes(strokes, dots, count=10, jitter=0.0, seed=0)


def test_csv_round_trip_through_load_points_gives_the_same_data():
    points = points_from_canvas(STARTERS["letter A"], count=777, jitter=0.02, seed=1)
    text = to_csv(points)
    assert text.splitlines()[0] == "x,y" and len(text.splitlines()) == 778
    np.testing.assert_array_equal(load_points(text, standardize=False).points.array, points.astype(np.float32))
    loaded = load_points(text.encode())
    drawn = points_in_user_units(points)
    assert loaded.points == drawn  # same digest, offset and scale: the same cached run
    np.testing.assert_allclose(loaded.points.to_user(loaded.points.array), points, atol=1e-6)


# --- the page's canvas: fabric.js JSON (ui/canvas.py) --------------------------------------------------


def _path(*commands, origin="center", left=None, top=None, stroke_width=3) -> dict:
    """A 'Path' object as the canvas's freedraw writes it (fabric 7: origin at the centre of the
    bounding box, stroke included), placed where its commands say."""
    xs = [v for c in commands for v in c[1::2]]
    ys = [v for c in commands for v in c[2::2]]
    width, height = max(xs) - min(xs), max(ys) - min(ys)
    if origin == "center":
        left, top = (min(xs) + max(xs)) / 2, (min(ys) + max(ys)) / 2
    return {"type": "Path", "originX": origin, "originY": origin, "left": left, "top": top, "width": width,
            "height": height, "stroke": "black", "strokeWidth": stroke_width, "scaleX": 1, "scaleY": 1,
            "angle": 0, "path": [list(c) for c in commands]}


def _dot(x: float, y: float, radius: float = 3, stroke_width: float = 3) -> dict:
    """A 'Circle' as the canvas's point mode writes it: origin left/centre, so its centre is at
    left + radius + strokeWidth / 2."""
    return {"type": "Circle", "originX": "left", "originY": "center", "left": x - radius - stroke_width / 2, "top": y,
            "radius": radius, "width": 2 * radius, "height": 2 * radius, "stroke": "black",
            "strokeWidth": stroke_width, "scaleX": 1, "scaleY": 1, "angle": 0}


def _drawing(*objects) -> dict:
    return {"version": "7.4.0", "objects": list(objects)}


# a horizontal stroke from (-0.5, 0.5) to (0.5, 0.5) in drawing units: length 1
STRAIGHT = _drawing(_path(("M", 50, 50), ("L", 150, 50)))


def test_canvas_pixels_become_drawing_units_with_y_up():
    strokes, dots = strokes_from_canvas(_drawing(_path(("M", 50, 50), ("L", 150, 50)), _dot(150, 150)), SIZE)
    assert len(strokes) == 1
    np.testing.assert_allclose(strokes[0], [[-0.5, 0.5], [0.5, 0.5]], atol=1e-12)  # canvas y = 50: above the centre
    np.testing.assert_allclose(dots, [[0.5, -0.5]], atol=1e-12)


def test_a_straight_stroke_on_the_canvas_gives_evenly_spaced_points():
    points = points_from_canvas(STRAIGHT, count=50, jitter=0.0, seed=0, size=SIZE)
    np.testing.assert_allclose(points, points_from_strokes([LINE], count=50, jitter=0.0, seed=0), atol=1e-12)


def test_a_curved_stroke_is_sampled_by_arc_length():
    # a quadratic arc: evenly spaced in arc length means equal chords between neighbours
    drawing = _drawing(_path(("M", 20, 150), ("Q", 100, 0, 180, 150)))
    points = points_from_canvas(drawing, count=200, jitter=0.0, seed=0, size=SIZE)
    chords = np.linalg.norm(np.diff(points, axis=0), axis=1)
    assert chords.std() / chords.mean() < 1e-3, (chords.min(), chords.max())


def test_a_moved_stroke_is_placed_where_it_was_moved():
    # fabric keeps the commands as drawn; left/top (here the bounding box's top-left corner, stroke
    # included) say where the stroke is now: 30 px right and 20 px down of where it was drawn.
    moved = _path(("M", 50, 50), ("L", 150, 50), origin="left", left=50 - 1.5 + 30, top=50 - 1.5 + 20)
    points = points_from_canvas(_drawing(moved), count=10, jitter=0.0, seed=0, size=SIZE)
    np.testing.assert_allclose(points[:, 1], 0.3, atol=1e-9)
    np.testing.assert_allclose([points[:, 0].min(), points[:, 0].max()], [-0.2 + 0.05, 0.8 - 0.05], atol=1e-9)


def test_point_mode_dots_become_blobs_at_their_centres():
    points = points_from_canvas(_drawing(_dot(50, 50), _dot(150, 150)), count=400, jitter=0.02, seed=0, size=SIZE)
    first = np.linalg.norm(points - [-0.5, 0.5], axis=1) <= JITTER_CLIP * 0.02 * np.sqrt(2)
    assert first.sum() == 200
    np.testing.assert_allclose(points[first].mean(0), [-0.5, 0.5], atol=0.005)


def test_a_click_in_stroke_mode_is_a_dot():
    # fabric writes a click without moving as a path of ~0 length (its two points 1/500 of the width apart)
    click = _path(("M", 99.997, 100), ("L", 100.003, 100))
    points = points_from_canvas(_drawing(click, _dot(150, 100)), count=100, jitter=0.0, seed=0, size=SIZE)
    assert sorted({tuple(np.round(p, 6)) for p in points}) == [(0.0, 0.0), (0.5, 0.0)]


def test_a_non_square_canvas_keeps_the_aspect_ratio():
    # 400 x 200: half the longer side (200 px) is one unit; the right edge is x = 1, the top y = 0.5
    drawing = _drawing(_path(("M", 200, 0), ("L", 400, 0)))
    points = points_from_canvas(drawing, count=4, jitter=0.0, seed=0, size=(400, 200))
    np.testing.assert_allclose(points, [[0.125, 0.5], [0.375, 0.5], [0.625, 0.5], [0.875, 0.5]], atol=1e-12)


@pytest.mark.parametrize("name", list(STARTERS))
def test_starters_convert_and_fill_the_canvas(name):
    drawing = STARTERS[name]
    assert all(obj["type"] == "Path" for obj in drawing["objects"])  # loads into the canvas as drawn
    points = points_from_canvas(drawing, count=2000, jitter=0.0, seed=0, size=CANVAS_SIZE)
    assert np.abs(points).max() < 0.9
    assert np.ptp(points, axis=0).min() > 1.0  # spread over most of the canvas, both ways
    points_in_user_units(points)  # usable as data


def test_an_empty_canvas_is_refused_with_what_to_do_there():
    for empty in (None, {}, {"objects": []}, _drawing({"type": "Path", "path": []})):
        with pytest.raises(EmptyDrawingError, match="the drawing is empty: draw a stroke or a few points on the canvas, "
                                                    "or load a starter"):
            points_from_canvas(empty, count=100, jitter=0.01, seed=0)


def test_a_zero_length_stroke_on_the_canvas_is_refused_as_having_no_spread():
    with pytest.raises(DrawingError, match=r"the stroke has zero length \(a click without moving\), so the data "
                                           "would have no spread; draw a longer stroke"):
        points_from_canvas(_drawing(_path(("M", 80, 80), ("L", 80, 80))), count=100, jitter=0.01, seed=0)


def test_shapes_it_cannot_read_are_named():
    rect = {"type": "Rect", "left": 10, "top": 10, "width": 50, "height": 50}
    with pytest.raises(DrawingError, match="holds a 'Rect' shape, which can't be turned into points"):
        points_from_canvas(_drawing(rect, _dot(80, 80)), count=10, jitter=0.01, seed=0)


@pytest.mark.parametrize("size", [(0, 200), (200,), (-1, 5)])
def test_a_bad_canvas_size_is_refused(size):
    with pytest.raises(DrawingError, match="the canvas size must be two positive numbers"):
        points_from_canvas(STRAIGHT, count=10, jitter=0.0, seed=0, size=size)



# --- drawing in several colours: a class per pen (issue 25) ------------------------------------------


def test_each_point_takes_the_label_of_the_stroke_it_lies_on():
    long = np.array([[0.0, -0.5], [3.0, -0.5]])  # length 3 below LINE (length 1)
    points, labels = labelled_points_from_strokes([LINE, long], [[0.0, 0.9]], count=1000, jitter=0.0, seed=0,
                                                  stroke_labels=[0, 1], dot_labels=[2])
    assert labels.dtype == np.int64 and set(labels.tolist()) == {0, 1, 2}
    np.testing.assert_allclose(points[labels == 0, 1], 0.5)
    np.testing.assert_allclose(points[labels == 1, 1], -0.5)
    np.testing.assert_allclose(points[labels == 2], [[0.0, 0.9]] * int((labels == 2).sum()))
    # shares by length: 1, 3 and a dot's DOT_LENGTH, of 1000 points (each within one point of its share)
    total = 4.0 + DOT_LENGTH
    assert [abs(int((labels == k).sum()) - 1000 * w / total) <= 1 for k, w in enumerate((1.0, 3.0, DOT_LENGTH))] == [True] * 3
    assert np.array_equal(points, points_from_strokes([LINE, long], [[0.0, 0.9]], count=1000, jitter=0.0, seed=0))


def test_a_short_stroke_keeps_its_label_as_a_dot():
    click = np.array([[0.2, 0.2], [0.2, 0.2 + 1e-4]])
    _, labels = labelled_points_from_strokes([LINE, click], count=400, jitter=0.01, seed=0, stroke_labels=[3, 5])
    assert set(labels.tolist()) == {3, 5}


def test_labels_must_match_the_strokes_and_dots():
    with pytest.raises(DrawingError, match=r"one class per stroke \(1\) and per dot \(0\); got 2 and 0"):
        labelled_points_from_strokes([LINE], count=10, jitter=0.0, seed=0, stroke_labels=[0, 1])


def _colored(obj: dict, color: str, key: str = "stroke") -> dict:
    return {**obj, key: color}


def test_a_drawing_in_two_pens_has_a_class_per_pen_and_one_pen_none():
    two = _drawing(_colored(_path(("M", 50, 50), ("L", 150, 50)), PEN_COLORS["red"]),
                   _colored(_path(("M", 50, 150), ("L", 150, 150)), PEN_COLORS["blue"]),
                   _colored(_dot(100, 100), PEN_COLORS["blue"], key="fill"))
    points, labels, classes = labelled_points_from_canvas(two, count=500, jitter=0.0, seed=0, size=SIZE)
    assert classes == ("blue", "red")  # in text order
    assert (points[labels == 1, 1] > 0.4).all() and (points[labels == 0, 1] < 0.1).all()  # red above, blue below
    one = _drawing(_path(("M", 50, 50), ("L", 150, 50)), _path(("M", 50, 150), ("L", 150, 150)))
    points, labels, classes = labelled_points_from_canvas(one, count=100, jitter=0.0, seed=0, size=SIZE)
    assert labels is None and classes == ()


def test_a_labelled_drawing_round_trips_through_its_csv():
    two = _drawing(_colored(_path(("M", 50, 50), ("L", 150, 50)), PEN_COLORS["green"]),
                   _colored(_path(("M", 50, 150), ("L", 150, 150)), PEN_COLORS["orange"]))
    points, labels, classes = labelled_points_from_canvas(two, count=300, jitter=0.02, seed=1, size=SIZE)
    text = to_csv(points, labels, classes)
    assert text.splitlines()[0] == "x,y,label"
    loaded = load_points(text)
    assert loaded.points == points_in_user_units(points, labels, classes)  # the same digest: the same cached run
    assert loaded.classes == ("green", "orange")
