"""The density view: the log-density the trained model defines (through the probability-flow ODE)
beside the data's, its likelihood against the data's entropy, and the trajectory probe.

Everything heavy runs on the workers (``runtime.tasks.Density`` and ``Probe``); these panels ask,
wait a moment, and draw. A click in the probe's chart reruns only the probe (a fragment).
"""

from __future__ import annotations

import numpy as np
import streamlit as st

import charts
from diffusion.config import MAX_SAMPLE_WORK, ExperimentConfig, TrainingKey
from diffusion.objectives import path_of
from diffusion.samplers import training_salt
from runtime import tasks
from runtime.registry import FinishedRun
from ui.panels import PLOT_CONFIG, computed

PROBE_TARGETS = 24  # click targets per axis in the probe's chart
def run_digest(key: TrainingKey) -> str:
    """A short name of a run for the session's keys: the probe's picked start belongs to its run."""
    return f"{training_salt(key) % 16**8:08x}"


PROBE_FROM = {"noise": "pure noise (x_T): follow it to the data", "data": "the data (x₀): follow it to noise"}


@st.cache_resource(max_entries=8, show_spinner=False)
def _density_figure(_view: tasks.DensityView, key: TrainingKey, source: str, steps: int):
    v = _view
    return charts.frozen(charts.density_figure(v.xs, v.ys, v.log_p_model, v.log_p_true, v.shown))


def _nats(estimate, unit_shift: float = 0.0) -> str:
    """An estimate in nats with its standard error (none shown where it is exact)."""
    value = estimate.value + unit_shift
    return f"{value:.3f}" if estimate.error == 0 else f"{value:.3f} ± {estimate.error:.3f}"


def density_panel(run: FinishedRun, config: ExperimentConfig) -> tasks.DensityView | None:
    st.subheader("The density the model learned")
    steps = config.sampler.likelihood_steps
    work = tasks.density_work(run.key, steps)
    if work > 3 * MAX_SAMPLE_WORK:
        st.caption(f"The density of this model with {steps} ODE steps needs {work:.1e} multiply-adds, more than this "
                   f"page allows ({3 * MAX_SAMPLE_WORK:.0e}): use fewer 'Likelihood ODE steps' (Sampling) or a smaller "
                   "model.")
        return None
    view = computed(run, tasks.Density(steps),
                    f"Computing log p through the probability-flow ODE ({steps} and {2 * steps} Heun steps)")
    if view is None:
        return None
    st.plotly_chart(_density_figure(view, run.key, run.source, steps), config=PLOT_CONFIG, key="density_chart")
    known = view.log_p_true is not None
    st.caption(
        "Left: the log-density the trained network defines, computed exactly through its probability-flow ODE "
        "(the deterministic twin of its sampler: dx̄/dσ̄ = ε for DDPM, dx/dt = v for flow) with the divergence "
        + ("of its field; right: the data's own, on one colour scale (10 nats from the top)." if known else
           "of its field, with the data over it (this shape has no closed-form density, so there is no true map).")
        + " Look for density where there is no data: where the learned density leaks between modes or fills the "
          "gaps of a shape, the samples land there too."
    )
    nll = view.nll
    shift = -view.unit_shift  # NLL in the user's units: -log p + 2 log scale
    columns = st.columns(4)
    drawn = ("points drawn from your own set (the ones it trained on, so this is a training-set NLL)"
             if run.key.data.points is not None else "fresh data points")
    columns[0].metric("NLL (nats per point)", _nats(nll.nll, -shift),
                      help=f"The mean of −log p_model over {nll.num_points:,} {drawn}, with its standard error, "
                           "per unit area of the data's own axes.")
    columns[1].metric("Data entropy H", "unknown" if nll.entropy is None else _nats(nll.entropy, -shift),
                      help="−E log p_data: exact for one Gaussian, log(2πe s²); a Monte Carlo estimate with its "
                           "standard error for a mixture; unknown for a shape without a closed-form density.")
    columns[2].metric("KL(data ‖ model), paired", "unknown" if nll.kl is None else _nats(nll.kl),
                      help="NLL − H, estimated on the same points: the mean of log p_data − log p_model over them (a "
                           "paired estimate, far less noisy than the difference of the two numbers beside it, which it "
                           "need not equal). ≥ 0, 0 only for a perfect model; its standard error is the floor below "
                           "which it can't be told from 0.")
    columns[3].metric("ODE solver's error", f"{nll.solver_error:.4f}",
                      help=f"The mean estimated error of each log p: {steps} and {2 * steps} Heun steps, "
                           "Richardson-extrapolated; their difference / 3 bounds it. More 'Likelihood ODE steps' in "
                           "the sidebar make it smaller.")
    if nll.kl is not None:
        floor = 2 * nll.kl.error
        if nll.kl.value < -(floor + nll.solver_error):
            verdict = ("below 0 by more than its noise and the solver's error together, which a KL divergence cannot "
                       "be: the ODE solver is too coarse for this model; use more 'Likelihood ODE steps' (Sampling)")
        elif nll.kl.value < floor + nll.solver_error:
            verdict = ("within its noise floor of 0 (2 standard errors and the solver's error): the model's density "
                       "can't be told from the data's here")
        else:
            verdict = f"{nll.kl.value / max(floor, 1e-12):.1f} × its noise floor (2 standard errors, {floor:.3f} nats)"
        st.caption(f"KL(data ‖ model) = {nll.kl.value:.3f} nats: {verdict}. A better model brings NLL down towards H.")
    else:
        st.caption("Without the data's density, NLL alone compares models on the same data: lower is better.")
    return view


def _targets(view: tasks.DensityView, key: TrainingKey) -> np.ndarray:
    """A grid of click targets over the density grid's range and N(0, I)'s (+-3 in the model's units)."""
    noise_box = key.data.to_user(np.array([[-3.0, -3.0], [3.0, 3.0]]))
    low = np.minimum([view.xs[0], view.ys[0]], noise_box[0])
    high = np.maximum([view.xs[-1], view.ys[-1]], noise_box[1])
    xs, ys = np.linspace(low[0], high[0], PROBE_TARGETS), np.linspace(low[1], high[1], PROBE_TARGETS)
    return np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)


def _picked(event) -> tuple[float, float] | None:
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", [])
    if not points:
        return None
    return round(float(points[0]["x"]), 4), round(float(points[0]["y"]), 4)


def probe_panel(run: FinishedRun, config: ExperimentConfig, view: tasks.DensityView) -> None:
    st.subheader("Trajectory probe")

    @st.fragment
    def probe():
        start_from = st.radio("Start from", list(PROBE_FROM), format_func=PROBE_FROM.get, horizontal=True,
                              key="probe_from")
        targets = _targets(view, run.key)
        default = tuple(run.key.data.to_user(np.array([0.8, -0.6])).tolist()) if start_from == "noise" else \
            tuple(np.round(view.shown[0], 4).tolist())
        picked_key = f"probe_start_{start_from}_{run_digest(run.key)}"  # a start belongs to its run (and its units)
        start = st.session_state.get(picked_key, default)
        found = computed(run, tasks.Probe(tuple(start), start_from == "noise"),
                         "Following the start's probability-flow ODE path", wait=1.0)
        paths = found.paths if found is not None else None
        figure = charts.probe_figure(view.xs, view.ys, view.log_p_model, targets,
                                     None if paths is None else paths.ode, None if paths is None else paths.stochastic,
                                     start)
        event = st.plotly_chart(figure, config=PLOT_CONFIG, key="probe_chart", on_select="rerun",
                                selection_mode="points")
        picked = _picked(event)
        if picked is not None and picked != start:
            st.session_state[picked_key] = picked
            st.rerun(scope="fragment")
        st.caption(
            f"Click anywhere in the chart to start there ({'as x_T, pure noise' if start_from == 'noise' else 'as a data point x₀'}). "
            "The map covers the data's range. Red: the start's probability-flow ODE path (deterministic: what the "
            f"ODE samplers follow); grey: {0 if paths is None else len(paths.stochastic)} stochastic paths from the "
            "same start, over the learned log-density. "
            + ("They take ancestral steps on the same path (fresh noise at every step, as DDPM samples). Look at how "
               "the ODE path heads for one place while the stochastic ones scatter across the data."
               if start_from == "noise" else
               "They are the forward noising q(x_t | x₀), which scatters the point towards pure noise. Look at where "
               "the ODE path takes the point: its own place in the noise, the same every time."))
        if paths is not None:
            st.plotly_chart(charts.probe_log_p_figure(paths.time, paths.log_p, charts.TimeAxis.of(run.key.schedule)),
                            config=PLOT_CONFIG, key="probe_log_p")
            st.caption(
                f"log p_t(x_t) along the ODE path, from the data (left, {paths.log_p[0]:.2f} nats: the model's "
                f"log-likelihood of the path's data end) to pure noise (right, {paths.log_p[-1]:.2f}: under N(0, I)). "
                "Along the ODE the density changes only by the field's divergence, so this curve is exact up to the "
                "solver; a steep stretch is where the flow squeezes space the most.")

    probe()
    path = path_of(run.key.schedule)
    st.caption(f"A deterministic sampler of this {path.label} model follows its ODE: the same start always gives the "
               "same path and the same sample. An ancestral sampler adds fresh noise at every step, which washes out "
               "part of the model's error on the way; the ODE carries every error to the end, which is why a "
               "deterministic sampler with many steps can land slightly further from the data than an ancestral one "
               "(for a DDPM model the sampling budget in the last tab shows it).")
