"""The page's panels. Each takes what it shows and draws it; adding a view is adding a function.

Expensive things are cached under frozen configs: the run registry (process-wide), figures keyed
by the configuration they show. A display-only change recomputes nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import io

import numpy as np

# pandas is imported here, once, with the page: Streamlit imports it lazily on the first table, and a
# second session's thread then met it half-initialised ("partially initialized module 'pandas'", seen once)
import pandas  # noqa: F401
import streamlit as st
import torch

from diffusion import checkpoints
from diffusion.config import DataConfig, ExperimentConfig, SamplerConfig, ScheduleConfig, TrainingKey, model_calls
from diffusion.datasets import GaussianMixture, make_dataset
from diffusion.flow import paired_in_batches, straight_path_frames
from diffusion.forward import forward_trajectory
from diffusion.ideal import (
    IdealDenoiser,
    drift_curve,
    field_at,
    field_error_curve,
    field_grid,
    ideal_denoiser,
    noised,
)
from diffusion.metrics import Evaluation
from diffusion.monitoring import BinnedFloor, loss_floor_by_bin
from diffusion.samplers import Trajectory
from diffusion.schedules import NoiseSchedule
from ui import charts, session
from ui.controls import LOSS_VIEW, REVERSE_VIEW, Display, LoadedModel, loaded_model, session_owner, view_controls
from ui.jobs import FinishedRun, RunRegistry, RunSnapshot, TrainingJob, open_run, poll_interval, shared_pool
from ui.workers import PREVIEW_POINTS, PREVIEW_STEPS, loss_bins

PACE_SECONDS = 5.0  # with "watch short runs" on, a run lasts at least this long
FIRST_POINTS_WAIT = 0.25  # seconds a page that starts a run waits for its first points before drawing
PLOT_CONFIG = {"displaylogo": False}
FAR_FROM_NOISE = 0.01  # warn when abar_T is above this


@st.cache_resource
def freeze_imports() -> bool:
    """Once per server: move every object alive now (torch, plotly, streamlit, this package: ~218k)
    to the collector's permanent generation, so no garbage collection walks them again (a full
    collection over them took 0.2-0.3 s with the GIL held, measured)."""
    gc.collect()
    gc.freeze()
    return True


@st.cache_resource(on_release=RunRegistry.close)
def registry() -> RunRegistry:
    """One per server process, shared by every session (see ui/jobs.py for the rules); it trains
    on the process's worker pool."""
    return RunRegistry(shared_pool())


# --- cached computations (keyed by frozen configs) -------------------------------------------


@st.cache_resource(max_entries=32)
def _schedule(config: ScheduleConfig) -> NoiseSchedule:
    return NoiseSchedule.from_config(config)


@st.cache_resource(max_entries=32, show_spinner=False)
def _schedule_figure(config: ScheduleConfig):
    if config.objective == "flow":  # beside DDPM's reference schedule at the same T
        return charts.frozen(charts.flow_path_figure(_schedule(config),
                                                     _schedule(ScheduleConfig(num_timesteps=config.num_timesteps))))
    return charts.frozen(charts.schedule_figure(_schedule(config)))


@st.cache_data(max_entries=32, show_spinner=False)
def _data_points(data: DataConfig, n: int, seed: int) -> np.ndarray:
    return make_dataset(data).sample(n, torch.Generator().manual_seed(seed)).numpy()


@st.cache_data(max_entries=32, show_spinner="Computing the loss floor…")
def loss_floor(data: DataConfig, schedule: ScheduleConfig, coupling: str = "independent") -> float | None:
    """The irreducible loss averaged over uniform t, where the density is known (and, for flow
    matching, the pairs are independent: see ``monitoring.loss_floor_by_bin``)."""
    dataset = make_dataset(data)
    if not isinstance(dataset, GaussianMixture) or (schedule.objective == "flow" and coupling == "ot"):
        return None
    return float(np.mean(dataset.irreducible_loss(_schedule(schedule), n=1024)))


@st.cache_data(max_entries=32, show_spinner="Computing the loss floor per noise level…")
def binned_loss_floor(data: DataConfig, schedule: ScheduleConfig, coupling: str = "independent") -> BinnedFloor:
    """The irreducible loss in each noise-level bin (20, or T if fewer): exact, numerical, or unknown."""
    return loss_floor_by_bin(make_dataset(data), _schedule(schedule), loss_bins(schedule.num_timesteps), coupling=coupling)


# Everything drawn or downloaded is in the user's units: the model's (standardised) units for the
# synthetic sets, the file's units for a user's point set (DataConfig.to_user). Metrics are not.


def in_user_units(data: DataConfig, trajectory: Trajectory) -> Trajectory:
    return dataclasses.replace(trajectory, frames=data.to_user(trajectory.frames).astype(np.float32),
                               predicted_x0=data.to_user(trajectory.predicted_x0).astype(np.float32))


@st.cache_data(max_entries=32, show_spinner=False)
def _preview_axes(data: DataConfig) -> tuple[list[float], list[float]]:
    """Fixed axes for the live previews: the data's range, padded so early, wide previews show."""
    return charts.axis_range(data.to_user(_data_points(data, 1000, 1)), pad=0.6)


@st.cache_resource(max_entries=16, show_spinner=False)
def _forward_figure(data: DataConfig, schedule: ScheduleConfig, frame_ms: int):
    points = torch.from_numpy(_data_points(data, 600, 7))
    if schedule.objective == "flow":  # each point on its own straight line to its own noise
        noise = torch.randn(points.shape, generator=torch.Generator().manual_seed(8))
        frames, times = straight_path_frames(points, noise, 41)
        times = times * schedule.num_timesteps  # frame times in units of T, as the axis reads them
    else:
        frames, times = forward_trajectory(_schedule(schedule), points, 40, torch.Generator().manual_seed(8))
    return charts.frozen(charts.forward_figure(data.to_user(frames.numpy()), times, data.to_user(points.numpy()),
                                               frame_ms, axis=charts.TimeAxis.of(schedule)))


@st.cache_resource(max_entries=16, show_spinner=False)
def _reverse_figure(_run: FinishedRun, key: TrainingKey, source: str, sampler: SamplerConfig,
                    style: charts.AnimationStyle, _baseline: Trajectory | None = None, baseline_id: tuple | None = None):
    """``_baseline``: the pinned run's trajectory, already in its own user units."""
    trajectory, _ = _run.sampled(sampler)
    return charts.frozen(charts.reverse_figure(in_user_units(key.data, trajectory),
                                               key.data.to_user(_data_points(key.data, 1000, 1)),
                                               style, baseline=_baseline, axis=charts.TimeAxis.of(key.schedule)))


@st.cache_resource(max_entries=16, show_spinner=False)
def _comparison_figure(_run: FinishedRun, key: TrainingKey, source: str, sampler: SamplerConfig,
                       _baseline: np.ndarray | None = None, baseline_id: tuple | None = None):
    trajectory, _ = _run.sampled(sampler)
    data = key.data.to_user(_data_points(key.data, len(trajectory.samples), 2))
    return charts.frozen(charts.comparison_figure(data, key.data.to_user(trajectory.samples), baseline=_baseline))


# --- the first paint -------------------------------------------------------------------------

DEFERRED_NOTE = "Drawing the animations and the results…"
FIRST_PAINT_TIMEOUT_MS = 4000
FULL_PAGE = 2  # paint stage of a complete page

# Asks for the next stage of a fresh page once the browser has painted what this one shows (the
# loss as an SVG; then the Plotly loss chart), or after FIRST_PAINT_TIMEOUT_MS whatever happened.
# A trigger value reruns the page.
_FIRST_PAINT_JS = """
export default function(component) {
  const started = performance.now();
  const shown = component.data && component.data.plotly
    ? () => [...document.querySelectorAll('.st-key-loss_chart .js-plotly-plot')].some(d => d._fullData)
    : () => !!document.querySelector('.st-key-loss_first svg');
  let timer = null;
  const look = () => {
    if (shown() || performance.now() - started > TIMEOUT_MS) {  // after the frame that shows it
      requestAnimationFrame(() => requestAnimationFrame(() => component.setTriggerValue('painted', true)));
      return;
    }
    timer = setTimeout(look, 40);
  };
  look();
  return () => clearTimeout(timer);
}
""".replace("TIMEOUT_MS", str(FIRST_PAINT_TIMEOUT_MS))
_first_paint_probe = st.components.v2.component("ddpm_lab_first_paint", js=_FIRST_PAINT_JS)


def paint_stage() -> int:
    """How much of the page this script run draws: a fresh session's runs go 0, 1, then 2 (all).

    On a fresh page the browser first loads and compiles Plotly's bundle (4.7 MB, about 2 s here,
    blocking everything, the sidebar too) and then draws every figure the run sent in one go: the
    animations and results held the loss back by another 2.5 s (measured in Chromium here). So:
    0, a first screen without Plotly (the sidebar, the progress, the loss as a plain SVG,
    ``charts.loss_svg``); 1, the training panel's Plotly charts and the schedule; 2, everything.
    A probe in the page (``draw_the_rest_when_painted``) asks for the next stage once the browser
    has painted the current one."""
    stage = st.session_state.get("_paint_stage", 0)
    st.session_state["_paint_stage"] = min(stage + 1, FULL_PAGE)
    return stage


def draw_the_rest_when_painted(stage: int) -> None:
    """A note where the charts go, and a probe in the page that reruns it once the browser has
    painted this stage (or after 4 s)."""
    st.caption(DEFERRED_NOTE)
    _first_paint_probe(key=f"first_paint_{stage}", data={"plotly": stage > 0}, on_painted_change=lambda: None)


# --- panels ------------------------------------------------------------------------------------


def header() -> None:
    st.title("DDPM Lab")
    st.caption(
        "A denoising diffusion model (or its flow matching cousin) learning 2-D points, live. Change anything in "
        "the sidebar: the schedule redraws at once, the model retrains when its settings change, and every "
        "finished run is kept, so going back to a setting shows it instantly."
    )


def schedule_panel(config: ExperimentConfig) -> None:
    if config.schedule.objective == "flow":
        _flow_path_panel(config)
        return
    st.subheader("Noise schedule")
    schedule = _schedule(config.schedule)
    st.plotly_chart(_schedule_figure(config.schedule), config=PLOT_CONFIG)
    abar_T = schedule.terminal_alpha_bar
    left, right = st.columns(2)
    left.metric("ᾱ_T (signal left in x_T)", f"{abar_T:.3g}")
    right.metric("√ᾱ_T (share of x₀ in x_T)", f"{np.sqrt(abar_T):.2%}")
    if abar_T > FAR_FROM_NOISE:
        st.warning(
            f"x_T is far from N(0, I): ᾱ_T = {abar_T:.3f}, so x_T keeps {np.sqrt(abar_T):.0%} of the data "
            "while sampling starts from pure N(0, I) noise, so samples can come out shrunk toward the origin. "
            "Use more steps T, a larger β end, or the cosine schedule."
        )


def _flow_path_panel(config: ExperimentConfig) -> None:
    st.subheader("Flow matching's path")
    st.plotly_chart(_schedule_figure(config.schedule), config=PLOT_CONFIG)
    st.caption(
        "Flow matching has no β schedule: a point x₀ moves on the straight line x_t = (1 − t) x₀ + t ε to its noise ε "
        "as t goes from 0 to 1, and the network learns the velocity ε − x₀ along it. Solid: its weights of x₀ and ε "
        "(they add to 1); dashed: DDPM's √ᾱ and √(1 − ᾱ) for the reference linear schedule (their squares add to 1). "
        "At t = 1 no signal is left, so x₁ is exactly N(0, I), where sampling starts. The β settings do not apply; "
        f"T = {config.schedule.num_timesteps:,} only sets how finely the views divide [0, 1]."
    )


def forward_panel(config: ExperimentConfig, display: Display) -> None:
    st.subheader("Data and forward process")
    st.plotly_chart(_forward_figure(config.data, config.schedule, display.frame_ms), config=PLOT_CONFIG)
    if config.schedule.objective == "flow":
        st.caption("600 data points moved along flow matching's path: each slides in a straight line to its own "
                   "noise ε; press ▶ to watch them become N(0, I). The lines cross: the model learns their average.")
    else:
        st.caption("600 data points noised step by step by q(x_t | x_{t-1}); press ▶ to watch them become N(0, I).")


def training_panel(config: ExperimentConfig, display: Display, baseline_losses: np.ndarray | None = None,
                   first_screen: bool = False) -> FinishedRun | None:
    """Start / pause / step / reset, progress and the live loss curve. Returns the finished run."""
    st.subheader("Training")
    key = config.training
    owner = session_owner()
    choice = open_run(registry(), owner, key, loaded=_loaded_run(loaded_model()),
                      pace_seconds=PACE_SECONDS if display.pace else 0.0,
                      is_watched=session.activity_probe(session.session_id()))
    if choice.job is not None and choice.job.step == 0:
        choice.job.wait_for_first_steps(FIRST_POINTS_WAIT)
    coupling = config.train.coupling
    floor = loss_floor(config.data, config.schedule, coupling)
    _live_training(key, choice.job, choice.finished, floor, binned_loss_floor(config.data, config.schedule, coupling), display,
                   baseline_losses, first_screen)
    return choice.finished


def _loaded_run(loaded: LoadedModel | None) -> FinishedRun | None:
    """The uploaded model as a run, kept in this session only (never shared: another user's file
    with the same config may hold other weights, so its source names the file's digest)."""
    if loaded is None:
        return None
    run = st.session_state.get("_loaded_run")
    if run is None or run.model is not loaded.model:
        key = loaded.config.training
        run = st.session_state["_loaded_run"] = FinishedRun(key, loaded.model, _schedule(key.schedule), losses=[],
                                                             seconds=0.0, source=f"file:{loaded.digest}")
    return run


def _live_training(key: TrainingKey, job: TrainingJob | None, finished: FinishedRun | None, floor: float | None,
                   binned_floor: BinnedFloor, display: Display, baseline_losses: np.ndarray | None,
                   first_screen: bool = False):
    running = job is not None and job.snapshot().active
    runs = registry()
    every = poll_interval(runs.active_count(), runs.pool.size) if running else None

    @st.fragment(run_every=every)
    def live():
        snapshot = job.snapshot() if job is not None else finished.snapshot()
        if job is not None:
            job.heartbeat()
            if running and not snapshot.active:
                st.rerun()  # finished, failed or paused: redraw the whole page once
        _controls(key, job, snapshot)
        _progress(snapshot)
        if first_screen:  # no Plotly yet: the loss as an SVG, the charts in a moment
            with st.container(key="loss_first"):
                st.markdown(charts.loss_svg(snapshot.losses, snapshot.total_steps), unsafe_allow_html=True)
            st.caption("The loss so far; the interactive charts, the live samples and the loss by noise level "
                       "follow in a moment.")
            return
        loss_column, preview_column = st.columns([3, 2])
        with loss_column:
            view_controls(LOSS_VIEW)  # display only: changing them reruns this view alone
            st.plotly_chart(
                charts.loss_figure(snapshot.losses, smoothing=st.session_state["smoothing"],
                                   log_y=st.session_state["log_y"], floor=floor,
                                   total_steps=snapshot.total_steps, baseline=baseline_losses),
                config=PLOT_CONFIG, key="loss_chart",
            )
            if floor is not None:
                st.caption(f"Dashed line: the irreducible loss {floor:.3f}, the best any network can do on this "
                           "data (averaged over t). A loss near it can still give poor samples.")
        with preview_column:
            _live_samples(key, snapshot)
        quality_column, by_t_column = st.columns(2)
        with quality_column:
            _quality(snapshot)
        with by_t_column:
            _loss_by_noise_level(snapshot, binned_floor, charts.TimeAxis.of(key.schedule))

    live()


def _live_samples(key: TrainingKey, snapshot: RunSnapshot) -> None:
    preview = snapshot.preview
    label = "Live samples: none yet" if preview is None else (
        f"Live samples at step {preview.step:,}: energy distance {preview.ratio:.2f} × floor")
    points = None if preview is None else key.data.to_user(preview.points)
    st.plotly_chart(charts.preview_figure(points, key.data.to_user(_data_points(key.data, 1000, 1)),
                                          _preview_axes(key.data), label), config=PLOT_CONFIG, key="preview_chart")
    sampler = (f"{PREVIEW_STEPS}-step Euler" if key.schedule.objective == "flow"
               else f"{min(PREVIEW_STEPS, key.schedule.num_timesteps)}-step DDIM")
    st.caption(f"{PREVIEW_POINTS} points from the current weights (the weight average when EMA is on), by "
               f"{sampler} from the same x_T every time, so they "
               "change only as the weights do; the data is faint behind. Watch them move from noise onto the data.")


def _quality(snapshot: RunSnapshot) -> None:
    if len(snapshot.previews) == 0:
        st.caption("Sample quality while training: the first preview comes a fraction of a second into a run.")
        return
    st.plotly_chart(charts.quality_figure(snapshot.previews, snapshot.total_steps), config=PLOT_CONFIG,
                    key="quality_chart")
    st.caption("Each preview's energy distance to the data over its noise floor (1 = as close as a fresh draw "
               "of the data; few-step previews stay a little above 1 even for a perfect model). Look for "
               "samples that keep improving after the loss has flattened.")


def _loss_by_noise_level(snapshot: RunSnapshot, floor: BinnedFloor, axis: charts.TimeAxis) -> None:
    by_t = snapshot.loss_by_t
    if by_t is None or by_t.step == 0:
        st.caption("Loss by noise level: fills in as the run trains.")
        return
    st.plotly_chart(charts.loss_by_t_figure(by_t.t_start, by_t.t_end, by_t.recent_loss, floor.values, by_t.window, axis),
                    config=PLOT_CONFIG, key="loss_by_t_chart")
    if floor.values is None and "optimal-transport" in floor.description:
        known = "no floor is drawn: " + floor.description.removeprefix("unknown: ")
    elif floor.values is None:
        known = "no floor is drawn: this data's density, and so its irreducible loss, is not known"
    else:
        known = f"dashed: the irreducible loss of each bin ({floor.description})"
    st.caption(f"The training loss by noise level t, a mean over the last {by_t.window} steps per bin; {known}. "
               "Where the bars stand furthest above the floor, the network is still wrong.")


def _controls(key: TrainingKey, job: TrainingJob | None, snapshot: RunSnapshot) -> None:
    start, pause, step, reset = st.columns(4)
    can_run = job is not None and snapshot.status == "paused"
    if start.button("▶ Start" if snapshot.step == 0 else "▶ Resume", key="train_start", disabled=not can_run,
                    width="stretch", help="Train in the background; the loss streams below."):
        job.start()
        st.rerun()
    if pause.button("❚❚ Pause", key="train_pause", disabled=not snapshot.active, width="stretch",
                    help="Stop after the current chunk; nothing is lost."):
        job.pause()
        st.rerun()
    if step.button("Step +10 epochs", key="train_step", disabled=not can_run, width="stretch",
                   help="While paused: train 10 more epochs and stop."):
        job.advance(snapshot.steps_per_epoch * 10)
        st.rerun()
    if reset.button("↺ Reset", key="train_reset", width="stretch",
                    help="Start this configuration again from fresh weights (paused at step 0)."):
        registry().new_job(session_owner(), key)
        st.rerun()


def _progress(snapshot: RunSnapshot) -> None:
    eta = snapshot.eta_seconds
    parts = [f"epoch {snapshot.epoch:,} / {snapshot.total_steps // snapshot.steps_per_epoch:,}",
             f"step {snapshot.step:,}", f"{max(snapshot.wall, snapshot.elapsed):.1f} s"]
    if snapshot.queue_position is not None:
        parts.append(f"waiting for a free worker: {_ordinal(snapshot.queue_position)} in line")
    if eta is not None and snapshot.active:
        parts.append(f"ETA {eta:.1f} s")
    label = {"running": "Training", "queued": "Waiting", "paused": "Paused", "finished": "Finished",
             "failed": "Stopped"}[snapshot.status]
    if snapshot.status == "finished" and not snapshot.losses.size:
        label, parts = "Finished", ["loaded from a model file"]
    st.progress(min(snapshot.fraction, 1.0), text=f"**{label}** · " + " · ".join(parts))
    if snapshot.losses.size:
        st.caption(f"last loss {snapshot.losses[-1]:.4f}")
    elif snapshot.status == "finished":
        st.caption("Loaded from a model file: trained elsewhere, so there is no loss curve.")
    if snapshot.status == "failed":
        st.error(snapshot.error)
    elif snapshot.note:
        st.info(snapshot.note.capitalize() + ".")


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def sampling(run: FinishedRun, config: ExperimentConfig) -> tuple[Trajectory, Evaluation] | None:
    """Sample the run with the sidebar's sampler (memoised per sampler); None, with a message,
    when that fails or gives non-finite points: nothing non-finite is drawn or offered."""
    with st.spinner("Sampling…"):
        try:
            trajectory, scores = run.sampled(config.sampler)
        except (ArithmeticError, RuntimeError, ValueError) as error:
            st.error(f"Sampling failed: {error}. Try other schedule or sampler settings.")
            return None
    if scores is None:
        st.error("Sampling produced NaN or inf: this model is unusable. Retrain with a lower learning rate.")
        return None
    return trajectory, scores


def _animation_style(display: Display) -> charts.AnimationStyle:
    """The reverse animation's style as set now: trails and x0 are drawn beside the animation and
    change in its fragment, after ``display`` was read."""
    state = st.session_state
    return charts.AnimationStyle(trails=state.get("trails", display.trails), show_x0=state.get("show_x0", display.show_x0),
                                 frame_ms=display.frame_ms, animated=state.get("animated", display.animated))


def reverse_panel(run: FinishedRun, trajectory: Trajectory, config: ExperimentConfig, display: Display,
                  baseline: tuple | None = None) -> None:
    """``baseline``: (its trajectory, an id for caching) when a baseline is pinned and kept."""
    st.subheader("Reverse process: from noise to data")
    sampler = config.sampler
    base, base_id = baseline if baseline is not None else (None, None)

    steps = config.schedule.num_timesteps if sampler.kind == "ddpm" else sampler.sample_steps
    calls = model_calls(sampler.kind, steps)
    name = {"ddpm": "DDPM", "ddim": "DDIM", "euler": "Euler", "heun": "Heun"}[sampler.kind]
    n = len(trajectory.samples)

    @st.fragment
    def animation():  # its display controls rerun this view alone, not the page
        view_controls(REVERSE_VIEW, widths=(1.0, 1.5, 1.0))  # room for "Show predicted x₀" on one line
        style = _animation_style(display)
        st.plotly_chart(_reverse_figure(run, run.key, run.source, sampler, style, base, base_id),
                        config=PLOT_CONFIG, key="reverse_chart")
        moving = f"all {n:,} move" if style.animated >= n else f"{style.animated:,} of them move (Points animated)"
        st.caption(
            f"{n:,} points, {steps:,} {name} steps ({calls:,} model calls), "
            f"{len(trajectory.frames)} frames kept, sampled in {trajectory.seconds:.2f} s; {moving}. "
            "Press ▶ or drag the slider; faint blue points are the data."
        )

    animation()


def results_panel(run: FinishedRun, scores: Evaluation, config: ExperimentConfig,
                  baseline: tuple | None = None) -> None:
    """``baseline``: (its trajectory, its scores, an id for caching) when a baseline is pinned."""
    st.subheader("Results")
    base_samples = None if baseline is None else baseline[0].samples
    base_id = None if baseline is None else baseline[2]
    st.plotly_chart(_comparison_figure(run, run.key, run.source, config.sampler, base_samples, base_id),
                    config=PLOT_CONFIG)
    rows = [
        ("Energy distance", scores.energy_distance),
        ("Sliced Wasserstein-2", scores.sliced_wasserstein),
        ("RBF MMD²", scores.mmd),
        ("Mean error", scores.mean_error),
        ("Std error", scores.std_error),
    ]
    table = {
        "metric": [name for name, _ in rows],
        "value": [f"{c.value:.4g}" for _, c in rows],
        "noise floor": [f"{c.floor:.4g}" for _, c in rows],
        "× floor": [f"{c.ratio:.2f}" for _, c in rows],
    }
    if baseline is not None and baseline[1] is not None:
        base_scores = baseline[1]
        base_rows = [base_scores.energy_distance, base_scores.sliced_wasserstein, base_scores.mmd,
                     base_scores.mean_error, base_scores.std_error]
        table["baseline × floor"] = [f"{c.ratio:.2f}" for c in base_rows]
    st.dataframe(table, hide_index=True, width="stretch")
    scale = config.data.points.scale if config.data.points is not None else 1.0
    mean, data_mean = config.data.to_user(np.array(scores.mean)), config.data.to_user(np.array(scores.data_mean))
    std, data_std = np.array(scores.std) * scale, np.array(scores.data_std) * scale
    st.caption(
        f"Generated mean ({mean[0]:.3f}, {mean[1]:.3f}), std ({std[0]:.3f}, {std[1]:.3f}); "
        f"data mean ({data_mean[0]:.3f}, {data_mean[1]:.3f}), std ({data_std[0]:.3f}, {data_std[1]:.3f}). "
        "The noise floor is the same statistic between two fresh draws of the data: "
        "× floor near 1 means as close as real data gets. "
        + (f"Your points are drawn in their own units; the metrics are computed in the units the model trains in "
           f"(minus their mean, divided by {config.data.points.scale:.4g}), which leaves the × floor ratios unchanged. "
           if config.data.points is not None else "")
        + (f"Trained in {run.train_seconds:.2f} s ({len(run.losses):,} steps), final loss {run.losses[-1]:.4f}."
           if len(run.losses) else "Loaded from a model file.")
    )


FIELD_TIMES = 20  # noise levels precomputed per run: the slider moves between them without the server
FIELD_GRID = 15  # arrows per axis


@st.cache_resource(max_entries=8, show_spinner=False)
def _ideal(data: DataConfig, schedule: ScheduleConfig) -> IdealDenoiser:
    return ideal_denoiser(data, _schedule(schedule))


@st.cache_resource(max_entries=8, show_spinner="Computing the learned and the ideal field at 20 noise levels…")
def _field(_run: FinishedRun, key: TrainingKey, source: str, quantity: str, frame_ms: int):
    """The field figure and its error curve, computed once per run: every frame is in the figure,
    so moving its slider costs the server nothing."""
    schedule, ideal = _schedule(key.schedule), _ideal(key.data, key.schedule)
    T = schedule.num_timesteps
    times = np.unique(np.linspace(0, T - 1, FIELD_TIMES).round().astype(int))
    data = torch.from_numpy(_data_points(key.data, 1000, 11)).double()
    noise = torch.randn(data.shape, generator=torch.Generator().manual_seed(12)).double()
    grid = field_grid(np.concatenate([data.numpy(), noise.numpy()]), num=FIELD_GRID, pad=0.25)  # data and N(0, I)
    frames = [field_at(_run.model, ideal, schedule, int(t), grid) for t in times]
    if quantity == "score":
        learned = np.stack([f.learned_score for f in frames])
        wanted = np.stack([f.ideal_score for f in frames])
    else:
        learned, wanted = np.stack([f.learned for f in frames]), np.stack([f.ideal for f in frames])
    shown = np.stack([noised(data[:300], schedule, int(t), noise[:300]).numpy() for t in times])
    curve = field_error_curve(_run.model, ideal, schedule, data, times, seed=13)
    if quantity == "score":  # |score error| = |eps error| / s, and flow's eps error is a |v error|
        table = schedule.float64
        curve_error = curve.error * (table["signal"][times] if schedule.is_flow else 1.0) / table["sigma"][times]
    else:
        curve_error = curve.error
    label = "score" if quantity == "score" else ("v" if schedule.is_flow else "ε")
    user = key.data.to_user  # positions in the user's units; the arrows are scaled per t anyway
    xs, ys = user(np.stack([grid[0], np.full_like(grid[0], grid[1][0])], 1))[:, 0], \
        user(np.stack([np.full_like(grid[1], grid[0][0]), grid[1]], 1))[:, 1]
    axis = charts.TimeAxis.of(key.schedule)
    return (charts.frozen(charts.field_figure(times, xs, ys, learned, wanted, user(shown), quantity=label,
                                              frame_ms=frame_ms, axis=axis)),
            charts.frozen(charts.field_error_figure(times, curve_error, quantity=label, axis=axis)))


def field_panel(run: FinishedRun, display: Display) -> None:
    st.subheader("The learned field against the ideal one")
    ideal = _ideal(run.key.data, run.key.schedule)
    figure, error = _field(run, run.key, run.source, display.field, display.frame_ms)
    st.plotly_chart(figure, config=PLOT_CONFIG, key="field_chart")
    flow = run.key.schedule.objective == "flow"
    if display.field == "score":
        quantity = "score −ε/t, with ε = x + (1 − t) v," if flow else "score −ε/√(1−ᾱ_t)"
    else:
        quantity = "velocity v(x, t) (where a point at x moves as t falls is −v)" if flow else "noise ε(x, t)"
    st.caption(
        f"At each noise level t (▶ or the slider): the network's {quantity} (orange) and the ideal one (black) on a "
        f"grid, the red map their difference, the data noised to t faint behind. The ideal denoiser here is "
        f"{ideal.description}. Look for the t's and the places where orange leaves black: that is where samples go "
        "wrong."
        + (" With optimal-transport pairs the network learns a straighter field than this ideal one of independent "
           "pairs, so part of the gap is by design, not error." if flow and run.key.train.coupling == "ot" else "")
    )
    st.plotly_chart(error, config=PLOT_CONFIG, key="field_error_chart")
    st.caption("The mean difference between the learned and the ideal field over the noised data at each t: the "
               "peaks are the noise levels the network has not learned.")


DRIFT_FRAMES = 30  # kept frames compared (at most)
DRIFT_POINTS = 400  # points drawn per set and frame


@st.cache_resource(max_entries=8, show_spinner="Comparing each kept frame with the true noised data…")
def _drift(_run: FinishedRun, key: TrainingKey, source: str, sampler: SamplerConfig, frame_ms: int):
    trajectory, _ = _run.sampled(sampler)
    schedule = _schedule(key.schedule)
    keep = np.unique(np.linspace(0, len(trajectory.frames) - 1, min(DRIFT_FRAMES, len(trajectory.frames))).round()
                     .astype(int))
    kept = dataclasses.replace(trajectory, frames=trajectory.frames[keep], frame_times=trajectory.frame_times[keep],
                               predicted_x0=trajectory.predicted_x0[keep])
    curve = drift_curve(kept, key.data, schedule, seed=sampler.seed + 1,
                        ot_batch=key.train.batch_size if key.schedule.objective == "flow" and key.train.coupling == "ot" else None)
    data = torch.from_numpy(_data_points(key.data, DRIFT_POINTS, 21)).double()
    noise = torch.randn(data.shape, generator=torch.Generator().manual_seed(22)).double()
    if key.schedule.objective == "flow" and key.train.coupling == "ot":  # the pairs training saw
        noise = paired_in_batches(data, noise, key.train.batch_size)
    truth = np.stack([(a * data + s * noise).numpy() for a, s in map(schedule.path_at_frame, kept.frame_times.tolist())])
    shown = kept.frames[:, :DRIFT_POINTS]
    user = key.data.to_user
    return (charts.frozen(charts.drift_figure(kept.frame_times, user(truth), user(shown), curve.ratio, frame_ms,
                                              axis=charts.TimeAxis.of(key.schedule))), curve)


def drift_panel(run: FinishedRun, config: ExperimentConfig, display: Display) -> None:
    st.subheader("Forward against reverse: where sampling drifts")
    figure, curve = _drift(run, run.key, run.source, config.sampler, display.frame_ms)
    st.plotly_chart(figure, config=PLOT_CONFIG, key="drift_chart")
    worst = int(np.argmax(curve.ratio[1:])) + 1 if len(curve.ratio) > 1 else 0
    axis = charts.TimeAxis.of(run.key.schedule)
    at = axis.label(axis.frame(curve.times[worst]))
    start = "t = 1" if axis.flow else "t = T"
    st.caption(
        f"The true noised data q(x_t) and the sampler's x_t at the same t, for each kept frame (▶ or the slider), and "
        f"their energy distance over its floor (1 = as alike as two draws of q(x_t)). The sampler starts from "
        f"N(0, I), so at {start} the gap is only how far q(x_T) is from pure noise; where the curve climbs, errors in the "
        f"field are adding up (here it peaks at {at}, "
        f"{curve.ratio[worst]:.1f} × floor)."
        + (f" With optimal-transport pairs, q(x_t) is the path training saw: the noise matched to the data batch by "
           f"batch ({run.key.train.batch_size} points), not drawn apart from it." if axis.flow and run.key.train.coupling == "ot" else "")
    )


def downloads_panel(run: FinishedRun, trajectory: Trajectory, config: ExperimentConfig, display: Display) -> None:
    st.subheader("Downloads")
    samples, model, animation = st.columns(3)
    samples.download_button("Samples (CSV)", data=lambda: _samples_csv(config.data.to_user(trajectory.samples)),
                            file_name="samples.csv",
                            mime="text/csv", key="download_samples", width="stretch", on_click="ignore")
    model.download_button("Model (safetensors + config)", data=lambda: checkpoints.to_bytes(run.model, config),
                          file_name="model.safetensors", mime="application/octet-stream", key="download_model", on_click="ignore",
                          width="stretch",
                          help="Weights as safetensors, with the full config JSON in the file's metadata. "
                               "Load with python -m diffusion --load-checkpoint model.safetensors.")
    animation.download_button(
        "Animation (HTML)", key="download_animation", width="stretch", file_name="reverse_process.html", on_click="ignore",
        mime="text/html", data=lambda: _reverse_figure(run, run.key, run.source, config.sampler,
                                                       _animation_style(display)).to_html(include_plotlyjs=True),
        help="A standalone page with the reverse animation; opens offline.",
    )


def _samples_csv(samples: np.ndarray) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["x", "y"])
    writer.writerows(np.round(samples.astype(np.float64), 6).tolist())
    return out.getvalue()
