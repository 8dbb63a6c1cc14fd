"""ECharts options for the four live training charts: numbers in, JSON-able dicts out.

The same pictures as ``loss_figure``, ``preview_figure``, ``quality_figure`` and
``loss_by_t_figure``, for ``st.echarts_chart(spec, key=...)``: a keyed ECharts element keeps its
identity, so the browser keeps one ECharts instance and calls ``setOption`` on each update, where a
``st.plotly_chart`` whose figure changed is torn down and drawn anew (Streamlit 1.67 derives its id
from the whole figure).

Rules every spec here follows (checked in tests/test_live_charts.py):
- plain Python floats, ints, strings and lists (``json.dumps(..., allow_nan=False)`` works:
  Streamlit serialises with ``allow_nan=False``); a non-finite value is ``None``, ECharts' empty value;
- the same series, in the same order, whatever is missing (an absent one has ``data: []``) and an
  explicit type on every axis, so the picture is right even if an update were merged into the last
  option; Streamlit 1.67 calls ``setOption(option, {notMerge: true})`` (its bundled frontend; a
  series dropped from the option left no pixel behind in ``bench/live_chart_probe.py``), so nothing
  of the old option survives anyway;
- ``animation: false``: no transition; ECharts renders and flushes the canvas inside ``setOption``,
  so the first frame after an update shows all of it;
- ``aria.label.description`` says what is drawn now (steps, axis type, floor, ...): ECharts writes
  it, in that same ``setOption``, as the ``aria-label`` of the div it was started on (the one with
  an ``_echarts_instance_`` attribute inside ``.st-key-<key>``, the canvas's grandparent), so a test
  can wait for the words of the state it expects.

No plotly and no Streamlit here (the package's ``__init__`` still loads plotly for the helpers
``TimeAxis`` and the colours).
"""

from __future__ import annotations

import math

import numpy as np

from charts import BASELINE_COLOR, DATA_COLOR, FLOOR_COLOR, SAMPLE_COLOR, TimeAxis

MAX_POINTS = 2000  # points drawn per loss curve; longer runs are decimated (see ``decimate``)
DIGITS = 4  # significant digits sent per value: finer than a chart's pixel, short in JSON

# Heights for ``st.echarts_chart(..., height=...)``: an ECharts option has no size of its own.
LOSS_HEIGHT = 280
PREVIEW_HEIGHT = 300
QUALITY_HEIGHT = 260
LOSS_BY_T_HEIGHT = 260

_FONT = 11
_TITLE = {"left": 8, "top": 2, "textStyle": {"fontSize": 13, "fontWeight": "normal"}}
# The plot area with its axis labels and names inside (ECharts 6; 'same' is also what Streamlit's
# theme sets): margins as small as Plotly's automargin, under either theme.
_GRID = {"left": 8, "right": 16, "bottom": 4, "outerBoundsMode": "same"}
_LEGEND = {"top": 0, "right": 8, "itemWidth": 18, "itemHeight": 8, "textStyle": {"fontSize": _FONT}}


# --- numbers -------------------------------------------------------------------------------------


def ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Exponential moving average with bias correction (TensorBoard's smoothing), float64:

        a_i = w a_{i-1} + (1 - w) v_i,  a_{-1} = 0;   s_i = a_i / (1 - w^(i+1))

    the same numbers as ``charts.smooth``, without a Python loop over the steps (200,000 steps:
    about 0.1 s there). Within a block of B steps, a_{s+k} = w^k (w a_{s-1} + (1 - w) Σ_{j<=k} w^-j v_{s+j}),
    a cumulative sum; B keeps w^-B below 1e100 so nothing overflows. A non-finite value makes every
    later one non-finite, as the recursion does."""
    values = np.asarray(values, dtype=np.float64)
    if not 0 <= weight < 1:
        raise ValueError(f"weight must be in [0, 1); got {weight!r}")
    if weight == 0 or len(values) == 0:
        return values.copy()
    block = max(1, int(100 / -math.log10(weight)))
    powers = weight ** np.arange(min(block, len(values)))  # w^k, k = 0..B-1
    out = np.empty(len(values))
    carry = 0.0  # a_{s-1}: the average before the block, not yet bias-corrected
    for start in range(0, len(values), block):
        chunk = values[start:start + block]
        w_k = powers[:len(chunk)]
        out[start:start + len(chunk)] = w_k * (weight * carry + (1 - weight) * np.cumsum(chunk / w_k))
        carry = out[start + len(chunk) - 1]
    return out / -np.expm1(np.arange(1, len(values) + 1) * math.log(weight))  # 1 - w^(i+1), exact for small i


def decimate(values: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Indices of the points to draw, ascending: all of them up to ``max_points``; beyond, the first
    and the last, and between them the lowest and the highest value of each of
    (max_points - 2) // 2 equal blocks (min-max decimation: the band a noisy loss fills, its spikes
    and its minimum are kept; a thinned 1-in-k curve loses all three). Non-finite values are
    never a block's lowest or highest unless the whole block is non-finite."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n <= max_points:
        return np.arange(n)
    inner = values[1:-1]
    size = _block_size(n, max_points)
    blocks = -(-len(inner) // size)
    finite = np.isfinite(inner)
    low = np.full(blocks * size, np.inf)
    low[:len(inner)] = np.where(finite, inner, np.inf)
    high = np.full(blocks * size, -np.inf)
    high[:len(inner)] = np.where(finite, inner, -np.inf)
    first = np.arange(blocks) * size + 1  # each block's first index in ``values``
    picks = [first + low.reshape(blocks, size).argmin(1), first + high.reshape(blocks, size).argmax(1)]
    return np.unique(np.concatenate([[0, n - 1], *picks]))


def _block_size(n: int, max_points: int = MAX_POINTS) -> int:
    """Steps a block of ``decimate`` for ``n`` values (1: every value is drawn)."""
    return 1 if n <= max_points else -(-(n - 2) // ((max_points - 2) // 2))


def rounded(values, digits: int = DIGITS) -> list:
    """Each value to ``digits`` significant digits as a Python float; a non-finite one as ``None``
    (JSON has no NaN; ECharts draws ``null`` as a gap)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    finite = np.isfinite(values)
    safe = np.where(finite & (values != 0), np.abs(values), 1.0)
    decimals = np.clip(digits - 1 - np.floor(np.log10(safe)), -290, 290)
    scale = 10.0 ** np.abs(decimals)  # an exact power of ten up to 1e22: x / 10^d prints as the short decimal
    with np.errstate(invalid="ignore", over="ignore"):
        out = np.where(decimals >= 0, np.round(values * scale) / scale, np.round(values / scale) * scale)
    out = out.astype(object)
    out[~finite] = None
    return out.tolist()


def _pairs(xs, ys) -> list[list]:
    """[[x, y], ...] for a line or scatter series on value axes."""
    return [list(p) for p in zip(xs, ys, strict=True)]


def _log_bounds(*value_sets) -> dict:
    """min and max for a log axis: the finite positive values' range, widened to the next 1-2-5
    number (ECharts' own log range widens to whole decades, which leaves most of a loss chart
    empty); {} (ECharts' range) when there are none or one."""
    values = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for v in value_sets])
    values = values[np.isfinite(values) & (values > 0)]
    if len(values) == 0 or values.min() == values.max():
        return {}
    nice = np.array([1.0, 2.0, 5.0, 10.0])
    low, high = float(values.min()), float(values.max())
    low_decade, high_decade = 10.0 ** math.floor(math.log10(low)), 10.0 ** math.floor(math.log10(high))
    return {"min": rounded([low_decade * nice[nice * low_decade <= low * (1 + 1e-12)].max()])[0],
            "max": rounded([high_decade * nice[nice * high_decade >= high * (1 - 1e-12)].min()])[0]}


def _axis(kind: str, name: str, gap: int, **extra) -> dict:
    return {"type": kind, "name": name, "nameLocation": "middle", "nameGap": gap,
            "nameTextStyle": {"fontSize": _FONT}, "axisLabel": {"fontSize": _FONT}, **extra}


def _base(description: str, title: str, grid: dict) -> dict:
    return {"animation": False, "aria": {"enabled": True, "label": {"description": description}},
            "title": {**_TITLE, "text": title}, "grid": grid,
            "tooltip": {"trigger": "axis", "confine": True}}


def _floor_line(name: str, y: float | None, x_end: float) -> dict:
    data = [] if y is None or not math.isfinite(y) else _pairs([0, x_end], rounded([y, y], 6))
    return {"type": "line", "name": name, "data": data, "symbol": "none", "silent": True, "z": 3,
            "lineStyle": {"color": FLOOR_COLOR, "type": "dashed", "width": 1.5}, "itemStyle": {"color": FLOOR_COLOR}}


# --- the charts ----------------------------------------------------------------------------------


def loss_spec(
    losses: np.ndarray, *, smoothing: float = 0.9, log_y: bool = False, floor: float | None = None,
    total_steps: int | None = None, baseline: np.ndarray | None = None,
) -> dict:
    """The loss per optimizer step: raw (faint), exponentially smoothed (``ema``), the irreducible
    loss as a dashed line, a pinned baseline run's smoothed loss dotted; the step axis fixed to
    0..total_steps so the curve grows into it. Series, always in this order: raw, smoothed,
    baseline, floor. Long series are decimated (``decimate``) after smoothing all steps, so the
    smoothed line is exact at every point drawn."""
    losses = np.asarray(losses, dtype=np.float64).ravel()
    n = len(losses)
    x_end = int(total_steps or max(n, 1))
    shown = decimate(losses)
    steps = (shown + 1).tolist()  # optimizer steps are 1-based
    raw_name = "loss" if len(shown) == n else f"loss (low & high of each {_block_size(n)} steps)"
    smoothed = ema(losses, smoothing)[shown] if n and smoothing > 0 else np.zeros(0)  # 0: no smoothed line

    base_steps, base_smoothed = [], np.zeros(0)
    if baseline is not None and len(baseline):
        baseline = np.asarray(baseline, dtype=np.float64).ravel()
        base_shown = decimate(baseline)
        base_steps, base_smoothed = (base_shown + 1).tolist(), ema(baseline, max(smoothing, 0.5))[base_shown]
    floor = None if floor is None or not math.isfinite(floor) else float(floor)

    words = [f"loss: {n} steps of {x_end}", "log axis" if log_y else "linear axis",
             f"floor {floor:.3f}" if floor is not None else "no floor",
             f"baseline {len(baseline)} steps" if len(base_steps) else "no baseline"]
    if len(smoothed):
        words.append(f"smoothed {smoothed[-1]:.4g}")
    line = {"type": "line", "symbol": "none"}  # no markers, and a plain line in the legend
    series = [
        {**line, "name": raw_name, "data": _pairs(steps, rounded(losses[shown])), "z": 1,
         "lineStyle": {"color": DATA_COLOR, "width": 1, "opacity": 0.35}, "itemStyle": {"color": DATA_COLOR}},
        {**line, "name": f"smoothed ({smoothing:g})", "z": 2,
         "data": _pairs(steps[:len(smoothed)], rounded(smoothed, DIGITS + 1)),
         "lineStyle": {"color": DATA_COLOR, "width": 2}, "itemStyle": {"color": DATA_COLOR}},
        {**line, "name": "baseline (smoothed)", "data": _pairs(base_steps, rounded(base_smoothed, DIGITS + 1)),
         "z": 2, "lineStyle": {"color": BASELINE_COLOR, "width": 2, "type": "dotted", "opacity": 0.7},
         "itemStyle": {"color": BASELINE_COLOR}},
        _floor_line(f"irreducible loss {floor:.3f}" if floor is not None else "irreducible loss", floor, x_end),
    ]
    spec = _base(", ".join(words), "" if n else "Loss: none yet", {**_GRID, "top": 34})
    spec["legend"] = {**_LEGEND, "data": [s["name"] for s in series if s["data"]]}
    spec["xAxis"] = _axis("value", "optimizer step", 26, min=0, max=x_end)
    bounds = _log_bounds(losses[shown], smoothed, base_smoothed, [] if floor is None else [floor]) if log_y else {}
    spec["yAxis"] = _axis("log" if log_y else "value", "MSE loss", 50, scale=True, **bounds)
    spec["series"] = series
    return spec


def preview_spec(points: np.ndarray | None, data: np.ndarray, ranges: tuple[list[float], list[float]],
                 label: str, *, height: int = PREVIEW_HEIGHT) -> dict:
    """The live preview: samples of the current weights (orange) over the data (faint), on the
    fixed axes ``ranges`` = ([x_min, x_max], [y_min, y_max]). Equal aspect: ECharts has no
    scale anchor, so the plot area is sized in pixels, its width the height times the x span over
    the y span, for a chart ``height`` pixels tall. Series: data, preview samples."""
    (x0, x1), (y0, y1) = (float(v) for v in ranges[0]), (float(v) for v in ranges[1])
    top, bottom = 30, 40
    plot_height = max(height - top - bottom, 10)
    plot_width = round(plot_height * (x1 - x0) / (y1 - y0))
    samples = np.zeros((0, 2)) if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 2)
    data = np.asarray(data, dtype=np.float64).reshape(-1, 2)
    title = label or ("Live samples: none yet" if points is None else "Live samples")
    scatter = {"type": "scatter", "symbolSize": 4, "emphasis": {"disabled": True}}
    series = [
        {**scatter, "name": "data", "silent": True, "data": _pairs(rounded(data[:, 0]), rounded(data[:, 1])),
         "itemStyle": {"color": DATA_COLOR, "opacity": 0.15}},
        {**scatter, "name": "preview samples", "data": _pairs(rounded(samples[:, 0]), rounded(samples[:, 1])),
         "itemStyle": {"color": SAMPLE_COLOR, "opacity": 0.7}},
    ]
    no_edge_labels = {"fontSize": _FONT, "showMinLabel": False, "showMaxLabel": False}
    spec = _base(f"preview: {title}; {len(samples)} samples over {len(data)} data points", title,
                 {"left": "center", "top": top, "width": plot_width, "height": plot_height,
                  "outerBoundsMode": "none"})  # the grid is the plot area: labels outside it
    spec["tooltip"] = {"trigger": "item", "confine": True}
    spec["xAxis"] = {**_axis("value", "x", 24, min=rounded([x0])[0], max=rounded([x1])[0]), "axisLabel": no_edge_labels}
    spec["yAxis"] = {**_axis("value", "y", 30, min=rounded([y0])[0], max=rounded([y1])[0]), "axisLabel": no_edge_labels}
    spec["series"] = series
    return spec


def quality_spec(previews: np.ndarray, total_steps: int) -> dict:
    """Energy distance of each preview over its noise floor against the optimizer step, log y,
    with the floor (1: as close to the data as a fresh draw of the data itself) dashed.
    ``previews``: rows of (step, energy distance, floor, ...). Series: ratio, noise floor."""
    previews = np.asarray(previews, dtype=np.float64).reshape(len(previews), -1) if len(previews) else np.zeros((0, 3))
    steps = previews[:, 0].astype(np.int64).tolist()
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = previews[:, 1] / previews[:, 2]
    x_end = max(int(total_steps), 1)
    if len(steps):
        description = f"quality: {len(steps)} previews, last {ratio[-1]:.3g} x floor at step {steps[-1]}"
    else:
        description = "quality: no previews yet"
    series = [
        {"type": "line", "name": "energy distance / floor", "data": _pairs(steps, rounded(ratio)), "symbolSize": 5,
         "showSymbol": True, "lineStyle": {"color": SAMPLE_COLOR, "width": 2}, "itemStyle": {"color": SAMPLE_COLOR}},
        _floor_line("noise floor (fresh data)", 1.0, x_end),
    ]
    spec = _base(description, "" if len(steps) else "Sample quality: none yet",
                 {**_GRID, "top": 24})
    spec["xAxis"] = _axis("value", "optimizer step", 26, min=0, max=x_end)
    spec["yAxis"] = _axis("log", "energy distance / floor", 40, logBase=10)
    spec["series"] = series
    return spec


def loss_by_t_spec(t_start: np.ndarray, t_end: np.ndarray, recent: np.ndarray, floor: np.ndarray | None,
                   window: int, axis: TimeAxis | None = None) -> dict:
    """The training loss binned by noise level (a mean over the last ``window`` steps; bars) and,
    where known, each bin's irreducible loss (dashed). Bins are level indices, t_end exclusive; a
    category axis names each bin by the times it covers, in the path's words: levels
    ``start-end`` for DDPM, t in [start / T, end / T) for a continuous path. Series: loss, floor."""
    axis = axis or TimeAxis(1000)
    t_start, t_end = np.asarray(t_start, dtype=np.int64), np.asarray(t_end, dtype=np.int64)
    recent = np.asarray(recent, dtype=np.float64)
    if axis.continuous:  # level k covers t in [k / T, (k + 1) / T)
        names = [f"{s / axis.num_timesteps:.2f}–{e / axis.num_timesteps:.2f}" for s, e in zip(t_start, t_end, strict=True)]
    else:
        names = [f"{s}" if e - 1 == s else f"{s}–{e - 1}" for s, e in zip(t_start, t_end, strict=True)]
    empty = not np.isfinite(recent).any()
    has_floor = floor is not None and bool(np.isfinite(floor).any())
    floor_values = rounded(floor) if has_floor else []
    words = [f"loss by noise level: {len(names)} bins, last {window} steps", "floor drawn" if has_floor else "no floor"]
    if not empty:
        words.append(f"highest at t {names[int(np.nanargmax(recent))]} ({np.nanmax(recent):.4g})")
    series = [
        {"type": "bar", "name": f"loss, last {window} steps", "data": rounded(recent), "barCategoryGap": "8%",
         "itemStyle": {"color": DATA_COLOR, "opacity": 0.6}},
        {"type": "line", "name": "irreducible loss", "data": floor_values, "symbolSize": 5, "showSymbol": True,
         "lineStyle": {"color": FLOOR_COLOR, "type": "dashed", "width": 2}, "itemStyle": {"color": FLOOR_COLOR}},
    ]
    spec = _base(", ".join(words), "Loss by noise level: none yet" if empty else "",
                 {**_GRID, "top": 34})
    spec["legend"] = {**_LEGEND, "data": [s["name"] for s in series if s["data"]]}
    spec["xAxis"] = _axis("category", axis.title, 26, data=names)
    spec["yAxis"] = _axis("value", "MSE loss", 44, min=0)
    spec["series"] = series
    return spec
