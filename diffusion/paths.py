"""An objective's path: the one interface that DDPM and flow matching implement.

An objective turns data into noise along a path and trains a network to walk it back:
    x_t = a(t) x_0 + s(t) eps,        eps ~ N(0, I)
with a (``signal``) falling from 1 to about 0 and s (``sigma``) rising from 0 to about 1. The
network sees x_t and its time and predicts a target that is linear in (x_0, eps):
    DDPM (Ho et al. 2020)             a = sqrt(abar_t), s = sqrt(1 - abar_t), target eps      (``schedules``)
    flow matching (Lipman et al. 2023) a = 1 - t, s = t, t in [0, 1], target v = eps - x_0  (``flow``)
``objectives.path_of(config)`` gives the path of a ``ScheduleConfig``'s objective. Nothing outside
the path modules asks which objective it has: it calls the members below.

The members, stage by stage:
  grid          T levels k = 0..T-1 where the views look: ``float64["signal"]``, ``float64["sigma"]``
                (a and s at level k, float64, read-only), ``grid_times(T)`` (the network's time input
                at level k), ``path_at(t)``, ``path_at_frame(k)`` (a sampler's frame times)
  training      ``training_draw`` (the model times t, their levels, eps), ``x_t``, ``target``
  model output  ``output_name``; ``x0_hat`` and ``eps_hat`` recover x_0 and eps from an output
  samplers      ``sampler_kinds``; ``sampler_draws`` then ``iter_steps`` (``samplers`` runs them),
                ``step_frame`` (a kept frame's time and predicted x_0); ``preview_kind``
  density       ``ode_nodes``, ``ode_point``, ``ode_scale``, ``ode_velocity``: the probability-flow
                ODE in the path's own variable (``likelihood``)
  views         the ideal output is ``target(E[x_0 | x_t], E[eps | x_t])`` (the target is linear);
                ``target_gain`` scales the loss floor; ``chart`` (the schedule panel);
                ``budget_families``; ``continuous_time`` (the charts' time axis)

Adding an objective is a module with a class implementing this, its entry in ``objectives.PATHS``
and its declarations in ``config`` (README, "Adding a third objective").
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
import torch

from .config import Coupling, Objective, SamplerConfig, SamplerKind, ScheduleConfig
from .trajectory import SamplerStep

ModelFn = Callable[[torch.Tensor, int | float], torch.Tensor]  # (x (N, 2), level index or time) -> output (N, 2)


# --- how often training visits each level ---------------------------------------------------------


def powered_uniform(n: int, generator: torch.Generator, power: float) -> torch.Tensor:
    """u^p for n uniform u on [0, 1), float64 (n,): the fraction of the way from the data to the
    noise at which a training step looks. p = 1 is uniform; p > 1 crowds towards the data."""
    return torch.rand(n, generator=generator, dtype=torch.float64).pow_(power)


def level_weights(num_levels: int, power: float) -> np.ndarray:
    """P(level k) for k = 0..T-1 when a level is floor(T u^p): P(u^p < x) = x^(1/p), so
    ((k + 1) / T)^(1/p) - (k / T)^(1/p); all 1 / T for p = 1. (T,) float64, summing to 1."""
    edges = (np.arange(num_levels + 1) / num_levels) ** (1.0 / power)
    return np.diff(edges)


# --- what the schedule panel draws ----------------------------------------------------------------


@dataclass(frozen=True)
class Curve:
    """One line of a chart; ``role`` picks its colour (None: the chart's own sequence)."""

    x: np.ndarray
    y: np.ndarray
    name: str
    role: Literal["signal", "noise", "reference"] | None = None
    dashed: bool = False


@dataclass(frozen=True)
class PathPlot:
    """One plot of the schedule panel. ``shows`` names the path quantity it draws against t in
    [0, 1] ("weights": a and s; "log_snr"), where another path's curves can be drawn beside it."""

    title: str
    curves: tuple[Curve, ...]
    unit_range: bool = False  # y from 0 to 1
    shows: Literal["weights", "log_snr"] | None = None


@dataclass(frozen=True)
class PathChart:
    """What the schedule panel shows of a path: its heading, plots side by side, its numbers
    (label, value) and words, and a warning when the path is unfit to sample from."""

    heading: str
    plots: tuple[PathPlot, ...]
    x_title: str = "t"
    metrics: tuple[tuple[str, str], ...] = ()
    caption: str = ""
    warning: str | None = None


@dataclass(frozen=True)
class PathCurves:
    """The path over t in [0, 1] (DDPM: level k at t = (k + 1) / T): a, s and log SNR = 2 log(a / s),
    named for a chart's legend (``signal_name``, ``sigma_name``, ``label``)."""

    t: np.ndarray
    signal: np.ndarray
    sigma: np.ndarray
    snr_t: np.ndarray  # where log SNR is finite
    log_snr: np.ndarray
    signal_name: str
    sigma_name: str
    label: str

    def curves(self, shows: Literal["weights", "log_snr"], *, beside: bool = False) -> tuple[Curve, ...]:
        """The curves of a plot that ``shows`` this quantity; ``beside``: dashed, next to another path's."""
        if shows == "weights":
            return (Curve(self.t, self.signal, f"{self.signal_name} ({self.label})", "signal", beside),
                    Curve(self.t, self.sigma, f"{self.sigma_name} ({self.label})", "noise", beside))
        return (Curve(self.snr_t, self.log_snr, self.label, "reference" if beside else "signal", beside),)


# --- the interface ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ObjectivePath(ABC):
    """The path of one objective on a grid of T levels, and everything that follows from it.

    Implementations are frozen dataclasses built by ``from_config``; ``to(device)`` returns a copy
    whose tensors live on ``device``. Model times: an ``int`` is a level index k = 0..T-1, a
    ``float`` a continuous time in [0, 1] where the path has one (``path_at``)."""

    config: ScheduleConfig
    float64: dict[str, np.ndarray] = dataclasses.field(repr=False)  # (T,) columns, signal and sigma at least

    objective: ClassVar[Objective]
    label: ClassVar[str]  # in words, e.g. for a legend
    sampler_kinds: ClassVar[tuple[SamplerKind, ...]]  # as ``config.SAMPLERS_OF`` declares them
    preview_kind: ClassVar[SamplerKind]  # the deterministic sampler live previews run
    output_name: ClassVar[str]  # what the network predicts, as the views write it: "ε", "v"
    budget_families: ClassVar[tuple[tuple[SamplerKind, float | None], ...]]  # (sampler, eta) rows of the budget
    budget_steps: ClassVar[tuple[int, ...]]  # its default step counts, besides T
    continuous_time: ClassVar[bool]  # views write t in [0, 1], not steps 0..T
    frame_dtype: ClassVar[type]  # of a trajectory's frame times: int64 steps or float64 t T
    floor_formula: ClassVar[str]  # the loss floor of one Gaussian N(mu, s0^2 I), in words
    forward_words: ClassVar[str]  # how the forward animation moves the data, for its caption
    output_words: ClassVar[str]  # the network's output as a field, for the field view
    score_words: ClassVar[str]  # the score in terms of that output

    @classmethod
    @abstractmethod
    def from_config(cls, config: ScheduleConfig) -> ObjectivePath:
        """The path of ``config``, derived in float64."""

    @classmethod
    @abstractmethod
    def grid_times(cls, num_timesteps: int) -> np.ndarray:
        """The network's time input at levels k = 0..T-1, float64 (T,), in [0, 1]."""

    @classmethod
    @abstractmethod
    def family_label(cls, kind: SamplerKind, eta: float | None) -> str:
        """A budget family's name in words, e.g. "DDIM η=0"."""

    # --- the grid ---------------------------------------------------------------------------------

    @property
    def num_timesteps(self) -> int:
        return len(self.float64["signal"])

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> ObjectivePath:
        """A copy whose tensors live on ``device`` (a path without tensors is its own copy)."""
        return self

    def check_level(self, t: int) -> int:
        """``t`` if it is a level index 0..T-1, else ValueError saying so."""
        T = self.num_timesteps
        if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or not 0 <= t < T:
            raise ValueError(f"t must be a whole number in [0, {T - 1}] (the model's time index); got {t!r}")
        return int(t)

    def path_at(self, t: int | float) -> tuple[float, float]:
        """(a, s) at level index t (a continuous time t is the business of paths that have one)."""
        t = self.check_level(t)
        return float(self.float64["signal"][t]), float(self.float64["sigma"][t])

    @abstractmethod
    def path_at_frame(self, k: float) -> tuple[float, float]:
        """(a, s) of a sampler's frame at frame time k in [0, T] (0: the data, a = 1, s = 0; k >= 1:
        the state before the model's step at level k - 1, or at time k / T)."""

    @abstractmethod
    def path_curves(self) -> PathCurves:
        """The path over t in [0, 1], for a chart."""

    @abstractmethod
    def chart(self) -> PathChart:
        """What the schedule panel shows."""

    def reference(self) -> ScheduleConfig | None:
        """Another path to draw dashed beside this one in the schedule panel (None: none)."""
        return None

    @abstractmethod
    def forward_frames(self, x0: torch.Tensor, num_frames: int,
                       generator: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
        """The data x0 (N, D) carried to noise along the path, for the forward animation: frames
        (num_frames, N, D) and their frame times (0 = the data ... T, in a sampler's frame units)."""

    # --- training -----------------------------------------------------------------------------------

    @abstractmethod
    def training_draw(
        self, x0: torch.Tensor, generator: torch.Generator, coupling: Coupling, time_power: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A step's draws from ``generator`` after its batch x0 (B, D), in this order: the model
        times t (B,), then eps (B, D) (paired with x0 by ``coupling`` where the path couples).
        t is u^p of a uniform u (``time_power`` p; ``powered_uniform``), so level k is drawn with
        probability ``level_weights(T, p)[k]``. Returns (t, the level of each t (B,) int64, eps),
        all on the CPU."""

    @abstractmethod
    def x_t(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = a(t) x0 + s(t) eps at the model times t of ``training_draw``; x0, noise (B, D)."""

    @abstractmethod
    def target(self, x0, noise):
        """What the network learns to output for (x0, eps), linear in both; tensors or arrays."""

    @abstractmethod
    def target_gain(self, a, s):
        """g(a, s) = (c_0 s - c_eps a)^2 for the target c_eps eps + c_0 x0: given x_t, the target
        is x_t c_eps / s + (c_0 - c_eps a / s) x0, so Var(target | x_t) = g Var(x0 | x_t) / s^2."""

    def batch_coupled(self, coupling: Coupling) -> bool:
        """Whether ``coupling`` makes a point's eps depend on the rest of its batch (then the floor
        of independent pairs does not bound the loss, and a drift reference pairs batch by batch)."""
        return False

    # --- model outputs ---------------------------------------------------------------------------------

    @abstractmethod
    def x0_hat(self, x: torch.Tensor, output: torch.Tensor, a: float, s: float) -> torch.Tensor:
        """The x_0 that a model output implies at x on the path (a, s); tensors."""

    @abstractmethod
    def eps_hat(self, x, output, a: float, s: float):
        """The eps that a model output implies at x on the path (a, s); tensors or arrays."""

    # --- samplers ---------------------------------------------------------------------------------------

    @property
    @abstractmethod
    def max_sample_steps(self) -> int:
        """The most steps its samplers take."""

    @abstractmethod
    def num_sample_steps(self, config: SamplerConfig, sample_steps: int | None = None) -> int:
        """Steps ``config``'s sampler takes (``sample_steps``, given, overrides the config's)."""

    @abstractmethod
    def sampler_draws(
        self, config: SamplerConfig, generator: torch.Generator, num_samples: int, sample_steps: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Every random number a run of ``config``'s sampler uses, drawn on the CPU from
        ``generator``: the start x_T ~ N(0, I) (num_samples, 2) first, then the per-step noise
        (steps, num_samples, 2), or None for a sampler that adds none."""

    @abstractmethod
    def iter_steps(
        self, model: ModelFn, x: torch.Tensor, noise: torch.Tensor | None, config: SamplerConfig,
        sample_steps: int | None = None,
    ) -> Iterator[tuple[SamplerStep, torch.Tensor]]:
        """From the start x and the noise of ``sampler_draws``, yield (the state before each step,
        x after it)."""

    @abstractmethod
    def step_frame(self, step: SamplerStep, config: SamplerConfig) -> tuple[int | float, torch.Tensor]:
        """A kept step as a frame: its frame time, and the x_0 the model's output implies there."""

    # --- the probability-flow ODE (``likelihood``) ----------------------------------------------------
    # In the path's ODE variable u, from u = 0 (the data) to the last node (where x is taken to be
    # N(0, I)), the state y = x / c(u) moves by dy/du = velocity; ``likelihood`` integrates it.

    @abstractmethod
    def ode_nodes(self, steps: int) -> np.ndarray:
        """``steps`` + 1 values of the ODE variable, float64, ascending from 0 (the data) to the
        prior's end: a fixed-step solver's grid."""

    @abstractmethod
    def ode_point(self, u: float) -> tuple[float, float, float]:
        """(a, s, the network's time input) at the ODE variable u."""

    @abstractmethod
    def ode_scale(self, u: float) -> float:
        """c(u) in x = c(u) y: how the ODE's state y is scaled to the point x."""

    @abstractmethod
    def ode_velocity(self, x, output, a: float, s: float):
        """dy/du given the model's output at x on the path (a, s)."""
