"""Every knob of an experiment, in one place, as frozen dataclasses.

Frozen configs hash by value: they are the cache keys of the dashboard and the natural answer to
"does this change mean retraining?" (compare ``ExperimentConfig.training``).

Each class validates itself on creation and raises ``ValueError`` naming the field and what is
allowed, so a bad value never reaches the maths.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

DatasetName = Literal[
    "gaussian", "ring", "moons", "swiss_roll", "circles", "checkerboard", "spiral", "points"
]
ScheduleKind = Literal["linear", "quadratic", "cosine", "sigmoid"]
Activation = Literal["relu", "silu", "gelu", "tanh"]
TimeEmbedding = Literal["scalar", "sinusoidal"]
LRSchedule = Literal["constant", "cosine"]
SamplerKind = Literal["ddpm", "ddim"]
Variance = Literal["beta", "posterior"]

# Resource caps: one page must not be able to exhaust the machine. Stated in the help texts.
MAX_TIMESTEPS = 4000
MAX_EPOCHS = 20_000
MAX_BATCH_SIZE = 4096
MAX_HIDDEN = 512
MAX_DEPTH = 8
MAX_SAMPLES = 5000
MAX_FRAMES = 200
MAX_SAMPLE_FRAME_POINTS = 500_000  # samples x frames kept for the animation (~7 MB in the page)
MAX_POINTS = 50_000  # rows of a user's point set
MAX_TRAIN_STEPS = 200_000  # optimizer steps of one run (epochs x steps per epoch)
# Work caps, in multiply-adds of the MLP: training ~ 3 x steps x batch x parameters (forward and
# backward), sampling ~ steps x samples x parameters. About 10 and 2 minutes on one core here.
MAX_TRAIN_WORK = 2e12
MAX_SAMPLE_WORK = 3e11
MIN_BETA = 1e-8  # 1 - beta must differ from 1 in float64 arithmetic
MAX_BETA = 0.9999
MIN_ALPHA_BAR = 1e-30  # alpha-bar_T below this underflows the samplers' coefficients


def _choice(owner: str, name: str, value: Any, literal: Any) -> None:
    allowed = get_args(literal)
    if value not in allowed:
        raise ValueError(f"{owner}.{name} must be one of {', '.join(allowed)}; got {value!r}")


def _int_in(owner: str, name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{owner}.{name} must be a whole number from {low} to {high}; got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{owner}.{name} must be from {low} to {high}; got {value}")


def _float_in(
    owner: str, name: str, value: Any, low: float, high: float, *, open_low=False, open_high=False
) -> None:
    lo, hi = ("(" if open_low else "["), (")" if open_high else "]")
    allowed = f"in {lo}{low:g}, {high:g}{hi}"
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{owner}.{name} must be a number {allowed}; got {value!r}")
    try:
        value = float(value)
    except OverflowError:  # an int too large for a float
        raise ValueError(f"{owner}.{name} must be {allowed}; got a number too large to use") from None
    too_low = value <= low if open_low else value < low
    too_high = value >= high if open_high else value > high
    if not math.isfinite(value) or too_low or too_high:
        raise ValueError(f"{owner}.{name} must be {allowed}; got {value:g}")


@dataclass(frozen=True)
class PointSet:
    """A user's own 2-D points: hashed and compared by content digest, never by identity."""

    digest: str
    array: np.ndarray = field(compare=False, repr=False)  # (N, 2) float32, read-only

    @classmethod
    def from_array(cls, points: np.ndarray) -> PointSet:
        array = np.ascontiguousarray(points, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != 2:
            raise ValueError(f"points must have shape (N, 2); got {array.shape}")
        if not 2 <= len(array) <= MAX_POINTS:
            raise ValueError(f"points must have from 2 to {MAX_POINTS} rows; got {len(array)}")
        if not np.isfinite(array).all():
            raise ValueError("points must all be finite numbers (no NaN or inf)")
        array.flags.writeable = False
        return cls(hashlib.sha256(array.tobytes()).hexdigest()[:16], array)

    def __len__(self) -> int:
        return len(self.array)


@dataclass(frozen=True)
class DataConfig:
    """Which 2-D distribution to learn. Synthetic sets are drawn fresh for every batch."""

    name: DatasetName = "gaussian"
    points: PointSet | None = None  # only for name == "points"

    def __post_init__(self):
        _choice("data", "name", self.name, DatasetName)
        if self.name == "points" and self.points is None:
            raise ValueError("data.points is required when data.name is 'points' (upload a CSV)")
        if self.name != "points" and self.points is not None:
            raise ValueError("data.points is only used when data.name is 'points'")

    @property
    def is_fixed(self) -> bool:
        """A fixed point set (an epoch is one pass) rather than a distribution drawn fresh."""
        return self.name == "points"


@dataclass(frozen=True)
class ScheduleConfig:
    """The noise schedule beta_1..beta_T. ``cosine`` ignores beta_start/beta_end."""

    kind: ScheduleKind = "linear"
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02

    def __post_init__(self):
        _choice("schedule", "kind", self.kind, ScheduleKind)
        _int_in("schedule", "num_timesteps", self.num_timesteps, 1, MAX_TIMESTEPS)
        _float_in("schedule", "beta_start", self.beta_start, MIN_BETA, MAX_BETA)
        _float_in("schedule", "beta_end", self.beta_end, MIN_BETA, MAX_BETA)
        if self.beta_end < self.beta_start:
            raise ValueError(
                f"schedule.beta_end must be at least beta_start ({self.beta_start:g}); "
                f"got {self.beta_end:g}"
            )
        from .schedules import terminal_log_alpha_bar  # schedules imports this module

        log_abar_T = terminal_log_alpha_bar(self)
        if log_abar_T < math.log(MIN_ALPHA_BAR):
            raise ValueError(
                f"schedule.beta_end / num_timesteps leave no signal at all: alpha-bar_T = exp({log_abar_T:.0f}), "
                f"below {MIN_ALPHA_BAR:g}, which the samplers cannot divide by. Use fewer steps or smaller betas."
            )


@dataclass(frozen=True)
class DenoiserConfig:
    """MLP eps_theta(x_t, t): ``depth`` hidden layers of ``hidden`` units."""

    hidden: int = 64
    depth: int = 2
    activation: Activation = "relu"
    time_embedding: TimeEmbedding = "scalar"  # scalar: t/T concatenated (the reference)
    embedding_dim: int = 16  # sinusoidal features (sin and cos halves); unused for scalar

    def __post_init__(self):
        _int_in("denoiser", "hidden", self.hidden, 1, MAX_HIDDEN)
        _int_in("denoiser", "depth", self.depth, 1, MAX_DEPTH)
        _choice("denoiser", "activation", self.activation, Activation)
        _choice("denoiser", "time_embedding", self.time_embedding, TimeEmbedding)
        _int_in("denoiser", "embedding_dim", self.embedding_dim, 2, 256)
        if self.embedding_dim % 2:
            raise ValueError(f"denoiser.embedding_dim must be even; got {self.embedding_dim}")

    @property
    def parameter_count(self) -> int:
        """Weights and biases of the MLP on 2-D data."""
        features = 1 if self.time_embedding == "scalar" else self.embedding_dim
        widths = [2 + features] + [self.hidden] * self.depth + [2]
        return sum((a + 1) * b for a, b in zip(widths[:-1], widths[1:], strict=False))


@dataclass(frozen=True)
class TrainConfig:
    """Adam on the simple DDPM loss. For synthetic data an epoch is one optimizer step on one
    fresh batch (the reference's meaning); for a fixed point set it is one pass over the set."""

    epochs: int = 1000
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: LRSchedule = "constant"
    ema_decay: float = 0.0  # 0 turns the weight average off
    seed: int = 42

    def __post_init__(self):
        _int_in("train", "epochs", self.epochs, 1, MAX_EPOCHS)
        _int_in("train", "batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _float_in("train", "lr", self.lr, 0.0, 1.0, open_low=True)
        _choice("train", "lr_schedule", self.lr_schedule, LRSchedule)
        _float_in("train", "ema_decay", self.ema_decay, 0.0, 1.0, open_high=True)
        _int_in("train", "seed", self.seed, 0, 2**31 - 1)


@dataclass(frozen=True)
class SamplerConfig:
    """How to run the reverse process. ``steps`` applies to DDIM (respaced evenly over T)."""

    kind: SamplerKind = "ddpm"
    variance: Variance = "beta"  # DDPM: sigma_t^2 = beta_t (reference) or the posterior's
    steps: int = 50
    eta: float = 0.0
    num_samples: int = 1000
    num_frames: int = 60
    seed: int = 0

    def __post_init__(self):
        _choice("sampler", "kind", self.kind, SamplerKind)
        _choice("sampler", "variance", self.variance, Variance)
        _int_in("sampler", "steps", self.steps, 1, MAX_TIMESTEPS)
        _float_in("sampler", "eta", self.eta, 0.0, 1.0)
        _int_in("sampler", "num_samples", self.num_samples, 1, MAX_SAMPLES)
        _int_in("sampler", "num_frames", self.num_frames, 2, MAX_FRAMES)
        _int_in("sampler", "seed", self.seed, 0, 2**31 - 1)
        if self.num_samples * self.num_frames > MAX_SAMPLE_FRAME_POINTS:
            raise ValueError(
                f"sampler.num_samples x num_frames must be at most {MAX_SAMPLE_FRAME_POINTS:,}; "
                f"got {self.num_samples} x {self.num_frames}"
            )


@dataclass(frozen=True)
class TrainingKey:
    """Everything that decides the trained weights, and nothing else."""

    data: DataConfig
    schedule: ScheduleConfig
    denoiser: DenoiserConfig
    train: TrainConfig

    def __post_init__(self):
        work = 3 * self.total_steps * self.train.batch_size * self.denoiser.parameter_count
        if work > MAX_TRAIN_WORK:
            raise ValueError(
                f"train.epochs would be too much work: {self.total_steps:,} steps of {self.train.batch_size} points "
                f"through a {self.denoiser.parameter_count:,}-parameter model ({work:.1e}, limit "
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
    def steps_per_epoch(self) -> int:
        """1 for data drawn fresh (the reference's epoch); one pass for a fixed point set."""
        if not self.data.is_fixed:
            return 1
        return math.ceil(len(self.data.points) / self.train.batch_size)

    @property
    def total_steps(self) -> int:
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
        if self.sampler.kind == "ddim" and self.sampler.steps > self.schedule.num_timesteps:
            raise ValueError(
                f"sampler.steps must be at most schedule.num_timesteps "
                f"({self.schedule.num_timesteps}) for DDIM; got {self.sampler.steps}"
            )
        steps = self.sampler.steps if self.sampler.kind == "ddim" else self.schedule.num_timesteps
        work = steps * self.sampler.num_samples * self.denoiser.parameter_count
        if work > MAX_SAMPLE_WORK:
            raise ValueError(
                f"sampler.num_samples would be too much work: {self.sampler.num_samples} points through {steps} "
                f"steps of a {self.denoiser.parameter_count:,}-parameter model ({work:.1e}, limit "
                f"{MAX_SAMPLE_WORK:.0e}); use fewer samples, DDIM with fewer steps, or a smaller model"
            )

    @property
    def training(self) -> TrainingKey:
        return TrainingKey(self.data, self.schedule, self.denoiser, self.train)

    def replace(self, **sections: Any) -> ExperimentConfig:
        """A copy with whole sections or single fields replaced: ``replace(train={"lr": 0.01})``."""
        changes = {}
        for name, value in sections.items():
            if name not in _SECTIONS:
                raise ValueError(f"unknown config section {name!r}; allowed: {', '.join(_SECTIONS)}")
            if isinstance(value, dict):
                _check_fields(name, value)
                value = dataclasses.replace(getattr(self, name), **value)
            changes[name] = value
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-ready; a user's point set is reduced to its digest and size."""
        out = {}
        for name in _SECTIONS:
            section = dataclasses.asdict(getattr(self, name)) if name != "data" else {
                "name": self.data.name,
                **({"points_digest": self.data.points.digest, "num_points": len(self.data.points)}
                   if self.data.points is not None else {}),
            }
            out[name] = section
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], points: PointSet | None = None) -> ExperimentConfig:
        """Inverse of ``to_dict``; unknown sections or fields are errors, not silently dropped."""
        if not isinstance(raw, dict):
            raise ValueError("config must be a JSON object with sections " + ", ".join(_SECTIONS))
        unknown = set(raw) - set(_SECTIONS)
        if unknown:
            raise ValueError(f"unknown config section(s) {sorted(unknown)}; allowed: {', '.join(_SECTIONS)}")
        built = {}
        for name, section_cls in _SECTIONS.items():
            if not isinstance(raw.get(name, {}), dict):
                raise ValueError(f"config section {name!r} must be an object of fields")
            values = dict(raw.get(name, {}))
            if name == "data":
                values.pop("points_digest", None)
                values.pop("num_points", None)
                if values.get("name") == "points":
                    values["points"] = points
            _check_fields(name, values)
            built[name] = section_cls(**values)
        return cls(**built)


_SECTIONS = {
    "data": DataConfig,
    "schedule": ScheduleConfig,
    "denoiser": DenoiserConfig,
    "train": TrainConfig,
    "sampler": SamplerConfig,
}


def _check_fields(section: str, values: dict[str, Any]) -> None:
    allowed = {f.name for f in dataclasses.fields(_SECTIONS[section])}
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
    """Same data, same T and betas, same budget (1000 Adam steps of 128 fresh points): sinusoidal
    time features, 128 units per layer, lr 3e-3 decayed by a cosine, and an EMA of the weights.
    Chosen by measurement over 5 seeds: README, "Choosing the improved preset"."""
    return ExperimentConfig(
        denoiser=DenoiserConfig(hidden=128, time_embedding="sinusoidal"),
        train=TrainConfig(lr=3e-3, lr_schedule="cosine", ema_decay=0.99),
    )


PRESETS = {"reference": reference, "improved": improved}
