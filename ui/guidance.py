"""The guidance view: a conditional model sampled at every guidance scale, what each scale does to
each class's quality and diversity, and the guided field against the ideal one (issue 25).

The sweep runs once on a worker (``runtime.tasks.Guidance``); the scale and class shown are display
settings drawn beside the view, inside its fragment: moving them redraws, nothing is sampled again.
"""

from __future__ import annotations

from urllib.parse import urlencode

import streamlit as st

import charts
from diffusion.config import DATASET_CLASSES, ExperimentConfig, TrainingKey
from runtime import tasks
from runtime.registry import FinishedRun
from ui.controls import SETTINGS, write_url
from ui.panels import PLOT_CONFIG, computed

TRY_IT = {"preset": "improved", "dataset": "moons", "conditional": "true", "view": "guidance"}


def not_conditional_note() -> None:
    """What this view needs, and a link that sets it up."""
    with_classes = ", ".join(name.replace("_", " ") for name, classes in DATASET_CLASSES.items() if classes)
    st.subheader("Classifier-free guidance")
    st.caption(
        "This run was trained without classes. Guidance needs a conditional model: in the sidebar, pick a dataset "
        f"with classes ({with_classes}) and turn on Training → Condition on the class (with some label dropout, so "
        "the same network also learns the unconditional model). Then this view samples it at every guidance scale "
        f"and shows what guidance buys and what it costs. [Try it on the two moons](?{urlencode(TRY_IT)})."
    )


@st.cache_resource(max_entries=16, show_spinner=False)
def _field_figure(_view: tasks.GuidanceView, key: TrainingKey, source: str, scale: float, k: int, frame_ms: int):
    v = _view
    learned, ideal = v.guided(scale, k)
    return charts.frozen(charts.field_figure(v.times, v.xs, v.ys, learned, ideal, v.noised[k], quantity=v.label,
                                             frame_ms=frame_ms, axis=charts.TimeAxis.of(key.schedule)))


def guidance_panel(run: FinishedRun, config: ExperimentConfig, frame_ms: int) -> None:
    if not run.key.train.conditional:
        not_conditional_note()
        return
    st.subheader("Classifier-free guidance: what w buys, and what it costs")
    names = run.key.data.classes
    task = tasks.Guidance.of(config.sampler)
    view = computed(run, task, "Sampling every class at each guidance scale")
    if view is None:
        return

    @st.fragment
    def guided():  # the scale and the class shown: a change reruns this view alone
        state = st.session_state
        if state.get("guide_w") not in view.scales:
            state["guide_w"] = min(view.scales, key=lambda w: abs(w - state.get("guide_w", 1.0)))
        if not -1 <= state.get("guide_class", -1) < len(names):
            state["guide_class"] = -1
        controls, picker = st.columns([2, 3])
        with controls:
            if len(view.scales) > 1:
                st.select_slider(SETTINGS["guide_w"].setting.label, view.scales, key="guide_w",
                                 format_func=lambda w: f"{w:g}", help=SETTINGS["guide_w"].help)
            else:
                st.caption("Trained with no label dropout, so only w = 1 (the class as learned) can be sampled.")
        with picker:
            st.radio(SETTINGS["guide_class"].setting.label, list(range(-1, len(names))), key="guide_class",
                     horizontal=True, format_func=lambda k: "every class" if k < 0 else names[k],
                     help=SETTINGS["guide_class"].help)
        write_url()
        scale, focus = float(state["guide_w"]), int(state["guide_class"])
        i = view.scales.index(scale)
        ranges = charts.axis_range(view.data, *view.samples)
        left, right = st.columns([2, 3])
        with left:
            st.plotly_chart(charts.guidance_samples_figure(view.samples[i], view.labels, view.data, view.data_labels,
                                                           names, focus, scale, ranges),
                            config=PLOT_CONFIG, key="guidance_samples")
        with right:
            st.plotly_chart(charts.guidance_curve_figure(list(view.rows), names, scale, focus), config=PLOT_CONFIG,
                            key="guidance_curve")
        rows = [r for r in view.rows if r["guidance"] == scale and (focus < 0 or r["class"] == focus)]
        summary = "; ".join(f"{r['name']} {r['energy_distance_ratio']:.2f} × floor, spread {r['spread_ratio']:.2f}"
                            for r in rows)
        st.caption(
            f"Each point asks for its class (its colour; the data faint behind, in the same colours) and is sampled "
            f"with u + w (c − u): u the network's unconditional prediction, c its prediction for the class. "
            f"Right, per class against w: how far its samples are from the class's data (energy distance over its "
            f"noise floor, 1 = as good as fresh data) and how spread out they are against the class itself. "
            f"w = 0 ignores the class, w = 1 is the class as learned; look for the spread falling below 1 and the "
            f"distance rising again as w grows: the samples crowd together and leave the data. At w = {scale:g}: "
            f"{summary}.")
        k = focus if focus >= 0 else 0
        st.plotly_chart(_field_figure(view, run.key, run.source, scale, k, frame_ms), config=PLOT_CONFIG,
                        key="guidance_field")
        st.caption(
            f"The guided field for {names[k]} at w = {scale:g} at each noise level (▶ or the slider): the network's "
            f"u + w (c − u) (orange) against the same combination of the ideal predictions (black; {view.ideal_description}), "
            f"the class's data noised to t faint behind. Where the orange arrows leave the black ones, the guided "
            f"samples go somewhere the data's own guided field would not send them"
            + ("; pick a class above to see another one's field." if focus < 0 else "."))

    guided()
