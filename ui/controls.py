"""The sidebar: every setting's widget, and the link that carries the settings.

Nothing here declares a setting: each one's label, help, range or choices, link key and what
changing it costs come from its declaration (``diffusion/config.py`` for the experiment,
``Display`` below for the page's own view settings). A widget's session-state key is the
setting's link key, so a copied link reproduces the configuration (as TensorFlow Playground does).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import streamlit as st

from diffusion import checkpoints
from diffusion.config import (
    MAX_CLASSES,
    MAX_POINTS,
    MAX_SAMPLES,
    PRESET_PURPOSES,
    PRESETS,
    SECTIONS,
    DataConfig,
    Declared,
    ExperimentConfig,
    declared,
    experiment_settings,
    setting,
)
from diffusion.datasets import PointsError, load_points
from diffusion.denoiser import Denoiser
from diffusion.guidance import GUIDANCE_SCALES
from ui import session

FieldQuantity = Literal["eps", "score"]
View = Literal["quality", "samples", "noise", "field", "density", "guidance", "compare"]
VIEW_LABELS = {"quality": "Quality and loss by level", "samples": "Samples and metrics", "noise": "Noise and data",
               "field": "Field and drift", "density": "Density and likelihood", "guidance": "Guidance", "compare": "Budget and your runs"}


@dataclass(frozen=True)
class Display:
    """Display-only settings: never retrain, never resample."""

    section = "display"
    log_y: bool = setting(False, key="log_y", label="Log-scale loss", effect="redraw", widget="toggle",
                          help="The loss on a log axis.")
    smoothing: float = setting(0.9, key="smoothing", label="Loss smoothing", effect="redraw", low=0.0, high=0.99,
                               widget="slider", step=0.01, help="Exponential smoothing of the loss curve.")
    trails: int = setting(4, key="trails", label="Trails (points whose path is drawn)", effect="redraw", low=0,
                          high=32, widget="slider", help="How many points of the reverse animation draw their path.")
    show_x0: bool = setting(False, key="show_x0", label="Show predicted x₀", effect="redraw", widget="toggle",
                            help="The model's guess of the final point at each frame.")
    animated: int = setting(1000, key="animated", label="Points animated", effect="redraw", low=50, high=MAX_SAMPLES,
                            widget="select_slider", stops=(100, 200, 500, 1000, 2000, 5000),
                            help="How many of the samples move in the reverse animation (evenly chosen; at most the "
                                 "samples drawn). The canvas moves thousands at 60 frames a second; fewer make a "
                                 "sparser picture and a smaller page. The results and metrics always use all the samples.")
    frame_ms: int = setting(33, key="frame_ms", label="Frame duration (ms)", effect="redraw", low=16, high=500,
                            widget="slider", step=1, help="Animation speed: 33 ms is 30 frames a second, 16 ms is 60. "
                                                          "The reverse animation's own Speed control sets it too.")
    field: FieldQuantity = setting("eps", key="field", label="Field arrows", effect="redraw", widget="radio",
                                   labels={"eps": "network output (ε, or v)", "score": "score ∇log q"},
                                   help="What the field view draws: the network's own output, the predicted noise "
                                        "ε(x, t) (DDPM) or velocity v(x, t) (flow matching), or the score −ε / σ_t it "
                                        "stands for (the direction towards the data; for flow matching ε = x + (1 − t) v).")
    guide_w: float = setting(3.0, key="guide_w", label="Guidance scale w shown", effect="redraw", low=0.0, high=20.0,
                             widget="select_slider", stops=GUIDANCE_SCALES,
                             help="Which scale of the guidance view's sweep is drawn. Every scale is sampled once, "
                                  "so moving this only redraws (the sidebar's Guidance scale sets what the animation "
                                  "above samples).")
    guide_class: int = setting(-1, key="guide_class", label="Class shown", effect="redraw", low=-1,
                               high=MAX_CLASSES - 1, widget="number",
                               help="Every class in its colour, or one class alone (its guided field too).")
    view: View = setting("quality", key="view", label="View", effect="redraw", widget="tabs", labels=VIEW_LABELS,
                         help="The tab open below the training and the animation; only the open tab is computed.")
    pace: bool = setting(True, key="pace", label="Watch short runs", effect="redraw", widget="toggle",
                         help="On: a run that would finish in under 5 seconds is paced to last 5, so its loss curve "
                              "can be watched as it streams (it waits, it doesn't compute more; results are "
                              "identical). Off: full speed.")


SETTINGS: dict[str, Declared] = {d.key: d for d in (*experiment_settings(), *declared(Display))}
OLD_KEYS = {old: d.key for d in SETTINGS.values() for old in d.setting.old_keys}  # links made before a rename
_BY_PATH = {d.path: d for d in SETTINGS.values()}
SHOWN_LINK_CHARACTERS = 40  # a link value is echoed at most this long in a warning
# Display settings drawn beside the view they change, inside its fragment: changing one reruns only
# that view, not the page (a full rerun redraws a dozen charts). The link still carries them.
LOSS_VIEW = ("log_y", "smoothing")
IN_THE_ANIMATION = ("trails", "show_x0")  # the reverse animation's own controls, in the browser
GUIDANCE_VIEW = ("guide_w", "guide_class")
BESIDE_THEIR_VIEW = LOSS_VIEW + IN_THE_ANIMATION + GUIDANCE_VIEW + ("view",)  # the view: the page's tabs


@dataclass(frozen=True)
class LoadedModel:
    """A model file this session uploaded: its weights and the settings stored in it."""

    file_name: str
    model: Denoiser
    config: ExperimentConfig
    digest: str  # of the file's bytes: the run's identity in caches (another file may share the config)


def config_values(config: ExperimentConfig) -> dict[str, Any]:
    """Widget values that describe ``config`` (display settings at their defaults)."""
    values = {d.key: config.get(d.path) for d in experiment_settings()}
    values.update({d.key: d.default for d in declared(Display)})
    return values


def declared_display_keys() -> frozenset[str]:
    """The keys of the display settings: how the page shows a run, never which run."""
    return frozenset(d.key for d in declared(Display))


def preset_values(name: str) -> dict[str, Any]:
    return config_values(PRESETS[name]())


def _state_getter() -> Callable[[str], Any]:
    return lambda path: st.session_state[_BY_PATH[path].key]


# --- the link ------------------------------------------------------------------------------------

_INTEGER = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _shown(raw: str) -> str:
    """A link value as echoed in a warning: cut, so a huge value can't flood the page."""
    if len(raw) <= SHOWN_LINK_CHARACTERS:
        return repr(raw)
    return repr(raw[:SHOWN_LINK_CHARACTERS]) + f"… ({len(raw):,} characters)"


def parse_link_value(d: Declared, raw: str) -> Any:
    """A link's text as the setting's value, or ValueError saying what is allowed. Only ASCII
    digits are numbers (``٣`` or ``１０`` are refused, not read as 3 or 10), and a number that
    rounds to 0 or to infinity is refused rather than silently changed."""
    if d.kind is bool:
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError("allowed: true or false")
        return raw.lower() in ("true", "1")
    if d.choices is not None:
        if raw not in d.choices:
            raise ValueError(f"allowed: {', '.join(d.choices)}")
        return raw
    if len(raw) > SHOWN_LINK_CHARACTERS:
        raise ValueError(f"too long to be a value of this setting; allowed: {d.allowed()}")
    if d.kind is int:
        if not _INTEGER.fullmatch(raw):
            raise ValueError(f"not a whole number written with the digits 0-9; allowed: {d.allowed()}")
        value = int(raw)
    else:
        if not _DECIMAL.fullmatch(raw):
            raise ValueError(f"not a number written with the digits 0-9; allowed: {d.allowed()}")
        value = float(raw)
        if math.isinf(value):
            raise ValueError(f"too large to use; allowed: {d.allowed()}")
        if value == 0 and re.search(r"[1-9]", raw.split("e")[0].split("E")[0]):
            raise ValueError(f"too small: it rounds to 0; write 0 if you mean it. Allowed: {d.allowed()}")
    try:
        return d.check(value)
    except ValueError:
        raise ValueError(f"allowed: {d.allowed()}") from None


def read_link(params: dict[str, list[str]]) -> tuple[str, dict[str, Any], list[str]]:
    """(preset, values, problems) from a link's query parameters (each key's list of values).
    Every ignored or adjusted parameter is named in ``problems``; nothing is dropped silently."""
    problems = []
    presets = params.get("preset", ["reference"])
    preset = presets[-1]
    if preset not in PRESETS:
        problems.append(f"preset={_shown(preset)} (allowed: {', '.join(PRESETS)})")
        preset = "reference"
    values = preset_values(preset)
    for raw_key, raws in params.items():
        if len(raws) > 1:
            problems.append(f"{raw_key} was given {len(raws)} times; the last one, {_shown(raws[-1])}, is used")
        if raw_key in ("preset", "points"):
            continue
        key = OLD_KEYS.get(raw_key, raw_key)
        d = SETTINGS.get(key)
        if d is None:
            problems.append(f"{_shown(raw_key)[1:-1]} (not a setting)")
            continue
        try:
            values[key] = parse_link_value(d, raws[-1])
        except ValueError as error:
            problems.append(f"{raw_key}={_shown(raws[-1])} ({error})")
    def get(path: str) -> Any:
        return values[_BY_PATH[path].key]

    for d in SETTINGS.values():  # choices narrowed by other settings, e.g. the samplers of an objective
        if d.setting.narrowed is None:
            continue
        choices, why = d.choices_in(get)
        if values[d.key] not in choices:
            default = preset_values(preset)[d.key]
            fallback = default if default in choices else choices[0]
            problems.append(f"{d.key}={values[d.key]!r} (not one of {why}: {', '.join(choices)}; {fallback} is used)")
            values[d.key] = fallback
    for d in SETTINGS.values():  # ranges tied to other settings, e.g. DDIM steps <= T
        if d.setting.tied is None:
            continue
        low, high, why = d.bounds(get)
        if not low <= values[d.key] <= high:
            problems.append(f"{d.key}={values[d.key]!r} ({why})")
            values[d.key] = min(max(preset_values(preset)[d.key], low), high)
    return preset, values, problems


def init_state_from_url() -> None:
    """On a session's first run: the preset's values, overridden by the link's query parameters."""
    if "_initialised" in st.session_state:
        return
    st.session_state["_initialised"] = True
    params = {key: st.query_params.get_all(key) for key in st.query_params}
    preset, values, problems = read_link(params)
    st.session_state["preset"] = preset
    st.session_state.update(values)
    st.session_state["_url_problems"] = problems
    if params.get("points", [""])[-1] == "drawn":  # a link to drawn points opens the canvas (empty: they can't travel)
        st.session_state["points_source_choice"] = "Draw"


def write_url() -> None:
    """Put every setting that differs from its preset into the address bar."""
    preset = st.session_state["preset"]
    defaults = preset_values(preset)
    wanted = {"preset": preset} if preset != "reference" else {}
    for key, default in defaults.items():
        value = st.session_state.get(key, default)
        if value != default:
            wanted[key] = str(value).lower() if isinstance(value, bool) else str(value)
    if st.session_state.get("dataset") == "points":  # the points themselves can't travel in a link
        wanted["points"] = st.session_state.get("_points_source", "uploaded")
    if st.query_params.to_dict() != wanted:
        st.query_params.from_dict(wanted)


# --- callbacks (they run before the script, so what they find shows in the same run) ------------


def _load_model() -> None:
    """Callback of the model uploader: check the file, then show its settings."""
    upload = st.session_state.get("model_file")
    st.session_state["_model_error"] = None
    if upload is None:  # the file was removed: back to training
        st.session_state.pop("_loaded_model", None)
        return
    try:
        model, config = checkpoints.from_bytes(upload.getvalue())
    except checkpoints.CheckpointError as error:
        st.session_state["_model_error"] = f"{upload.name}: {error}"
        return
    digest = hashlib.sha256(upload.getvalue()).hexdigest()[:16]
    st.session_state["_loaded_model"] = LoadedModel(upload.name, model, config, digest)
    st.session_state.update(config_values(config))
    if config.data.points is not None:
        st.session_state["_points"] = config.data


def _read_points() -> None:
    """Callback of the points uploader: parse the file now, so its error (or its points) shows
    in this very run, never one rerun late."""
    upload = st.session_state.get("points_file")
    st.session_state["_points_error"] = None
    if upload is None:
        return
    try:
        st.session_state["_points"] = _points_from_bytes(upload.getvalue())
        st.session_state["_points_name"] = upload.name
        st.session_state["_points_source"] = "uploaded"
    except PointsError as error:
        st.session_state["_points_error"] = f"{upload.name}: {error}"
        st.session_state.pop("_points", None)


def _apply_preset() -> None:
    values = preset_values(st.session_state["preset"])
    values.pop("view")  # a preset sets the experiment, not which tab is open
    st.session_state.update(values)


_VIEW_OF_LABEL = {label: view for view, label in VIEW_LABELS.items()}


def view_tabs() -> tuple[str, Any]:
    """The page's tabs, lazy: only the open one's views are computed and sent. Returns the open
    view and its tab to draw into. The open view is the ``view`` setting, so it is in the link."""

    def opened() -> None:
        st.session_state["view"] = _VIEW_OF_LABEL[st.session_state["_view_tab"]]

    st.session_state["_view_tab"] = VIEW_LABELS[st.session_state["view"]]  # the setting leads (links, presets)
    tabs = st.tabs(list(VIEW_LABELS.values()), key="_view_tab", on_change=opened)
    view = st.session_state["view"]
    return view, tabs[list(VIEW_LABELS).index(view)]


@st.cache_data(max_entries=8, show_spinner=False)
def _points_from_bytes(data: bytes) -> DataConfig:
    return load_points(data)


# --- widgets -------------------------------------------------------------------------------------


def _label_of(d: Declared) -> Callable[[Any], str]:
    labels = d.setting.labels or {}
    if d.kind is float:
        return lambda v: labels.get(v, f"{v:g}")
    return lambda v: labels.get(v, str(v))


def view_controls(keys: tuple[str, ...], widths: tuple[float, ...] | None = None) -> None:
    """Draw display settings beside their view (inside its fragment), in columns of relative
    ``widths`` (default equal), and keep the link current, since a fragment's rerun doesn't reach
    the page's ``write_url``."""
    get = _state_getter()
    for column, key in zip(st.columns(widths or len(keys)), keys, strict=True):
        with column:
            widget(SETTINGS[key], get)
    write_url()


def widget(d: Declared, get: Callable[[str], Any]) -> None:
    """Draw the widget ``d`` declares, its range narrowed where it is tied to another setting
    (the value is moved into that range first), disabled where it does not apply."""
    s, key, state = d.setting, d.key, st.session_state
    common = dict(key=key, help=d.help, disabled=not d.applies_in(get))
    low, high, _ = d.bounds(get)
    if s.tied is not None:
        state[key] = min(max(state[key], low), high)
    # Each widget also gets its current value as its default (``value`` / ``index``): should the
    # browser ever rebuild a widget from its default (a keyed widget's state lost around a rerun
    # started in a fragment was seen to bring every setting back to its minimum or first choice),
    # it gets the value it had, not the widget's own minimum. The value is not part of a widget's
    # identity (keyed widgets here), and .streamlit/config.toml silences Streamlit's warning about a
    # default beside a Session State value.
    if s.widget == "toggle":
        st.toggle(s.label, value=bool(state[key]), **common)
    elif s.widget == "select":
        options, _ = d.choices_in(get)
        if state[key] not in options:  # e.g. the objective changed: its own samplers only
            state[key] = options[0]
        st.selectbox(s.label, options, index=list(options).index(state[key]), format_func=_label_of(d), **common)
    elif s.widget == "radio":
        st.radio(s.label, d.choices, index=list(d.choices).index(state[key]), format_func=_label_of(d), horizontal=True,
                 **common)
    elif s.widget == "select_slider":
        options = sorted(set(s.stops) | {state[key]})  # a link or a model file may hold any valid value
        st.select_slider(s.label, options, value=state[key], format_func=_label_of(d), **common)
    elif s.widget == "slider":
        step = d.kind(s.step) if s.step else d.kind(1)
        st.slider(s.label, d.kind(low), d.kind(max(high, low + step)), value=d.kind(state[key]), step=step, **common)
    else:
        step = s.step if d.kind is float else int(s.step or 1)
        st.number_input(s.label, d.kind(low), d.kind(high), value=d.kind(state[key]), step=step, format=s.format,
                        **common)


def _data_section() -> DataConfig | None:
    d = SETTINGS["dataset"]
    widget(d, _state_getter())
    if st.session_state["dataset"] != "points":
        return DataConfig(st.session_state["dataset"])
    if st.radio("Source", ["Upload a CSV", "Draw"], horizontal=True, key="points_source_choice",
                help="Your own points: from a CSV file, or drawn with the mouse.") == "Draw":
        from ui.drawing import drawing_section

        return drawing_section()
    st.file_uploader(
        "Your points (CSV with columns x,y)", type=["csv", "txt"], key="points_file", on_change=_read_points,
        help=f"A header row naming columns x and y, then one point per row; up to {MAX_POINTS:,} points. "
             f"The points are standardised (mean 0, std 1). An epoch is one pass over them. An optional label "
             f"column gives each point a class (up to {MAX_CLASSES}), for a conditional model and guidance. {d.help}",
    )
    if st.session_state.get("_points_error"):
        st.error(st.session_state["_points_error"])
        return None
    kept = st.session_state.get("_points")
    if kept is None:
        st.info("Upload a CSV file with columns x,y to train on your own points.")
        return None
    upload = st.session_state.get("points_file")
    classes = (f" in {len(kept.classes)} classes ({', '.join(kept.classes)})" if kept.classes else "")
    if upload is not None:
        st.caption(f"{len(kept.points):,} points{classes} from {upload.name}, standardised.")
    else:  # the uploader forgets its file when hidden; the points are kept
        st.caption(f"Using your {len(kept.points):,} uploaded points{classes}.")
    return kept


SECTION_TITLES = {"schedule": ("Objective and noise schedule", True), "denoiser": ("Model", False), "train": ("Training", True),
                  "sampler": ("Sampling", True), "display": ("Display", False)}


def sidebar() -> tuple[ExperimentConfig | None, Display]:
    """Draw the sidebar; return the experiment it describes (None if it can't run) and display."""
    get = _state_getter()
    for key in BESIDE_THEIR_VIEW:  # drawn only when their view is: keep their values meanwhile
        st.session_state[key] = st.session_state.get(key, SETTINGS[key].default)
    with st.sidebar:
        st.selectbox("Preset", list(PRESETS), index=list(PRESETS).index(st.session_state["preset"]), key="preset",
                     on_change=_apply_preset,
                     help=" ".join(f"{name}: {purpose}" for name, purpose in PRESET_PURPOSES.items())
                     + " Choosing a preset resets every setting below.")
        for problem in st.session_state.get("_url_problems", []):
            st.warning(f"Ignored from the link: {problem}")
        with st.expander("Data", expanded=True):
            data = _data_section()
        for section, cls in [*list(SECTIONS.items())[1:], ("display", Display)]:
            title, expanded = SECTION_TITLES[section]
            with st.expander(title, expanded=expanded):
                for d in declared(cls):
                    if d.key not in BESIDE_THEIR_VIEW:
                        widget(d, get)
        with st.expander("Load a trained model", expanded=False):
            _model_uploader()
        config = _experiment(data)
        if config is not None:
            defaults = preset_values(st.session_state["preset"])
            changed = [d.key for d in experiment_settings() if st.session_state.get(d.key) != defaults[d.key]]
            st.caption(f"Preset **{st.session_state['preset']}**" + (f", {len(changed)} setting(s) changed" if changed else ""))
    display = Display(**{d.name: st.session_state[d.key] for d in declared(Display)})
    return config, display


def _model_uploader() -> None:
    st.file_uploader(
        "Model file (.safetensors)", type=["safetensors"], key="model_file", on_change=_load_model,
        help="A model downloaded from this page (or saved by python -m diffusion --save-checkpoint). "
             "Its settings replace the ones above and it is shown without training. Only safetensors "
             "files are read: pickle files (torch.save) are refused unopened, since they can run code.",
    )
    loaded: LoadedModel | None = st.session_state.get("_loaded_model")
    if st.session_state.get("_model_error"):
        st.error(st.session_state["_model_error"])
    elif loaded is not None:
        st.caption(f"Loaded {loaded.file_name}: its settings are shown above.")


def experiment_from_values(values: dict[str, Any], data: DataConfig) -> ExperimentConfig:
    """The experiment that widget (or link) values describe, by setting key; ValueError if invalid."""
    sections: dict[str, dict[str, Any]] = {}
    for d in experiment_settings():
        if d.section != "data":
            sections.setdefault(d.section, {})[d.name] = d.kind(values[d.key])
    return ExperimentConfig(data=data, **{name: SECTIONS[name](**fields) for name, fields in sections.items()})


def _experiment(data: DataConfig | None) -> ExperimentConfig | None:
    # not an error: nothing drawn or uploaded yet (a bad file is marked in the sidebar)
    st.session_state["_waiting_for_points"] = data is None and not st.session_state.get("_points_error")
    if data is None:
        return None
    try:
        return experiment_from_values(st.session_state, data)
    except ValueError as error:
        st.error(str(error))
        return None


def session_owner() -> str:
    """A stable id for this browser session (jobs belong to it)."""
    if "_owner" not in st.session_state:
        seed = session.session_id() or str(id(st.session_state))
        st.session_state["_owner"] = hashlib.sha1(seed.encode()).hexdigest()[:12]
    return st.session_state["_owner"]


def loaded_model() -> LoadedModel | None:
    return st.session_state.get("_loaded_model")
