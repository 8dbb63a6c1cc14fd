"""The sidebar: every knob of the experiment, its help text, and the URL that carries it.

Each control's session-state key is also its URL query parameter, so a copied link reproduces
the configuration (as TensorFlow Playground does). ``CONTROLS`` maps each key to where it lives
in the config; the widgets themselves are written out in ``sidebar()`` in the order they appear.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from typing import Any

import streamlit as st

from diffusion import checkpoints
from diffusion.config import (
    MAX_BATCH_SIZE,
    MAX_BETA,
    MAX_DEPTH,
    MAX_EPOCHS,
    MAX_FRAMES,
    MAX_HIDDEN,
    MAX_POINTS,
    MAX_SAMPLE_FRAME_POINTS,
    MAX_SAMPLES,
    MAX_TIMESTEPS,
    MIN_BETA,
    PRESETS,
    DataConfig,
    DenoiserConfig,
    ExperimentConfig,
    SamplerConfig,
    ScheduleConfig,
    TrainConfig,
)
from diffusion.datasets import DATASET_LABELS, PointsError, load_points

RETRAIN = "Changing this retrains the model."
RESAMPLE = "Changing this resamples the trained model; no retraining."
REDRAW = "Display only: changing this redraws, nothing is recomputed."

LR_CHOICES = [1e-5, 3e-5, 1e-4, 3e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0]
BATCH_CHOICES = [8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
HIDDEN_CHOICES = [8, 16, 32, 64, 128, 256, 512]
EMA_CHOICES = [0.0, 0.9, 0.99, 0.995, 0.999]
SAMPLE_CHOICES = [100, 200, 500, 1000, 2000, 5000]


_SECTION_TYPES = {"schedule": ScheduleConfig, "denoiser": DenoiserConfig, "train": TrainConfig, "sampler": SamplerConfig}


@dataclass(frozen=True)
class Control:
    """A sidebar control: its config field (None = display only), the values it accepts (a list of
    names, or a numeric range), and for sliders over a list of numbers, the suggested stops."""

    section: str | None
    field: str
    kind: type
    choices: tuple | None = None  # the only values allowed (names)
    low: float | None = None  # numeric range, inclusive
    high: float | None = None
    stops: tuple | None = None  # slider stops; the current value is always added

    def check(self, value: Any) -> Any:
        """``value`` as this control's type, or ValueError saying what is allowed."""
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"allowed: {', '.join(map(str, self.choices))}")
            return value
        if self.kind is bool:
            return bool(value)
        number = self.kind(value)
        if not math.isfinite(number) or not self.low <= number <= self.high:
            raise ValueError(f"allowed: {self.low:g} to {self.high:g}")
        return number

    def options(self, current: Any) -> list:
        """Slider stops plus the current value (a link or a model file may hold any valid value)."""
        return sorted(set(self.stops) | {current})


def _numeric(section, field, kind, low, high, stops=None) -> Control:
    return Control(section, field, kind, None, low, high, tuple(stops) if stops else None)


CONTROLS: dict[str, Control] = {
    "dataset": Control("data", "name", str, tuple(DATASET_LABELS)),
    "T": _numeric("schedule", "num_timesteps", int, 1, MAX_TIMESTEPS),
    "schedule": Control("schedule", "kind", str, ("linear", "quadratic", "cosine", "sigmoid")),
    "beta_start": _numeric("schedule", "beta_start", float, MIN_BETA, MAX_BETA),
    "beta_end": _numeric("schedule", "beta_end", float, MIN_BETA, MAX_BETA),
    "hidden": _numeric("denoiser", "hidden", int, 1, MAX_HIDDEN, HIDDEN_CHOICES),
    "depth": _numeric("denoiser", "depth", int, 1, MAX_DEPTH),
    "activation": Control("denoiser", "activation", str, ("relu", "silu", "gelu", "tanh")),
    "time_embedding": Control("denoiser", "time_embedding", str, ("scalar", "sinusoidal")),
    "epochs": _numeric("train", "epochs", int, 1, MAX_EPOCHS),
    "lr": _numeric("train", "lr", float, 1e-6, 1.0, LR_CHOICES),
    "lr_schedule": Control("train", "lr_schedule", str, ("constant", "cosine")),
    "ema": _numeric("train", "ema_decay", float, 0.0, 0.9999, EMA_CHOICES),
    "batch": _numeric("train", "batch_size", int, 1, MAX_BATCH_SIZE, BATCH_CHOICES),
    "seed": _numeric("train", "seed", int, 0, 2**31 - 1),
    "sampler": Control("sampler", "kind", str, ("ddpm", "ddim")),
    "variance": Control("sampler", "variance", str, ("beta", "posterior")),
    "ddim_steps": _numeric("sampler", "steps", int, 1, MAX_TIMESTEPS),
    "eta": _numeric("sampler", "eta", float, 0.0, 1.0),
    "samples": _numeric("sampler", "num_samples", int, 1, MAX_SAMPLES, SAMPLE_CHOICES),
    "frames": _numeric("sampler", "num_frames", int, 2, MAX_FRAMES),
    "sample_seed": _numeric("sampler", "seed", int, 0, 2**31 - 1),
    # display only
    "log_y": Control(None, "log_y", bool),
    "smoothing": _numeric(None, "smoothing", float, 0.0, 0.99),
    "trails": _numeric(None, "trails", int, 0, 32),
    "show_x0": Control(None, "show_x0", bool),
    "frame_ms": _numeric(None, "frame_ms", int, 20, 500),
    "pace": Control(None, "pace", bool),
}


@dataclass(frozen=True)
class Display:
    """Display-only settings: never retrain, never resample."""

    log_y: bool = False
    smoothing: float = 0.9
    trails: int = 8
    show_x0: bool = False
    frame_ms: int = 80
    pace: bool = True  # let a short run last a few seconds, so its loss curve can be watched


def config_values(config: ExperimentConfig) -> dict[str, Any]:
    """Widget values that describe ``config`` (display settings at their defaults)."""
    values = {}
    for key, control in CONTROLS.items():
        source = getattr(config, control.section) if control.section else Display()
        values[key] = getattr(source, control.field)
    return values


def preset_values(name: str) -> dict[str, Any]:
    return config_values(PRESETS[name]())


def _parse(control: Control, raw: str) -> Any:
    if control.kind is bool:
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValueError("allowed: true or false")
        return raw.lower() in ("true", "1")
    try:
        value = control.kind(raw)
    except ValueError:
        raise ValueError("not a whole number" if control.kind is int else "not a number") from None
    return control.check(value)


def init_state_from_url() -> None:
    """On a session's first run: the preset's values, overridden by the link's query parameters."""
    if "_initialised" in st.session_state:
        return
    st.session_state["_initialised"] = True
    params = st.query_params.to_dict()
    preset = params.get("preset", "reference")
    if preset not in PRESETS:
        st.session_state["_url_problems"] = [f"preset={preset!r} (allowed: {', '.join(PRESETS)})"]
        preset = "reference"
    st.session_state["preset"] = preset
    st.session_state.update(preset_values(preset))
    problems = st.session_state.setdefault("_url_problems", [])
    for key, raw in params.items():
        if key in ("preset", "points"):
            continue
        control = CONTROLS.get(key)
        if control is None:
            problems.append(f"{key} (not a setting)")
            continue
        try:
            st.session_state[key] = _parse(control, raw)
        except ValueError as error:
            problems.append(f"{key}={raw!r} ({error})")
    state = st.session_state
    for key, limit, what in (("beta_end", state["beta_start"], "at least beta_start"),):
        if state[key] < limit:
            problems.append(f"{key}={state[key]!r} ({what})")
            state[key] = max(preset_values(preset)[key], limit)
    for key, limit, what in (("ddim_steps", state["T"], "at most T"),
                             ("frames", MAX_SAMPLE_FRAME_POINTS // state["samples"], "samples x frames too large")):
        if state[key] > limit:
            problems.append(f"{key}={state[key]!r} ({what})")
            state[key] = min(preset_values(preset)[key], limit)


def write_url() -> None:
    """Put every setting that differs from its preset into the address bar."""
    preset = st.session_state["preset"]
    defaults = preset_values(preset)
    wanted = {"preset": preset} if preset != "reference" else {}
    for key, default in defaults.items():
        value = st.session_state.get(key, default)
        if value != default:
            wanted[key] = str(value).lower() if isinstance(value, bool) else str(value)
    if st.session_state.get("dataset") == "points":
        wanted["points"] = "uploaded"  # the file itself can't travel in a link
    if st.query_params.to_dict() != wanted:
        st.query_params.from_dict(wanted)


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
    values = config_values(config)
    for key, value in values.items():
        try:
            CONTROLS[key].check(value)
        except ValueError as error:
            st.session_state["_model_error"] = (
                f"{upload.name}: its setting {key} = {value!r} is outside what this page offers ({error})"
            )
            return
    digest = hashlib.sha256(upload.getvalue()).hexdigest()[:16]
    st.session_state["_loaded_model"] = (upload.name, model, config, digest)
    st.session_state.update(values)
    if config.data.points is not None:
        st.session_state["_points"] = config.data


def _apply_preset() -> None:
    st.session_state.update(preset_values(st.session_state["preset"]))


@st.cache_data(max_entries=8, show_spinner=False)
def _points_from_bytes(data: bytes) -> DataConfig:
    return load_points(data)


def _data_section() -> DataConfig | None:
    name = st.selectbox("Dataset", list(DATASET_LABELS), key="dataset", format_func=DATASET_LABELS.get,
                        help=f"The 2-D distribution the model learns. {RETRAIN}")
    if name != "points":
        return DataConfig(name)
    upload = st.file_uploader(
        "Your points (CSV with columns x,y)", type=["csv", "txt"], key="points_file",
        help=f"A header row naming columns x and y, then one point per row; up to {MAX_POINTS:,} points. "
             "The points are standardised (mean 0, std 1). An epoch is one pass over them. " + RETRAIN,
    )
    if upload is None:
        kept = st.session_state.get("_points")
        if kept is not None:  # the uploader forgets its file when hidden; the points are kept
            st.caption(f"Using your {len(kept.points):,} uploaded points.")
            return kept
        st.info("Upload a CSV file with columns x,y to train on your own points.")
        return None
    try:
        data = _points_from_bytes(upload.getvalue())
    except PointsError as error:
        st.error(f"{upload.name}: {error}")
        return None
    st.session_state["_points"] = data
    st.caption(f"{len(data.points):,} points from {upload.name}, standardised.")
    return data


def sidebar() -> tuple[ExperimentConfig | None, Display]:
    """Draw the sidebar; return the experiment it describes (None if it can't run) and display."""
    with st.sidebar:
        st.selectbox("Preset", list(PRESETS), key="preset", on_change=_apply_preset,
                     help="reference: the seed script's job exactly. improved: better defaults at the same "
                          "training budget. Choosing a preset resets every setting below.")
        for problem in st.session_state.get("_url_problems", []):
            st.warning(f"Ignored from the link: {problem}")

        with st.expander("Data", expanded=True):
            data = _data_section()

        with st.expander("Noise schedule", expanded=True):
            st.number_input("Diffusion steps T", 1, MAX_TIMESTEPS, step=10, key="T",
                            help=f"Number of noising steps, 1 to {MAX_TIMESTEPS}. {RETRAIN}")
            kind = st.selectbox("Schedule", CONTROLS["schedule"].choices, key="schedule",
                                help="How β_t grows with t: linear (the reference), quadratic (linear in √β), "
                                     f"cosine (Nichol & Dhariwal; ignores β start/end), sigmoid. {RETRAIN}")
            st.number_input("β start", MIN_BETA, MAX_BETA, step=1e-4, format="%.2e", key="beta_start",
                            disabled=kind == "cosine", help=f"β_1, the first step's noise variance. {RETRAIN}")
            st.session_state["beta_end"] = max(st.session_state["beta_end"], st.session_state["beta_start"])
            st.number_input("β end", float(st.session_state["beta_start"]), MAX_BETA, step=1e-3, format="%.2e",
                            key="beta_end", disabled=kind == "cosine",
                            help=f"β_T, the last step's variance; at least β start, below 1. {RETRAIN}")

        with st.expander("Model", expanded=False):
            st.select_slider("Width (units per layer)", CONTROLS["hidden"].options(st.session_state["hidden"]), key="hidden", help=RETRAIN)
            st.slider("Depth (hidden layers)", 1, 8, key="depth", help=RETRAIN)
            st.selectbox("Activation", CONTROLS["activation"].choices, key="activation", help=RETRAIN)
            st.selectbox("Time conditioning", CONTROLS["time_embedding"].choices, key="time_embedding",
                         help="scalar: t/T concatenated to x (the reference). sinusoidal: sin/cos features of t "
                              f"at many frequencies. {RETRAIN}")

        with st.expander("Training", expanded=True):
            st.number_input("Epochs", 1, MAX_EPOCHS, step=100, key="epochs",
                            help="For the synthetic datasets an epoch is one Adam step on one fresh batch (the "
                                 f"reference's meaning); for your points it is one pass. Up to {MAX_EPOCHS:,}. {RETRAIN}")
            st.select_slider("Learning rate", CONTROLS["lr"].options(st.session_state["lr"]), key="lr", format_func=lambda v: f"{v:g}",
                             help=f"Adam's step size, on a log scale. {RETRAIN}")
            st.selectbox("Learning-rate schedule", CONTROLS["lr_schedule"].choices, key="lr_schedule",
                         help=f"constant, or cosine decay to 0 over the run. {RETRAIN}")
            st.select_slider("Batch size", CONTROLS["batch"].options(st.session_state["batch"]), key="batch", help=RETRAIN)
            st.select_slider("Weight EMA decay", CONTROLS["ema"].options(st.session_state["ema"]), key="ema", format_func=lambda v: "off" if v == 0 else f"{v:g}",
                             help=f"Sample with an exponential moving average of the weights. {RETRAIN}")
            st.number_input("Seed", 0, 2**31 - 1, key="seed", help=f"Fixes initial weights and batches. {RETRAIN}")

        with st.expander("Sampling", expanded=True):
            sampler = st.selectbox("Sampler", CONTROLS["sampler"].choices, key="sampler",
                                   format_func={"ddpm": "DDPM (ancestral)", "ddim": "DDIM"}.get,
                                   help=f"DDPM runs all T steps; DDIM skips evenly through them. {RESAMPLE}")
            st.radio("DDPM variance σ²_t", CONTROLS["variance"].choices, key="variance", horizontal=True,
                     disabled=sampler != "ddpm",
                     help=f"beta: σ²=β_t (the reference). posterior: σ²=β̃_t, the true posterior's. {RESAMPLE}")
            T = int(st.session_state["T"])
            st.session_state["ddim_steps"] = min(st.session_state["ddim_steps"], T)
            st.slider("DDIM steps", 1, max(T, 2), key="ddim_steps", disabled=sampler != "ddim",
                      help=f"Steps of DDIM, evenly spaced over the T trained ones; at most T. {RESAMPLE}")
            st.slider("DDIM η", 0.0, 1.0, step=0.1, key="eta", disabled=sampler != "ddim",
                      help=f"0: deterministic; 1: as noisy as DDPM. {RESAMPLE}")
            st.select_slider("Samples", CONTROLS["samples"].options(st.session_state["samples"]), key="samples",
                             help=f"Points generated, up to {MAX_SAMPLES:,}. {RESAMPLE}")
            most_frames = min(MAX_FRAMES, MAX_SAMPLE_FRAME_POINTS // st.session_state["samples"])
            st.session_state["frames"] = min(st.session_state["frames"], most_frames)
            st.slider("Animation frames", 2, most_frames, key="frames",
                      help=f"Frames kept of the reverse process, up to {MAX_FRAMES}; samples × frames is capped "
                           f"at {MAX_SAMPLE_FRAME_POINTS:,}; at most the sampler's steps + 1 are kept. Fewer frames play more "
                           f"smoothly. {RESAMPLE}")
            st.number_input("Sampling seed", 0, 2**31 - 1, key="sample_seed", help=f"Fixes x_T and the noise. {RESAMPLE}")

        with st.expander("Display", expanded=False):
            st.toggle("Log-scale loss", key="log_y", help=REDRAW)
            st.slider("Loss smoothing", 0.0, 0.99, step=0.01, key="smoothing", help=REDRAW)
            st.slider("Trails (points whose path is drawn)", 0, 32, key="trails", help=REDRAW)
            st.toggle("Show predicted x₀", key="show_x0",
                      help=f"The model's guess of the final point at each frame. {REDRAW}")
            st.slider("Frame duration (ms)", 20, 500, step=10, key="frame_ms", help=f"Animation speed. {REDRAW}")
            st.toggle("Watch short runs", key="pace",
                      help="On: a run that would finish in under 5 seconds is paced to last 5, so its loss curve "
                           "can be watched as it streams (it waits, it doesn't compute more; results are identical). "
                           "Off: full speed. Nothing is retrained.")

        with st.expander("Load a trained model", expanded=False):
            st.file_uploader(
                "Model file (.safetensors)", type=["safetensors"], key="model_file", on_change=_load_model,
                help="A model downloaded from this page (or saved by python -m diffusion --save-checkpoint). "
                     "Its settings replace the ones above and it is shown without training. Only safetensors "
                     "files are read: pickle files (torch.save) are refused unopened, since they can run code.",
            )
            if st.session_state.get("_model_error"):
                st.error(st.session_state["_model_error"])
            elif st.session_state.get("_loaded_model"):
                st.caption(f"Loaded {st.session_state['_loaded_model'][0]}: its settings are shown above.")

        config = _experiment(data)
        if config is not None:
            modified = preset_values(st.session_state["preset"])
            changed = [k for k in modified if CONTROLS[k].section and st.session_state.get(k) != modified[k]]
            st.caption(f"Preset **{st.session_state['preset']}**" + (f", {len(changed)} setting(s) changed" if changed else ""))
    display = Display(**{f.name: st.session_state[f.name] for f in dataclasses.fields(Display)})
    return config, display


def _experiment(data: DataConfig | None) -> ExperimentConfig | None:
    if data is None:
        return None
    sections: dict[str, dict[str, Any]] = {}
    for key, control in CONTROLS.items():
        if control.section and control.section != "data":
            value = st.session_state[key]
            sections.setdefault(control.section, {})[control.field] = control.kind(value)
    try:
        return ExperimentConfig(data=data, **{name: _SECTION_TYPES[name](**values) for name, values in sections.items()})
    except ValueError as error:
        st.error(str(error))
        return None


def session_owner() -> str:
    """A stable id for this browser session (jobs belong to it)."""
    if "_owner" not in st.session_state:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        seed = ctx.session_id if ctx is not None else str(id(st.session_state))
        st.session_state["_owner"] = hashlib.sha1(seed.encode()).hexdigest()[:12]
    return st.session_state["_owner"]
