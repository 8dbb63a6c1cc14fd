"""Flow matching's path: the straight line from data to noise, and the ODE solvers that walk it back.

The path (rectified flow; Lipman et al. 2023, Liu et al. 2023), t in [0, 1]:
    x_t = (1 - t) x_0 + t eps,            eps ~ N(0, I)
    d x_t / dt = eps - x_0 =: v           (the target the network learns, whatever t)
so the loss is L = E || v - v_theta(x_t, t) ||^2 with t ~ U[0, 1], averaged over the batch and the
two coordinates, as DDPM's. The field the network regresses towards is
    v*(x, t) = E[eps - x_0 | x_t = x],
the velocity of the marginal flow: solving dx/dt = v*(x, t) from x_1 ~ N(0, I) back to t = 0 gives
x_0 ~ the data (the continuity equation). With a + s = 1 (a = 1 - t, s = t):
    x_0 hat = x - t v,   eps hat = x + (1 - t) v.

Coupling. Independent pairs draw eps apart from x_0. Minibatch optimal transport (Tong et al.
2024; Pooladian et al. 2023) reorders a batch's eps so that sum_i |x_0,i - eps_pi(i)|^2 is least,
an exact assignment (``scipy.optimize.linear_sum_assignment``); paths then cross less, v* is closer
to straight and a few Euler steps go further.

Solvers, on N steps evenly spaced from t = 1 to 0 (t_i = 1 - i / N), one model call per
evaluation of v:
    Euler:  x_{i+1} = x_i + (t_{i+1} - t_i) v(x_i, t_i)                         N calls
    Heun:   x~ = Euler step; x_{i+1} = x_i + h (v(x_i, t_i) + v(x~, t_{i+1})) / 2
            except on the last step (to t = 0), which stays an Euler step         2N - 1 calls
(as Karras et al. 2022, Algorithm 1). Both are exact wherever the solution curves are straight
lines walked at constant speed, so that v is the same at both ends of a step: any constant field,
and v(x, t) = (x - mu) / t, the ideal field of data that is a single point mu (x(t) = mu + t (x_1 - mu)).

Randomness: x_1 ~ N(0, I) is the first draw of the sampler's generator, as DDPM's x_T is, so with
the same seed and number of samples a flow run and a DDPM run start from the same points.

The views look at T levels tau_k = (k + 1) / T, k = 0..T-1 (``FlowPath``: a = 1 - tau_k, s = tau_k),
so level T - 1 is pure noise as DDPM's last index is; the network's time input is tau itself, and
training's t in [k / T, (k + 1) / T) counts as level k. A frame time is t T, as DDPM's are steps.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .config import MAX_ODE_STEPS, SAMPLERS_OF, Coupling, SamplerConfig, SamplerKind, ScheduleConfig
from .paths import ModelFn, ObjectivePath, PathChart, PathCurves, PathPlot, powered_uniform
from .trajectory import SamplerStep


def path_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x_0 + t eps; x0, noise (B, D), t (B,) in [0, 1]."""
    t = t.to(x0.dtype)[:, None]
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """v = d x_t / dt = eps - x_0, the same at every t of the path."""
    return noise - x0


def ot_pairing(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The order of ``noise`` that pairs it with ``x0`` at least total squared distance: returns
    noise[perm] where perm minimises sum_i |x0_i - noise_perm(i)|^2 (exact, Hungarian-type)."""
    from scipy.optimize import linear_sum_assignment  # imported when used: only this coupling needs scipy

    cost = torch.cdist(x0.double(), noise.double()).square().cpu().numpy()  # (B, B)
    rows, columns = linear_sum_assignment(cost)
    order = np.empty(len(rows), dtype=np.int64)
    order[rows] = columns
    return noise[torch.from_numpy(order).to(noise.device)]


def paired_in_batches(x0: torch.Tensor, noise: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``noise`` reordered by ``ot_pairing`` within consecutive batches of ``batch_size`` rows, as
    training pairs them: x_t = (1 - t) x0 + t noise then follows the path the model was trained on."""
    return torch.cat([ot_pairing(x0[i : i + batch_size], noise[i : i + batch_size])
                      for i in range(0, len(x0), batch_size)])


def ode_times(steps: int) -> np.ndarray:
    """t_0 = 1 > t_1 > ... > t_N = 0, evenly spaced, float64 (N + 1,)."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a whole number, at least 1; got {steps!r}")
    return np.linspace(1.0, 0.0, int(steps) + 1)


def euler_step(v: torch.Tensor, t: float, t_next: float, x: torch.Tensor) -> torch.Tensor:
    """x + (t_next - t) v."""
    return torch.add(x, v, alpha=t_next - t)


def straight_path_frames(x0: torch.Tensor, noise: torch.Tensor, num_frames: int) -> tuple[torch.Tensor, np.ndarray]:
    """The forward path x_t = (1 - t) x_0 + t eps at evenly spaced t from 0 to 1, each point on
    its own straight line to its own eps. Returns frames (K, N, D) and their times t in [0, 1]."""
    if num_frames < 2:
        raise ValueError(f"num_frames must be at least 2; got {num_frames}")
    times = np.linspace(0.0, 1.0, num_frames)
    frames = torch.stack([(1 - float(t)) * x0 + float(t) * noise for t in times])
    return frames, times


@dataclass(frozen=True, eq=False)
class FlowPath(ObjectivePath):
    """Flow matching's path on the T levels tau_k = (k + 1) / T: a = 1 - tau_k, s = tau_k, and at
    any continuous t in (0, 1] (``path_at`` with a float: its solvers ask there)."""

    objective = "flow"
    label = "flow"
    sampler_kinds = SAMPLERS_OF["flow"]
    preview_kind = "euler"
    output_name = "v"
    budget_families = (("euler", None), ("heun", None))
    budget_steps = (1, 2, 5, 10, 20, 50, 100, 200, 500)
    continuous_time = True
    frame_dtype = np.float64
    floor_formula = "s0^2 / ((1 - t)^2 s0^2 + t^2) at t = (k + 1) / T"
    forward_words = ("moved along flow matching's path: each slides in a straight line to its own noise ε; the lines "
                     "cross, and the model learns their average")
    output_words = "velocity v(x, t) (where a point at x moves as t falls is −v)"
    score_words = "score −ε/t, with ε = x + (1 − t) v,"

    @classmethod
    def from_config(cls, config: ScheduleConfig) -> FlowPath:
        tau = cls.grid_times(config.num_timesteps)
        table = {"signal": 1.0 - tau, "sigma": tau}
        for values in table.values():
            values.flags.writeable = False
        return cls(config=config, float64=table)

    @classmethod
    def grid_times(cls, num_timesteps: int) -> np.ndarray:
        """tau_k = (k + 1) / T."""
        return np.arange(1, num_timesteps + 1, dtype=np.float64) / num_timesteps

    @classmethod
    def family_label(cls, kind: SamplerKind, eta: float | None) -> str:
        return f"{kind.capitalize()} ({cls.label})"

    def path_at(self, t: int | float) -> tuple[float, float]:
        """At level index t (int), or at the continuous time t in (0, 1] (float): (1 - t, t)."""
        if isinstance(t, float):
            if not 0.0 < t <= 1.0:
                raise ValueError(f"t must be in (0, 1] (flow matching's time); got {t!r}")
            return 1.0 - t, t
        return super().path_at(t)

    def path_at_frame(self, k: float) -> tuple[float, float]:
        """A frame time k = tau T need not be whole: the path is exact at any tau, (1 - tau, tau)."""
        tau = float(k) / self.num_timesteps
        return 1.0 - tau, tau

    def path_curves(self) -> PathCurves:
        t = np.linspace(0.0, 1.0, 201)
        inner = t[1:-1]
        return PathCurves(t, 1 - t, t, inner, 2 * np.log((1 - inner) / inner), signal_name="a = 1 − t",
                          sigma_name="s = t", label=self.label)

    def chart(self) -> PathChart:
        """a = 1 - t and s = t against t in [0, 1], and log SNR = 2 log(a / s)."""
        curves = self.path_curves()
        return PathChart(
            heading="Flow matching's path",
            plots=(PathPlot("weights of x₀ and ε in x_t", curves.curves("weights"), unit_range=True, shows="weights"),
                   PathPlot("log SNR(t) = 2 log(a/s)", curves.curves("log_snr"), shows="log_snr")),
            caption="Flow matching has no β schedule: a point x₀ moves on the straight line x_t = (1 − t) x₀ + t ε to "
                    "its noise ε as t goes from 0 to 1, and the network learns the velocity ε − x₀ along it. Its "
                    "weights of x₀ and ε add to 1. At t = 1 no signal is left, so x₁ is exactly N(0, I), where "
                    f"sampling starts. The β settings do not apply; T = {self.num_timesteps:,} only sets how finely "
                    "the views divide [0, 1].",
        )

    def reference(self) -> ScheduleConfig:
        """DDPM's reference linear schedule at the same T: its √ᾱ, √(1 − ᾱ) and log SNR beside these."""
        return ScheduleConfig(num_timesteps=self.num_timesteps)

    def forward_frames(self, x0: torch.Tensor, num_frames: int,
                       generator: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
        """Each point on its own straight line to its own eps (drawn from ``generator``), at evenly
        spaced t from 0 to 1; frame times t T."""
        noise = torch.randn(x0.shape, generator=generator)
        frames, times = straight_path_frames(x0, noise, num_frames)
        return frames, times * self.num_timesteps

    # --- training: t ~ U[0, 1], the velocity as the target -------------------------------------------

    def training_draw(
        self, x0: torch.Tensor, generator: torch.Generator, coupling: Coupling, time_power: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """t ~ U[0, 1) for p = 1, else u^p (continuous; level k holds t in [k / T, (k + 1) / T)),
        then eps, reordered within the batch by ``ot_pairing`` for the optimal-transport coupling."""
        T = self.num_timesteps
        if time_power == 1.0:
            t = torch.rand(len(x0), generator=generator)
        else:
            t = powered_uniform(len(x0), generator, time_power).float()
        level = (t * T).long().clamp_(max=T - 1)
        noise = torch.randn(x0.shape, generator=generator)
        if self.batch_coupled(coupling):
            noise = ot_pairing(x0, noise)
        return t, level, noise

    def x_t(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return path_sample(x0, t, noise)

    def target(self, x0, noise):
        """v = eps - x_0."""
        return velocity_target(x0, noise)

    def target_gain(self, a, s):
        """(-s - a)^2 = 1 on this path (a + s = 1)."""
        return 1.0

    def batch_coupled(self, coupling: Coupling) -> bool:
        return coupling == "ot"

    def x0_hat(self, x: torch.Tensor, output: torch.Tensor, a: float, s: float) -> torch.Tensor:
        """x - t v (s = t)."""
        return torch.add(x, output, alpha=-s)

    def eps_hat(self, x, output, a: float, s: float):
        """x + (1 - t) v (a = 1 - t)."""
        return x + a * output

    # --- samplers: Euler and Heun from t = 1 to 0 --------------------------------------------------

    @property
    def max_sample_steps(self) -> int:
        return MAX_ODE_STEPS

    def num_sample_steps(self, config: SamplerConfig, sample_steps: int | None = None) -> int:
        return config.sample_steps if sample_steps is None else sample_steps

    def sampler_draws(
        self, config: SamplerConfig, generator: torch.Generator, num_samples: int, sample_steps: int | None = None
    ) -> tuple[torch.Tensor, None]:
        """x_1 only: the solvers add no noise."""
        return torch.randn(num_samples, 2, generator=generator), None

    def iter_steps(
        self, model: ModelFn, x: torch.Tensor, noise: None, config: SamplerConfig, sample_steps: int | None = None,
    ) -> Iterator[tuple[SamplerStep, torch.Tensor]]:
        """Euler or Heun (``config.kind``) on ``ode_times``. A step's ``t`` is its time in units of
        the T levels, t T (a float), like DDPM's frame times."""
        times = ode_times(self.num_sample_steps(config, sample_steps))
        for i in range(len(times) - 1):
            t, t_next = float(times[i]), float(times[i + 1])
            with torch.inference_mode():
                v = model(x, t)
                x_next = euler_step(v, t, t_next, x)
                if config.kind == "heun" and t_next > 0:
                    v_next = model(x_next, t_next)
                    x_next = torch.add(x, v.add(v_next), alpha=(t_next - t) / 2)
            yield SamplerStep(i, t * self.num_timesteps, x, v), x_next
            x = x_next

    def step_frame(self, step: SamplerStep, config: SamplerConfig) -> tuple[float, torch.Tensor]:
        """Frame time t T; the predicted x_0 is x - t v."""
        return step.t, self.x0_hat(step.x, step.model_output, *self.path_at_frame(step.t))

    # --- the probability-flow ODE: dx/dt = v itself -----------------------------------------------

    def ode_nodes(self, steps: int) -> np.ndarray:
        """t evenly spaced from 0 (the data) to 1 (exactly N(0, I))."""
        if steps < 1:
            raise ValueError(f"steps must be a whole number of at least 1; got {steps}")
        return np.linspace(0.0, 1.0, steps + 1)

    def ode_point(self, u: float) -> tuple[float, float, float]:
        return 1.0 - u, u, u

    def ode_scale(self, u: float) -> float:
        return 1.0

    def ode_velocity(self, x, output, a: float, s: float):
        """dx/dt = v = eps_hat - x0_hat, the output itself."""
        return output
