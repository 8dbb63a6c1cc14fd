"""Reverse process: DDPM ancestral sampling and DDIM, as pure steps plus a loop.

DDPM (Ho et al. 2020, Algorithm 2):
    x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_theta) + sigma_t z,
    sigma_t^2 = beta_t ("beta", the reference) or beta-tilde_t ("posterior"); no noise at t = 0.
DDIM (Song et al. 2021, eq. 12):
    x0_hat   = (x_t - sqrt(1 - abar_t) eps_theta) / sqrt(abar_t)
    sigma    = eta sqrt((1 - abar_prev) / (1 - abar_t)) sqrt(1 - abar_t / abar_prev)
    x_prev   = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_theta + sigma z
    with abar_prev = 1 after the last step (t_prev = -1).

Index t runs 0..T-1. Nothing clips the predicted x_0: the reference data sits at (2, 2).
The loop comes as a pair: ``iter_sample`` yields every step, ``sample`` runs it to the end and
keeps evenly spaced frames. All randomness (x_T first, then the per-step noise) comes from one
explicit generator, so two samplers given the same seed start from the same x_T.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .config import SamplerConfig, Variance
from .forward import frame_indices
from .schedules import NoiseSchedule

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]  # (x (N, 2), t) -> eps (N, 2)


def _at(schedule: NoiseSchedule, name: str, t) -> float:
    return float(schedule.float64[name][int(t)])


def ddpm_step(
    schedule: NoiseSchedule,
    noise_pred: torch.Tensor,
    t: int,
    x_t: torch.Tensor,
    noise: torch.Tensor | None,
    variance: Variance = "beta",
) -> torch.Tensor:
    """One ancestral step x_t -> x_{t-1}. ``noise`` (z ~ N(0, I)) is ignored at t = 0."""
    if variance not in ("beta", "posterior"):
        raise ValueError(f"variance must be 'beta' or 'posterior'; got {variance!r}")
    t = int(t)
    if not 0 <= t < schedule.num_timesteps:
        raise ValueError(f"t must be in [0, {schedule.num_timesteps - 1}]; got {t}")
    coef_eps = _at(schedule, "betas", t) / _at(schedule, "sqrt_one_minus_alphas_cumprod", t)
    x = torch.add(x_t, noise_pred, alpha=-coef_eps).mul_(1.0 / math.sqrt(_at(schedule, "alphas", t)))
    if t > 0:
        if noise is None:
            raise ValueError(f"noise is required at t = {t} > 0")
        sigma2 = _at(schedule, "betas" if variance == "beta" else "posterior_variance", t)
        x = x.add_(noise, alpha=math.sqrt(sigma2))
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
) -> torch.Tensor:
    """One DDIM step x_t -> x_{t_prev} (t_prev = -1 for the last step, to x_0)."""
    t, t_prev = int(t), int(t_prev)
    if not 0 <= t < schedule.num_timesteps:
        raise ValueError(f"t must be in [0, {schedule.num_timesteps - 1}]; got {t}")
    if not -1 <= t_prev < t:
        raise ValueError(f"t_prev must be in [-1, t - 1] = [-1, {t - 1}]; got {t_prev}")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must be in [0, 1]; got {eta}")
    coef_x, coef_eps, sigma = _ddim_coefficients(schedule, t, t_prev, eta)
    x = torch.add(x_t.mul(coef_x), noise_pred, alpha=coef_eps)
    if sigma > 0:
        if noise is None:
            raise ValueError(f"noise is required when eta > 0 (sigma = {sigma:g})")
        x = x.add_(noise, alpha=sigma)
    return x


def predicted_x0(schedule: NoiseSchedule, x_t: torch.Tensor, noise_pred: torch.Tensor, t: int) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
    return torch.add(x_t, noise_pred, alpha=-_at(schedule, "sqrt_one_minus_alphas_cumprod", t)).div_(
        _at(schedule, "sqrt_alphas_cumprod", t)
    )


def timesteps(schedule: NoiseSchedule, config: SamplerConfig) -> np.ndarray:
    """The model times visited, descending: all T for DDPM, ``sample_steps`` evenly spaced for DDIM."""
    T = schedule.num_timesteps
    if config.kind == "ddpm":
        return np.arange(T - 1, -1, -1)
    steps = min(config.sample_steps, T)
    if steps == 1:  # one jump from x_T: it must start at the last time, not the first
        return np.array([T - 1])
    return np.unique(np.round(np.linspace(0, T - 1, steps)).astype(int))[::-1].copy()


@dataclass(frozen=True)
class SamplerStep:
    """The state before step ``index`` (x at model time ``t``), and what the model said there."""

    index: int
    t: int
    x: torch.Tensor  # (N, 2)
    eps: torch.Tensor  # (N, 2)


def iter_sample(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    config: SamplerConfig,
    generator: torch.Generator,
    *,
    num_samples: int | None = None,
    device: torch.device | str = "cpu",
) -> Iterator[tuple[SamplerStep, torch.Tensor]]:
    """Yield (the state before each step, x after it). x_T ~ N(0, I) is drawn first, then all the
    per-step noise at once, both from ``generator`` (on the CPU: same draws on any device)."""
    n = config.num_samples if num_samples is None else num_samples
    ts = timesteps(schedule, config)
    x = torch.randn(n, 2, generator=generator).to(device)
    needs_noise = config.kind == "ddpm" or config.eta > 0
    noise = torch.randn(len(ts), n, 2, generator=generator).to(device) if needs_noise else None
    for i, t in enumerate(ts):
        t = int(t)
        z = noise[i] if noise is not None else None
        with torch.inference_mode():  # entered per step: a generator must not leak the mode
            eps = eps_fn(x, t)
            if config.kind == "ddpm":
                x_next = ddpm_step(schedule, eps, t, x, z, config.variance)
            else:
                t_prev = int(ts[i + 1]) if i + 1 < len(ts) else -1
                x_next = ddim_step(schedule, eps, t, t_prev, x, config.eta, z)
        yield SamplerStep(i, t, x, eps), x_next
        x = x_next


@dataclass(frozen=True)
class Trajectory:
    """Evenly spaced frames of one reverse run, x_T first and x_0 last."""

    frames: np.ndarray  # (K, N, 2)
    frame_times: np.ndarray  # (K,) time of each frame: T for x_T ... 0 for x_0
    predicted_x0: np.ndarray  # (K, N, 2) the model's guess of x_0 at each frame (x_0 itself last)
    seconds: float = 0.0

    @property
    def samples(self) -> np.ndarray:  # (N, 2)
        return self.frames[-1]

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.frames).all() and np.isfinite(self.predicted_x0).all())


def sample(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    config: SamplerConfig,
    generator: torch.Generator,
    *,
    device: torch.device | str = "cpu",
) -> Trajectory:
    """Run the reverse process to the end, keeping ``config.num_frames`` evenly spaced frames."""
    start = time.perf_counter()
    ts = timesteps(schedule, config)
    keep = set(frame_indices(len(ts) + 1, config.num_frames).tolist())  # states 0..S
    frames, frame_times, x0_preds = [], [], []
    x_end = None
    for step, x_end in iter_sample(eps_fn, schedule, config, generator, device=device):  # noqa: B007
        if step.index in keep:
            frames.append(step.x.cpu())
            frame_times.append(step.t + 1)
            x0_preds.append(predicted_x0(schedule, step.x, step.eps, step.t).cpu())
    frames.append(x_end.cpu())  # x_0, the samples
    frame_times.append(0)
    x0_preds.append(x_end.cpu())
    return Trajectory(
        frames=torch.stack(frames).numpy(),
        frame_times=np.array(frame_times),
        predicted_x0=torch.stack(x0_preds).numpy(),
        seconds=time.perf_counter() - start,
    )


def sample_model(model, schedule: NoiseSchedule, config: SamplerConfig, *, device="cpu") -> Trajectory:
    """Sample a trained ``Denoiser`` with the sampler's own seed."""
    generator = torch.Generator().manual_seed(config.seed)
    with torch.inference_mode():
        eps_fn = model.at_fixed_times()
    return sample(eps_fn, schedule, config, generator, device=device)
