"""The page's panels. Each takes what it shows and draws it; adding a view is adding a function.

Expensive things are cached under frozen configs: the run registry (process-wide), figures keyed
by the configuration they show. A display-only change recomputes nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import gc
import hashlib
import html
import io
from dataclasses import dataclass

import numpy as np

# pandas is imported here, once, with the page: Streamlit imports it lazily on the first table, and a
# second session's thread then met it half-initialised ("partially initialized module 'pandas'", seen once)
import pandas  # noqa: F401
import streamlit as st
import torch

import charts
from charts import live as live_charts
from charts.animation import reverse_payload
from diffusion import checkpoints
from diffusion.config import (
    DataConfig,
    ExperimentConfig,
    SamplerConfig,
    ScheduleConfig,
    TrainingKey,
    guidance_calls,
    model_calls,
)
from diffusion.datasets import make_dataset
from diffusion.metrics import Evaluation
from diffusion.monitoring import PREVIEW_POINTS, PREVIEW_STEPS, BinnedFloor
from diffusion.objectives import path_of
from diffusion.paths import ObjectivePath
from diffusion.samplers import Trajectory
from diffusion.schedules import FAR_FROM_NOISE
from runtime import tasks
from runtime.registry import FinishedRun, RunRegistry, RunSnapshot, open_run, poll_interval, shared_registry
from runtime.state import RunState, TaskState
from ui import session
from ui.animation import display_choices, reverse_animation
from ui.controls import LOSS_VIEW, SETTINGS, Display, LoadedModel, loaded_model, session_owner, view_controls, write_url

PACE_SECONDS = 5.0  # with "watch short runs" on, a run lasts at least this long
FIRST_POINTS_WAIT = 0.25  # seconds a page that starts a run waits for its first points before drawing
PAUSE_WAIT = 0.15  # seconds Pause waits for the worker to hand the run back, to draw 'Paused' at once
RESULT_WAIT = 1.5  # seconds a page waits for a worker's result before drawing its progress instead
RESULT_POLL = 0.25  # seconds between looks at a result still being computed
PLOT_CONFIG = {"displaylogo": False}
FORWARD_FRAMES = 41  # frames of the forward animation


@st.cache_resource
def freeze_imports() -> bool:
    """Once per server: move every object alive now (torch, plotly, streamlit, this package: ~218k)
    to the collector's permanent generation, so no garbage collection walks them again (a full
    collection over them took 0.2-0.3 s with the GIL held, measured)."""
    gc.collect()
    gc.freeze()
    return True


def registry() -> RunRegistry:
    """One per server process, shared by every session (see ``runtime/registry.py`` for the rules),
    with its own worker processes: every model call of the page happens there. A backend that cannot
    start (a wrong ``DDPM_LAB_BACKEND``, Ray missing or its cluster unreachable) stops the page with
    the reason, not a traceback."""
    try:
        return shared_registry()
    except (ValueError, RuntimeError, ConnectionError) as error:
        st.error(f"The workers could not start: {error}")
        st.stop()


def computed(run: FinishedRun, task, what: str, wait: float = RESULT_WAIT):
    """The result of ``task`` on ``run``, computed by a worker (once per run and task, for every
    page). Waits up to ``wait`` seconds; if it is not ready by then, draws its progress instead and
    returns None: the page reruns by itself when it is."""
    runs = registry()
    state = runs.compute(run, task)
    if not state.ready:
        runs.wait_for(state, wait)
    if state.status == "done":
        return state.result
    if state.status == "failed":
        st.error(f"{what} failed: {state.error}")
        return None
    progress_until_ready(state, what)
    return None


def progress_until_ready(state: TaskState, what: str) -> None:
    @st.fragment(run_every=RESULT_POLL)
    def waiting():
        if state.ready:
            st.rerun()  # the whole page, now with the result
        detail = f": {state.text}" if state.text else (" (waiting for a free worker)" if state.worker is None else "")
        st.progress(state.fraction, text=f"{what}…{detail}")

    waiting()


# --- cached computations (keyed by frozen configs) -------------------------------------------


@st.cache_resource(max_entries=32)
def _schedule(config: ScheduleConfig) -> ObjectivePath:
    return path_of(config)


@st.cache_resource(max_entries=32, show_spinner=False)
def _schedule_figure(config: ScheduleConfig):
    path = _schedule(config)
    reference = path.reference()  # another path drawn dashed beside it (flow: DDPM's at the same T)
    return charts.frozen(charts.schedule_figure(path, reference=_schedule(reference) if reference else None))


@st.cache_data(max_entries=32, show_spinner=False)
def _data_points(data: DataConfig, n: int, seed: int) -> np.ndarray:
    return make_dataset(data).sample(n, torch.Generator().manual_seed(seed)).numpy()


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
    frames, times = _schedule(schedule).forward_frames(points, FORWARD_FRAMES, torch.Generator().manual_seed(8))
    return charts.frozen(charts.forward_figure(data.to_user(frames.numpy()), times, data.to_user(points.numpy()),
                                               frame_ms, axis=charts.TimeAxis.of(schedule)))


@st.cache_resource(max_entries=16, show_spinner=False)
def _reverse_figure(_trajectory: Trajectory, key: TrainingKey, source: str, sampler: SamplerConfig,
                    style: charts.AnimationStyle, _baseline: Trajectory | None = None, baseline_id: tuple | None = None):
    """``_trajectory``: the run's (key, source) with ``sampler``; ``_baseline``: the pinned run's
    trajectory, already in its own user units."""
    trajectory = _trajectory
    return charts.frozen(charts.reverse_figure(in_user_units(key.data, trajectory),
                                               key.data.to_user(_data_points(key.data, 1000, 1)),
                                               style, baseline=_baseline, axis=charts.TimeAxis.of(key.schedule)))


@st.cache_resource(max_entries=16, show_spinner=False)
def _comparison_figure(_trajectory: Trajectory, key: TrainingKey, source: str, sampler: SamplerConfig,
                       _baseline: np.ndarray | None = None, baseline_id: tuple | None = None):
    trajectory = _trajectory
    data = key.data.to_user(_data_points(key.data, len(trajectory.samples), 2))
    return charts.frozen(charts.comparison_figure(data, key.data.to_user(trajectory.samples), baseline=_baseline,
                                                  labels=trajectory.labels, names=key.data.classes))


# --- panels ------------------------------------------------------------------------------------


# The first view (training beside the samples) should fit above the fold at 1400 x 900: less of
# Streamlit's top padding (6rem) above the title.
_COMPACT_TOP = "<style>[data-testid='stMainBlockContainer'] { padding-top: 2.5rem; }</style>"


def header() -> None:
    st.html(_COMPACT_TOP)
    st.markdown("## DDPM Lab")
    st.caption(
        "A denoising diffusion model (or its flow matching cousin) learning 2-D points, live. Change anything in "
        "the sidebar and watch: the model trains, then turns noise into samples. Every finished run is kept, so "
        "going back to a setting shows it at once; the tabs below explain why it came out as it did."
    )


def schedule_panel(config: ExperimentConfig) -> None:
    path = _schedule(config.schedule)
    chart = path.chart()
    st.subheader(chart.heading)
    st.plotly_chart(_schedule_figure(config.schedule), config=PLOT_CONFIG)
    if chart.metrics:
        for column, (label, value) in zip(st.columns(len(chart.metrics)), chart.metrics, strict=True):
            column.metric(label, value)
    reference = path.reference()
    if chart.caption or reference is not None:
        beside = (f" Dashed: {_schedule(reference).label}'s √ᾱ and √(1 − ᾱ) for the reference linear schedule at the "
                  "same T (their squares add to 1)." if reference is not None else "")
        st.caption(chart.caption + beside)
    if chart.warning:
        st.warning(chart.warning)


def forward_panel(config: ExperimentConfig, display: Display) -> None:
    st.subheader("Data and forward process")
    st.plotly_chart(_forward_figure(config.data, config.schedule, display.frame_ms), config=PLOT_CONFIG)
    path = _schedule(config.schedule)
    left = float(path.float64["signal"][-1])  # a of the last level: the data's share left at the end
    end = ("watch them become N(0, I)" if left**2 <= FAR_FROM_NOISE else
           f"at the end they still keep {left:.0%} of the data, so they stop short of N(0, I) (see the warning above)")
    st.caption(f"600 data points {path.forward_words}; press ▶ and {end}.")


@dataclass(frozen=True)
class Training:
    """The run the settings describe, as the page found it: its job while it can still train (None
    for a finished run shown from the store or a loaded file), the finished run once there is one,
    and the worker's loss floors for its data."""

    key: TrainingKey
    job: RunState | None
    finished: FinishedRun | None
    floors: TaskState
    running: bool  # whether it trained when the page looked: its views redraw the page when that changes

    def poll_every(self) -> float | None:
        """How often its live views look again: while it trains, more rarely the more run at once."""
        runs = registry()
        return poll_interval(runs.active_count(), runs.pool.size) if self.running else None

    def snapshot(self) -> RunSnapshot:
        return registry().snapshot(self.job) if self.job is not None else self.finished.snapshot()

    def replaced(self) -> bool:
        """It finished, or Reset replaced it, since the page drew it: time to redraw the page."""
        return (self.finished is None or self.finished.source == "trained") and \
            registry().job(session_owner(), self.key) is not self.job


def training_heading(config: ExperimentConfig) -> None:
    """The training panel's heading, with the path's numbers in one line (ᾱ_T for DDPM) and its
    warning where it has one (the whole schedule chart is in the noise tab)."""
    st.subheader("Training")
    chart = _schedule(config.schedule).chart()
    if chart.metrics:
        st.caption(f"{config.schedule.kind.capitalize()} schedule, T = {config.schedule.num_timesteps:,}: "
                   + " · ".join(f"{label} **{value}**" for label, value in chart.metrics))
    if chart.warning:
        st.warning(chart.warning)


def training(config: ExperimentConfig, display: Display) -> Training:
    """The run for ``config``: found finished, or started (paused at step 0 for a new one, unless
    this session's settings start it), and its loss floors asked of a worker."""
    key = config.training
    choice = open_run(registry(), session_owner(), key, loaded=_loaded_run(loaded_model()),
                      pace_seconds=PACE_SECONDS if display.pace else 0.0,
                      is_watched=session.activity_probe(session.session_id()))
    if choice.job is not None and choice.job.step == 0:
        registry().wait_for_first_steps(choice.job, FIRST_POINTS_WAIT)
    floors = registry().compute(None, tasks.Floors(config.data, config.schedule, config.train.coupling, config.train.time_power))
    if not floors.ready:  # a worker computes them: exact ones in ms, a mixture's in about 1.5 s
        registry().wait_for(floors, FIRST_POINTS_WAIT)
    return Training(key, choice.job, choice.finished, floors, running=choice.job is not None and choice.job.active)


def _loaded_run(loaded: LoadedModel | None) -> FinishedRun | None:
    """The uploaded model as a run, kept in this session only (never shared: another user's file
    with the same config may hold other weights, so its source names the file's digest)."""
    if loaded is None:
        return None
    run = st.session_state.get("_loaded_run")
    if run is None or run.source != f"file:{loaded.digest}" or run.key != loaded.config.training:
        run = st.session_state["_loaded_run"] = FinishedRun.loaded(loaded.config.training, loaded.model, loaded.digest)
    return run


def _floor_values(floors: TaskState) -> tasks.FloorValues | None:
    return floors.result if floors.status == "done" else None


def training_panel(run: Training, baseline_losses: np.ndarray | None = None) -> None:
    """Start / pause / step / reset, progress and the live loss curve: a view that redraws itself
    while the run trains, and redraws the page once it has finished (or Reset replaced it)."""
    if not run.running and not run.floors.ready:
        progress_until_ready(run.floors, "Computing the loss floor")  # the page reruns once it is

    @st.fragment(run_every=run.poll_every())
    def live():
        if run.replaced():
            st.rerun()  # finished, or replaced by Reset: redraw the whole page
        snapshot = run.snapshot()
        if run.job is not None:
            registry().heartbeat(run.job)
        values = _floor_values(run.floors)
        floor = values.mean if values is not None else None
        _controls(run.key, run.job, snapshot)
        _progress(snapshot)
        if run.job is not None and run.job.active != run.running:
            st.rerun()  # started, paused or failed: the state is on screen; the page follows (polling on or off)
        view_controls(LOSS_VIEW)  # display only: changing them reruns this view alone
        st.echarts_chart(live_charts.loss_spec(snapshot.losses, smoothing=st.session_state["smoothing"],
                                        log_y=st.session_state["log_y"], floor=floor,
                                        total_steps=snapshot.total_steps, baseline=baseline_losses),
                         key="loss_chart", height=live_charts.LOSS_HEIGHT)
        if floor is not None:
            power = run.key.train.time_power
            over = "averaged over t" if power == 1.0 else f"averaged over t as training draws it, Low-noise emphasis p = {power:g}"
            st.caption(f"Dashed line: the irreducible loss {floor:.3f}, the best any network can do on this "
                       f"data ({over}). A loss near it can still give poor samples.")

    live()


def live_samples_panel(run: Training) -> None:
    """The model's samples while it trains, redrawn as the weights change."""
    st.subheader("Live samples")

    @st.fragment(run_every=run.poll_every())
    def live():
        if run.replaced():
            st.rerun()
        _live_samples(run.key, run.snapshot())

    live()


def quality_panel(run: Training) -> None:
    """Sample quality over the run and the loss by noise level, live while it trains."""

    @st.fragment(run_every=run.poll_every())
    def live():
        if run.replaced():
            st.rerun()
        snapshot = run.snapshot()
        values = _floor_values(run.floors)
        quality_column, by_t_column = st.columns(2)
        with quality_column:
            _quality(snapshot)
        with by_t_column:
            _loss_by_noise_level(snapshot, values.binned if values is not None else None,
                                 charts.TimeAxis.of(run.key.schedule))

    live()


def _live_samples(key: TrainingKey, snapshot: RunSnapshot) -> None:
    preview = snapshot.preview
    label = "Live samples: none yet" if preview is None else (
        f"Live samples at step {preview.step:,}: energy distance {preview.ratio:.2f} × floor")
    points = None if preview is None else key.data.to_user(preview.points)
    st.echarts_chart(live_charts.preview_spec(points, key.data.to_user(_data_points(key.data, 1000, 1)),
                                       _preview_axes(key.data), label), key="preview_chart", height=live_charts.PREVIEW_HEIGHT)
    path = _schedule(key.schedule)
    steps = min(PREVIEW_STEPS, path.max_sample_steps)
    sampler = f"{steps}-step {path.family_label(path.preview_kind, 0.0)}"
    st.caption(f"{PREVIEW_POINTS} points from the current weights (the weight average when EMA is on), by "
               f"{sampler} from the same x_T every time, so they "
               "change only as the weights do; the data is faint behind. Watch them move from noise onto the data.")


def _quality(snapshot: RunSnapshot) -> None:
    if len(snapshot.previews) == 0:
        st.caption("Sample quality while training: the first preview comes a fraction of a second into a run.")
        return
    st.echarts_chart(live_charts.quality_spec(snapshot.previews, snapshot.total_steps), key="quality_chart",
                     height=live_charts.QUALITY_HEIGHT)
    st.caption("Each preview's energy distance to the data over its noise floor (1 = as close as a fresh draw "
               "of the data; few-step previews stay a little above 1 even for a perfect model). Look for "
               "samples that keep improving after the loss has flattened.")


def _loss_by_noise_level(snapshot: RunSnapshot, floor: BinnedFloor | None, axis: charts.TimeAxis) -> None:
    by_t = snapshot.loss_by_t
    if by_t is None or by_t.step == 0:
        st.caption("Loss by noise level: fills in as the run trains.")
        return
    values = floor.values if floor is not None else None
    st.echarts_chart(live_charts.loss_by_t_spec(by_t.t_start, by_t.t_end, by_t.recent_loss, values, by_t.window, axis),
                     key="loss_by_t_chart", height=live_charts.LOSS_BY_T_HEIGHT)
    what = f"The training loss by noise level t, a mean over the last {by_t.window} steps per bin"
    if floor is None:
        st.caption(f"{what}; its irreducible floor is still being computed.")
    elif values is None:
        why = (floor.description.removeprefix("unknown: ") if "optimal-transport" in floor.description
               else "this data's density, and so its irreducible loss, is not known")
        st.caption(f"{what}; no floor is drawn: {why}. Compare the bins with each other: the highest are the noise "
                   "levels the network finds hardest.")
    else:
        st.caption(f"{what}; dashed: the irreducible loss of each bin ({floor.description}). Where the bars stand "
                   "furthest above the floor, the network is still wrong.")


def _controls(key: TrainingKey, job: RunState | None, snapshot: RunSnapshot) -> None:
    """Start, Pause, Step and Reset act in their click's callbacks, before anything is drawn: the
    registry passes them on to the worker at once, and it acts within one chunk of steps."""
    runs = registry()
    start, pause, step, reset = st.columns(4)
    can_run = job is not None and snapshot.status == "paused"
    start.button("▶ Start" if snapshot.step == 0 else "▶ Resume", key="train_start", disabled=not can_run,
                 width="stretch", help="Train in the background; the loss streams below.",
                 on_click=lambda: runs.start(job))
    pause.button("❚❚ Pause", key="train_pause", disabled=snapshot.status not in ("running", "queued"),
                 width="stretch", help="Stop after the current chunk of steps; nothing is lost.",
                 on_click=lambda: _pause(runs, job))
    step.button("+10 epochs", key="train_step", disabled=not can_run, width="stretch",
                help="While paused: train 10 more epochs and stop.",
                on_click=lambda: runs.advance(job, snapshot.steps_per_epoch * 10))
    reset.button("↺ Reset", key="train_reset", width="stretch",
                 help="Start this configuration again from fresh weights (paused at step 0).",
                 on_click=lambda: runs.new_job(session_owner(), key))


def _pause(runs: RunRegistry, job: RunState) -> None:
    """Ask the worker to hand the run back, and wait a moment for it (it does within one chunk of
    steps, a few ms) so that this very run of the page can say 'Paused'."""
    runs.pause(job)
    runs.wait_until(lambda: not job.active, PAUSE_WAIT)


def _progress(snapshot: RunSnapshot) -> None:
    eta = snapshot.eta_seconds
    parts = [f"epoch {snapshot.epoch:,} / {snapshot.total_steps // snapshot.steps_per_epoch:,}",
             f"step {snapshot.step:,}", f"{max(snapshot.wall, snapshot.elapsed):.1f} s"]
    if snapshot.queue_position is not None:
        parts.append(f"waiting for a free worker: {_ordinal(snapshot.queue_position)} in line")
    if snapshot.where is not None and snapshot.status == "running":
        parts.append(f"on {snapshot.where}")
    if eta is not None and snapshot.active:
        parts.append(f"ETA {eta:.1f} s")
    label = {"running": "Training", "queued": "Waiting", "stopping": "Pausing", "paused": "Paused",
             "finished": "Finished", "failed": "Stopped"}[snapshot.status]
    if snapshot.status == "finished" and not snapshot.losses.size:
        label, parts = "Finished", ["loaded from a model file"]
    with st.container(key="training_progress"):  # the run's bar, told apart from a computing view's
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
    """The run sampled with the sidebar's sampler (by a worker, once per run and sampler); None,
    with a message or its progress, until there is a usable one: nothing non-finite is drawn."""
    sampled = computed(run, tasks.Sample(config.sampler), "Sampling")
    if sampled is None:
        return None
    if sampled.error is not None:
        st.error(sampled.error)
        return None
    return sampled.trajectory, sampled.scores


def _animation_style(display: Display) -> charts.AnimationStyle:
    """The reverse animation's style as set now: trails and x0 are drawn beside the animation and
    change in its fragment, after ``display`` was read."""
    state = st.session_state
    return charts.AnimationStyle(trails=state.get("trails", display.trails), show_x0=state.get("show_x0", display.show_x0),
                                 frame_ms=display.frame_ms, animated=state.get("animated", display.animated))


def samples_panel(run: Training, config: ExperimentConfig, display: Display, pinned) -> tuple[Trajectory, Evaluation] | None:
    """The samples: live while the run trains, then the reverse process of the finished run (with
    the pinned baseline's beside it). Returns the finished run's (trajectory, scores) once sampled."""
    if run.finished is None:
        live_samples_panel(run)
        return None
    sampled = sampling(run.finished, config)
    if sampled is not None:
        base = pinned_samples(pinned)
        reverse_panel(run.finished, sampled[0], config, display, base and (base[0], base[2]), sampled[1])
    return sampled


def pinned_samples(pinned) -> tuple[Trajectory, Evaluation, TrainingKey] | None:
    """The pinned baseline's (trajectory in its own user units, scores, key), once a worker has
    sampled it; None without a baseline or until then."""
    base = pinned.sampled() if pinned is not None else None
    if base is None:
        return None
    return in_user_units(pinned.entry.config.data, base.trajectory), base.scores, pinned.entry.key


def no_experiment_note() -> None:
    """Why there is no run to show. Bad settings are marked in the sidebar; an empty or unfinished
    drawing or no file yet is not an error."""
    if st.session_state.get("_waiting_for_points"):
        st.info("Your points are not ready: draw them or upload a file in the sidebar's Data section (it says what "
                "it needs). Your finished runs are kept.")
    else:
        st.info("Fix the setting marked in the sidebar to continue; your finished runs are kept.")


def after_training_note() -> None:
    st.caption("This view explains a finished run: it appears when the training above finishes.")


def after_sampling_note() -> None:
    st.caption("The samples and their metrics appear here once the finished run has been sampled (above).")


def reverse_panel(run: FinishedRun, trajectory: Trajectory, config: ExperimentConfig, display: Display,
                  baseline: tuple | None = None, scores: Evaluation | None = None) -> None:
    """``baseline``: (its trajectory, an id for caching) when a baseline is pinned and kept;
    ``scores``: the samples' metrics, the headline one said under the animation."""
    st.subheader("Reverse process: from noise to data")
    sampler = config.sampler
    base, base_id = baseline if baseline is not None else (None, None)

    steps = config.schedule.num_timesteps if sampler.kind == "ddpm" else sampler.sample_steps
    calls = model_calls(sampler.kind, steps) * guidance_calls(run.key.train, sampler)
    name = {"ddpm": "DDPM", "ddim": "DDIM", "dpm_solver": "DPM-Solver++", "euler": "Euler", "heun": "Heun"}[sampler.kind]
    n = len(trajectory.samples)

    @st.fragment
    def animation():  # a display choice made in the animation reruns this view alone, not the page
        style = _animation_style(display)
        payload = _reverse_payload(trajectory, run.key, run.source, sampler, style, base, base_id)
        reverse_animation(payload, key=ANIMATION_KEY, on_change=_keep_animation_choices)
        write_url()  # the choices made in the animation travel in the link
        moving = f"all {n:,} move" if style.animated >= n else f"{style.animated:,} of them move (Points animated)"
        st.caption(
            f"{n:,} points, {steps:,} {name} steps ({calls:,} model calls), {len(trajectory.frames)} frames kept, "
            f"sampled in {trajectory.seconds:.2f} s; {moving}. Press ▶ or drag the slider; the faint blue points are "
            "the data, and the legend's names turn layers on and off."
            + (f" Each point is in the colour of the class it was asked for ({_asked(run.key, sampler)}); the "
               "Guidance tab sweeps w." if trajectory.labels is not None else "")
            + (f" The samples' energy distance to the data is **{scores.energy_distance.ratio:.2f} × its noise floor** "
               "(1: as close as a fresh draw of the data; the Samples and metrics tab has the rest)."
               if scores is not None else "")
        )

    animation()


def _asked(key: TrainingKey, sampler: SamplerConfig) -> str:
    """Which class a conditional model was sampled for, and how strongly, in words."""
    names = key.data.classes
    which = "every class in equal shares" if sampler.class_label < 0 else names[sampler.class_label]
    return f"{which}, guidance w = {sampler.guidance:g}"


ANIMATION_KEY = "reverse_animation"
_CHOICES = {"trails": "trails", "show_x0": "show_x0", "frame_ms": "frame_ms"}  # the animation's choice: our setting


def _keep_animation_choices() -> None:
    """The user changed speed, trails or x̂_0 in the animation: keep them as the page's settings."""
    choices = display_choices(ANIMATION_KEY) or {}
    for name, key in _CHOICES.items():
        if name in choices:
            st.session_state[key] = SETTINGS[key].kind(choices[name])


@st.cache_resource(max_entries=16, show_spinner=False)
def _reverse_payload(_trajectory: Trajectory, key: TrainingKey, source: str, sampler: SamplerConfig,
                     style: charts.AnimationStyle, _baseline: Trajectory | None = None, baseline_id: tuple | None = None):
    """The canvas animation's payload for the run's (key, source) sampled with ``sampler``;
    ``_baseline``: the pinned run's trajectory, already in its own user units."""
    return reverse_payload(in_user_units(key.data, _trajectory), key.data.to_user(_data_points(key.data, 1000, 1)),
                           trails=style.trails, show_x0=style.show_x0, frame_ms=style.frame_ms,
                           animated=style.animated, baseline=_baseline, axis=charts.TimeAxis.of(key.schedule),
                           title="")  # the panel's heading names it


def results_panel(run: FinishedRun, trajectory: Trajectory, scores: Evaluation, config: ExperimentConfig,
                  baseline: tuple | None = None) -> None:
    """``baseline``: (its trajectory, its scores, an id for caching) when a baseline is pinned."""
    st.subheader("Results")
    base_samples = None if baseline is None else baseline[0].samples
    base_id = None if baseline is None else baseline[2]  # the pinned run's key
    st.plotly_chart(_comparison_figure(trajectory, run.key, run.source, config.sampler, base_samples, base_id),
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
    scale = config.data.user_scale
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


@st.cache_resource(max_entries=8, show_spinner=False)
def _field_figures(_view: tasks.FieldView, key: TrainingKey, source: str, quantity: str, frame_ms: int):
    """The field figure and its error curve, drawn once per run from the worker's arrays: every
    frame is in the figure, so moving its slider costs the server nothing."""
    axis = charts.TimeAxis.of(key.schedule)
    v = _view
    return (charts.frozen(charts.field_figure(v.times, v.xs, v.ys, v.learned, v.ideal, v.shown, quantity=v.label,
                                              frame_ms=frame_ms, axis=axis)),
            charts.frozen(charts.field_error_figure(v.times, v.curve_error, quantity=v.label, axis=axis)))


def field_panel(run: FinishedRun, display: Display) -> None:
    st.subheader("The learned field against the ideal one")
    view = computed(run, tasks.Field(display.field), f"Computing the learned and the ideal field at {tasks.FIELD_TIMES} noise levels")
    if view is None:
        return
    figure, error = _field_figures(view, run.key, run.source, display.field, display.frame_ms)
    st.plotly_chart(figure, config=PLOT_CONFIG, key="field_chart")
    path = _schedule(run.key.schedule)
    quantity = path.score_words if display.field == "score" else path.output_words
    st.caption(
        f"At each noise level t (▶ or the slider): the network's {quantity} (orange) and the ideal one (black) on a "
        f"grid, the red map their difference (one log colour scale for every t), the data noised to t faint behind. "
        f"The ideal denoiser here is {view.ideal_description}. Look for the t's and the places where orange leaves black: that is where samples go "
        "wrong."
        + (" With optimal-transport pairs the network learns a straighter field than this ideal one of independent "
           "pairs, so part of the gap is by design, not error." if path.batch_coupled(run.key.train.coupling) else "")
    )
    st.plotly_chart(error, config=PLOT_CONFIG, key="field_error_chart")
    st.caption("The mean difference between the learned and the ideal field over the noised data at each t: the "
               "peaks are the noise levels the network has not learned.")


@st.cache_resource(max_entries=8, show_spinner=False)
def _drift_figure(_view: tasks.DriftView, key: TrainingKey, source: str, sampler: SamplerConfig, frame_ms: int):
    v = _view
    return charts.frozen(charts.drift_figure(v.frame_times, v.truth, v.shown, v.curve.ratio, frame_ms,
                                             axis=charts.TimeAxis.of(key.schedule)))


def drift_panel(run: FinishedRun, config: ExperimentConfig, display: Display) -> None:
    st.subheader("Forward against reverse: where sampling drifts")
    view = computed(run, tasks.Drift(config.sampler), "Comparing each kept frame with the true noised data")
    if view is None:
        return
    figure, curve = _drift_figure(view, run.key, run.source, config.sampler, display.frame_ms), view.curve
    st.plotly_chart(figure, config=PLOT_CONFIG, key="drift_chart")
    worst = charts.drift_peak(curve.ratio)  # the frame the chart marks
    axis = charts.TimeAxis.of(run.key.schedule)
    at = axis.label(axis.frame(curve.times[worst]))
    start = "t = 1" if axis.continuous else "t = T"
    st.caption(
        f"The true noised data q(x_t) and the sampler's x_t at the same t, for each kept frame (▶ or the slider), and "
        f"their energy distance over its floor (1 = as alike as two draws of q(x_t)). The sampler starts from "
        f"N(0, I), so at {start} the gap is only how far q(x_T) is from pure noise; where the curve climbs, errors in the "
        f"field are adding up (here it peaks at {at}, "
        f"{curve.ratio[worst]:.1f} × floor)."
        + (f" With optimal-transport pairs, q(x_t) is the path training saw: the noise matched to the data batch by "
           f"batch ({run.key.train.batch_size} points), not drawn apart from it."
           if _schedule(run.key.schedule).batch_coupled(run.key.train.coupling) else "")
    )


def file_stem(config: ExperimentConfig) -> str:
    """A download's name: what the run is, readable, and a digest of every setting, so two runs'
    files never share a name: ``ddpm-lab_gaussian_ddpm-T1000_3f9a2c1e``."""
    digest = hashlib.sha1(config.to_json().encode()).hexdigest()[:8]
    return f"ddpm-lab_{config.data.name}_{config.schedule.objective}-T{config.schedule.num_timesteps}_{digest}"


def downloads_panel(run: FinishedRun, trajectory: Trajectory, config: ExperimentConfig, display: Display) -> None:
    st.subheader("Downloads")
    stem = file_stem(config)
    samples, model, animation = st.columns(3)
    samples.download_button("Samples (CSV)", data=lambda: _samples_csv(config.data.to_user(trajectory.samples)),
                            file_name=f"{stem}_samples.csv",
                            mime="text/csv", key="download_samples", width="stretch", on_click="ignore")
    model.download_button("Model (safetensors + config)", data=lambda: checkpoints.to_bytes(run.model, config),
                          file_name=f"{stem}.safetensors", mime="application/octet-stream", key="download_model",
                          on_click="ignore", width="stretch",
                          help="Weights as safetensors, with the full config JSON in the file's metadata. "
                               "Load with python -m diffusion --load-checkpoint FILE.safetensors.")
    animation.download_button(
        "Animation (HTML)", key="download_animation", width="stretch", file_name=f"{stem}_reverse.html",
        on_click="ignore", mime="text/html",
        data=lambda: _animation_html(trajectory, run, config, display, title=f"DDPM Lab: reverse process, {stem}"),
        help="A standalone page with the reverse animation; opens offline.",
    )
    st.caption("Files are named by the run: its data, objective and T, and a digest of all its settings.")


def _animation_html(trajectory: Trajectory, run: FinishedRun, config: ExperimentConfig, display: Display,
                    title: str) -> str:
    figure = _reverse_figure(trajectory, run.key, run.source, config.sampler, _animation_style(display))
    return titled(figure.to_html(include_plotlyjs=True, full_html=True), title)


def titled(page: str, title: str) -> str:
    """A full HTML page with ``title`` as its <title> (Plotly writes none)."""
    return page.replace("<head>", f"<head><title>{html.escape(title)}</title>", 1)


def _samples_csv(samples: np.ndarray) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["x", "y"])
    writer.writerows(np.round(samples.astype(np.float64), 6).tolist())
    return out.getvalue()
