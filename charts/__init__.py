"""Plotly figure builders: numbers in, figures out. No Streamlit here, so the headless command can
write the same figures to a standalone HTML file."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from diffusion.config import ExperimentConfig
from diffusion.objectives import objective_of, path_class
from diffusion.paths import ObjectivePath
from diffusion.samplers import Trajectory

DATA_COLOR = "#1f77b4"
SAMPLE_COLOR = "#ff7f0e"
X0_COLOR = "#2ca02c"
FLOOR_COLOR = "#d62728"
BASELINE_COLOR = "#7f7f7f"
PLAY_MS = 40  # default frame duration of the animations: 25 frames a second


@dataclass(frozen=True)
class TimeAxis:
    """How the views write a path's time (its ``continuous_time``): steps t = 0..T (DDPM), or a
    continuous t in [0, 1] (flow matching).

    Two kinds of time come in: a frame time k (an animation's frames: T for x_T ... 0 for the data;
    on a continuous path t T, floats) and a level index k = 0..T-1 (the field's and the loss's
    noise levels; on a continuous path level k stands for the t in [k / T, (k + 1) / T) and sits at
    its end, t = (k + 1) / T, the path's ``grid_times``)."""

    num_timesteps: int
    continuous: bool = False

    @classmethod
    def of(cls, schedule) -> TimeAxis:
        """From a ``ScheduleConfig`` or a path."""
        config = getattr(schedule, "config", schedule)
        return cls(config.num_timesteps, path_class(config.objective).continuous_time)

    def frame(self, k: float) -> float:
        return float(k) / self.num_timesteps if self.continuous else float(k)

    def level(self, k) -> np.ndarray:
        k = np.asarray(k, dtype=np.float64)
        return (k + 1) / self.num_timesteps if self.continuous else k

    def label(self, value: float) -> str:
        """A frame's name (unique for up to 1,000 frames)."""
        return f"t = {value:.3f}" if self.continuous else f"t = {int(round(value))}"

    @property
    def title(self) -> str:
        return "time t (0 = data, 1 = noise)" if self.continuous else "noise level t (0 = data, T-1 = noise)"


class FrozenFigure(go.Figure):
    """A figure that is finished: ``to_dict`` computes its dict once and hands out that same dict.

    ``st.plotly_chart`` turns its figure into a dict (a deep copy) and then into JSON on every
    script run, cached figure or not: about 20 + 30 ms for a 60-frame reverse animation, 170 ms a
    rerun for the page's five animations (measured). A frozen figure pays the copy once. Freeze
    only figures that are never changed again (the page's cached ones are shared by every session
    and never are); plotly's JSON encoding does not modify the dict it is given."""

    def to_dict(self):  # noqa: D102 - go.Figure.to_dict, memoised
        cached = self.__dict__.get("_frozen_dict")
        if cached is None:
            cached = self.__dict__["_frozen_dict"] = super().to_dict()
        return cached


def frozen(figure: go.Figure) -> FrozenFigure:
    """``figure``, frozen in place (see ``FrozenFigure``)."""
    figure.__class__ = FrozenFigure
    return figure


def _xy(points: np.ndarray) -> dict:
    """Coordinates as float32 arrays: Plotly sends them base64-encoded, ~8 bytes a point."""
    points = np.asarray(points, dtype=np.float32)
    return {"x": points[:, 0], "y": points[:, 1]}


def axis_range(*point_sets: np.ndarray, pad: float = 0.1) -> tuple[list[float], list[float]]:
    """Square-ish fixed axes covering the 0.5-99.5 percentiles of all points given."""
    stacked = np.concatenate([np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in point_sets])
    stacked = stacked[np.isfinite(stacked).all(axis=1)]
    low, high = np.percentile(stacked, 0.5, axis=0), np.percentile(stacked, 99.5, axis=0)
    centre, half = (low + high) / 2, max(float((high - low).max()) / 2, 0.5) * (1 + pad)
    return [centre[0] - half, centre[0] + half], [centre[1] - half, centre[1] + half]


def log_ticks(values, mantissas: tuple[tuple[float, ...], ...] = ((1,), (1, 2, 5)), least: int = 3) -> dict:
    """Labelled ticks for a log axis over ``values``: the decades, or 1, 2, 5 in each decade when
    the decades alone would label fewer than ``least`` ticks in the range (the first of
    ``mantissas`` that gives ``least``, else the last). Plotly's own log ticks number the minor
    ticks 2, 3, ... 9 of a short range, or label only one decade."""
    values = np.asarray([v for v in np.ravel(values) if np.isfinite(v) and v > 0], dtype=np.float64)
    if len(values) == 0:
        return {}
    low, high = float(values.min()), float(values.max())
    decades = range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 1)
    for steps in mantissas:
        ticks = sorted(float(f"{m:g}e{e}") for e in decades for m in steps)  # 0.7, not 0.7000000000000001
        inside = [t for t in ticks if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)]
        if len(inside) >= least:
            break
    # one tick beyond each end: the axis pads its range a little, and a tick there is labelled too
    below, above = [t for t in ticks if t < low], [t for t in ticks if t > high]
    shown = below[-1:] + inside + above[:1]
    return {"tickmode": "array", "tickvals": shown, "ticktext": [f"{t:g}" for t in shown]}


LEGEND_ROOM = 30  # px at the bottom of a figure for its legend (one row)
AXIS_ROOM = 50  # px under a plot for its x axis's tick labels and title


def _legend_below() -> dict:
    """Every figure's legend: one horizontal row at the very bottom of the figure, under the x
    axis's title (or an animation's slider), left-aligned. Never above the plot, where it ran into
    titles once a trace (a baseline) was added and the toolbar covered it on hover. The figure
    keeps ``LEGEND_ROOM`` px of bottom margin for it."""
    return dict(orientation="h", x=0, xanchor="left", y=0, yanchor="bottom", yref="container")


# --- schedule ------------------------------------------------------------------------------------


ROLE_COLORS = {"signal": DATA_COLOR, "noise": SAMPLE_COLOR, "reference": BASELINE_COLOR}


def schedule_figure(schedule: ObjectivePath, reference: ObjectivePath | None = None) -> go.Figure:
    """The path's chart (``ObjectivePath.chart``): its plots side by side; ``reference``, another
    path, dashed on the plots that show the same quantity against t in [0, 1] (flow matching's
    weights and log SNR beside DDPM's)."""
    chart = schedule.chart()
    plots = chart.plots
    if reference is not None:
        beside = reference.path_curves()
        plots = tuple(plot if plot.shows is None else
                      dataclasses.replace(plot, curves=plot.curves + beside.curves(plot.shows, beside=True))
                      for plot in plots)
    fig = make_subplots(rows=1, cols=len(plots), subplot_titles=[plot.title for plot in plots],
                        horizontal_spacing=0.08 if len(plots) > 2 else 0.1)
    for col, plot in enumerate(plots, start=1):
        for curve in plot.curves:
            line = {"color": ROLE_COLORS[curve.role]} if curve.role else {}
            if curve.dashed:
                line |= {"dash": "dash", "width": 1.2}
            fig.add_trace(go.Scatter(x=curve.x, y=curve.y, mode="lines", name=curve.name, line=line or None), 1, col)
        if plot.unit_range:
            fig.update_yaxes(range=[0, 1.02], row=1, col=col)
    legend = any(len(plot.curves) > 1 for plot in plots)
    fig.update_xaxes(title_text=chart.x_title)
    fig.update_layout(height=280 + (LEGEND_ROOM if legend else 0), showlegend=legend,
                      margin=dict(l=10, r=10, t=50, b=AXIS_ROOM + LEGEND_ROOM if legend else 10),  # titles under the toolbar
                      **({"legend": _legend_below() | {"font": dict(size=10)}} if legend else {}))
    return fig


# --- animations ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnimationStyle:
    """Display-only choices: changing these redraws, never retrains or resamples."""

    trails: int = 0  # points whose whole path is drawn
    show_x0: bool = False  # the model's current guess of x_0
    frame_ms: int = PLAY_MS
    marker_size: int = 4
    animated: int | None = None  # points that move (evenly spaced through the samples); None: all of them


def _play_controls(labels: list[str], frame_ms: int, prefix: str, redraw: bool = False) -> dict:
    """Play / pause buttons and a frame slider; ``redraw`` for frames that change a heat map."""
    play = dict(label="▶ Play", method="animate",
                args=[None, {"frame": {"duration": frame_ms, "redraw": redraw}, "fromcurrent": True,
                             "transition": {"duration": 0}}])
    pause = dict(label="❚❚ Pause", method="animate",
                 args=[[None], {"frame": {"duration": 0, "redraw": redraw}, "mode": "immediate",
                                "transition": {"duration": 0}}])
    menus = [dict(type="buttons", direction="left", showactive=False, x=0.0, y=-0.06, xanchor="left",
                  yanchor="top", pad=dict(t=28, r=10), buttons=[play, pause])]
    steps = [dict(method="animate", label=label,
                  args=[[label], {"frame": {"duration": 0, "redraw": redraw}, "mode": "immediate",
                                  "transition": {"duration": 0}}]) for label in labels]
    sliders = [dict(active=0, steps=steps, x=0.34, len=0.66, y=-0.06, yanchor="top", pad=dict(t=10, b=0),
                    currentvalue=dict(prefix=prefix, visible=True, xanchor="right", font=dict(size=13)),
                    transition=dict(duration=0), ticklen=3, font=dict(size=9))]
    return dict(updatemenus=menus, sliders=sliders)


def _trail_xy(frames: np.ndarray, upto: int, trail_ids: np.ndarray) -> dict:
    """Paths of the trail points from frame 0 to ``upto``, separated by gaps (NaN)."""
    paths = frames[: upto + 1, trail_ids, :].transpose(1, 0, 2)  # (m, k, 2)
    gap = np.full((len(trail_ids), 1, 2), np.nan, dtype=np.float32)
    joined = np.concatenate([paths, gap], axis=1).reshape(-1, 2)
    return _xy(joined)


def animation_figure(
    frames: np.ndarray,
    labels: list[str],
    data: np.ndarray,
    *,
    title: str,
    style: AnimationStyle = AnimationStyle(),
    predicted_x0: np.ndarray | None = None,
    start_at_end: bool = False,
    baseline: np.ndarray | None = None,
) -> go.Figure:
    """Animated scatter of ``frames`` (K, N, 2) over faint ``data``, with play / pause and a slider.

    Traces: 0 data (static), 1 the moving points, 2 predicted x_0 (optional), 3 trails (optional).
    Frames update only the moving traces (``redraw=False``, SVG: Scattergl would not move)."""
    frames = np.asarray(frames, dtype=np.float32)
    x_range, y_range = axis_range(data, frames[0], frames[-1])
    if style.animated is not None and style.animated < frames.shape[1]:  # the same points in every layer
        shown = np.linspace(0, frames.shape[1] - 1, style.animated).round().astype(int)
        frames = frames[:, shown]
        predicted_x0 = None if predicted_x0 is None else np.asarray(predicted_x0)[:, shown]
        baseline = None if baseline is None or np.shape(baseline)[1] <= shown[-1] else np.asarray(baseline)[:, shown]
    trail_ids = np.linspace(0, frames.shape[1] - 1, style.trails).astype(int) if style.trails else None
    first = len(frames) - 1 if start_at_end else 0
    marker = dict(size=style.marker_size, color=SAMPLE_COLOR, opacity=0.75)

    def moving(k: int) -> list[go.Scatter]:
        traces = [go.Scatter(**_xy(frames[k]), mode="markers", marker=marker, name="x_t")]
        if baseline is not None:  # the pinned run's frames, the same times (a click on the legend hides it)
            traces.append(go.Scatter(**_xy(baseline[k]), mode="markers", name="baseline x_t",
                                     marker=dict(size=style.marker_size, color=BASELINE_COLOR, opacity=0.35)))
        if predicted_x0 is not None:
            traces.append(go.Scatter(**_xy(predicted_x0[k]), mode="markers", name="predicted x₀",
                                     marker=dict(size=3, color=X0_COLOR, opacity=0.5)))
        if trail_ids is not None:
            traces.append(go.Scatter(**_trail_xy(frames, k, trail_ids), mode="lines", name="paths",
                                     line=dict(width=1.2, color="#444")))
        return traces

    moving_ids = list(range(1, 1 + len(moving(0))))
    fig = go.Figure(
        data=[go.Scatter(**_xy(data), mode="markers", name="data",
                         marker=dict(size=3, color=DATA_COLOR, opacity=0.18))] + moving(first),
        frames=[go.Frame(data=moving(k), traces=moving_ids, name=labels[k]) for k in range(len(frames))],
    )
    controls = _play_controls(labels, style.frame_ms, prefix="")
    controls["sliders"][0]["active"] = first
    fig.update_layout(
        title=dict(text=title, x=0.0, font=dict(size=14)),
        xaxis=dict(range=x_range, zeroline=False, constrain="domain"),
        yaxis=dict(range=y_range, zeroline=False, scaleanchor="x", scaleratio=1),
        height=560 + LEGEND_ROOM, margin=dict(l=10, r=10, t=40, b=120 + LEGEND_ROOM), legend=_legend_below(),
        **controls,
    )
    return fig


def reverse_figure(trajectory: Trajectory, data: np.ndarray, style: AnimationStyle = AnimationStyle(),
                   baseline: Trajectory | None = None, axis: TimeAxis | None = None) -> go.Figure:
    """The reverse animation; a baseline trajectory with the same frame times moves beside it."""
    axis = axis or TimeAxis(1000)
    labels = [axis.label(axis.frame(t)) for t in trajectory.frame_times]
    same_times = baseline is not None and np.array_equal(baseline.frame_times, trajectory.frame_times)
    return animation_figure(
        trajectory.frames, labels, data, title="Reverse process: noise x_T → samples x₀", style=style,
        predicted_x0=trajectory.predicted_x0 if style.show_x0 else None,
        baseline=baseline.frames if same_times else None,
    )


def forward_figure(frames: np.ndarray, times: np.ndarray, data: np.ndarray, frame_ms: int = PLAY_MS,
                   axis: TimeAxis | None = None) -> go.Figure:
    """``times``: frame times (DDPM's steps; flow matching's t T)."""
    axis = axis or TimeAxis(1000)
    labels = [axis.label(axis.frame(t)) for t in times]
    return animation_figure(frames, labels, data, title="Forward process: data x₀ → noise x_T",
                            style=AnimationStyle(frame_ms=frame_ms))


# --- the field: learned against ideal ------------------------------------------------------------

LEARNED_COLOR = SAMPLE_COLOR
IDEAL_COLOR = "#111111"


ARROW_HEAD = 0.35  # an arrow head's sides, as a fraction of its arrow's length
ARROW_HEAD_ANGLE = math.radians(25)  # between each side of the head and the shaft


def _arrows(starts: np.ndarray, vectors: np.ndarray, scale: float, longest: float) -> dict:
    """Arrows start -> start + scale * vector, none longer than ``longest`` (longer ones keep their
    direction), as one trace of lines: per arrow the shaft and the two sides of its head, drawn
    as start, end, side 1, end, side 2 and a gap (6 points)."""
    steps = scale * vectors
    length = np.linalg.norm(steps, axis=1, keepdims=True)
    steps = np.where(length > longest, steps * longest / np.maximum(length, 1e-12), steps)
    ends = starts + steps
    back = -ARROW_HEAD * steps  # from the tip back along the shaft, turned either way for the sides
    cos, sin = math.cos(ARROW_HEAD_ANGLE), math.sin(ARROW_HEAD_ANGLE)
    sides = [np.stack([cos * back[:, 0] - s * back[:, 1], s * back[:, 0] + cos * back[:, 1]], axis=1) for s in (sin, -sin)]
    gap = np.full_like(starts, np.nan)
    return _xy(np.stack([starts, ends, ends + sides[0], ends, ends + sides[1], gap], axis=1).reshape(-1, 2))


ERROR_DECADES = 3  # the field's error map shows this many decades below its top


def field_figure(times: np.ndarray, xs: np.ndarray, ys: np.ndarray, learned: np.ndarray, ideal: np.ndarray,
                 noised_data: np.ndarray, *, quantity: str, frame_ms: int = PLAY_MS, axis: TimeAxis | None = None) -> go.Figure:
    """At each t (a frame): a heat map of |learned - ideal| on the grid, the noised data q(x_t)
    faint, the learned arrows and the ideal arrows. learned, ideal: (K, G, 2) on the grid points
    (x fastest); noised_data: (K, n, 2). Arrows are scaled per t (they shrink or grow with t), the
    same scale for both fields so their lengths compare; arrows longer than 1.5 grid cells are cut to
    that length, keeping their direction.

    The heat map has one colour scale for every frame, so a small error looks pale at every t: on
    log10 of the error (errors span decades across t: near t = 0 the score's are in the hundreds,
    elsewhere below 1), from the 99th percentile of the errors at every level but the first down
    to their 1st percentile, at most ``ERROR_DECADES`` decades; errors beyond either end take its
    colour (the first level's mostly the top's). The figure opens at the level where the error is largest against the size of the
    ideal field, leaving out the first (as t -> 0 the ideal field is singular near the data, so
    the first level's relative error is large everywhere and tells little)."""
    grid = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)  # (G, 2), x fastest
    spacing = min(np.diff(xs).min(), np.diff(ys).min())
    axis = axis or TimeAxis(1000)
    labels = [axis.label(value) for value in axis.level(times)]
    errors = np.linalg.norm(learned - ideal, axis=2)  # (K, G)
    rest = errors[1:] if len(errors) > 1 else errors  # the first level would set the top alone (see above)
    top = float(np.percentile(rest, 99)) or 1.0
    low = max(top / 10**ERROR_DECADES, float(np.percentile(rest, 1)))
    ticks = log_ticks([low, top])
    colorbar = dict(title=dict(text="|error| (log, one scale for all t)", side="right"), thickness=12,
                    tickvals=np.log10(ticks["tickvals"]).tolist(), ticktext=ticks["ticktext"])
    relative = errors.mean(axis=1) / np.maximum(np.linalg.norm(ideal, axis=2).mean(axis=1), 1e-12)  # (K,)
    first = int(np.argmax(relative[1:])) + 1 if len(times) > 1 else 0

    def traces(k: int) -> list:
        lengths = np.concatenate([np.linalg.norm(ideal[k], axis=1), np.linalg.norm(learned[k], axis=1)])
        scale = 0.8 * spacing / (np.percentile(lengths, 75) or 1.0)
        error = errors[k].reshape(len(ys), len(xs))
        return [
            go.Heatmap(x=xs, y=ys, z=np.log10(np.clip(error, low, None)).astype(np.float32), customdata=error.astype(np.float32),
                       colorscale="Reds", zmin=math.log10(low), zmax=math.log10(top), zauto=False, name="|learned − ideal|",
                       colorbar=colorbar, opacity=0.85, hovertemplate="|learned − ideal| %{customdata:.3g}<extra></extra>"),
            go.Scatter(**_xy(noised_data[k]), mode="markers", name="data at t",
                       marker=dict(size=3, color=DATA_COLOR, opacity=0.25)),
            go.Scatter(**_arrows(grid, learned[k], scale, 1.5 * spacing), mode="lines", name=f"learned {quantity}",
                       line=dict(color=LEARNED_COLOR, width=2.5)),
            go.Scatter(**_arrows(grid, ideal[k], scale, 1.5 * spacing), mode="lines", name=f"ideal {quantity}",
                       line=dict(color=IDEAL_COLOR, width=1.2)),
        ]

    fig = go.Figure(data=traces(first), frames=[go.Frame(data=traces(k), name=labels[k]) for k in range(len(times))])
    controls = _play_controls(labels, frame_ms, prefix="", redraw=True)
    controls["sliders"][0]["active"] = first
    fig.update_layout(
        xaxis=dict(range=[xs[0] - spacing, xs[-1] + spacing], zeroline=False, constrain="domain"),
        yaxis=dict(range=[ys[0] - spacing, ys[-1] + spacing], zeroline=False, scaleanchor="x", scaleratio=1),
        height=560 + LEGEND_ROOM, margin=dict(l=10, r=10, t=30, b=120 + LEGEND_ROOM), legend=_legend_below(),
        **controls,
    )
    return fig


def field_error_figure(times: np.ndarray, error: np.ndarray, *, quantity: str, axis: TimeAxis | None = None) -> go.Figure:
    """Mean |learned - ideal| over the noised data at each level t: the bad t's stand out. On a log
    axis when the errors span more than two decades (the score's near t = 0), else from 0."""
    axis = axis or TimeAxis(1000)
    fig = go.Figure(go.Scatter(x=axis.level(times), y=error.astype(np.float32), mode="lines+markers", name="mean error",
                               line=dict(color=FLOOR_COLOR, width=2), marker=dict(size=5)))
    fig.update_xaxes(title_text=axis.title)
    positive = error[np.isfinite(error) & (error > 0)]
    if len(positive) and positive.max() > 100 * positive.min():
        fig.update_yaxes(type="log", **log_ticks(positive))
    else:
        fig.update_yaxes(rangemode="tozero")
    fig.update_yaxes(title_text=f"mean |learned − ideal {quantity}|")
    fig.update_layout(height=240, margin=dict(l=10, r=10, t=10, b=10), showlegend=False)
    return fig


DRIFT_TICKS = ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7))  # mantissas of the drift's log ticks, coarsest first


def drift_peak(ratio: np.ndarray) -> int:
    """The kept frame where the drift is largest, the first frame (x_T, where the sampler starts
    from N(0, I) rather than q(x_T)) left out; 0 when there is only that one."""
    return int(np.argmax(ratio[1:])) + 1 if len(ratio) > 1 else 0


def drift_figure(times: np.ndarray, truth: np.ndarray, sampled: np.ndarray, ratio: np.ndarray,
                 frame_ms: int = PLAY_MS, axis: TimeAxis | None = None) -> go.Figure:
    """Forward against reverse at the same t: left, the true q(x_t) and the sampler's x_t overlaid
    (a frame per kept t); right, their energy distance over its floor at every kept t, the current
    one marked, and its peak (``drift_peak``, what the page's caption names) labelled. The ratio's
    log axis has labelled ticks at 1, 2, 5 or finer (1, 1.5, 2, 3, 5, 7), at least 3 of them in its
    range, so a curve between 0.5 and 2.2 reads as such. ``times``: frame times."""
    axis = axis or TimeAxis(1000)
    times = np.array([axis.frame(t) for t in times])
    labels = [axis.label(t) for t in times]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.55, 0.45], horizontal_spacing=0.1,
                        subplot_titles=("q(x_t) (blue) and the sampler's x_t (orange)", "energy distance / floor"))
    x_range, y_range = axis_range(truth[-1], sampled[-1], truth[0], sampled[0])

    def moving(k: int) -> list[go.Scatter]:
        return [
            go.Scatter(**_xy(truth[k]), mode="markers", name="q(x_t)", marker=dict(size=3, color=DATA_COLOR, opacity=0.45)),
            go.Scatter(**_xy(sampled[k]), mode="markers", name="sampler x_t",
                       marker=dict(size=3, color=SAMPLE_COLOR, opacity=0.6)),
            go.Scatter(x=[times[k]], y=[float(ratio[k])], mode="markers", name="now", xaxis="x2", yaxis="y2",
                       marker=dict(size=11, color=SAMPLE_COLOR, line=dict(color="#000", width=1))),
        ]

    first = moving(0)
    fig.add_trace(first[0], 1, 1)
    fig.add_trace(first[1], 1, 1)
    fig.add_trace(go.Scatter(x=times, y=ratio.astype(np.float32), mode="lines", name="drift",
                             line=dict(color=SAMPLE_COLOR, width=2)), 1, 2)
    fig.add_trace(first[2], 1, 2)
    fig.add_hline(y=1.0, line=dict(color=FLOOR_COLOR, dash="dash", width=1.2), row=1, col=2)
    peak = drift_peak(ratio)
    if np.isfinite(ratio[peak]) and ratio[peak] > 0:  # on a log axis an annotation's y is log10 of the value
        fig.add_annotation(x=times[peak], y=math.log10(float(ratio[peak])), xref="x2", yref="y2", text=(
            f"peak {float(ratio[peak]):.1f}× at {labels[peak]}"), showarrow=True, arrowhead=2, ax=0, ay=-24,
            font=dict(size=11))
    fig.frames = [go.Frame(data=moving(k), traces=[0, 1, 3], name=labels[k]) for k in range(len(times))]
    fig.update_xaxes(range=x_range, row=1, col=1)
    fig.update_yaxes(range=y_range, scaleanchor="x", scaleratio=1, row=1, col=1)
    fig.update_xaxes(title_text="t", autorange="reversed", row=1, col=2)
    fig.update_yaxes(type="log", row=1, col=2, **log_ticks([1.0, *np.asarray(ratio, dtype=np.float64)], DRIFT_TICKS))
    fig.update_layout(height=480, margin=dict(l=10, r=10, t=50, b=120), showlegend=False,  # titles under the toolbar
                      **_play_controls(labels, frame_ms, prefix=""))
    return fig


# --- training ------------------------------------------------------------------------------------


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average with bias correction (as TensorBoard's smoothing)."""
    out = np.empty(len(values))
    avg = 0.0
    for i, v in enumerate(values):
        avg = weight * avg + (1 - weight) * v
        out[i] = avg / (1 - weight ** (i + 1))
    return out


MAX_LOSS_POINTS = 2000  # drawn per curve; longer runs are thinned so a refresh stays cheap


def _thinned(losses: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(steps, blocks of k steps, k): every step up to MAX_LOSS_POINTS, else blocks of k steps."""
    stride = max(1, -(-len(losses) // MAX_LOSS_POINTS))
    usable = len(losses) // stride * stride
    return np.arange(stride, usable + 1, stride), losses[:usable].reshape(-1, stride), stride


def _fast_figure(data: list[dict], layout: dict) -> go.Figure:
    """A figure from plain dicts: the live charts are rebuilt at every refresh of every page, and
    building them trace by trace (add_trace, add_hline) took 20-60 ms for a loss chart, from dicts
    about 8 ms (measured). Plotly still validates them: skipping that (``_validate=False``) was
    faster again, but the browser then left the live charts blank while a run trained (seen in
    Chromium screenshots), so it stays on."""
    return go.Figure({"data": data, "layout": layout})


def _floor_trace(y: float, x_end: float, name: str) -> dict:
    return {"type": "scatter", "x": [0, x_end], "y": [y, y], "mode": "lines", "name": name, "hoverinfo": "name",
            "line": {"color": FLOOR_COLOR, "dash": "dash", "width": 1.5}}


def loss_figure(
    losses: np.ndarray, *, smoothing: float = 0.9, log_y: bool = False, floor: float | None = None,
    total_steps: int | None = None, baseline: np.ndarray | None = None,
) -> go.Figure:
    """Loss per optimizer step, raw and smoothed, with the irreducible loss as a floor line and a
    pinned baseline's smoothed loss, faint.

    Up to MAX_LOSS_POINTS steps every step is drawn. Beyond, the raw curve shows every k-th step
    and the smoothed one is the same moving average over means of k steps (weight ** k a block),
    so the cost of a refresh no longer grows with the run."""
    losses = np.asarray(losses, dtype=np.float64)
    steps, blocks, stride = _thinned(losses)
    x_end = total_steps or max(len(losses), 1)
    raw_name = "loss" if stride == 1 else f"loss (1 step in {stride})"
    data = [{"type": "scatter", "x": steps, "y": blocks[:, -1].astype(np.float32), "mode": "lines", "name": raw_name,
             "line": {"color": DATA_COLOR, "width": 1}, "opacity": 0.35}]
    if smoothing > 0 and len(steps):
        data.append({"type": "scatter", "x": steps, "y": smooth(blocks.mean(axis=1), smoothing**stride).astype(np.float32),
                     "mode": "lines", "name": f"smoothed ({smoothing:g})", "line": {"color": DATA_COLOR, "width": 2}})
    if baseline is not None and len(baseline):
        base_steps, base_blocks, base_stride = _thinned(np.asarray(baseline, dtype=np.float64))
        data.append({"type": "scatter", "x": base_steps,
                     "y": smooth(base_blocks.mean(axis=1), max(smoothing, 0.5) ** base_stride).astype(np.float32),
                     "mode": "lines", "name": "baseline (smoothed)", "opacity": 0.7,
                     "line": {"color": BASELINE_COLOR, "width": 2, "dash": "dot"}})
    if floor is not None:
        data.append(_floor_trace(floor, x_end, f"irreducible loss {floor:.3f}"))
    layout = {
        "height": 300 + LEGEND_ROOM, "margin": {"l": 10, "r": 10, "t": 10, "b": AXIS_ROOM + LEGEND_ROOM},
        "xaxis": {"title": {"text": "optimizer step"}, "range": [0, x_end]},
        "yaxis": {"title": {"text": "MSE loss"}, **({"type": "log"} if log_y else {})},
        "legend": _legend_below(),
        "uirevision": "loss",  # keep the user's zoom while the curve grows
    }
    return _fast_figure(data, layout)


def preview_figure(points: np.ndarray | None, data: np.ndarray, ranges: tuple[list[float], list[float]],
                   label: str) -> go.Figure:
    """The live preview: samples of the current weights over the data (faint), on fixed axes."""
    traces = [{"type": "scatter", **_xy(data), "mode": "markers", "name": "data", "hoverinfo": "skip",
               "marker": {"size": 4, "color": DATA_COLOR, "opacity": 0.15}}]
    if points is not None:
        traces.append({"type": "scatter", **_xy(points), "mode": "markers", "name": "preview samples",
                       "marker": {"size": 4, "color": SAMPLE_COLOR, "opacity": 0.7}})
    x_range, y_range = ranges
    layout = {"height": 300, "margin": {"l": 10, "r": 10, "t": 30, "b": 10}, "showlegend": False,
              "uirevision": "preview", "title": {"text": label, "font": {"size": 13}, "x": 0.02},
              "xaxis": {"range": x_range, "title": {"text": "x"}},
              "yaxis": {"range": y_range, "title": {"text": "y"}, "scaleanchor": "x", "scaleratio": 1}}
    return _fast_figure(traces, layout)


def quality_figure(previews: np.ndarray, total_steps: int) -> go.Figure:
    """Energy distance of each preview over its noise floor, against the optimizer step (log y):
    1 is as close to the data as a fresh draw of the data itself."""
    steps, ratio = previews[:, 0], previews[:, 1] / previews[:, 2]
    data = [{"type": "scatter", "x": steps, "y": ratio.astype(np.float32), "mode": "lines+markers",
             "name": "energy distance / floor", "line": {"color": SAMPLE_COLOR, "width": 2}, "marker": {"size": 5}},
            _floor_trace(1.0, max(total_steps, 1), "noise floor (fresh data)")]
    layout = {"height": 280, "margin": {"l": 10, "r": 10, "t": 10, "b": 10}, "showlegend": False,
              "uirevision": "quality", "xaxis": {"range": [0, max(total_steps, 1)], "title": {"text": "optimizer step"}},
              "yaxis": {"type": "log", "dtick": 1, "title": {"text": "energy distance / floor"}}}  # a label a decade
    return _fast_figure(data, layout)


def loss_by_t_figure(t_start: np.ndarray, t_end: np.ndarray, recent: np.ndarray, floor: np.ndarray | None,
                     window: int, axis: TimeAxis | None = None) -> go.Figure:
    """The training loss binned by noise level t (a mean over recent steps) and, where known, the
    irreducible loss of each bin: the gap is what the network still gets wrong there. Bins are of
    level indices (t_end exclusive); on a continuous time axis they are drawn as the t in [0, 1] they cover."""
    axis = axis or TimeAxis(1000)
    if axis.continuous:  # level k covers t in [k / T, (k + 1) / T)
        low, high = t_start / axis.num_timesteps, t_end / axis.num_timesteps
        centres, width, shown, hover = (low + high) / 2, high - low, np.stack([low, high], 1), "t %{customdata[0]:.2f}-%{customdata[1]:.2f}"
    else:
        centres, width, shown, hover = (t_start + t_end - 1) / 2, t_end - t_start, np.stack([t_start, t_end - 1], 1), \
            "t %{customdata[0]}-%{customdata[1]}"
    data = [{"type": "bar", "x": centres, "y": recent.astype(np.float32), "width": width * 0.9,
             "name": f"loss, last {window} steps", "marker": {"color": DATA_COLOR, "opacity": 0.6},
             "customdata": shown, "hovertemplate": hover + ": loss %{y:.4f}<extra></extra>"}]
    if floor is not None:
        data.append({"type": "scatter", "x": centres, "y": floor.astype(np.float32), "mode": "lines+markers",
                     "name": "irreducible loss", "line": {"color": FLOOR_COLOR, "dash": "dash", "width": 2},
                     "marker": {"size": 5}})
    layout = {"height": 280 + LEGEND_ROOM, "margin": {"l": 10, "r": 10, "t": 10, "b": AXIS_ROOM + LEGEND_ROOM},
              "bargap": 0, "uirevision": "loss_by_t", "xaxis": {"title": {"text": axis.title}},
              "yaxis": {"title": {"text": "MSE loss"}, "rangemode": "tozero"}, "legend": _legend_below()}
    return _fast_figure(data, layout)


# --- results -------------------------------------------------------------------------------------


def comparison_figure(data: np.ndarray, samples: np.ndarray, baseline: np.ndarray | None = None,
                      labels: np.ndarray | None = None, names: tuple[str, ...] = ()) -> go.Figure:
    """Original vs generated, side by side on the same axes (the reference script's figure); a
    pinned baseline's samples faint under the generated ones. ``labels``: the class each sample was
    drawn for (``names`` theirs), each class in its colour."""
    x_range, y_range = axis_range(data, samples)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("Original data", "Generated samples"),
                        shared_xaxes=True, shared_yaxes=True, horizontal_spacing=0.04)
    fig.add_trace(go.Scatter(**_xy(data), mode="markers", name="Original data",
                             marker=dict(size=4, color=DATA_COLOR, opacity=0.5)), 1, 1)
    if baseline is not None:
        fig.add_trace(go.Scatter(**_xy(baseline), mode="markers", name="baseline samples",
                                 marker=dict(size=4, color=BASELINE_COLOR, opacity=0.3)), 1, 2)
    if labels is None:
        fig.add_trace(go.Scatter(**_xy(samples), mode="markers", name="Generated samples",
                                 marker=dict(size=4, color=SAMPLE_COLOR, opacity=0.5)), 1, 2)
    else:
        for k, name in enumerate(names):
            fig.add_trace(go.Scatter(**_xy(samples[labels == k]), mode="markers", name=name,
                                     marker=dict(size=4, color=class_color(k), opacity=0.6)), 1, 2)
    fig.update_xaxes(range=x_range, title_text="x", constrain="domain")
    fig.update_yaxes(range=y_range, constrain="domain")
    fig.update_yaxes(title_text="y", col=1)
    # equal units on x and y in both panels (x2 and y2 follow x and y), so a circle stays round
    fig.update_layout(height=380, showlegend=False, margin=dict(l=10, r=10, t=50, b=10),  # titles under the toolbar
                      yaxis=dict(scaleanchor="x", scaleratio=1), yaxis2=dict(scaleanchor="x2", scaleratio=1))
    return fig


FAMILY_COLORS = {"DDPM": SAMPLE_COLOR, "DDIM η=0": DATA_COLOR, "DDIM η=1": X0_COLOR, "DPM-Solver++ 2M": "#e377c2",
                 "Euler (flow)": "#9467bd", "Heun (flow)": "#8c564b"}


def sampler_family(sampler: str, eta: float | None) -> str:
    """A budget family's name (its path's ``family_label``), e.g. "DDIM η=0", "Heun (flow)"."""
    return path_class(objective_of(sampler)).family_label(sampler, eta)


def budget_figure(rows: list, current: tuple[str, int] | None, baseline: list | None = None) -> go.Figure:
    """Energy distance over floor against the number of model calls (log x), a line per sampler
    family; the current sampler setting is ringed. ``baseline``: a pinned run's rows, dotted, on
    the same axis (a DDPM run beside a flow matching one). Families in the order of their rows; one
    without a colour in ``FAMILY_COLORS`` takes plotly's next."""
    fig = go.Figure()
    for these, suffix, dash in ((rows, "", "solid"), (baseline or [], " · baseline", "dot")):
        for family in dict.fromkeys(sampler_family(r.sampler, r.eta) for r in these):
            mine = [r for r in these if sampler_family(r.sampler, r.eta) == family]
            name = family + suffix
            fig.add_trace(go.Scatter(
                x=[r.model_calls for r in mine], y=[r.ratio for r in mine], mode="lines+markers", name=name,
                line=dict(color=FAMILY_COLORS.get(family), width=2, dash=dash), marker=dict(size=7),
                opacity=1.0 if not suffix else 0.6, customdata=[[r.steps, r.seconds] for r in mine],
                hovertemplate=name + ": %{customdata[0]} steps, %{x} model calls, %{customdata[1]:.2f} s, "
                                     "%{y:.2f} × floor<extra></extra>"))
    if current is not None:
        now = [r for r in rows if (sampler_family(r.sampler, r.eta), r.steps) == current]
        if now:
            fig.add_trace(go.Scatter(x=[now[0].model_calls], y=[now[0].ratio], mode="markers", name="your setting",
                                     marker=dict(size=18, color="rgba(0,0,0,0)", line=dict(color="#000", width=2))))
    fig.add_hline(y=1.0, line=dict(color=FLOOR_COLOR, dash="dash", width=1.2))
    # an annotation on a log axis is placed at log10 of its value (a shape is not): add_hline's own
    # annotation would sit at 10
    fig.add_annotation(text="noise floor", x=1, xref="x domain", y=math.log10(1.0), yref="y", showarrow=False,
                       xanchor="right", yanchor="top", font=dict(color=FLOOR_COLOR, size=11))
    ratios = [r.ratio for r in [*rows, *(baseline or [])]]
    fig.update_xaxes(type="log", title_text="model calls (sampling steps)",
                     **log_ticks([r.model_calls for r in [*rows, *(baseline or [])]]))
    fig.update_yaxes(type="log", title_text="energy distance / floor", **log_ticks([1.0, *ratios]))
    fig.update_layout(height=340 + LEGEND_ROOM, margin=dict(l=10, r=10, t=10, b=AXIS_ROOM + LEGEND_ROOM),
                      legend=_legend_below())
    return fig


# --- guidance (issue 25) -------------------------------------------------------------------------

# One colour per class (Tableau 10 without its blue, then more): no class is drawn in the data's blue,
# so "the faint blue points are the data" stays true beside a conditional run's samples.
CLASS_COLORS = ("#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7",
                "#bab0ac", "#8c564b", "#2ca02c", "#d62728", "#9467bd", "#17becf", "#bcbd22", "#e377c2")
OTHER_CLASS_COLOR = "#c8c8c8"


def class_color(k: int) -> str:
    return CLASS_COLORS[k % len(CLASS_COLORS)]


def guidance_samples_figure(samples: np.ndarray, labels: np.ndarray, data: np.ndarray, data_labels: np.ndarray,
                            names: tuple[str, ...], focus: int, scale: float, ranges=None) -> go.Figure:
    """A conditional model's samples at one guidance scale, each in its class's colour, over the data
    in the same colours, faint. ``focus`` >= 0: that class alone in colour, the others grey."""
    fig = go.Figure()
    for k, name in enumerate(names):
        shown = focus < 0 or k == focus
        color = class_color(k) if shown else OTHER_CLASS_COLOR
        fig.add_trace(go.Scatter(**_xy(data[data_labels == k]), mode="markers", name=f"data: {name}",
                                 legendgroup=name, showlegend=False, hoverinfo="skip",
                                 marker=dict(size=4, color=color, opacity=0.18 if shown else 0.1)))
    order = [k for k in range(len(names)) if focus >= 0 and k != focus] + ([focus] if focus >= 0 else list(range(len(names))))
    for k in order:
        shown = focus < 0 or k == focus
        fig.add_trace(go.Scatter(**_xy(samples[labels == k]), mode="markers", name=names[k], legendgroup=names[k],
                                 marker=dict(size=4, color=class_color(k) if shown else OTHER_CLASS_COLOR,
                                             opacity=0.85 if shown else 0.35),
                                 hovertemplate=f"{names[k]} at w = {scale:g}<br>(%{{x:.2f}}, %{{y:.2f}})<extra></extra>"))
    x_range, y_range = ranges or axis_range(data, samples)
    fig.update_layout(xaxis=dict(range=x_range, title_text="x", constrain="domain"),
                      yaxis=dict(range=y_range, title_text="y", scaleanchor="x", scaleratio=1),
                      height=420 + LEGEND_ROOM, margin=dict(l=10, r=10, t=30, b=AXIS_ROOM + LEGEND_ROOM),
                      legend=_legend_below(), title=dict(text=f"Samples at w = {scale:g}", x=0.5, font=dict(size=14)))
    return fig


def guidance_curve_figure(rows: list[dict], names: tuple[str, ...], scale: float, focus: int) -> go.Figure:
    """Against the guidance scale w, per class: the energy distance of its samples to its data over
    the floor (left, log) and their spread over the class's (right); the shown w marked."""
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.12,
                        subplot_titles=("Distance to the class / floor",
                                        "Spread / the class's"))
    for k, name in enumerate(names):
        mine = [r for r in rows if r["class"] == k]
        if not mine:
            continue
        shown = focus < 0 or k == focus
        style = dict(color=class_color(k) if shown else OTHER_CLASS_COLOR, width=2.5 if focus == k else 1.8)
        ws = [r["guidance"] for r in mine]
        fig.add_trace(go.Scatter(x=ws, y=[r["energy_distance_ratio"] for r in mine], mode="lines+markers", name=name,
                                 legendgroup=name, line=style, hovertemplate=f"{name}: w = %{{x:g}}, %{{y:.2f}} × floor<extra></extra>"), 1, 1)
        fig.add_trace(go.Scatter(x=ws, y=[r["spread_ratio"] for r in mine], mode="lines+markers", name=name,
                                 legendgroup=name, showlegend=False, line=style,
                                 hovertemplate=f"{name}: w = %{{x:g}}, spread %{{y:.2f}} of the class's<extra></extra>"), 1, 2)
    for col in (1, 2):
        fig.add_vline(x=scale, line=dict(color="#000", width=1, dash="dot"), row=1, col=col)
        fig.add_hline(y=1.0, line=dict(color=FLOOR_COLOR, dash="dash", width=1.2), row=1, col=col)
    ratios = [r["energy_distance_ratio"] for r in rows if math.isfinite(r["energy_distance_ratio"]) and r["energy_distance_ratio"] > 0]
    fig.update_yaxes(type="log", row=1, col=1, **log_ticks([1.0, *ratios]))
    fig.update_yaxes(rangemode="tozero", row=1, col=2)
    fig.update_xaxes(title_text="guidance scale w")
    fig.update_layout(height=340 + LEGEND_ROOM, margin=dict(l=10, r=10, t=40, b=AXIS_ROOM + LEGEND_ROOM),
                      legend=_legend_below())
    return fig


DENSITY_DEPTH = 10.0  # nats: the density maps colour log p from its top down to this far below it
PROBE_COLOR = "#d62728"


def _density_heatmap(xs, ys, log_p, top: float, *, colorbar: bool, name: str) -> go.Heatmap:
    return go.Heatmap(x=xs, y=ys, z=np.clip(log_p, top - DENSITY_DEPTH, None).astype(np.float32), zmin=top - DENSITY_DEPTH,
                      zmax=top, colorscale="Viridis", name=name, showscale=colorbar,
                      colorbar=dict(title=dict(text="log p", side="right"), thickness=12) if colorbar else None,
                      hovertemplate="(%{x:.2f}, %{y:.2f}): log p = %{z:.2f}<extra>" + name + "</extra>")


def density_figure(xs: np.ndarray, ys: np.ndarray, log_p_model: np.ndarray, log_p_true: np.ndarray | None,
                   data: np.ndarray) -> go.Figure:
    """The learned log-density beside the true one (where known), one colour scale from their top
    down ``DENSITY_DEPTH`` nats, the data faint over both; equal units on x and y."""
    panels = 2 if log_p_true is not None else 1
    titles = ("learned: log p_model", "true: log p_data")[:panels]
    fig = make_subplots(rows=1, cols=panels, subplot_titles=titles, shared_yaxes=True, horizontal_spacing=0.04)
    top = float(np.max(log_p_model if log_p_true is None else np.maximum(log_p_model.max(), log_p_true.max())))
    maps = (log_p_model,) if log_p_true is None else (log_p_model, log_p_true)
    for col, (log_p, title) in enumerate(zip(maps, titles, strict=True), start=1):
        fig.add_trace(_density_heatmap(xs, ys, log_p, top, colorbar=col == panels, name=title), row=1, col=col)
        fig.add_trace(go.Scattergl(**_xy(data), mode="markers", name="data", showlegend=False, hoverinfo="skip",
                                   marker=dict(size=2.5, color="rgba(255,255,255,0.55)")), row=1, col=col)
    fig.update_xaxes(range=[float(xs[0]), float(xs[-1])], constrain="domain")
    fig.update_yaxes(range=[float(ys[0]), float(ys[-1])], scaleanchor="x", scaleratio=1, constrain="domain")
    fig.update_layout(height=420, margin=dict(l=10, r=10, t=40, b=10), showlegend=False)
    return fig


def probe_figure(xs: np.ndarray, ys: np.ndarray, log_p_model: np.ndarray, targets: np.ndarray,
                 ode: np.ndarray | None = None, stochastic: np.ndarray | None = None,
                 start: tuple[float, float] | None = None) -> go.Figure:
    """The learned log-density as a backdrop, a grid of click targets (``targets`` (G, 2): the
    starts one can pick), and, once probed, the ODE path (red, from its start, marked) and the
    stochastic paths from the same start (thin grey)."""
    top = float(np.max(log_p_model))
    fig = go.Figure(_density_heatmap(xs, ys, log_p_model, top, colorbar=False, name="learned log p"))
    fig.add_trace(go.Scatter(**_xy(targets), mode="markers", name="pick a start", hoverinfo="x+y",
                             marker=dict(size=9, color="rgba(255,255,255,0.06)", line=dict(width=0))))
    for i, path in enumerate(stochastic if stochastic is not None else []):
        fig.add_trace(go.Scatter(**_xy(path), mode="lines", name="stochastic paths", legendgroup="stochastic",
                                 showlegend=i == 0, hoverinfo="skip", line=dict(color="rgba(70,70,70,0.55)", width=1)))
    if ode is not None:
        fig.add_trace(go.Scatter(**_xy(ode), mode="lines", name="ODE path", hoverinfo="skip",
                                 line=dict(color=PROBE_COLOR, width=3)))
    if start is not None:
        fig.add_trace(go.Scatter(x=[start[0]], y=[start[1]], mode="markers", name="start", hoverinfo="skip",
                                 marker=dict(size=13, color=PROBE_COLOR, symbol="circle-open", line=dict(width=3))))
    shown = [targets, np.array([[xs[0], ys[0]], [xs[-1], ys[-1]]])] + ([] if ode is None else [ode])
    low, high = np.min([p.min(0) for p in shown], 0), np.max([p.max(0) for p in shown], 0)
    pad = 0.03 * (high - low)  # the paths may leave the targets' box (a VP path bulges outwards)
    fig.update_xaxes(range=[float(low[0] - pad[0]), float(high[0] + pad[0])], constrain="domain")
    fig.update_yaxes(range=[float(low[1] - pad[1]), float(high[1] + pad[1])], scaleanchor="x", scaleratio=1,
                     constrain="domain")
    fig.update_layout(height=480, margin=dict(l=10, r=10, t=10, b=LEGEND_ROOM), legend=_legend_below(),
                      clickmode="event+select", dragmode=False, plot_bgcolor="#f4f4f4")
    return fig


def probe_log_p_figure(time: np.ndarray, log_p: np.ndarray, axis: TimeAxis) -> go.Figure:
    """log p_t(x_t) along the ODE path against the path's time (0: the data), in ``axis``'s units."""
    x = time if axis.continuous else time * axis.num_timesteps
    fig = go.Figure(go.Scatter(x=x, y=log_p, mode="lines+markers", marker=dict(size=4, color=PROBE_COLOR),
                               line=dict(color=PROBE_COLOR), name="log p along the ODE path",
                               hovertemplate="t = %{x:.3g}: log p = %{y:.2f}<extra></extra>"))
    fig.update_xaxes(title_text=axis.title)
    fig.update_yaxes(title_text="log p_t(x_t) (nats)")
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=10, b=AXIS_ROOM))
    return fig


def report_html(config: ExperimentConfig, data: np.ndarray, trajectory: Trajectory, losses) -> str:
    """One standalone HTML page (plotly.js inlined): comparison, reverse animation, loss."""
    parts = [comparison_figure(data, trajectory.samples, labels=trajectory.labels, names=config.data.classes),
             reverse_figure(trajectory, data, AnimationStyle(trails=8))]
    if len(losses):
        parts.append(loss_figure(np.asarray(losses)))
    body = "\n".join(
        fig.to_html(full_html=False, include_plotlyjs=(i == 0), auto_play=False) for i, fig in enumerate(parts)
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>DDPM Lab run</title></head>"
        f"<body style='font-family:sans-serif;max-width:1000px;margin:auto'><h2>DDPM Lab run</h2>"
        f"<pre>{config.to_json()}</pre>{body}</body></html>"
    )
