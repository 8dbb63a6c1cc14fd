"""The Data section's drawing: a canvas whose strokes become the point set to train on.

The canvas is ``streamlit-drawable-canvas`` (fabric.js; its own toolbar, shown on hover, has
undo, redo and a bin that resets to the loaded starter). Reading its JSON is ``ui/canvas.py``'s,
turning strokes into points the core's (``diffusion/drawing.py``); this module only draws. It runs
as a fragment, so a stroke reruns this section, not the whole page; 'Train on this' then reruns
the page once.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st
from streamlit_drawable_canvas import st_canvas

from diffusion.config import DataConfig
from diffusion.datasets import points_in_user_units
from diffusion.drawing import DrawingError, EmptyDrawingError, to_csv
from ui.canvas import CANVAS_SIZE, PEN_COLORS, STARTERS, labelled_points_from_canvas

TOOLS = {"freedraw": "Strokes", "point": "Points"}
COUNT_RANGE = (100, 5000, 1000, 100)  # low, high, default, step of the point-count slider
JITTER_RANGE = (0.0, 0.1, 0.02, 0.005)  # the same for the jitter, in drawing units (canvas half-width = 1)
SEED = 0  # the same drawing always gives the same points (and the same cached run)
SOURCE = "drawn"  # st.session_state["_points_source"] once 'Train on this' was pressed


def preview_figure(points: np.ndarray, labels: np.ndarray | None = None, classes: tuple[str, ...] = ()) -> go.Figure:
    """A small scatter of the drawn points, in drawing units, axes fixed to the canvas; with
    classes, each point in its pen's colour."""
    width, height = CANVAS_SIZE
    half = max(width, height) / 2
    color = "#ff7f0e" if labels is None else [PEN_COLORS.get(classes[k], "#7f7f7f") for k in labels]
    figure = go.Figure(go.Scatter(x=points[:, 0], y=points[:, 1], mode="markers",
                                  marker={"size": 3, "color": color, "opacity": 0.6}, hoverinfo="skip"))
    figure.update_layout(height=220, margin={"l": 30, "r": 10, "t": 10, "b": 25}, showlegend=False)
    figure.update_xaxes(range=[-width / 2 / half - 0.1, width / 2 / half + 0.1], zeroline=False)
    figure.update_yaxes(range=[-height / 2 / half - 0.1, height / 2 / half + 0.1], zeroline=False,
                        scaleanchor="x", scaleratio=1)
    return figure


def _state(key_prefix: str) -> dict:
    """The section's own session state, created on first use: which canvas (a new key remounts it
    with a new initial drawing) and what that initial drawing is."""
    state = st.session_state
    state.setdefault(f"{key_prefix}_generation", 0)
    state.setdefault(f"{key_prefix}_initial", None)
    # Streamlit forgets a widget's value while it isn't drawn (the section hidden behind the upload):
    # writing each value back before its widget is drawn keeps it.
    for name, default in (("count", COUNT_RANGE[2]), ("jitter", JITTER_RANGE[2]), ("tool", "freedraw"), ("pen", "black")):
        state[f"{key_prefix}_{name}"] = state.get(f"{key_prefix}_{name}", default)
    return state


def _load(key_prefix: str, drawing: dict | None) -> None:
    """Callback: remount the canvas showing ``drawing`` (None: an empty canvas)."""
    st.session_state[f"{key_prefix}_initial"] = st.session_state[f"{key_prefix}_last"] = drawing
    st.session_state[f"{key_prefix}_generation"] += 1


def _train_on(key_prefix: str) -> None:
    """Callback of 'Train on this': the drawn set becomes the data, like an uploaded file."""
    points = st.session_state.get(f"{key_prefix}_points")
    if points is not None:
        labels, classes = st.session_state.get(f"{key_prefix}_labels"), st.session_state.get(f"{key_prefix}_classes", ())
        st.session_state["_points"] = DataConfig("points", points_in_user_units(points, labels, classes))
        st.session_state["_points_source"] = SOURCE
        st.session_state[f"{key_prefix}_rerun_app"] = True  # the fragment then reruns the page (not from here)


@st.fragment
def _panel(key_prefix: str) -> None:
    state = _state(key_prefix)
    p = key_prefix
    st.radio("Draw with", list(TOOLS), format_func=TOOLS.get, horizontal=True, key=f"{p}_tool",
             help="Strokes: drag to draw. Points: click to place a point; its points form a small blob.")
    st.radio("Pen", list(PEN_COLORS), horizontal=True, key=f"{p}_pen",
             help="The colour to draw with. A drawing in two or more colours has a class per colour, so a "
                  "conditional model (Training: Condition on the class) can be asked for one of them.")
    with st.container(horizontal=True, gap="small"):  # wraps onto a second line in a narrow sidebar
        for index, name in enumerate(STARTERS):
            st.button(name, key=f"{p}_starter_{index}", on_click=_load, args=(p, STARTERS[name]),
                      help=f"Replace the drawing with a {name}.")
        st.button("Clear", key=f"{p}_clear", on_click=_load, args=(p, None), help="Empty the canvas.")

    # A hidden canvas forgets its drawing (Streamlit drops a widget's state when it isn't drawn):
    # bring back the last one seen by remounting with it as the initial drawing.
    canvas_key = f"{p}_canvas_{state[f'{p}_generation']}"
    if canvas_key not in state and state.get(f"{p}_last") is not None and state[f"{p}_last"] != state[f"{p}_initial"]:
        state[f"{p}_initial"] = state[f"{p}_last"]
        state[f"{p}_generation"] += 1
        canvas_key = f"{p}_canvas_{state[f'{p}_generation']}"
    width, height = CANVAS_SIZE
    pen = PEN_COLORS[state[f"{p}_pen"]]
    result = st_canvas(width=width, height=height, stroke_width=3, stroke_color=pen, fill_color=pen, background_color="#ffffff",
                       drawing_mode=state[f"{p}_tool"], point_display_radius=3, initial_drawing=state[f"{p}_initial"],
                       key=canvas_key)
    state[f"{p}_last"] = result.json_data
    st.caption("Hover the canvas for its toolbar: undo, redo, and the bin (back to the loaded starter).")

    st.slider("Points", *COUNT_RANGE[:2], step=COUNT_RANGE[3], key=f"{p}_count",
              help="How many points are spaced evenly along the strokes (each stroke gets a share by its length).")
    st.slider("Jitter", *JITTER_RANGE[:2], step=JITTER_RANGE[3], key=f"{p}_jitter", format="%.3f",
              help="Gaussian noise added to each point (std, in canvas half-widths), clipped at 3 std.")
    try:
        points, labels, classes = labelled_points_from_canvas(
            result.json_data, count=int(state[f"{p}_count"]), jitter=float(state[f"{p}_jitter"]), seed=SEED,
            size=CANVAS_SIZE)
    except EmptyDrawingError as error:
        state[f"{p}_points"] = None
        st.info(f"{str(error)[0].upper()}{str(error)[1:]}.")
        return
    except DrawingError as error:
        state[f"{p}_points"] = None
        st.error(f"{str(error)[0].upper()}{str(error)[1:]}.")
        return
    state[f"{p}_points"], state[f"{p}_labels"], state[f"{p}_classes"] = points, labels, classes
    st.plotly_chart(preview_figure(points, labels, classes), key=f"{p}_preview", config={"displayModeBar": False})

    kept = state.get("_points")
    in_use = (state.get("_points_source") == SOURCE and kept is not None
              and kept.points.digest == points_in_user_units(points, labels, classes).digest)
    st.button("Train on this", key=f"{p}_train", type="primary", on_click=_train_on, args=(p,),
              disabled=in_use, help="Use these points as the data, like an uploaded CSV file.")
    in_classes = f" in {len(classes)} classes ({', '.join(classes)})" if classes else ""
    st.caption(f"Training on these {len(points):,} points{in_classes}." if in_use else
               f"{len(points):,} points{in_classes}; press 'Train on this' to use them.")
    st.download_button("Download as CSV", to_csv(points, labels, classes), file_name="drawn_points.csv", mime="text/csv",
                       key=f"{p}_download", on_click="ignore",
                       help="The drawn points (columns x,y, and label when drawn in several colours); upload the "
                            "file back to train on it again.")
    if state.pop(f"{p}_rerun_app", False):  # the data changed: the page (the link, the run) must redraw
        st.rerun(scope="app")


def drawing_section(key_prefix: str = "draw") -> DataConfig | None:
    """Draw the canvas section; return the drawn data in use ('Train on this' was pressed), or None.
    Every session-state key it creates starts with ``key_prefix``, except the two it shares with
    the upload: ``_points`` (the DataConfig) and ``_points_source`` (``"drawn"``)."""
    _panel(key_prefix)
    if st.session_state.get("_points_source") == SOURCE:
        return st.session_state.get("_points")
    return None
