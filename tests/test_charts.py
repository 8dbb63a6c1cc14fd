"""The page's figure builders (plotly only, no Streamlit)."""

import numpy as np
import pytest

import charts


@pytest.mark.parametrize("n", [1, 999, charts.MAX_LOSS_POINTS])
def test_the_loss_curve_draws_every_step_of_a_short_run(n):
    losses = np.linspace(1.0, 0.2, n)
    fig = charts.loss_figure(losses, smoothing=0.9)
    assert list(fig.data[0].x) == list(range(1, n + 1))
    np.testing.assert_allclose(fig.data[0].y, losses, rtol=1e-6)


def test_a_long_run_is_thinned_to_a_bounded_number_of_points():
    n = 10 * charts.MAX_LOSS_POINTS + 7
    losses = np.full(n, 0.25)
    fig = charts.loss_figure(losses, smoothing=0.9)
    raw, smoothed = fig.data
    assert charts.MAX_LOSS_POINTS // 2 < len(raw.x) <= charts.MAX_LOSS_POINTS and raw.name == "loss (1 step in 11)"
    assert raw.x[-1] == len(raw.x) * 11
    np.testing.assert_allclose(smoothed.y, 0.25, rtol=1e-6)  # the average of a constant is that constant


def test_smoothing_is_a_bias_corrected_moving_average():
    values = np.array([1.0, 0.0, 0.0])
    # (1 - w) v_0 / (1 - w) = 1; then w * 1 (1 - w)... divided by 1 - w^2, 1 - w^3
    w = 0.5
    expected = [1.0, 0.5 * 0.5 / (1 - 0.25), 0.25 * 0.5 / (1 - 0.125)]
    np.testing.assert_allclose(charts.smooth(values, w), expected)


def test_the_reverse_animation_has_one_frame_per_kept_state_and_fixed_axes():
    frames = np.random.default_rng(0).normal(size=(7, 50, 2)).astype(np.float32)
    fig = charts.animation_figure(frames, [f"t = {i}" for i in range(7)], frames[-1], title="x",
                                  style=charts.AnimationStyle(trails=3, show_x0=False))
    assert len(fig.frames) == 7 and len(fig.layout.sliders[0].steps) == 7
    assert fig.layout.xaxis.range is not None and fig.layout.yaxis.range is not None
    names = [trace.name for trace in fig.data]
    assert names == ["data", "x_t", "paths"]
    assert list(fig.frames[0].traces) == [1, 2]  # frames move the points and the paths, not the data


def test_the_live_figures_built_from_dicts_are_valid_plotly_figures():
    """Built from plain dicts for speed: each passes plotly's validation again, as a figure."""
    import plotly.graph_objects as go

    from diffusion.monitoring import LossByT

    losses = np.linspace(1.0, 0.2, 3000)
    by_t = LossByT(100, 20)
    by_t.update(1, np.arange(100) % 100, np.linspace(0.1, 1.0, 100))
    snap = by_t.snapshot()
    previews = np.array([[10, 0.1, 0.01, 0.003], [20, 0.05, 0.01, 0.003]])
    data = np.random.default_rng(0).normal(size=(50, 2))
    figures = [
        charts.loss_figure(losses, floor=0.17, log_y=True, total_steps=5000, baseline=losses[:1000]),
        charts.preview_figure(data[:10], data, ([-3, 3], [-3, 3]), "Live samples"),
        charts.quality_figure(previews, 100),
        charts.loss_by_t_figure(snap.t_start, snap.t_end, snap.recent_loss, snap.recent_loss, snap.window),
    ]
    for fig in figures:
        go.Figure(fig.to_dict())  # raises ValueError on any invalid property
    loss = figures[0]
    assert [t.name for t in loss.data] == ["loss (1 step in 2)", "smoothed (0.9)", "baseline (smoothed)",
                                           "irreducible loss 0.170"]
    assert loss.layout.yaxis.type == "log" and list(loss.data[3].y) == [0.17, 0.17]
    assert len(loss.data[0].x) == 1500  # 3000 steps thinned to 1 in 2


def test_points_animated_are_the_same_evenly_chosen_samples_in_every_layer():
    rng = np.random.default_rng(1)
    frames, x0, base = (rng.normal(size=(4, 200, 2)).astype(np.float32) for _ in range(3))
    fig = charts.animation_figure(frames, [f"t = {i}" for i in range(4)], frames[-1], title="x", predicted_x0=x0,
                                  baseline=base, style=charts.AnimationStyle(animated=50))
    ids = np.linspace(0, 199, 50).round().astype(int)
    assert len(set(ids)) == 50 and ids[0] == 0 and ids[-1] == 199
    for k in range(4):
        moving, baseline, predicted = fig.frames[k].data
        np.testing.assert_array_equal(moving.x, frames[k, ids, 0])
        np.testing.assert_array_equal(baseline.y, base[k, ids, 1])
        np.testing.assert_array_equal(predicted.x, x0[k, ids, 0])
    assert len(fig.data[0].x) == 200  # the faint data is not thinned
    everything = charts.animation_figure(frames, [f"t = {i}" for i in range(4)], frames[-1], title="x",
                                         style=charts.AnimationStyle(animated=500))
    np.testing.assert_array_equal(everything.frames[2].data[0].x, frames[2, :, 0])  # more asked than there are: all


def test_a_frozen_figure_sends_the_same_json_as_the_figure_it_was():
    import plotly.io as pio

    frames = np.random.default_rng(2).normal(size=(5, 30, 2)).astype(np.float32)
    figure = charts.animation_figure(frames, [f"t = {i}" for i in range(5)], frames[-1], title="x")
    before = pio.to_json(figure, validate=False)
    frozen = charts.frozen(figure)
    assert isinstance(frozen, charts.FrozenFigure) and frozen.to_dict() is frozen.to_dict()  # computed once
    assert pio.to_json(frozen, validate=False) == before == pio.to_json(frozen, validate=False)


@pytest.mark.parametrize("objective", ["ddpm", "flow"])
def test_the_time_axis_shows_each_level_at_its_path_s_time(objective):
    """A continuous path's level k is drawn at its grid time (k + 1) / T, a discrete one's at k;
    frames are t T on a continuous path, so x_T is labelled t = 1 there and t = T otherwise."""
    from diffusion.config import ScheduleConfig
    from diffusion.objectives import path_of

    config = ScheduleConfig(objective=objective, num_timesteps=40)
    path, axis = path_of(config), charts.TimeAxis.of(config)
    assert axis.continuous == path.continuous_time
    levels = np.arange(40)
    np.testing.assert_array_equal(axis.level(levels), path.grid_times(40) if axis.continuous else levels)
    assert axis.label(axis.frame(40)) == ("t = 1.000" if axis.continuous else "t = 40")


def test_the_schedule_figure_draws_the_path_s_chart_and_another_path_dashed_beside_it():
    from diffusion.config import ScheduleConfig
    from diffusion.objectives import path_of

    ddpm, flow = path_of(ScheduleConfig(num_timesteps=100)), path_of(ScheduleConfig(objective="flow", num_timesteps=100))
    own = charts.schedule_figure(ddpm)
    assert [t.name for t in own.data] == ["β_t", "ᾱ_t", "log SNR"] and not own.layout.showlegend
    np.testing.assert_array_equal(own.data[1].y, ddpm.float64["alphas_cumprod"])
    both = charts.schedule_figure(flow, reference=ddpm)
    assert [(t.name, t.line.dash) for t in both.data] == [
        ("a = 1 − t (flow)", None), ("s = t (flow)", None), ("√ᾱ (DDPM)", "dash"), ("√(1−ᾱ) (DDPM)", "dash"),
        ("flow", None), ("DDPM", "dash")]
    np.testing.assert_array_equal(both.data[2].x, (np.arange(100) + 1) / 100)  # DDPM's level k at t = (k + 1) / T
    assert both.layout.showlegend and [a.text for a in both.layout.annotations] == [p.title for p in flow.chart().plots]


def _budget_rows(ratios):
    from diffusion.budget import BudgetRow

    return [BudgetRow("ddim", 0.0, steps, steps, 0.01, ratio * 0.01, 0.01) for steps, ratio in zip(
        (5, 10, 20, 50, 100), ratios, strict=True)]


def test_the_budget_s_floor_label_sits_on_its_line_and_the_log_axis_labels_1_2_5_only():
    """On a log axis Plotly places an annotation at log10 of its y (a shape at y itself): the label
    of the floor at 1 must say y = 0, or it sits beside the 10 gridline."""
    fig = charts.budget_figure(_budget_rows([40.0, 9.0, 3.0, 1.4, 0.7]), ("DDIM η=0", 50)).to_dict()["layout"]
    (line,) = fig["shapes"]
    (label,) = [a for a in fig["annotations"] if a["text"] == "noise floor"]
    assert fig["yaxis"]["type"] == "log" and line["y0"] == line["y1"] == 1.0
    assert label["yref"] == "y" and label["y"] == 0.0  # log10(1)
    ticks = fig["yaxis"]["tickvals"]
    assert fig["yaxis"]["tickmode"] == "array" and ticks == [0.5, 1, 2, 5, 10, 20, 50]
    assert fig["yaxis"]["ticktext"] == ["0.5", "1", "2", "5", "10", "20", "50"]
    wide = charts.budget_figure(_budget_rows([900.0, 90.0, 9.0, 2.0, 0.9]), None).to_dict()["layout"]["yaxis"]
    assert wide["tickvals"] == [0.1, 1, 10, 100, 1000]  # three decades and more: the decades alone


def test_log_ticks_take_1_2_5_only_when_the_decades_label_too_few():
    assert charts.log_ticks([1.0, 1.5])["tickvals"] == [0.5, 1, 2]  # nothing finer than 1, 2, 5
    assert charts.log_ticks([0.6, 2.2], ((1,), (1, 2, 5), (1, 1.5, 2, 3, 5, 7)))["tickvals"] == [0.5, 0.7, 1, 1.5, 2, 3]
    assert charts.log_ticks([float("nan"), 0.0, -1.0]) == {}


def _field(errors_at: dict[int, float], K: int = 5, n: int = 4):
    """A field on an n x n grid at K levels: the ideal one (1, 0) everywhere, the learned one off by
    ``errors_at[k]`` in y at level k (1e-5 elsewhere)."""
    xs = ys = np.linspace(-1.0, 1.0, n)
    ideal = np.tile([1.0, 0.0], (K, n * n, 1))
    learned = ideal.copy()
    for k in range(K):
        learned[k, :, 1] = errors_at.get(k, 1e-5) * (1 + np.arange(n * n) / (n * n))  # a spread within a level
    noised = np.zeros((K, 10, 2))
    return charts.field_figure(np.arange(K) * 10, xs, ys, learned, ideal, noised, quantity="ε"), learned, ideal


def test_the_field_s_colour_scale_is_one_for_every_frame():
    fig, learned, ideal = _field({0: 300.0, 2: 2.0})
    maps = [frame.data[0] for frame in fig.frames] + [fig.data[0]]
    assert len({(m.zmin, m.zmax) for m in maps}) == 1 and maps[0].zauto is False
    errors = np.linalg.norm(learned - ideal, axis=2)
    top = np.percentile(errors[1:], 99)  # the first level, far above the rest, does not set the top
    np.testing.assert_allclose(maps[0].zmax, np.log10(top))
    np.testing.assert_allclose(maps[0].zmin, np.log10(top) - charts.ERROR_DECADES)  # the 1st percentile lies lower
    np.testing.assert_allclose(fig.frames[3].data[0].customdata.ravel(), errors[3], rtol=1e-6)  # hover: the error
    np.testing.assert_allclose(10 ** fig.frames[2].data[0].z.ravel(), errors[2], rtol=1e-5)


def test_field_arrows_have_two_head_sides_at_their_tip():
    xy = charts._arrows(np.array([[0.0, 0.0], [1.0, 1.0]]), np.array([[2.0, 0.0], [0.0, -1.0]]), scale=0.5, longest=10)
    points = np.stack([xy["x"], xy["y"]], 1).reshape(2, 6, 2)  # per arrow: start, tip, side, tip, side, gap
    for (start, tip, side_1, tip_again, side_2, gap), shaft in zip(points, [[1.0, 0.0], [0.0, -0.5]], strict=True):
        np.testing.assert_allclose(tip - start, shaft)
        np.testing.assert_array_equal(tip, tip_again)
        assert np.isnan(gap).all()
        for side in (side_1, side_2):  # back from the tip, ARROW_HEAD of the shaft long, ARROW_HEAD_ANGLE off it
            back = side - tip
            np.testing.assert_allclose(np.linalg.norm(back), charts.ARROW_HEAD * np.linalg.norm(shaft), rtol=1e-6)
            cos = -back @ np.asarray(shaft) / (np.linalg.norm(back) * np.linalg.norm(shaft))
            np.testing.assert_allclose(np.arccos(cos), charts.ARROW_HEAD_ANGLE, rtol=1e-5)
        cross = [(side - tip)[0] * shaft[1] - (side - tip)[1] * shaft[0] for side in (side_1, side_2)]
        assert cross[0] * cross[1] < 0  # one on each side of the shaft
    fig, _, _ = _field({})
    assert len(fig.data[2].x) == len(fig.data[3].x) == 6 * 16  # learned and ideal: 6 points an arrow


def test_the_field_opens_where_its_relative_error_peaks_after_the_first_level():
    fig, _, _ = _field({0: 300.0, 2: 2.0})
    assert fig.layout.sliders[0].active == 2
    np.testing.assert_array_equal(fig.data[0].z, fig.frames[2].data[0].z)  # the figure shows that frame
    assert _field({0: 300.0, 3: 0.5})[0].layout.sliders[0].active == 3


def test_the_field_error_curve_goes_log_only_over_decades():
    spread = charts.field_error_figure(np.arange(4), np.array([450.0, 3.0, 0.2, 0.1]), quantity="score")
    assert spread.layout.yaxis.type == "log" and 100 in spread.layout.yaxis.tickvals
    near = charts.field_error_figure(np.arange(4), np.array([0.6, 0.2, 0.1, 0.1]), quantity="ε")
    assert near.layout.yaxis.type is None and near.layout.yaxis.rangemode == "tozero"


def test_the_drift_chart_labels_its_axis_and_marks_the_peak_the_caption_names():
    """The page's caption (ui/panels.py, drift_panel) names the frame argmax(ratio[1:]) + 1: the
    chart must mark the same one, with its value, and its axis must let one read it."""
    rng = np.random.default_rng(3)
    times = np.linspace(1000, 0, 30).round()
    ratio = np.concatenate([[3.5], 1 + 0.4 * np.sin(np.arange(29))])  # the first frame is the highest
    ratio[5] = 2.16
    points = rng.normal(size=(30, 20, 2))
    fig = charts.drift_figure(times, points, points, ratio)
    worst = int(np.argmax(ratio[1:])) + 1  # the caption's line
    assert worst == 5 == charts.drift_peak(ratio)
    (peak,) = [a for a in fig.layout.annotations if a.text.startswith("peak")]
    assert peak.text == "peak 2.2× at t = 828" and peak.x == times[worst] and peak.xref == "x2"
    np.testing.assert_allclose(peak.y, np.log10(ratio[worst]))  # log axis: the annotation at log10 of the value
    curve = next(t for t in fig.data if t.name == "drift")
    np.testing.assert_allclose(curve.y, ratio, rtol=1e-6)
    np.testing.assert_array_equal(curve.x, times)
    axis = fig.layout.yaxis2
    inside = [v for v in axis.tickvals if ratio.min() <= v <= ratio.max()]
    assert axis.type == "log" and len(inside) >= 3 and list(axis.ticktext) == [f"{v:g}" for v in axis.tickvals]
    assert {1.0, 2.0} <= set(axis.tickvals)


def test_every_legend_sits_below_its_plot_in_the_room_kept_for_it():
    """Legends above the plot ran into titles once a trace was added, and the toolbar (top right)
    covered them on hover: each one is a row at the bottom of its figure, with its room kept."""
    from diffusion.config import ScheduleConfig
    from diffusion.monitoring import LossByT
    from diffusion.objectives import path_of

    rng = np.random.default_rng(4)
    frames = rng.normal(size=(4, 30, 2))
    by_t = LossByT(100, 20)
    by_t.update(1, np.arange(100) % 100, np.linspace(0.1, 1.0, 100))
    snap = by_t.snapshot()
    xs = np.linspace(-1, 1, 3)
    figures = {
        "loss": charts.loss_figure(np.linspace(1, 0.2, 50), floor=0.1, baseline=np.linspace(1, 0.3, 50)),
        "loss by t": charts.loss_by_t_figure(snap.t_start, snap.t_end, snap.recent_loss, snap.recent_loss, 200),
        "budget": charts.budget_figure(_budget_rows([9.0, 3.0, 2.0, 1.2, 1.0]), ("DDIM η=0", 5),
                                       _budget_rows([5.0, 2.0, 1.5, 1.1, 1.0])),
        "animation": charts.animation_figure(frames, [f"t = {k}" for k in range(4)], frames[0], title="x",
                                             predicted_x0=frames, baseline=frames,
                                             style=charts.AnimationStyle(trails=2, show_x0=True)),
        "field": charts.field_figure(np.arange(2), xs, xs, rng.normal(size=(2, 9, 2)), rng.normal(size=(2, 9, 2)),
                                     frames[:2], quantity="ε"),
        "schedule": charts.schedule_figure(path_of(ScheduleConfig(objective="flow", num_timesteps=20)),
                                           reference=path_of(ScheduleConfig(num_timesteps=20))),
    }
    for name, figure in figures.items():
        layout = figure.to_dict()["layout"]
        legend = layout["legend"]
        assert (legend["orientation"], legend["yref"], legend["y"], legend["yanchor"]) == ("h", "container", 0, "bottom"), name
        assert layout["margin"]["b"] >= charts.LEGEND_ROOM + charts.AXIS_ROOM, name


def test_the_results_keep_equal_units_on_both_axes_so_a_circle_stays_round():
    angle = np.linspace(0, 2 * np.pi, 200)
    circle = np.stack([3 * np.cos(angle) + 5, 3 * np.sin(angle) - 1], 1)
    layout = charts.comparison_figure(circle, circle, baseline=circle).to_dict()["layout"]
    assert (layout["yaxis"]["scaleanchor"], layout["yaxis"]["scaleratio"]) == ("x", 1)
    assert (layout["yaxis2"]["scaleanchor"], layout["yaxis2"]["scaleratio"]) == ("x2", 1)
    (x_low, x_high), (y_low, y_high) = layout["xaxis"]["range"], layout["yaxis"]["range"]
    np.testing.assert_allclose(x_high - x_low, y_high - y_low)  # equal spans, so the panels come out square


def test_every_class_has_its_own_colour_and_none_is_the_datas():
    from diffusion.config import MAX_CLASSES

    assert len(set(charts.CLASS_COLORS)) == len(charts.CLASS_COLORS) >= MAX_CLASSES
    assert charts.DATA_COLOR not in charts.CLASS_COLORS and charts.SAMPLE_COLOR not in charts.CLASS_COLORS
