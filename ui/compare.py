"""The page's comparison views: the session's run history, a pinned baseline drawn beside the
current run, the same noise for every run, the sampling budget, and clipping shown failing.

What to remember and how the table reads is decided in ``ui/history.py`` (no Streamlit); these
functions draw it and keep the session's choices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

import charts
from diffusion.budget import BudgetRow, budget_plan
from diffusion.config import MAX_SAMPLE_WORK, ExperimentConfig, model_calls
from diffusion.metrics import Evaluation
from runtime import tasks
from runtime.registry import FinishedRun
from ui import history
from ui.controls import config_values, declared_display_keys
from ui.history import HistoryEntry
from ui.panels import PLOT_CONFIG, RESULT_WAIT, _data_points, _schedule, computed, progress_until_ready, registry

DISPLAY_KEYS = declared_display_keys()  # kept when a run is shown again
PIN = ":material/push_pin:"  # an icon font of Streamlit's own: an emoji is an empty box where no emoji font is
DRAWN = "drawn"  # ui.drawing.SOURCE, the points' source once drawn (not imported here: it loads the canvas)


@dataclass(frozen=True)
class Baseline:
    """The pinned run: its history entry and, while it is still kept, the run itself."""

    entry: HistoryEntry
    run: FinishedRun | None  # None: dropped from the store of finished runs since it was pinned

    def sampled(self) -> tasks.Sampled | None:
        """Its samples with its own sampler (a worker's result, cached); None until they are ready."""
        if self.run is None:
            return None
        sampled = computed(self.run, tasks.Sample(self.entry.config.sampler), "Sampling the pinned baseline")
        return sampled if sampled is not None and sampled.error is None else None


def _history() -> tuple[HistoryEntry, ...]:
    return st.session_state.get("_history", ())


def baseline() -> Baseline | None:
    """The session's pinned run, looked up in the store (or the session's own model file)."""
    entry: HistoryEntry | None = st.session_state.get("_baseline")
    if entry is None:
        return None
    if entry.source == "trained":
        return Baseline(entry, registry().finished(entry.config.training))
    loaded = st.session_state.get("_loaded_run")
    return Baseline(entry, loaded if loaded is not None and loaded.source == entry.source else None)


def remember(run: FinishedRun, config: ExperimentConfig, scores: Evaluation) -> None:
    """Add the run on screen to the session's history."""
    entry = HistoryEntry(config, run.source, float(run.losses[-1]) if len(run.losses) else None,
                         scores.energy_distance.ratio, run.train_seconds, _points_name(config))
    st.session_state["_history"] = history.record(_history(), entry)


def _points_name(config: ExperimentConfig) -> str | None:
    """Where the run's points came from, while the sidebar still holds them: "drawn" or the file's name."""
    kept = st.session_state.get("_points")
    if config.data.points is None or kept is None or kept.points != config.data.points:
        return None
    if st.session_state.get("_points_source") == DRAWN:
        return DRAWN
    return st.session_state.get("_points_name")


def _selected() -> HistoryEntry | None:
    """The entry the picker names (by its number, which never changes)."""
    pick = st.session_state.get("history_pick")
    return next((e for e in _history() if e.number == pick), None)


def _show_selected() -> None:
    """Callback: bring the selected run back (its settings, so the page shows it from the store),
    under the preset that gives it with the fewest changes, so its link reproduces it."""
    entry = _selected()
    if entry is None:
        return
    shown = {key: value for key, value in config_values(entry.config).items() if key not in DISPLAY_KEYS}
    st.session_state.update(shown)  # the run's settings; how the page shows things (tab, log scale...) stays
    st.session_state["preset"] = history.closest_preset(entry.config)
    if entry.config.data.points is not None:
        st.session_state["_points"] = entry.config.data
        drawn = entry.points_name == DRAWN
        st.session_state["_points_source"] = DRAWN if drawn else "uploaded"
        st.session_state["points_source_choice"] = "Draw" if drawn else "Upload a CSV"
        if not drawn and entry.points_name:
            st.session_state["_points_name"] = entry.points_name


def _pin_selected() -> None:
    entry = _selected()
    if entry is not None:
        st.session_state["_baseline"] = entry


def _unpin() -> None:
    st.session_state.pop("_baseline", None)


def history_panel() -> None:
    entries = _history()
    st.subheader("Your runs")
    if not entries:
        st.caption("Each run you finish in this session is listed here, to bring back or to pin as a baseline.")
        return
    pinned: HistoryEntry | None = st.session_state.get("_baseline")
    st.dataframe(history.table(entries, pinned), hide_index=True, width="stretch")
    numbers = [e.number for e in history.by_number(entries)]
    if st.session_state.get("history_pick") not in numbers:
        st.session_state.pop("history_pick", None)
    labels = {e.number: history.label(e, entries) for e in entries}
    pick, show, pin, unpin = st.columns([2, 1, 1, 1])
    pick.selectbox("Run", numbers, index=numbers.index(entries[-1].number), key="history_pick",
                   format_func=labels.get, label_visibility="collapsed")
    chosen = _selected() is not None
    show.button("Show this run", key="history_show", on_click=_show_selected, disabled=not chosen, width="stretch",
                help="Its settings go back into the sidebar; a finished run comes from the store at once.")
    pin.button("Pin as baseline", icon=PIN, key="history_pin", on_click=_pin_selected, disabled=not chosen,
               width="stretch", help="Draw this run faintly beside the current one: its loss, its samples, its metrics.")
    unpin.button("Unpin the baseline", key="history_unpin", on_click=_unpin, disabled=pinned is None,
                 width="stretch")
    st.caption("The runs you finished in this session, numbered in the order they first appeared; each with its "
               "preset and the settings that tell it apart from the others (where it differs from that preset). "
               "Pick a run to show it again or pin it. Compare the energy distance over its floor: 1 is as close "
               "as fresh data.")


def _frame_times_of(config: ExperimentConfig) -> tuple:
    """What decides a reverse animation's frame times: two runs agreeing on these keep frames at
    the same times, so one can move beside the other."""
    s = config.sampler
    steps = config.schedule.num_timesteps if s.kind == "ddpm" else s.sample_steps
    return config.schedule.objective, config.schedule.num_timesteps, s.kind, steps, s.num_frames


def baseline_note(pinned: Baseline | None, config: ExperimentConfig) -> None:
    """One line about the pinned baseline, or why it can't be drawn."""
    if pinned is None:
        return
    if pinned.run is None:
        st.info("The pinned baseline is no longer kept (the server holds the 16 most recently used finished runs), "
                "so it isn't drawn. Show it again from the table to retrain it, or pin another run.")
        return
    if _frame_times_of(pinned.entry.config) == _frame_times_of(config):
        where = "the loss, the samples and the reverse animation"
    else:
        where = ("the loss and the samples (not the reverse animation: its frames are at other times, from another "
                 "objective, sampler or number of steps)")
    # against the run on screen (``config``), not the history's last entry: the page remembers the
    # run it shows only after this line is drawn, so that entry is the run before
    differing = history.differing((pinned.entry.config, config))
    st.caption(f"{PIN} Baseline pinned (#{pinned.entry.number}): drawn in grey on {where}"
               + (f"; it differs in {', '.join(differing)}." if differing else "; the same settings."))


def noise_note(config: ExperimentConfig) -> None:
    """One line: what 'same noise' means for the animations, and what it can't make equal."""
    sampler = config.sampler
    if sampler.common_noise:
        text = (f"Same noise for every run: any run sampled with sampling seed {sampler.seed} and "
                f"{sampler.num_samples:,} points starts from the same x_T and gets the same noise at each step, "
                "so two animations differ only by the model or the sampler.")
    else:
        text = "Each run draws its own sampling noise (Same noise for every run is off in Sampling)."
    st.caption(text + " Training batches come from the same random stream as the initial weights (as in the seed "
               "script), so changing the width or depth changes the batches too.")


# --- the sampling budget -------------------------------------------------------------------------------------


def _plan(run: FinishedRun) -> list:
    path = _schedule(run.key.schedule)
    return budget_plan(run.key.schedule.num_timesteps, families=path.budget_families)


def _budget_work(run: FinishedRun, config: ExperimentConfig) -> float:
    calls = sum(model_calls(kind, steps) for kind, _, steps in _plan(run))
    return calls * config.sampler.num_samples * run.key.denoiser.parameter_count


def _baseline_rows(pinned: Baseline | None, run: FinishedRun, config: ExperimentConfig) -> tuple[BudgetRow, ...] | None:
    """The pinned run's budget rows, if computed with this page's sampling settings (and it is not this run)."""
    if pinned is None or pinned.run is None or pinned.run is run:
        return None
    state = registry().result(pinned.run, tasks.Budget.of(config.sampler))
    return state.result if state is not None and state.status == "done" else None


def budget_panel(run: FinishedRun, config: ExperimentConfig, pinned: Baseline | None = None) -> None:
    st.subheader("Sampling budget")
    sampler = config.sampler
    path = _schedule(run.key.schedule)
    names = [charts.sampler_family(kind, eta) for kind, eta in path.budget_families]
    steps = ", ".join(str(s) for s in path.budget_steps) + " and T"
    families = f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else names[0]
    task = tasks.Budget.of(sampler)
    state = registry().result(run, task)
    if state is None:
        work = _budget_work(run, config)
        if work > 3 * MAX_SAMPLE_WORK:
            st.caption(f"The budget of this model needs {work:.1e} multiply-adds, more than this page allows "
                       f"({3 * MAX_SAMPLE_WORK:.0e}); use fewer samples or a smaller model.")
            return
        st.button("Compute the sampling budget", key="budget_compute", on_click=lambda: registry().compute(run, task),
                  help=f"{families} at {steps} steps, each scored against the data; a few seconds, in a worker "
                       "process (training goes on meanwhile).")
        st.caption(f"How good are the samples with fewer sampling steps? One click samples this run with "
                   f"{families} at {steps} steps and scores each.")
        return
    if not state.ready:
        registry().wait_for(state, RESULT_WAIT)
    if state.status == "failed":
        st.error(f"The sampling budget failed: {state.error}")
        return
    if state.status != "done":
        progress_until_ready(state, "Sampling at each budget")
        return
    rows = state.result
    current = (charts.sampler_family(sampler.kind, None if sampler.kind == "ddpm" else sampler.eta),
               run.key.schedule.num_timesteps if sampler.kind == "ddpm" else sampler.sample_steps)
    base_rows = _baseline_rows(pinned, run, config)
    st.plotly_chart(charts.budget_figure(list(rows), current, list(base_rows) if base_rows else None), config=PLOT_CONFIG,
                    key="budget_chart")
    st.dataframe({
        "sampler": [charts.sampler_family(r.sampler, r.eta) for r in rows],
        "steps": [r.steps for r in rows],
        "model calls": [r.model_calls for r in rows],
        "seconds": [f"{r.seconds:.2f}" for r in rows],
        "energy distance / floor": [f"{r.ratio:.2f}" for r in rows],
    }, hide_index=True, width="stretch", height=240)
    best = min(rows, key=lambda r: (r.ratio if np.isfinite(r.ratio) else np.inf, r.model_calls))
    st.caption(f"Energy distance over its floor against the model calls a sampler spends ({sampler.num_samples:,} "
               f"points, sampling seed {sampler.seed}; your setting ringed). Where a line flattens, more steps stop "
               f"paying. Best here: {charts.sampler_family(best.sampler, best.eta)} with {best.steps} steps, "
               f"{best.ratio:.2f} × floor."
               + (" DDIM (η = 0) and DPM-Solver++ follow the same deterministic ODE, the second to second order, so "
                  "it gets there in fewer calls; with many steps both can level off above DDPM, whose fresh noise at "
                  "every step washes out part of the model's error while the ODE carries every error to the end."
                  if any(r.sampler == "dpm_solver" for r in rows) else "")
               + (" Dotted: the pinned baseline's budget, on the same axis of model calls." if base_rows else
                  " Pin a run as the baseline and compute its budget too to draw it here, dotted: a DDPM run and a "
                  "flow matching run on one axis of model calls." if pinned is not None else ""))


def clipping_note(config: ExperimentConfig, scores: Evaluation) -> None:
    """Say why clipping x0 to [-1, 1] breaks this data, when it is on."""
    if not config.sampler.clip_x0:
        return
    data = _data_points(config.data, 2000, 1)
    low, high = data.min(axis=0), data.max(axis=0)
    outside = float(np.mean(np.abs(data) > 1))
    if outside == 0:
        st.caption("Clipping x̂₀ to [-1, 1]: this data lies inside that square, so clipping changes little.")
        return
    units = " (in the units the model trains in)" if config.data.points is not None else ""
    st.warning(
        f"Clipping x̂₀ to [-1, 1] (what common libraries do by default) assumes the data lies in that square. This "
        f"data{units} spans x {low[0]:.2f} to {high[0]:.2f}, y {low[1]:.2f} to {high[1]:.2f} ({outside:.0%} of the "
        f"coordinates outside), so every prediction of x₀ is pulled into the square and the samples collapse "
        f"toward its edge: energy distance {scores.energy_distance.ratio:.1f} × floor. Turn it off in Sampling."
    )
