"""The drawing canvas's format: fabric.js JSON (what ``streamlit-drawable-canvas`` hands back and
takes as its initial drawing) to strokes and dots, and the starter drawings in it.

Drawing units: the canvas's centre is the origin, y points up (the canvas's y points down), and
half the canvas's longer side is 1, so a square canvas spans [-1, 1]^2 and a wide one keeps its
aspect ratio. The strokes become points in the core (``diffusion.drawing.points_from_strokes``);
the section that shows the canvas is ``ui/drawing.py``. No streamlit here: numpy only.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from diffusion.drawing import DrawingError, EmptyDrawingError, labelled_points_from_strokes

CANVAS_SIZE = (200, 200)  # (width, height) in pixels of the page's canvas (it fits the sidebar); the starters are drawn for it
FABRIC_VERSION = "7.4.0"  # what the component's fabric.js writes in its JSON
MIN_SPREAD_PX = 1.0  # a stroke shorter than this is a single point; a drawing narrower than it, one spot
EMPTY = "the drawing is empty: draw a stroke or a few points on the canvas, or load a starter"
_ORIGIN = {"left": 0.0, "top": 0.0, "center": 0.5, "right": 1.0, "bottom": 1.0}
_DOTS = {"circle"}
# The pens: each colour a class when a drawing uses more than one. Names are the classes' names.
PEN_COLORS = {"black": "#31333f", "blue": "#1f77b4", "orange": "#ff7f0e", "green": "#2ca02c", "red": "#d62728"}
_COLOR_NAMES = {**{hex_.lower(): name for name, hex_ in PEN_COLORS.items()}, "black": "black", "#000000": "black"}


def color_name(obj: dict) -> str:
    """The pen an object was drawn with, by name (``PEN_COLORS``; an unknown colour as written).
    A point's colour is its fill, a stroke's its stroke."""
    dot = str(obj.get("type", "")).lower() in _DOTS
    color = (obj.get("fill") or obj.get("stroke")) if dot else (obj.get("stroke") or obj.get("fill"))
    color = str(color or "black").strip().lower()
    return _COLOR_NAMES.get(color, color)


# --- geometry of one fabric.js object, in canvas pixels ------------------------------------------


def _quad(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, n: int) -> np.ndarray:
    """n + 1 points of the quadratic Bézier p0 -> p1 -> p2 at evenly spaced t (n segments)."""
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _cubic(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n + 1)[:, None]
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


def _pieces(control: np.ndarray) -> int:
    """How finely to flatten a curve: about one chord per 0.5 px of its control polygon."""
    length = float(np.linalg.norm(np.diff(control, axis=0), axis=1).sum())
    return int(min(256, max(4, math.ceil(length / 0.5))))


def _path_polylines(path: list) -> list[np.ndarray]:
    """The subpaths of an SVG path in fabric.js's absolute form (M, L, H, V, Q, C, Z) as polylines,
    each (n, 2) in the path's own coordinates. Curves are flattened finely enough (chords of about
    0.5 px) that arc lengths are exact to well under a pixel."""
    polylines: list[np.ndarray] = []
    current: list[np.ndarray] = []
    start = here = None
    for command in path:
        if not command:
            continue
        op, args = str(command[0]), [float(v) for v in command[1:]]
        if op != "M" and here is None:
            raise DrawingError(f"a path starts with {op!r} instead of a move (M); redraw the stroke")
        if op == "M":
            if len(current) > 1:
                polylines.append(np.concatenate(current))
            here = start = np.array(args[:2])
            current = [here[None]]
        elif op == "L":
            here = np.array(args[:2])
            current.append(here[None])
        elif op == "H":
            here = np.array([args[0], here[1]])
            current.append(here[None])
        elif op == "V":
            here = np.array([here[0], args[0]])
            current.append(here[None])
        elif op == "Q":
            p1, p2 = np.array(args[0:2]), np.array(args[2:4])
            current.append(_quad(here, p1, p2, _pieces(np.stack([here, p1, p2])))[1:])
            here = p2
        elif op == "C":
            p1, p2, p3 = np.array(args[0:2]), np.array(args[2:4]), np.array(args[4:6])
            current.append(_cubic(here, p1, p2, p3, _pieces(np.stack([here, p1, p2, p3])))[1:])
            here = p3
        elif op in "Zz":
            current.append(start[None])
            here = start
        else:
            raise DrawingError(f"a path uses the SVG command {op!r}, which can't be read; redraw the stroke")
    if len(current) > 1 or (len(current) == 1 and not polylines):
        polylines.append(np.concatenate(current))
    return polylines


def _origin(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else _ORIGIN.get(str(value), 0.0)


def _placement(obj: dict) -> tuple[np.ndarray, np.ndarray]:
    """(centre, 2x2 matrix) taking an object's own coordinates, relative to its centre, to canvas
    pixels: fabric's ``left``/``top`` locate the object's origin (``originX``/``originY``) on its
    bounding box, which includes the stroke; then scale, flip and rotation about the centre.
    Skew is not applied (the canvas's edit tool does not skew)."""
    sx = float(obj.get("scaleX", 1.0)) * (-1 if obj.get("flipX") else 1)
    sy = float(obj.get("scaleY", 1.0)) * (-1 if obj.get("flipY") else 1)
    stroke = float(obj.get("strokeWidth", 0.0) or 0.0) if obj.get("stroke") else 0.0
    width, height = float(obj.get("width", 0.0)), float(obj.get("height", 0.0))
    if obj.get("strokeUniform"):
        box = np.array([abs(width * sx) + stroke, abs(height * sy) + stroke])
    else:
        box = np.array([(width + stroke) * abs(sx), (height + stroke) * abs(sy)])
    angle = math.radians(float(obj.get("angle", 0.0)))
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    to_centre = np.array([0.5 - _origin(obj.get("originX", "left")), 0.5 - _origin(obj.get("originY", "top"))]) * box
    centre = np.array([float(obj.get("left", 0.0)), float(obj.get("top", 0.0))]) + rotation @ to_centre
    return centre, rotation @ np.diag([sx, sy])


def _object_geometry(obj: dict) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(strokes, dots) of one canvas object, in canvas pixels: polylines (n, 2) and centres (2,)."""
    kind = str(obj.get("type", "")).lower()
    centre, matrix = _placement(obj)
    if kind == "path":
        polylines = _path_polylines(obj.get("path") or [])
        if not polylines:
            return [], []
        # fabric keeps a path's commands as drawn and places them by their bounding box's centre
        # (``pathOffset``), which is not serialised: recompute it from the (flattened) geometry.
        everything = np.concatenate(polylines)
        path_offset = (everything.min(0) + everything.max(0)) / 2
        return [(p - path_offset) @ matrix.T + centre for p in polylines], []
    if kind == "line":  # x1, y1, x2, y2 are relative to the line's centre
        ends = np.array([[obj.get("x1", 0.0), obj.get("y1", 0.0)], [obj.get("x2", 0.0), obj.get("y2", 0.0)]], float)
        return [ends @ matrix.T + centre], []
    if kind in _DOTS:
        return [], [centre]
    raise DrawingError(
        f"the drawing holds a {obj.get('type')!r} shape, which can't be turned into points; "
        "undo it or clear the canvas, and draw with free strokes or points"
    )


# --- the canvas's drawing as strokes and points ----------------------------------------------------


def _to_units(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Canvas pixels (y down) to drawing units (y up, centred, half the longer side = 1)."""
    width, height = size
    half = max(width, height) / 2
    return np.stack([(pixels[..., 0] - width / 2) / half, (height / 2 - pixels[..., 1]) / half], -1)


def _check_size(size: tuple[int, int]) -> None:
    if len(size) != 2 or min(size) <= 0:
        raise DrawingError(f"the canvas size must be two positive numbers (width, height) in pixels; got {size!r}")


def labelled_strokes_from_canvas(json_data: dict | None, size: tuple[int, int] = CANVAS_SIZE
                                 ) -> tuple[list[np.ndarray], np.ndarray, list[str], list[str]]:
    """``strokes_from_canvas`` with the pen of each stroke and each dot (``color_name``)."""
    _check_size(size)
    strokes, dots, stroke_colors, dot_colors = [], [], [], []
    for obj in (json_data or {}).get("objects") or []:
        obj_strokes, obj_dots = _object_geometry(obj)
        color = color_name(obj)
        strokes += [_to_units(line, size) for line in obj_strokes]
        stroke_colors += [color] * len(obj_strokes)
        dots += obj_dots
        dot_colors += [color] * len(obj_dots)
    return strokes, _to_units(np.array(dots).reshape(-1, 2), size), stroke_colors, dot_colors


def strokes_from_canvas(json_data: dict | None,
                        size: tuple[int, int] = CANVAS_SIZE) -> tuple[list[np.ndarray], np.ndarray]:
    """(strokes, dots) of the canvas's fabric.js JSON (``{"objects": [...]}``) in drawing units:
    freehand strokes ('Path', SVG commands M/L/H/V/Q/C/Z) and straight lines ('Line') as polylines
    (n, 2), single points ('Circle') as centres (k, 2). ``size`` is the canvas's (width, height)
    in pixels. Raises ``DrawingError`` for a shape it can't read."""
    strokes, dots, _, _ = labelled_strokes_from_canvas(json_data, size)
    return strokes, dots


def points_from_canvas(json_data: dict | None, *, count: int, jitter: float, seed: int,
                       size: tuple[int, int] = CANVAS_SIZE) -> np.ndarray:  # (count, 2) float64
    """``count`` points spaced evenly along the canvas's strokes, jittered, in drawing units
    (``strokes_from_canvas``, then ``diffusion.drawing.points_from_strokes``, a stroke shorter than
    a pixel counting as a point). Raises ``DrawingError`` (``EmptyDrawingError`` when nothing is
    drawn) with what to do."""
    return labelled_points_from_canvas(json_data, count=count, jitter=jitter, seed=seed, size=size)[0]


def labelled_points_from_canvas(json_data: dict | None, *, count: int, jitter: float, seed: int,
                                size: tuple[int, int] = CANVAS_SIZE) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """(points, labels, classes) of ``points_from_canvas``: a drawing in more than one pen has a
    class per pen (``classes``: the pens' names in text order, as its CSV reads back),
    each point the class of the stroke it lies on; a drawing in one pen has none (None, ())."""
    strokes, dots, stroke_colors, dot_colors = labelled_strokes_from_canvas(json_data, size)
    if not strokes and not len(dots):
        raise EmptyDrawingError(EMPTY)
    used = set(stroke_colors) | set(dot_colors)
    classes = tuple(sorted(used))  # text order, as the drawing's CSV's label column reads back
    index = {name: k for k, name in enumerate(classes)}
    resolution = MIN_SPREAD_PX / (max(size) / 2)  # a pixel, in drawing units
    points, labels = labelled_points_from_strokes(
        strokes, dots, count=count, jitter=jitter, seed=seed, resolution=resolution,
        stroke_labels=[index[c] for c in stroke_colors], dot_labels=[index[c] for c in dot_colors])
    if len(classes) < 2:
        return points, None, ()
    present = np.unique(labels)
    if len(present) < len(classes):  # a pen so short it got no point: drop its class, keep the order
        classes = tuple(classes[k] for k in present)
        labels = np.searchsorted(present, labels)
        if len(classes) < 2:
            return points, None, ()
    return points, labels, classes


# --- starter drawings ----------------------------------------------------------------------------


def _path_object(commands: list[list], size: tuple[int, int] = CANVAS_SIZE, stroke_width: int = 3) -> dict:
    """A fabric.js 'Path' object from SVG commands in drawing units, placed where they say."""
    width, height = size
    half = max(width, height) / 2

    def px(x: float, y: float) -> list[float]:
        return [round(width / 2 + x * half, 2), round(height / 2 - y * half, 2)]

    path = [[op, *(v for i in range(0, len(args), 2) for v in px(args[i], args[i + 1]))] for op, *args in commands]
    flat = np.concatenate(_path_polylines(path))
    low, high = flat.min(0), flat.max(0)
    return {
        "type": "Path", "version": FABRIC_VERSION, "originX": "left", "originY": "top",
        "left": float(low[0] - stroke_width / 2), "top": float(low[1] - stroke_width / 2),
        "width": float(high[0] - low[0]), "height": float(high[1] - low[1]),
        "fill": None, "stroke": "black", "strokeWidth": stroke_width, "strokeLineCap": "round",
        "strokeLineJoin": "round", "scaleX": 1, "scaleY": 1, "angle": 0, "path": path,
    }


def _circle(cx: float, cy: float, r: float) -> list[list]:
    """A closed circle as 8 quadratic arcs of 45° (control points at r / cos 22.5°)."""
    reach = r / math.cos(math.pi / 8)
    commands = [["M", cx + r, cy]]
    for k in range(8):
        mid, end = math.pi / 4 * (k + 0.5), math.pi / 4 * (k + 1)
        commands.append(["Q", cx + reach * math.cos(mid), cy + reach * math.sin(mid),
                         cx + r * math.cos(end), cy + r * math.sin(end)])
    return commands


def _heart() -> list[list]:
    """The classic heart curve x = 16 sin³t, y = 13 cos t − 5 cos 2t − 2 cos 3t − cos 4t, scaled."""
    t = np.linspace(0, 2 * np.pi, 61)
    x = 16 * np.sin(t) ** 3 / 20
    y = (13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)) / 20 + 0.1
    return [["M", float(x[0]), float(y[0])], *(["L", float(a), float(b)] for a, b in zip(x[1:], y[1:], strict=True))]


def _drawing(*paths: list[list]) -> dict:
    return {"version": FABRIC_VERSION, "objects": [_path_object(p) for p in paths]}


STARTERS: dict[str, dict] = {
    "letter A": _drawing([["M", -0.55, -0.8], ["L", 0.0, 0.8], ["L", 0.55, -0.8]], [["M", -0.3, -0.1], ["L", 0.3, -0.1]]),
    "heart": _drawing(_heart()),
    "smiley": _drawing(_circle(0.0, 0.0, 0.8), _circle(-0.3, 0.28, 0.08), _circle(0.3, 0.28, 0.08),
                       [["M", -0.45, -0.2], ["Q", 0.0, -0.75, 0.45, -0.2]]),
}  # fabric.js JSON for a CANVAS_SIZE canvas, ready for the component's ``initial_drawing``
