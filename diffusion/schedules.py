"""DDPM's path: the noise schedule's immutable coefficient table, and what DDPM does with it
(Ho et al. 2020): x_t by q(x_t | x_0), the noise as the target, ancestral and DDIM steps.

Paper symbols, named once:
    beta_t            betas                   variance added at step t
    alpha_t           alphas                  1 - beta_t
    alpha-bar_t       alphas_cumprod          prod_{s<=t} alpha_s       (signal kept in x_t)
    alpha-bar_{t-1}   alphas_cumprod_prev     with alpha-bar_0 = 1
    beta-tilde_t      posterior_variance      Var q(x_{t-1} | x_t, x_0)  (eq. 7)
    SNR(t)            snr                     alpha-bar_t / (1 - alpha-bar_t)

Index t runs 0..T-1 here (paper t = index + 1). Everything is derived in float64 and held in
float32 tensors; ``float64`` keeps the float64 numpy copies for scalar look-ups in the steps,
and the path columns every objective has (``paths.ObjectivePath``):
    signal    a = sqrt(abar_t)        sigma    s = sqrt(1 - abar_t)
so x_t = a x_0 + s eps is q(x_t | x_0) (eq. 4), and the network, fed t / T, learns eps.

Reverse steps. DDPM (Algorithm 2):
    x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_theta) + sigma_t z,
    sigma_t^2 = beta_t ("beta", the reference) or beta-tilde_t ("posterior"); no noise at t = 0.
DDIM (Song et al. 2021, eq. 12):
    x0_hat   = (x_t - sqrt(1 - abar_t) eps_theta) / sqrt(abar_t)
    sigma    = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)
    x_prev   = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_theta + sigma z
    with abar_prev = 1 after the last step (t_prev = -1).

Respaced DDPM (Nichol & Dhariwal 2021, sec. 4), for fewer steps than T: on the kept times
s_1 < ... < s_K (the same evenly spaced ones as DDIM's) the chain is DDPM with the betas
    beta'_i = 1 - abar_{s_i} / abar_{s_{i-1}}   (abar_{s_0} = 1),
so one step from t = s_i to t_prev = s_{i-1} uses alpha' = abar_t / abar_prev and beta' = 1 - alpha'
in Algorithm 2, and sigma^2 = beta' or beta-tilde' = (1 - abar_prev) / (1 - abar_t) beta'. On
consecutive times (t_prev = t - 1) this is plain DDPM, computed from the schedule's own table.

Clipping x0 (``clip_x0``, off by default; diffusers' schedulers do it by default):
    x0_c = clamp(x0_hat, -1, 1)
    DDPM: x_{t-1} = coef1 x0_c + coef2 x_t + sigma_t z, the posterior mean of q(x_{t-1} | x_t, x_0)
          (Ho et al. eq. 7; coef1 = sqrt(abar_prev) beta' / (1 - abar_t),
          coef2 = sqrt(alpha') (1 - abar_prev) / (1 - abar_t)); unclipped, this is Algorithm 2's mean
    DDIM: eps_c = (x_t - sqrt(abar_t) x0_c) / sqrt(1 - abar_t), then eq. 12 with x0_c and eps_c
Only right for data inside [-1, 1]: the reference data sits at (2, 2), and clipping collapses it.
With ``clip_x0`` off, the steps are computed exactly as without the option.

Randomness (``sampler_draws``): x_T first, then all the per-step noise at once (DDPM, or DDIM
with eta > 0), so two samplers given the same seed and number of samples start from the same x_T.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .config import SAMPLERS_OF, Coupling, SamplerConfig, SamplerKind, ScheduleConfig, ScheduleKind, Variance
from .paths import Curve, ModelFn, ObjectivePath, PathChart, PathCurves, PathPlot, powered_uniform
from .trajectory import SamplerStep

_TENSOR_FIELDS = (
    "betas",
    "alphas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "posterior_variance",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
)
FAR_FROM_NOISE = 0.01  # the chart warns when abar_T is above this


@dataclass(frozen=True, eq=False)
class NoiseSchedule(ObjectivePath):
    """DDPM's path: the immutable table of its coefficients; each tensor has shape (T,)."""

    betas: torch.Tensor = dataclasses.field(repr=False)
    alphas: torch.Tensor = dataclasses.field(repr=False)
    alphas_cumprod: torch.Tensor = dataclasses.field(repr=False)
    alphas_cumprod_prev: torch.Tensor = dataclasses.field(repr=False)
    sqrt_alphas_cumprod: torch.Tensor = dataclasses.field(repr=False)
    sqrt_one_minus_alphas_cumprod: torch.Tensor = dataclasses.field(repr=False)
    posterior_variance: torch.Tensor = dataclasses.field(repr=False)
    posterior_mean_coef1: torch.Tensor = dataclasses.field(repr=False)  # multiplies x_0 (eq. 7)
    posterior_mean_coef2: torch.Tensor = dataclasses.field(repr=False)  # multiplies x_t (eq. 7)

    objective = "ddpm"
    label = "DDPM"
    sampler_kinds = SAMPLERS_OF["ddpm"]
    preview_kind = "ddim"
    output_name = "ε"
    budget_families = (("ddpm", None), ("ddim", 0.0), ("ddim", 1.0), ("dpm_solver", None))
    budget_steps = (5, 10, 20, 50, 100, 200, 500)
    continuous_time = False
    frame_dtype = np.int64
    floor_formula = "abar_t s0^2 / (abar_t s0^2 + 1 - abar_t)"
    forward_words = "noised step by step by q(x_t | x_{t-1})"
    output_words = "noise ε(x, t)"
    score_words = "score −ε/√(1−ᾱ_t)"

    @classmethod
    def from_config(cls, config: ScheduleConfig) -> ObjectivePath:
        if config.objective != cls.objective:
            raise ValueError(f"NoiseSchedule is DDPM's path; the {config.objective!r} objective's is "
                             "objectives.path_of(config)")
        betas = config.betas()
        alphas = 1.0 - betas
        alphas_cumprod = np.cumprod(alphas)
        alphas_cumprod_prev = np.append(1.0, alphas_cumprod[:-1])
        table = {
            "betas": betas,
            "alphas": alphas,
            "alphas_cumprod": alphas_cumprod,
            "alphas_cumprod_prev": alphas_cumprod_prev,
            "sqrt_alphas_cumprod": np.sqrt(alphas_cumprod),
            "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - alphas_cumprod),
            # eq. 7: beta-tilde_t = (1 - abar_{t-1}) / (1 - abar_t) * beta_t
            "posterior_variance": betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            "posterior_mean_coef1": betas * np.sqrt(alphas_cumprod_prev) / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - alphas_cumprod),
        }
        table |= {"signal": table["sqrt_alphas_cumprod"], "sigma": table["sqrt_one_minus_alphas_cumprod"]}
        for values in table.values():
            values.flags.writeable = False
        tensors = {name: torch.tensor(table[name], dtype=torch.float32) for name in _TENSOR_FIELDS}
        return cls(config=config, float64=table, **tensors)

    @classmethod
    def grid_times(cls, num_timesteps: int) -> np.ndarray:
        """t / T for the index t = 0..T-1 (the reference's time input)."""
        return np.arange(num_timesteps, dtype=np.float64) / num_timesteps

    @classmethod
    def family_label(cls, kind: SamplerKind, eta: float | None) -> str:
        return {"ddpm": "DDPM", "dpm_solver": "DPM-Solver++ 2M"}.get(kind) or f"DDIM η={eta:g}"

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """A copy whose tensors live on ``device``."""
        moved = {name: getattr(self, name).to(device, copy=True) for name in _TENSOR_FIELDS}
        return dataclasses.replace(self, **moved)

    @property
    def device(self) -> torch.device:
        return self.betas.device

    def path_at_frame(self, k: float) -> tuple[float, float]:
        """Frame k >= 1 is the state the model sees at index k - 1."""
        if k == 0:
            return 1.0, 0.0
        return float(self.float64["signal"][int(k) - 1]), float(self.float64["sigma"][int(k) - 1])

    @property
    def snr(self) -> np.ndarray:
        """SNR(t) = abar_t / (1 - abar_t), float64."""
        abar = self.float64["alphas_cumprod"]
        return abar / (1.0 - abar)

    @property
    def log_snr(self) -> np.ndarray:
        abar = self.float64["alphas_cumprod"]
        return np.log(abar) - np.log1p(-abar)

    @property
    def terminal_alpha_bar(self) -> float:
        """abar_T: how much of the data's signal is left in x_T (sampling assumes about 0)."""
        return float(self.float64["alphas_cumprod"][-1])

    @property
    def terminal_snr(self) -> float:
        return float(self.snr[-1])

    def path_curves(self) -> PathCurves:
        t = (np.arange(self.num_timesteps) + 1) / self.num_timesteps
        return PathCurves(t, self.float64["signal"], self.float64["sigma"], t, self.log_snr,
                          signal_name="√ᾱ", sigma_name="√(1−ᾱ)", label=self.label)

    def chart(self) -> PathChart:
        """beta_t, alpha-bar_t and log SNR(t) against t = 1..T; abar_T, and a warning when x_T is
        far from N(0, I) (abar_T above ``FAR_FROM_NOISE``)."""
        t = np.arange(1, self.num_timesteps + 1)
        table = self.float64
        abar_T = self.terminal_alpha_bar
        warning = None
        if abar_T > FAR_FROM_NOISE:
            warning = (f"x_T is far from N(0, I): ᾱ_T = {abar_T:.3f}, so x_T keeps {np.sqrt(abar_T):.0%} of the data "
                       "while sampling starts from pure N(0, I) noise, so samples can come out shrunk toward the "
                       "origin. Use more steps T, a larger β end, or the cosine schedule.")
        return PathChart(
            heading="Noise schedule",
            plots=(PathPlot("β_t", (Curve(t, table["betas"], "β_t"),)),
                   PathPlot("ᾱ_t (signal kept)", (Curve(t, table["alphas_cumprod"], "ᾱ_t"),), unit_range=True),
                   PathPlot("log SNR(t)", (Curve(t, self.log_snr, "log SNR"),))),
            metrics=(("ᾱ_T (signal left in x_T)", f"{abar_T:.3g}"), ("√ᾱ_T (share of x₀ in x_T)", f"{np.sqrt(abar_T):.2%}")),
            warning=warning,
        )

    def forward_frames(self, x0: torch.Tensor, num_frames: int,
                       generator: torch.Generator) -> tuple[torch.Tensor, np.ndarray]:
        """Run the Markov chain x_0 -> x_T step by step (eq. 2), x_t = sqrt(alpha_t) x_{t-1} +
        sqrt(beta_t) eps_t, and keep ``num_frames`` evenly spaced frames; their times 0 (data) .. T."""
        T = self.num_timesteps
        keep = np.unique(np.round(np.linspace(0, T, min(num_frames, T + 1))).astype(int))
        sqrt_alpha = np.sqrt(self.float64["alphas"])
        sqrt_beta = np.sqrt(self.float64["betas"])
        # drawn on the CPU, like every random number here, then moved: same draws on any device
        noise = torch.randn((T,) + tuple(x0.shape), generator=generator).to(x0.device)  # (T, N, D)
        frames, x = [], x0.clone()
        if keep[0] == 0:
            frames.append(x.clone())
        for t in range(T):
            x = x.mul_(sqrt_alpha[t]).add_(noise[t], alpha=sqrt_beta[t])
            if t + 1 in keep:
                frames.append(x.clone())
        return torch.stack(frames), keep

    # --- training: q(x_t | x_0) at a uniform index, the noise as the target -------------------------

    def training_draw(
        self, x0: torch.Tensor, generator: torch.Generator, coupling: Coupling, time_power: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """t over the indices 0..T-1 (its own level), then eps; pairs are always independent. t is
        uniform (drawn as the reference draws it) for p = 1, else floor(T u^p)."""
        T = self.num_timesteps
        if time_power == 1.0:
            t = torch.randint(0, T, (len(x0),), generator=generator)
        else:
            t = (powered_uniform(len(x0), generator, time_power) * T).long().clamp_(max=T - 1)
        return t, t, torch.randn(x0.shape, generator=generator)

    def x_t(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Draw x_t ~ q(x_t | x_0) given the noise: sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (eq. 4).
        x0, noise (B, D); t (B,) long."""
        return self.sqrt_alphas_cumprod[t][:, None] * x0 + self.sqrt_one_minus_alphas_cumprod[t][:, None] * noise

    def target(self, x0, noise):
        """eps."""
        return noise

    def target_gain(self, a, s):
        """a^2 (the target eps: c_eps = 1, c_0 = 0)."""
        return a**2

    def x0_hat(self, x: torch.Tensor, output: torch.Tensor, a: float, s: float) -> torch.Tensor:
        """(x - s eps) / a."""
        return torch.add(x, output, alpha=-s).div_(a)

    def eps_hat(self, x, output, a: float, s: float):
        """The output itself."""
        return output

    # --- samplers ---------------------------------------------------------------------------------------

    @property
    def max_sample_steps(self) -> int:
        return self.num_timesteps

    def num_sample_steps(self, config: SamplerConfig, sample_steps: int | None = None) -> int:
        return len(timesteps(self, config, sample_steps))

    def sampler_draws(
        self, config: SamplerConfig, generator: torch.Generator, num_samples: int, sample_steps: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x_T, then a z per step for DDPM and for DDIM with eta > 0."""
        x = torch.randn(num_samples, 2, generator=generator)
        steps = self.num_sample_steps(config, sample_steps)
        needs_noise = config.kind == "ddpm" or config.eta > 0
        return x, torch.randn(steps, num_samples, 2, generator=generator) if needs_noise else None

    def iter_steps(
        self, model: ModelFn, x: torch.Tensor, noise: torch.Tensor | None, config: SamplerConfig,
        sample_steps: int | None = None,
    ) -> Iterator[tuple[SamplerStep, torch.Tensor]]:
        """DDPM's or DDIM's steps over ``timesteps``; ``sample_steps`` given respaces DDPM."""
        ts = timesteps(self, config, sample_steps)
        earlier: tuple[torch.Tensor, float] | None = None  # DPM-Solver++: the last step's x0_hat and h
        for i, t in enumerate(ts):
            t = int(t)
            z = noise[i] if noise is not None else None
            t_prev = int(ts[i + 1]) if i + 1 < len(ts) else -1
            with torch.inference_mode():  # entered per step: a generator must not leak the mode
                eps = model(x, t)
                if config.kind == "ddpm":
                    x_next = ddpm_step(self, eps, t, x, z, config.variance, t_prev=t_prev, clip_x0=config.clip_x0)
                elif config.kind == "dpm_solver":
                    x_next, earlier = dpm_solver_step(self, eps, t, t_prev, x, earlier)
                else:
                    x_next = ddim_step(self, eps, t, t_prev, x, config.eta, z, clip_x0=config.clip_x0)
            yield SamplerStep(i, t, x, eps), x_next
            x = x_next

    def step_frame(self, step: SamplerStep, config: SamplerConfig) -> tuple[int, torch.Tensor]:
        """Frame time t + 1; with ``clip_x0`` the clipped x0_hat the sampler stepped with."""
        x0 = predicted_x0(self, step.x, step.model_output, step.t)
        return step.t + 1, x0.clamp_(-1.0, 1.0) if config.clip_x0 else x0


    # --- the probability-flow ODE: DDIM's, in x-bar = x / a and sigma-bar = s / a ---------------------
    # d x-bar / d sigma-bar = eps (Song et al. 2021, eq. 14; DDIM with eta = 0 is its Euler step),
    # solved in u = log(1 + sigma-bar / sigma-bar_0) (sigma-bar_0: level 0's): linear in sigma-bar
    # near the data, logarithmic (as log SNR) beyond, so evenly spaced u suits the whole range.

    @property
    def _sigma_bar(self) -> np.ndarray:
        return self.float64["sigma"] / self.float64["signal"]

    def _sigma_bar_at(self, u: float) -> float:
        return float(self._sigma_bar[0]) * math.expm1(u)

    def ode_nodes(self, steps: int) -> np.ndarray:
        """u evenly spaced from 0 (the data) to level T - 1's."""
        if steps < 1:
            raise ValueError(f"steps must be a whole number of at least 1; got {steps}")
        bar = self._sigma_bar
        return np.linspace(0.0, math.log1p(bar[-1] / bar[0]), steps + 1)

    def ode_point(self, u: float) -> tuple[float, float, float]:
        """a = 1 / sqrt(1 + sigma-bar^2), s = sigma-bar a; the network's time is the level whose
        sigma-bar this is, interpolated in log sigma-bar (level 0 below level 0's, as DDIM's last step)."""
        bar = self._sigma_bar
        u_bar = self._sigma_bar_at(u)
        a = 1.0 / math.sqrt(1.0 + u_bar * u_bar)
        level = 0.0 if u_bar <= bar[0] else float(np.interp(math.log(u_bar), np.log(bar), np.arange(len(bar))))
        return a, u_bar * a, level / self.num_timesteps

    def ode_scale(self, u: float) -> float:
        u_bar = self._sigma_bar_at(u)
        return 1.0 / math.sqrt(1.0 + u_bar * u_bar)

    def ode_velocity(self, x, output, a: float, s: float):
        """d x-bar / du = eps (d sigma-bar / du) = eps (sigma-bar + sigma-bar_0)."""
        return self.eps_hat(x, output, a, s) * (s / a + float(self._sigma_bar[0]))


def make_schedule(
    kind: ScheduleKind = "linear",
    num_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> NoiseSchedule:
    """Build a schedule; raises ValueError naming the bad argument and the allowed range."""
    return NoiseSchedule.from_config(ScheduleConfig(kind=kind, num_timesteps=num_timesteps, beta_start=beta_start, beta_end=beta_end))


# --- the reverse steps, pure functions of the table ----------------------------------------------------


def _at(schedule: NoiseSchedule, name: str, t) -> float:
    return float(schedule.float64[name][int(t)])


@dataclass(frozen=True)
class DDPMCoefficients:
    """One (possibly respaced) DDPM step t -> t_prev, in float64: alpha' = abar_t / abar_prev,
    beta' = 1 - alpha', sigma^2, and the posterior mean's coefficients of x_0 and x_t (eq. 7)."""

    alpha: float
    beta: float
    sigma2: float  # 0 on the last step (t_prev = -1)
    coef_x0: float
    coef_xt: float


def ddpm_coefficients(schedule: NoiseSchedule, t: int, t_prev: int, variance: Variance = "beta") -> DDPMCoefficients:
    """The coefficients of one DDPM step; from the schedule's table when t_prev = t - 1."""
    if t_prev == t - 1:
        alpha, beta = _at(schedule, "alphas", t), _at(schedule, "betas", t)
        coef_x0, coef_xt = _at(schedule, "posterior_mean_coef1", t), _at(schedule, "posterior_mean_coef2", t)
        posterior = _at(schedule, "posterior_variance", t)
    else:  # Nichol & Dhariwal's respacing: beta' from the alpha-bars at the kept times
        abar_t = _at(schedule, "alphas_cumprod", t)
        abar_prev = _at(schedule, "alphas_cumprod", t_prev) if t_prev >= 0 else 1.0
        alpha = abar_t / abar_prev
        beta = 1.0 - alpha
        coef_x0 = math.sqrt(abar_prev) * beta / (1.0 - abar_t)
        coef_xt = math.sqrt(alpha) * (1.0 - abar_prev) / (1.0 - abar_t)
        posterior = (1.0 - abar_prev) / (1.0 - abar_t) * beta
    sigma2 = 0.0 if t_prev < 0 else (beta if variance == "beta" else posterior)
    return DDPMCoefficients(alpha, beta, sigma2, coef_x0, coef_xt)


def ddpm_step(
    schedule: NoiseSchedule,
    noise_pred: torch.Tensor,
    t: int,
    x_t: torch.Tensor,
    noise: torch.Tensor | None,
    variance: Variance = "beta",
    *,
    t_prev: int | None = None,
    clip_x0: bool = False,
) -> torch.Tensor:
    """One ancestral step x_t -> x_{t_prev} (default t - 1; an earlier time is a respaced step).
    ``noise`` (z ~ N(0, I)) is ignored on the last step (t_prev = -1). ``clip_x0``: step from the
    posterior mean with x0_hat clamped to [-1, 1]."""
    if variance not in ("beta", "posterior"):
        raise ValueError(f"variance must be 'beta' or 'posterior'; got {variance!r}")
    t = int(t)
    if not 0 <= t < schedule.num_timesteps:
        raise ValueError(f"t must be in [0, {schedule.num_timesteps - 1}]; got {t}")
    t_prev = t - 1 if t_prev is None else int(t_prev)
    if not -1 <= t_prev < t:
        raise ValueError(f"t_prev must be in [-1, t - 1] = [-1, {t - 1}]; got {t_prev}")
    c = ddpm_coefficients(schedule, t, t_prev, variance)
    if clip_x0:
        x0 = predicted_x0(schedule, x_t, noise_pred, t).clamp_(-1.0, 1.0)
        x = torch.add(x0.mul_(c.coef_x0), x_t, alpha=c.coef_xt)  # eq. 7's mean with the clipped x0
    else:  # Algorithm 2, with beta' and alpha' when respaced
        coef_eps = c.beta / _at(schedule, "sqrt_one_minus_alphas_cumprod", t)
        x = torch.add(x_t, noise_pred, alpha=-coef_eps).mul_(1.0 / math.sqrt(c.alpha))
    if t_prev >= 0:
        if noise is None:
            raise ValueError(f"noise is required at t = {t} > 0")
        x = x.add_(noise, alpha=math.sqrt(c.sigma2))
    return x


def _ddim_coefficients(schedule: NoiseSchedule, t: int, t_prev: int, eta: float) -> tuple[float, float, float]:
    """(coefficient of x_t, coefficient of eps, sigma) for one DDIM step, in float64."""
    abar_t = _at(schedule, "alphas_cumprod", t)
    abar_prev = _at(schedule, "alphas_cumprod", t_prev) if t_prev >= 0 else 1.0
    sigma = eta * math.sqrt((1 - abar_prev) / (1 - abar_t)) * math.sqrt(1 - abar_t / abar_prev)
    ratio = math.sqrt(abar_prev / abar_t)
    coef_x = ratio
    coef_eps = math.sqrt(max(1 - abar_prev - sigma**2, 0.0)) - ratio * math.sqrt(1 - abar_t)
    return coef_x, coef_eps, sigma


def ddim_step(
    schedule: NoiseSchedule,
    noise_pred: torch.Tensor,
    t: int,
    t_prev: int,
    x_t: torch.Tensor,
    eta: float,
    noise: torch.Tensor | None,
    *,
    clip_x0: bool = False,
) -> torch.Tensor:
    """One DDIM step x_t -> x_{t_prev} (t_prev = -1 for the last step, to x_0). ``clip_x0``: clamp
    x0_hat to [-1, 1] and recompute eps from it (as diffusers' DDIMScheduler does)."""
    t, t_prev = int(t), int(t_prev)
    if not 0 <= t < schedule.num_timesteps:
        raise ValueError(f"t must be in [0, {schedule.num_timesteps - 1}]; got {t}")
    if not -1 <= t_prev < t:
        raise ValueError(f"t_prev must be in [-1, t - 1] = [-1, {t - 1}]; got {t_prev}")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1]; got {eta}")
    if clip_x0:
        _, _, sigma = _ddim_coefficients(schedule, t, t_prev, eta)
        x0 = predicted_x0(schedule, x_t, noise_pred, t).clamp_(-1.0, 1.0)
        abar_t = _at(schedule, "alphas_cumprod", t)
        abar_prev = _at(schedule, "alphas_cumprod", t_prev) if t_prev >= 0 else 1.0
        eps = torch.add(x_t, x0, alpha=-math.sqrt(abar_t)).div_(math.sqrt(1 - abar_t))  # eps_c
        x = torch.add(x0.mul_(math.sqrt(abar_prev)), eps, alpha=math.sqrt(max(1 - abar_prev - sigma**2, 0.0)))
    else:
        coef_x, coef_eps, sigma = _ddim_coefficients(schedule, t, t_prev, eta)
        x = torch.add(x_t.mul(coef_x), noise_pred, alpha=coef_eps)
    if sigma > 0:
        if noise is None:
            raise ValueError(f"noise is required when eta > 0 (sigma = {sigma:g})")
        x = x.add_(noise, alpha=sigma)
    return x


def dpm_solver_step(
    schedule: NoiseSchedule,
    noise_pred: torch.Tensor,
    t: int,
    t_prev: int,
    x_t: torch.Tensor,
    earlier: tuple[torch.Tensor, float] | None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, float]]:
    """One step x_t -> x_{t_prev} of DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2), the multistep
    second-order solver of the probability-flow ODE that DDIM (eta = 0) solves to first order.

    With lambda = log(a / s) and h = lambda_{t_prev} - lambda_t, and D the data prediction:
        x_{t_prev} = (s_prev / s_t) x_t + a_prev (1 - e^{-h}) D
        D = x0_hat_t                                          (first step, and the last, to x_0)
        D = (1 + 1 / (2 r)) x0_hat_t - 1 / (2 r) x0_hat_before,  r = h_before / h   (otherwise)
    With D = x0_hat_t this is DDIM's step exactly. ``earlier`` is (x0_hat, h) of the step before
    (None on the first); returns x_{t_prev} and this step's (x0_hat, h) for the next."""
    t, t_prev = int(t), int(t_prev)
    if not 0 <= t < schedule.num_timesteps:
        raise ValueError(f"t must be in [0, {schedule.num_timesteps - 1}]; got {t}")
    if not -1 <= t_prev < t:
        raise ValueError(f"t_prev must be in [-1, t - 1] = [-1, {t - 1}]; got {t_prev}")
    a, s = schedule.path_at(t)
    x0 = schedule.x0_hat(x_t, noise_pred, a, s)
    if t_prev < 0:  # to the data: s = 0, lambda = infinity; the step is D itself
        return x0.clone(), (x0, math.inf)
    a_prev, s_prev = schedule.path_at(t_prev)
    h = math.log(a_prev / s_prev) - math.log(a / s)
    data = x0
    if earlier is not None:
        x0_before, h_before = earlier
        r = h_before / h
        data = torch.add(x0.mul(1 + 1 / (2 * r)), x0_before, alpha=-1 / (2 * r))
    x = torch.add(x_t.mul(s_prev / s), data, alpha=a_prev * -math.expm1(-h))
    return x, (x0, h)


def predicted_x0(schedule: NoiseSchedule, x_t: torch.Tensor, noise_pred: torch.Tensor, t: int) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) at index t."""
    return schedule.x0_hat(x_t, noise_pred, *schedule.path_at(t))


def spaced_timesteps(num_timesteps: int, steps: int) -> np.ndarray:
    """``steps`` model times evenly spaced over 0..T-1, descending, from T - 1 down to 0."""
    T = num_timesteps
    steps = min(int(steps), T)
    if steps < 1:
        raise ValueError(f"steps must be a whole number from 1 to T = {T}; got {steps}")
    if steps == 1:  # one jump from x_T: it must start at the last time, not the first
        return np.array([T - 1])
    return np.unique(np.round(np.linspace(0, T - 1, steps)).astype(int))[::-1].copy()


LAMBDA_NOISE = -5.5  # log(a / s) below which x is noise to within 0.4% of signal: DPM-Solver's targets stop here


def log_snr_spaced_timesteps(schedule: NoiseSchedule, steps: int) -> np.ndarray:
    """``steps`` model times whose log SNR is evenly spaced from level T - 1 to level 0 (each the
    level nearest its target, a repeat moved to the next free level), descending: the spacing DPM-Solver is made for
    (Lu et al. 2022, sec. 3.3), so that successive steps are alike in lambda = log(a / s)."""
    T = schedule.num_timesteps
    steps = min(int(steps), T)
    if steps < 1:
        raise ValueError(f"steps must be a whole number from 1 to T = {T}; got {steps}")
    if steps == 1:
        return np.array([T - 1])
    lam = schedule.log_snr / 2  # lambda_t, falling with t
    # A schedule whose last betas are clipped (the cosine's, at 0.999) drops to lambda ~ -10 over its
    # last few levels: evenly spaced targets down there would spend steps where x is already noise.
    # Below LAMBDA_NOISE the targets stop; the first step still starts from level T - 1.
    targets = np.linspace(lam[0], max(lam[-1], min(LAMBDA_NOISE, lam[0])), steps)  # level 0's first
    levels = np.round(np.interp(-targets, -lam, np.arange(T))).astype(int)  # ascending, maybe repeated
    for i in range(1, steps):  # whole levels, all different: nudge a repeat up, then back under T
        levels[i] = max(levels[i], levels[i - 1] + 1)
    levels[-1] = T - 1  # sampling starts from pure noise, at the last level
    for i in range(steps - 1, -1, -1):
        levels[i] = min(levels[i], T - 1 - (steps - 1 - i))
    return levels[::-1].copy()


def timesteps(schedule: NoiseSchedule, config: SamplerConfig, sample_steps: int | None = None) -> np.ndarray:
    """The model times visited, descending: all T for DDPM, ``sample_steps`` evenly spaced for DDIM,
    evenly spaced in log SNR for DPM-Solver++. ``sample_steps`` given overrides the config's: for
    DDPM it respaces (Nichol & Dhariwal)."""
    T = schedule.num_timesteps
    if sample_steps is None:
        if config.kind == "ddpm":
            return np.arange(T - 1, -1, -1)
        sample_steps = config.sample_steps
    if config.kind == "dpm_solver":
        return log_snr_spaced_timesteps(schedule, sample_steps)
    return spaced_timesteps(T, sample_steps)
