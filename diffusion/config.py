"""Every knob of an experiment, declared once, as frozen dataclasses.

Each field a user can set carries a ``Setting`` in its metadata: its label and help, what changing
it costs (retrain, resample or redraw), its allowed range (choices come from the field's
``Literal``), its link key and its command-line flag. Everything else is derived from that one
declaration (``declared()``): the validation below, the command's flags, the sidebar's widgets,
the link round trip and the tests' tables. Adding a setting is declaring its field here plus the
code that uses it.

Frozen configs hash by value: they are the cache keys of the dashboard and the natural answer to
"does this change mean retraining?" (compare ``ExperimentConfig.training``).

Each class validates itself on creation and raises ``ValueError`` naming the field and what is
allowed, so a bad value never reaches the maths.

One name per concept: ``num_timesteps`` is T, the diffusion's length; ``sample_steps`` is the
number of steps a sampler takes; "optimizer steps" are training updates (``TrainingKey.total_steps``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin, get_type_hints

import numpy as np

DatasetName = Literal[
    "gaussian", "ring", "moons", "swiss_roll", "circles", "checkerboard", "spiral", "points"
]
ScheduleKind = Literal["linear", "quadratic", "cosine", "sigmoid"]
Activation = Literal["relu", "silu", "gelu", "tanh"]
TimeEmbedding = Literal["scalar", "sinusoidal"]
PositionEmbedding = Literal["none", "fourier"]
LRSchedule = Literal["constant", "cosine"]
SamplerKind = Literal["ddpm", "ddim", "dpm_solver", "euler", "heun"]
Objective = Literal["ddpm", "flow"]
Coupling = Literal["independent", "ot"]
Variance = Literal["beta", "posterior"]
Effect = Literal["retrain", "resample", "redraw"]
Widget = Literal["number", "slider", "select_slider", "select", "radio", "toggle", "tabs"]

# Resource caps: one page must not be able to exhaust the machine. Stated in the help texts.
MAX_TIMESTEPS = 4000
MAX_EPOCHS = 20_000
MAX_BATCH_SIZE = 4096
MAX_HIDDEN = 512
MAX_DEPTH = 8
MAX_EMBEDDING_DIM = 256
MAX_SAMPLES = 5000
MAX_FRAMES = 200
MAX_SAMPLE_FRAME_POINTS = 500_000  # samples x frames kept for the animation (~7 MB in the page)
MAX_POINTS = 50_000  # rows of a user's point set
MAX_TRAIN_STEPS = 200_000  # optimizer steps of one run (epochs x steps per epoch)
MAX_SEED = 2**31 - 1
# Work caps, in multiply-adds of the MLP: training ~ 3 x steps x batch x parameters (forward and
# backward), sampling ~ steps x samples x parameters. About 10 and 2 minutes on one core here.
MAX_TRAIN_WORK = 2e12
MAX_SAMPLE_WORK = 3e11
MIN_BETA = 1e-8  # 1 - beta must differ from 1 in float64 arithmetic
MAX_BETA = 0.9999
MIN_ALPHA_BAR = 1e-30  # alpha-bar_T below this underflows the samplers' coefficients

EFFECT_HELP = {
    "retrain": "Changing this retrains the model.",
    "resample": "Changing this resamples the trained model; no retraining.",
    "redraw": "Display only: changing this redraws, nothing is recomputed.",
}


# --- the declaration of a setting ---------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """How one config field is offered to people: declared once, read by every front end.

    ``low``/``high`` bound numbers (inclusive unless ``open_low``/``open_high``); choices are the
    field's ``Literal``. ``stops`` are the suggested values of a select slider (any valid value is
    still accepted from a link or a model file). ``tied`` gives the range that depends on other
    settings (see ``Declared.bounds``); ``applies`` names when the field matters at all."""

    key: str  # link key and widget key
    label: str
    help: str
    effect: Effect
    low: float | None = None
    high: float | None = None
    open_low: bool = False
    open_high: bool = False
    widget: Widget = "number"
    stops: tuple = ()
    step: float | None = None  # widget increment
    format: str | None = None  # number widget format, e.g. "%.2e"
    labels: Mapping[str, str] | None = None  # display names of choices
    flag: str | None = None  # default: "--" + key with "-" for "_"
    old_flags: tuple[str, ...] = ()  # flags that still work
    old_keys: tuple[str, ...] = ()  # link keys that still work
    tied: Callable[[Callable[[str], Any]], tuple[float, float, str]] | None = None
    # when the field matters: (field, values where it applies), or several such pairs (all must
    # hold); a field is a sibling's name or a "section.field" path
    applies: tuple | None = None
    # the choices allowed given other settings, and why (e.g. the samplers of an objective)
    narrowed: Callable[[Callable[[str], Any]], tuple[tuple, str]] | None = None


def setting(default: Any, **declaration: Any) -> Any:
    """A dataclass field carrying its ``Setting``."""
    return field(default=default, metadata={"setting": Setting(**declaration)})


@dataclass(frozen=True)
class Declared:
    """A ``Setting`` bound to its place: section, field name, Python type and choices."""

    section: str
    name: str
    kind: type  # int, float, str or bool
    choices: tuple | None
    default: Any
    setting: Setting

    @property
    def path(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def key(self) -> str:
        return self.setting.key

    @property
    def flag(self) -> str:
        return self.setting.flag or "--" + self.setting.key.replace("_", "-")

    @property
    def help(self) -> str:
        return f"{self.setting.help} {EFFECT_HELP[self.setting.effect]}"

    def allowed(self, low: float | None = None, high: float | None = None) -> str:
        """What is allowed, in words, e.g. 'from 1 to 4000' or 'in (0, 1]'."""
        s = self.setting
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        if self.kind is bool:
            return "true or false"
        low = s.low if low is None else low
        high = s.high if high is None else high
        if self.kind is int:
            return f"a whole number from {_num(low)} to {_num(high)}"
        return f"in {'(' if s.open_low else '['}{low:g}, {high:g}{')' if s.open_high else ']'}"

    def check(self, value: Any) -> Any:
        """``value`` if this field allows it, else ValueError naming the field and what is allowed."""
        s, where = self.setting, self.path
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"{where} must be one of {', '.join(self.choices)}; got {value!r}")
            return value
        if self.kind is bool:
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{where} must be true or false; got {value!r}")
            return bool(value)
        if self.kind is int:
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{where} must be a whole number from {_num(s.low)} to {_num(s.high)}; got {value!r}")
            if not s.low <= value <= s.high:
                raise ValueError(f"{where} must be from {_num(s.low)} to {_num(s.high)}; got {value}")
            return value
        allowed = self.allowed()
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ValueError(f"{where} must be a number {allowed}; got {value!r}")
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            raise ValueError(f"{where} must be {allowed}; got a number too large to use") from None
        too_low = number <= s.low if s.open_low else number < s.low
        too_high = number >= s.high if s.open_high else number > s.high
        if not math.isfinite(number) or too_low or too_high:
            raise ValueError(f"{where} must be {allowed}; got {number:g}")
        return value

    def bounds(self, get: Callable[[str], Any]) -> tuple[float, float, str]:
        """(low, high, why) given the other settings (``get("schedule.num_timesteps")``): the
        declared range, narrowed where it is tied to another setting."""
        if self.setting.tied is None:
            return self.setting.low, self.setting.high, ""
        return self.setting.tied(get)

    def applies_in(self, get: Callable[[str], Any]) -> bool:
        """Whether the field matters given the other settings (e.g. DDIM's eta)."""
        applies = self.setting.applies
        if applies is None:
            return True
        conditions = (applies,) if isinstance(applies[0], str) else applies
        return all(get(name if "." in name else f"{self.section}.{name}") in values for name, values in conditions)

    def choices_in(self, get: Callable[[str], Any]) -> tuple[tuple, str]:
        """(the choices allowed given the other settings, why): all of them unless narrowed."""
        if self.setting.narrowed is None:
            return self.choices, ""
        return self.setting.narrowed(get)


def _num(value: float) -> str:
    """A bound as people write it: whole numbers in full, others in %g."""
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _kind_and_choices(hint: Any) -> tuple[type, tuple | None]:
    if get_origin(hint) is Literal:
        return str, get_args(hint)
    return hint, None


@functools.cache
def declared(cls: type) -> tuple[Declared, ...]:
    """The settings of one config section, in declaration order."""
    hints = get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if "setting" in f.metadata:
            kind, choices = _kind_and_choices(hints[f.name])
            out.append(Declared(cls.section, f.name, kind, choices, f.default, f.metadata["setting"]))
    return tuple(out)


def _validate(section: Any) -> None:
    for d in declared(type(section)):
        d.check(getattr(section, d.name))


def _in_range(d: Declared, value: Any, get: Callable[[str], Any]) -> None:
    """The tied range (or narrowed choices) of ``d`` (only where it applies)."""
    if d.setting.narrowed is not None:
        choices, why = d.choices_in(get)
        if value not in choices:
            raise ValueError(f"{d.path} must be one of {', '.join(choices)} ({why}); got {value!r}")
    if d.setting.tied is None or not d.applies_in(get):
        return
    low, high, why = d.bounds(get)
    if not low <= value <= high:
        raise ValueError(f"{d.path} must be {d.allowed(low, high)} ({why}); got {_num(value)}")


# --- the sections ---------------------------------------------------------------------------------

DATASET_LABELS = {
    "gaussian": "Gaussian at (2, 2), std 0.5 (the reference)",
    "ring": "Ring of 8 Gaussians",
    "moons": "Two moons",
    "swiss_roll": "Swiss roll",
    "circles": "Concentric circles",
    "checkerboard": "Checkerboard",
    "spiral": "Two-arm spiral",
    "points": "Your own points (CSV)",
}


# The classes of each built-in dataset, where it has natural ones (issue 25: guidance), in label
# order; a user's point set takes its classes from a ``label`` column. The Gaussian and the swiss
# roll have none.
DATASET_CLASSES: dict[str, tuple[str, ...]] = {
    "gaussian": (),
    "ring": tuple(f"{45 * k}°" for k in range(8)),  # the component at angle 45 k degrees
    "moons": ("upper moon", "lower moon"),
    "swiss_roll": (),
    "circles": ("outer circle", "inner circle"),
    "checkerboard": tuple(f"square {k + 1}" for k in range(8)),  # column by column, bottom to top
    "spiral": ("arm 1", "arm 2"),
}
MAX_CLASSES = 16


@dataclass(frozen=True)
class PointSet:
    """A user's own 2-D points: hashed and compared by content digest, never by identity.

    ``array`` holds them as the model trains on them, standardised; ``offset`` and ``scale`` take
    them back to the user's own units: user = array * scale + offset (``to_user``). A file with a
    ``label`` column also gives each point a class: ``labels`` index ``classes``, the names as the
    file wrote them."""

    digest: str
    array: np.ndarray = field(compare=False, repr=False)  # (N, 2) float32, read-only, standardised
    offset: tuple[float, float] = (0.0, 0.0)  # the points' mean, in the user's units
    scale: float = 1.0  # their overall standard deviation, in the user's units
    labels: np.ndarray | None = field(default=None, compare=False, repr=False)  # (N,) int64, read-only
    classes: tuple[str, ...] = ()  # the class names, labels' order

    def to_user(self, points: np.ndarray) -> np.ndarray:
        """Points from the model's (standardised) units to the user's: x * scale + offset."""
        return np.asarray(points, dtype=np.float64) * self.scale + np.asarray(self.offset)

    @classmethod
    def from_array(cls, points: np.ndarray, offset: tuple[float, float] = (0.0, 0.0), scale: float = 1.0,
                   labels: np.ndarray | None = None, classes: tuple[str, ...] = ()) -> PointSet:
        if not (np.isfinite(offset).all() and math.isfinite(scale) and scale > 0):
            raise ValueError(f"points offset must be finite and scale positive; got {offset}, {scale}")
        array = np.ascontiguousarray(points, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != 2:
            raise ValueError(f"points must have shape (N, 2); got {array.shape}")
        if not 2 <= len(array) <= MAX_POINTS:
            raise ValueError(f"points must have from 2 to {MAX_POINTS} rows; got {len(array)}")
        if not np.isfinite(array).all():
            raise ValueError("points must all be finite numbers (no NaN or inf)")
        array.flags.writeable = False
        digest = hashlib.sha256(array.tobytes())
        classes = tuple(str(name) for name in classes)
        if labels is not None or classes:
            labels = np.ascontiguousarray(labels if labels is not None else [], dtype=np.int64)
            if labels.shape != (len(array),):
                raise ValueError(f"labels must give one class per point ({len(array)}); got shape {labels.shape}")
            if not 1 <= len(classes) <= MAX_CLASSES:
                raise ValueError(f"points may have from 1 to {MAX_CLASSES} classes; got {len(classes)}")
            if labels.min() < 0 or labels.max() >= len(classes):
                raise ValueError(f"labels must index the {len(classes)} classes (0 to {len(classes) - 1})")
            empty = [name for k, name in enumerate(classes) if not (labels == k).any()]
            if empty:
                raise ValueError(f"every class needs a point; none for {', '.join(empty)}")
            labels.flags.writeable = False
            digest.update(labels.tobytes())
            digest.update(json.dumps(classes).encode())
        offset = (float(offset[0]), float(offset[1]))
        return cls(digest.hexdigest()[:16], array, offset, float(scale), labels, classes)

    def __len__(self) -> int:
        return len(self.array)


@dataclass(frozen=True)
class DataConfig:
    """Which 2-D distribution to learn. Synthetic sets are drawn fresh for every batch."""

    section = "data"
    name: DatasetName = setting(
        "gaussian", key="dataset", label="Dataset", effect="retrain", widget="select", labels=DATASET_LABELS,
        help="The 2-D distribution the model learns; 'points' trains on your own CSV file.",
    )
    points: PointSet | None = None  # only for name == "points"

    def __post_init__(self):
        _validate(self)
        if self.name == "points" and self.points is None:
            raise ValueError("data.points is required when data.name is 'points' (upload a CSV)")
        if self.name != "points" and self.points is not None:
            raise ValueError("data.points is only used when data.name is 'points'")

    @property
    def is_fixed(self) -> bool:
        """A fixed point set (an epoch is one pass) rather than a distribution drawn fresh."""
        return self.name == "points"

    def to_user(self, points: np.ndarray) -> np.ndarray:
        """Points from the model's units to the user's (the same for the synthetic sets)."""
        return np.asarray(points) if self.points is None else self.points.to_user(points)

    def to_model(self, points: np.ndarray) -> np.ndarray:
        """Points from the user's units to the model's, the inverse of ``to_user``."""
        if self.points is None:
            return np.asarray(points)
        return (np.asarray(points, dtype=np.float64) - np.asarray(self.points.offset)) / self.points.scale

    @property
    def classes(self) -> tuple[str, ...]:
        """The names of the data's classes in label order (empty: unlabelled)."""
        if self.points is not None:
            return self.points.classes
        return DATASET_CLASSES[self.name]

    @property
    def user_scale(self) -> float:
        """How much the user's units stretch the model's (1 for the synthetic sets): a density per
        unit area of the user's axes is the model's minus 2 log of this."""
        return 1.0 if self.points is None else float(self.points.scale)


_BETAS_APPLY = (("kind", ("linear", "quadratic", "sigmoid")), ("objective", ("ddpm",)))


@dataclass(frozen=True)
class ScheduleConfig:
    """What the network learns and the noising path it learns it on.

    ddpm: the noise schedule beta_1..beta_T (``cosine`` ignores beta_start/beta_end) and the
    network predicting the noise eps. flow: the straight path x_t = (1 - t) x_0 + t eps with t in
    [0, 1] and the network predicting the velocity eps - x_0; the betas do not apply, and T only
    sets how finely the views divide [0, 1] (training draws t continuously)."""

    section = "schedule"
    objective: Objective = setting(
        "ddpm", key="objective", label="Objective", effect="retrain", widget="radio",
        labels={"ddpm": "DDPM (predict the noise)", "flow": "Flow matching (predict the velocity)"},
        help="ddpm: noise x_0 by the beta schedule and learn the noise eps (Ho et al. 2020). flow: move x_0 "
             "along the straight line to eps, x_t = (1 - t) x_0 + t eps, and learn the velocity eps - x_0 "
             "(Lipman et al. 2023, Liu et al. 2023); sampled by an ODE solver (Euler or Heun).",
    )
    kind: ScheduleKind = setting(
        "linear", key="schedule", label="Schedule", effect="retrain", widget="select", applies=("objective", ("ddpm",)),
        help="How β_t grows with t: linear (the reference), quadratic (linear in √β), cosine (Nichol & "
             "Dhariwal; ignores β start/end), sigmoid. DDPM only: flow matching's path has no betas.",
    )
    num_timesteps: int = setting(
        1000, key="T", label="Diffusion steps T", effect="retrain", low=1, high=MAX_TIMESTEPS, step=10,
        flag="--timesteps", old_flags=("--steps",),
        help=f"Number of noising steps T, 1 to {MAX_TIMESTEPS}. For flow matching, training draws t "
             "continuously and T only sets how finely the views (loss by noise level, field slider) divide [0, 1].",
    )
    beta_start: float = setting(
        1e-4, key="beta_start", label="β start", effect="retrain", low=MIN_BETA, high=MAX_BETA, step=1e-4,
        format="%.2e", applies=_BETAS_APPLY,
        help="β_1, the first step's noise variance.",
    )
    beta_end: float = setting(
        0.02, key="beta_end", label="β end", effect="retrain", low=MIN_BETA, high=MAX_BETA, step=1e-3,
        format="%.2e", applies=_BETAS_APPLY,
        tied=lambda get: (get("schedule.beta_start"), MAX_BETA, "at least beta_start"),
        help="β_T, the last step's noise variance; at least β start, below 1.",
    )

    def __post_init__(self):
        _validate(self)
        _in_range(_field(ScheduleConfig, "beta_end"), self.beta_end, _getter(schedule=self))
        if not _field(ScheduleConfig, "kind").applies_in(_getter(schedule=self)):
            return  # no beta schedule on this objective's path (the declaration of ``kind`` says where)
        log_abar_T = float(np.log1p(-self.betas()).sum())
        if log_abar_T < math.log(MIN_ALPHA_BAR):
            raise ValueError(
                f"schedule.beta_end / num_timesteps leave no signal at all: alpha-bar_T = exp({log_abar_T:.0f}), "
                f"below {MIN_ALPHA_BAR:g}, which the samplers cannot divide by. Use fewer steps or smaller betas."
            )

    def betas(self) -> np.ndarray:
        """beta_1..beta_T in float64, shape (T,) (DDPM's; flow matching has none)."""
        T = self.num_timesteps
        if self.kind == "linear":  # Ho et al. 2020
            return np.linspace(self.beta_start, self.beta_end, T, dtype=np.float64)
        if self.kind == "quadratic":  # linear in sqrt(beta)
            return np.linspace(self.beta_start**0.5, self.beta_end**0.5, T, dtype=np.float64) ** 2
        if self.kind == "sigmoid":  # sigmoid ramp from beta_start to beta_end over [-6, 6]
            ramp = 1.0 / (1.0 + np.exp(-np.linspace(-6.0, 6.0, T, dtype=np.float64)))
            return self.beta_start + (self.beta_end - self.beta_start) * ramp
        # cosine: Nichol & Dhariwal 2021, eq. 17, s = 0.008, betas clipped at 0.999
        s = 0.008
        steps = np.arange(T + 1, dtype=np.float64) / T
        f = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        return np.clip(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.0, 0.999)


@dataclass(frozen=True)
class DenoiserConfig:
    """MLP eps_theta(x_t, t): ``depth`` hidden layers of ``hidden`` units."""

    section = "denoiser"
    hidden: int = setting(
        64, key="hidden", label="Width (units per layer)", effect="retrain", low=1, high=MAX_HIDDEN,
        widget="select_slider", stops=(8, 16, 32, 64, 128, 256, 512), help="Units per hidden layer.",
    )
    depth: int = setting(
        2, key="depth", label="Depth (hidden layers)", effect="retrain", low=1, high=MAX_DEPTH, widget="slider",
        help="Hidden layers of the MLP.",
    )
    activation: Activation = setting(
        "relu", key="activation", label="Activation", effect="retrain", widget="select",
        help="The nonlinearity after each hidden layer.",
    )
    time_embedding: TimeEmbedding = setting(
        "scalar", key="time_embedding", label="Time conditioning", effect="retrain", widget="select",
        help="scalar: t/T concatenated to x (the reference). sinusoidal: sin/cos features of t at many frequencies.",
    )
    embedding_dim: int = setting(
        16, key="embedding_dim", label="Time features", effect="retrain", low=2, high=MAX_EMBEDDING_DIM,
        widget="select_slider", stops=(4, 8, 16, 32, 64, 128, 256), applies=("time_embedding", ("sinusoidal",)),
        help="How many sin/cos features of t the sinusoidal time conditioning uses (half sines, half cosines; even).",
    )

    position_embedding: PositionEmbedding = setting(
        "none", key="position_embedding", label="Position features", effect="retrain", widget="select",
        labels={"none": "x itself", "fourier": "x and sin/cos features of x"},
        help="What the network sees of the point x_t. x itself: its two coordinates (the reference). fourier: also "
             "sines and cosines of each coordinate at frequencies from 1 to 64 radians per unit (random Fourier "
             "features, Tancik et al. 2020; tiny-diffusion does this), so a small MLP can draw thin, sharp shapes "
             "instead of blurring them.",
    )
    position_dim: int = setting(
        16, key="position_dim", label="Position features per coordinate", effect="retrain", low=2,
        high=MAX_EMBEDDING_DIM, widget="select_slider", stops=(4, 8, 16, 32, 64),
        applies=("position_embedding", ("fourier",)),
        help="How many sin/cos features of each coordinate (half sines, half cosines, at frequencies spaced evenly "
             "in log from 1 to 64 radians per unit; even).",
    )

    def __post_init__(self):
        _validate(self)
        if self.embedding_dim % 2:
            raise ValueError(f"denoiser.embedding_dim must be even; got {self.embedding_dim}")
        if self.position_dim % 2:
            raise ValueError(f"denoiser.position_dim must be even; got {self.position_dim}")

    @property
    def input_width(self) -> int:
        """The first layer's inputs on 2-D data: the position (and its features) and the time's features."""
        features = 1 if self.time_embedding == "scalar" else self.embedding_dim
        position = 2 if self.position_embedding == "none" else 2 + 2 * self.position_dim
        return position + features

    @property
    def parameter_count(self) -> int:
        """Weights and biases of the MLP on 2-D data."""
        widths = [self.input_width] + [self.hidden] * self.depth + [2]
        return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:], strict=False))


@dataclass(frozen=True)
class TrainConfig:
    """Adam on the simple DDPM loss. For synthetic data an epoch is one optimizer step on one
    fresh batch (the reference's meaning); for a fixed point set it is one pass over the set."""

    section = "train"
    epochs: int = setting(
        1000, key="epochs", label="Epochs", effect="retrain", low=1, high=MAX_EPOCHS, step=100,
        help="For the synthetic datasets an epoch is one Adam step on one fresh batch (the reference's "
             f"meaning); for your points it is one pass over them. Up to {MAX_EPOCHS:,}.",
    )
    batch_size: int = setting(
        128, key="batch", label="Batch size", effect="retrain", low=1, high=MAX_BATCH_SIZE, widget="select_slider",
        stops=(8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096), flag="--batch-size",
        help="Points per optimizer step.",
    )
    lr: float = setting(
        1e-3, key="lr", label="Learning rate", effect="retrain", low=0.0, high=1.0, open_low=True,
        widget="select_slider", stops=(1e-5, 3e-5, 1e-4, 3e-4, 5e-4, 1e-3, 2e-3, 3e-3, 5e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0),
        help="Adam's step size (the slider's stops are on a log scale).",
    )
    lr_schedule: LRSchedule = setting(
        "constant", key="lr_schedule", label="Learning-rate schedule", effect="retrain", widget="select",
        help="constant, or cosine decay to 0 over the run.",
    )
    ema_decay: float = setting(
        0.0, key="ema", label="Weight EMA decay", effect="retrain", low=0.0, high=1.0, open_high=True,
        widget="select_slider", stops=(0.0, 0.9, 0.99, 0.995, 0.999),
        help="Sample with an exponential moving average of the weights; 0 turns it off.",
    )
    time_power: float = setting(
        1.0, key="time_power", label="Low-noise emphasis p", effect="retrain", low=0.25, high=4.0,
        widget="select_slider", stops=(0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0),
        help="How often training practises each noise level: t is drawn as u^p (a level of T·u^p) with u uniform. "
             "p = 1 draws every level equally (the reference); p = 2 draws the quietest tenth of the levels 3 times "
             "as often (density ∝ t^(1/p − 1)), and that is where the fine detail of thin shapes is learned, so "
             "the samples come out sharper; p < 1 favours the noisy levels. What the model should learn at each "
             "level does not change, only how much practice it gets (the loss, and its floor, weigh the levels "
             "the same way).",
    )
    seed: int = setting(
        42, key="seed", label="Seed", effect="retrain", low=0, high=MAX_SEED,
        help="Fixes the initial weights and the batches.",
    )
    coupling: Coupling = setting(
        "independent", key="coupling", label="Pairs of data and noise", effect="retrain", widget="radio",
        labels={"independent": "independent", "ot": "optimal transport"}, applies=("schedule.objective", ("flow",)),
        help="Flow matching only. independent: each point is paired with a fresh noise draw. optimal transport: "
             "within each batch the noise draws are reassigned to the points so that the total squared distance "
             "is least (an exact assignment, Tong et al. 2024), which straightens the paths the model learns.",
    )

    conditional: bool = setting(
        False, key="conditional", label="Condition on the class", effect="retrain", widget="toggle",
        help="Feed the network each point's class (a one-hot input) as well as x_t and t, so it can be asked for "
             "one class at sampling time. Needs a dataset with classes: the ring's components, the moons, the "
             "circles, the checkerboard's squares, the spiral's arms, or your points with a label column.",
    )
    label_dropout: float = setting(
        0.1, key="label_dropout", label="Label dropout (null class)", effect="retrain", low=0.0, high=0.9,
        widget="slider", step=0.05, applies=("conditional", (True,)),
        help="The share of training points whose class is replaced by the null class, so the same network "
             "also learns the unconditional model that classifier-free guidance needs (Ho & Salimans 2022). "
             "0: a purely conditional model, sampled only at guidance 1; at most 0.9.",
    )

    def __post_init__(self):
        _validate(self)


SAMPLERS_OF = {"ddpm": ("ddpm", "ddim", "dpm_solver"), "flow": ("euler", "heun")}
MAX_ODE_STEPS = 1000
MAX_LIKELIHOOD_STEPS = 256


def model_calls(kind: SamplerKind, steps: int) -> int:
    """Network evaluations of a sampler taking ``steps`` steps: Heun's second evaluation is skipped
    on its last step (to t = 0), so 2 steps - 1; every other sampler, one per step."""
    return 2 * steps - 1 if kind == "heun" else steps


def _sample_steps_range(get: Callable[[str], Any]) -> tuple[float, float, str]:
    if get("sampler.kind") in ("euler", "heun"):
        return 1, MAX_ODE_STEPS, f"at most {MAX_ODE_STEPS} for an ODE solver"
    return 1, get("schedule.num_timesteps"), "at most schedule.num_timesteps for DDIM"


@dataclass(frozen=True)
class SamplerConfig:
    """How to run the reverse process. ``sample_steps`` applies to DDIM (respaced evenly over T)
    and to flow matching's ODE solvers (Euler, Heun: evenly spaced from t = 1 to 0)."""

    section = "sampler"
    kind: SamplerKind = setting(
        "ddpm", key="sampler", label="Sampler", effect="resample", widget="select",
        labels={"ddpm": "DDPM (ancestral)", "ddim": "DDIM", "dpm_solver": "DPM-Solver++ 2M (ODE)", "euler": "Euler (flow)",
                "heun": "Heun (flow)"},
        narrowed=lambda get: (SAMPLERS_OF[get("schedule.objective")], f"the samplers of the {get('schedule.objective')} objective"),
        help="DDPM objective: DDPM runs all T steps; DDIM skips evenly through them; DPM-Solver++ 2M solves the "
             "same deterministic ODE as DDIM η = 0 to second order, reusing the previous step's prediction (one "
             "call a step, far fewer steps for the same quality). Flow objective: Euler "
             "takes N straight steps along the learned velocity from t = 1 to 0 (one model call each); Heun "
             "corrects each with a second call (2N - 1 calls), far more accurate per call on curved paths.",
    )
    variance: Variance = setting(
        "beta", key="variance", label="DDPM variance σ²_t", effect="resample", widget="radio",
        applies=("kind", ("ddpm",)),
        help="beta: σ²=β_t (the reference). posterior: σ²=β̃_t, the true posterior's.",
    )
    sample_steps: int = setting(
        50, key="sample_steps", label="Sampling steps", effect="resample", low=1, high=MAX_TIMESTEPS, widget="slider",
        old_keys=("ddim_steps",), applies=("kind", ("ddim", "dpm_solver", "euler", "heun")), tied=_sample_steps_range,
        help=f"Steps of DDIM or DPM-Solver++, evenly spaced over the T trained ones (at most T); or of the ODE solver, evenly "
             f"spaced from t = 1 to 0 (at most {MAX_ODE_STEPS}).",
    )
    eta: float = setting(
        0.0, key="eta", label="DDIM η", effect="resample", low=0.0, high=1.0, widget="slider", step=0.1,
        applies=("kind", ("ddim",)), help="0: deterministic; 1: as noisy as DDPM.",
    )
    num_samples: int = setting(
        1000, key="samples", label="Samples", effect="resample", low=1, high=MAX_SAMPLES, widget="select_slider",
        stops=(100, 200, 500, 1000, 2000, 5000), help=f"Points generated, up to {MAX_SAMPLES:,}.",
    )
    num_frames: int = setting(
        60, key="frames", label="Animation frames (at most)", effect="resample", low=2, high=MAX_FRAMES, widget="slider",
        tied=lambda get: (2, min(MAX_FRAMES, MAX_SAMPLE_FRAME_POINTS // get("sampler.num_samples")),
                          f"samples x frames at most {MAX_SAMPLE_FRAME_POINTS:,}"),
        help=f"The most frames of the reverse process to keep, up to {MAX_FRAMES}: a sampler keeps at most its "
             f"steps + 1 (10 Heun steps: 11 frames, whatever this says), and samples × frames is capped at "
             f"{MAX_SAMPLE_FRAME_POINTS:,}. The reverse view says how many were kept. Fewer frames play more smoothly.",
    )
    seed: int = setting(
        0, key="sample_seed", label="Sampling seed", effect="resample", low=0, high=MAX_SEED,
        help="Fixes x_T and the noise.",
    )
    clip_x0: bool = setting(
        False, key="clip_x0", label="Clip predicted x₀ to [-1, 1]", effect="resample", widget="toggle",
        applies=("kind", ("ddpm", "ddim")),
        help="Clamp the model's guess x̂₀ to [-1, 1] at every step, as diffusers' schedulers do by default "
             "(clip_sample). Only right for data inside [-1, 1]: the reference data sits at (2, 2), and "
             "clipping collapses its samples into a small cloud just under (1, 1).",
    )
    common_noise: bool = setting(
        True, key="common_noise", label="Same noise for every run", effect="resample", widget="toggle",
        help="On: every run sampled with the same seed and number of samples starts from the same x_T and "
             "gets the same per-step noise, so two animations differ only by the model or the sampler "
             "(DDPM and DDIM share x_T). Off: the noise also depends on the run, so two runs get different noise.",
    )

    likelihood_steps: int = setting(
        32, key="ode_steps", label="Likelihood ODE steps", effect="resample", low=16, high=MAX_LIKELIHOOD_STEPS,
        widget="slider",
        help="Heun steps of the probability-flow ODE that gives the model's exact log-likelihood (2 model calls and "
             "two backward passes a step). The density view shows its error against twice as many steps: more steps, "
             f"less error, longer to compute (16 to {MAX_LIKELIHOOD_STEPS}; below 16 the error estimate itself is unreliable).",
    )

    guidance: float = setting(
        1.0, key="guidance", label="Guidance scale w", effect="resample", low=0.0, high=20.0, widget="slider",
        step=0.5, applies=("train.conditional", (True,)),
        help="Classifier-free guidance (Ho & Salimans 2022): the model is asked for u + w (c - u), u its "
             "unconditional and c its class-conditional prediction. 0: unconditional; 1: the class as learned; "
             "above 1: pushed further from the other classes, at the cost of diversity (two model calls a step).",
    )
    class_label: int = setting(
        -1, key="class", label="Class", effect="resample", low=-1, high=MAX_CLASSES - 1, widget="number",
        applies=("train.conditional", (True,)), flag="--class",
        tied=lambda get: (-1, len(DATASET_CLASSES[get("data.name")]) - 1 if get("data.name") != "points"
                          else MAX_CLASSES - 1, "-1 or a class of the data"),
        help="Which class to sample: -1 every class in equal shares (the proportions of every built-in dataset); "
             "else one class by its number (0 first).",
    )

    def __post_init__(self):
        _validate(self)
        if self.num_samples * self.num_frames > MAX_SAMPLE_FRAME_POINTS:
            raise ValueError(
                f"sampler.num_samples x num_frames must be at most {MAX_SAMPLE_FRAME_POINTS:,}; "
                f"got {self.num_samples} x {self.num_frames}"
            )


def guidance_calls(train: TrainConfig, sampler: SamplerConfig) -> int:
    """Network evaluations per sampler step for the guidance asked for: 2 (the conditional and the
    unconditional prediction) for a conditional model at a scale other than 0 or 1, else 1."""
    return 2 if train.conditional and sampler.guidance not in (0, 1) else 1


def _field(cls: type, name: str) -> Declared:
    return next(d for d in declared(cls) if d.name == name)


def _getter(**sections: Any) -> Callable[[str], Any]:
    """``get("section.field")`` over the given section objects."""

    def get(path: str) -> Any:
        section, name = path.split(".")
        return getattr(sections[section], name)

    return get


@dataclass(frozen=True)
class TrainingKey:
    """Everything that decides the trained weights, and nothing else."""

    data: DataConfig
    schedule: ScheduleConfig
    denoiser: DenoiserConfig
    train: TrainConfig

    def __post_init__(self):
        if self.train.conditional and not self.data.classes:
            with_classes = ", ".join(name for name, classes in DATASET_CLASSES.items() if classes)
            raise ValueError(
                f"train.conditional needs data with classes; {self.data.name!r} has none. "
                f"Datasets with classes: {with_classes}, or your points with a label column"
            )
        work = 3 * self.total_steps * self.train.batch_size * self.parameter_count
        if work > MAX_TRAIN_WORK:
            raise ValueError(
                f"train.epochs would be too much work: {self.total_steps:,} steps of {self.train.batch_size} points "
                f"through a {self.parameter_count:,}-parameter model ({work:.1e}, limit "
                f"{MAX_TRAIN_WORK:.0e}, about 10 minutes); use fewer epochs, a smaller batch or a smaller model"
            )
        if self.total_steps > MAX_TRAIN_STEPS:
            raise ValueError(
                f"train.epochs x steps per epoch ({self.steps_per_epoch} for "
                f"{len(self.data.points)} points in batches of {self.train.batch_size}) must be at most "
                f"{MAX_TRAIN_STEPS:,} optimizer steps; got {self.total_steps:,}. "
                "Use fewer epochs or a larger batch size."
            )

    @property
    def num_classes(self) -> int:
        """The classes the network is told about: the data's when it is conditional, else 0. Its
        class input is one-hot over these and one more, the null class (``num_classes``)."""
        return len(self.data.classes) if self.train.conditional else 0

    @property
    def parameter_count(self) -> int:
        """The MLP's weights and biases, with the class input's weights when it is conditional."""
        classes = self.num_classes
        return self.denoiser.parameter_count + (classes + 1) * self.denoiser.hidden * (classes > 0)

    @property
    def steps_per_epoch(self) -> int:
        """1 for data drawn fresh (the reference's epoch); one pass for a fixed point set."""
        if not self.data.is_fixed:
            return 1
        return math.ceil(len(self.data.points) / self.train.batch_size)

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run."""
        return self.train.epochs * self.steps_per_epoch


@dataclass(frozen=True)
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)

    def __post_init__(self):
        _ = self.training  # building the TrainingKey checks the step and work caps
        _in_range(_field(SamplerConfig, "kind"), self.sampler.kind, self.get)
        _in_range(_field(SamplerConfig, "sample_steps"), self.sampler.sample_steps, self.get)
        if self.train.conditional:
            _in_range(_field(SamplerConfig, "class_label"), self.sampler.class_label, self.get)
            if self.sampler.class_label >= len(self.data.classes):  # a user's points: their own classes
                raise ValueError(f"sampler.class_label must be -1 or a class of the data, from 0 to "
                                 f"{len(self.data.classes) - 1}; got {self.sampler.class_label}")
            if self.sampler.guidance != 1 and self.train.label_dropout == 0:
                raise ValueError(
                    f"sampler.guidance {self.sampler.guidance:g} needs the unconditional model, which a label dropout "
                    "of 0 never trains: use guidance 1, or train with train.label_dropout above 0"
                )
        steps = self.schedule.num_timesteps if self.sampler.kind == "ddpm" else model_calls(self.sampler.kind, self.sampler.sample_steps)
        steps *= guidance_calls(self.train, self.sampler)
        work = steps * self.sampler.num_samples * self.training.parameter_count
        if work > MAX_SAMPLE_WORK:
            raise ValueError(
                f"sampler.num_samples would be too much work: {self.sampler.num_samples} points through {steps} "
                f"model calls of a {self.training.parameter_count:,}-parameter model ({work:.1e}, limit "
                f"{MAX_SAMPLE_WORK:.0e}); use fewer samples, DDIM with fewer steps, or a smaller model"
            )

    def get(self, path: str) -> Any:
        """A field by its path, e.g. ``get("schedule.num_timesteps")``."""
        section, name = path.split(".")
        return getattr(getattr(self, section), name)

    @property
    def training(self) -> TrainingKey:
        return TrainingKey(self.data, self.schedule, self.denoiser, self.train)

    def replace(self, **sections: Any) -> ExperimentConfig:
        """A copy with whole sections or single fields replaced: ``replace(train={"lr": 0.01})``."""
        changes = {}
        for name, value in sections.items():
            if name not in SECTIONS:
                raise ValueError(f"unknown config section {name!r}; allowed: {', '.join(SECTIONS)}")
            if isinstance(value, dict):
                _check_fields(name, value)
                value = dataclasses.replace(getattr(self, name), **value)
            changes[name] = value
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-ready; a user's point set is reduced to its digest and size."""
        out = {}
        for name in SECTIONS:
            section = dataclasses.asdict(getattr(self, name)) if name != "data" else {
                "name": self.data.name,
                **({"points_digest": self.data.points.digest, "num_points": len(self.data.points),
                    "points_offset": list(self.data.points.offset), "points_scale": self.data.points.scale}
                   if self.data.points is not None else {}),
                **({"points_classes": list(self.data.points.classes)}
                   if self.data.points is not None and self.data.points.classes else {}),
            }
            out[name] = section
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], points: PointSet | None = None) -> ExperimentConfig:
        """Inverse of ``to_dict``; unknown sections or fields are errors, not silently dropped."""
        if not isinstance(raw, dict):
            raise ValueError("config must be a JSON object with sections " + ", ".join(SECTIONS))
        unknown = set(raw) - set(SECTIONS)
        if unknown:
            raise ValueError(f"unknown config section(s) {sorted(unknown)}; allowed: {', '.join(SECTIONS)}")
        built = {}
        for name, section_cls in SECTIONS.items():
            if not isinstance(raw.get(name, {}), dict):
                raise ValueError(f"config section {name!r} must be an object of fields")
            values = dict(raw.get(name, {}))
            for old, new in _RENAMED.get(name, {}).items():  # files written before a rename
                if old in values and new not in values:
                    values[new] = values.pop(old)
            if name == "data":
                values.pop("points_digest", None)
                values.pop("num_points", None)
                offset, scale = values.pop("points_offset", None), values.pop("points_scale", None)
                classes = values.pop("points_classes", None)
                if values.get("name") == "points":  # files written before the units travelled: (0, 0), 1
                    if points is not None and (offset is not None or classes):
                        points = PointSet.from_array(
                            points.array, tuple(offset) if offset is not None else points.offset,
                            float(scale) if scale is not None else points.scale,
                            points.labels if classes else None, tuple(classes or ()))
                    values["points"] = points
            _check_fields(name, values)
            built[name] = section_cls(**values)
        return cls(**built)


SECTIONS = {
    "data": DataConfig,
    "schedule": ScheduleConfig,
    "denoiser": DenoiserConfig,
    "train": TrainConfig,
    "sampler": SamplerConfig,
}
_RENAMED = {"sampler": {"steps": "sample_steps"}}  # field names of older model files


def experiment_settings() -> tuple[Declared, ...]:
    """Every declared setting of an experiment, section by section."""
    return tuple(d for cls in SECTIONS.values() for d in declared(cls))


def _check_fields(section: str, values: dict[str, Any]) -> None:
    allowed = {f.name for f in dataclasses.fields(SECTIONS[section])}
    extra = set(values) - allowed
    if extra:
        raise ValueError(
            f"unknown field(s) {', '.join(sorted(extra))} in config section {section!r}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )


def reference() -> ExperimentConfig:
    """The seed script's job, exactly: T=1000 linear betas 1e-4..0.02, MLP 3->64->64->2 ReLU with
    t/T concatenated, Adam lr 1e-3, 1000 steps of one fresh batch of 128, DDPM with sigma^2=beta."""
    return ExperimentConfig()


def improved() -> ExperimentConfig:
    """DDPM tuned on every built-in dataset for under 3 s of training: x with 32 sin/cos features
    of each coordinate, sinusoidal time features, 64 units per layer, 4000 Adam steps of 256 points
    at lr 5e-3 decayed by a cosine, an EMA of the weights, the low-noise levels practised more
    (Low-noise emphasis p = 2); the reference's T, betas and sampler. Narrower than its first
    version (128 units, 2500 steps at 3e-3): a step costs 0.47 ms instead of 0.77, and more steps
    sharpen the thin shapes more than the width did; p = 2 sharpened them more than any number of
    steps that fits in 3 s (the spiral's blur 3.5 -> 1.9). Chosen on every dataset with tuning
    seeds and checked on held-out ones: README, "Good samples on every dataset"
    (``python -m bench.tune_presets``, ``python -m bench.presets --every-dataset``)."""
    return ExperimentConfig(
        denoiser=DenoiserConfig(hidden=64, time_embedding="sinusoidal", position_embedding="fourier", position_dim=32),
        train=TrainConfig(epochs=4000, batch_size=256, lr=5e-3, lr_schedule="cosine", ema_decay=0.99, time_power=2.0),
    )


def flow_matching() -> ExperimentConfig:
    """Flow matching tuned like ``improved`` for about 3 s of training, sampled by Heun with 10
    steps (19 model calls): the straight path with independent pairs, x with 16 sin/cos features
    of each coordinate, 32 sinusoidal time features, 128 units per layer, 2500 Adam steps of 256
    points at lr 3e-3 decayed by a cosine, an EMA (README, "Good samples on every dataset"). The
    optimal-transport pairs it used before cost 3 ms a
    step: in about the same time they buy 1000 steps of 128 points, which scored a little worse on
    the tuning seeds (worst dataset 1.13 against 1.07)."""
    return improved().replace(
        schedule={"objective": "flow"}, denoiser={"hidden": 128, "position_dim": 16, "embedding_dim": 32},
        train={"epochs": 2500, "lr": 3e-3, "time_power": 1.0}, sampler={"kind": "heun", "sample_steps": 10},
    )


PRESET_PURPOSES = {
    "reference": "the seed script's job exactly (1000 steps of 128 points, blurred samples): the baseline every "
                 "other figure is measured against.",
    "improved": "DDPM tuned on every built-in dataset for under 3 s of training (sin/cos features of x and of t, "
                "64 units, 4000 steps of 256 points, the quiet noise levels practised more, which sharpens the "
                "thin shapes).",
    "flow": "flow matching tuned the same way, sampled with 19 model calls instead of 1000.",
}


PRESETS = {"reference": reference, "improved": improved, "flow": flow_matching}
assert PRESET_PURPOSES.keys() == PRESETS.keys()
