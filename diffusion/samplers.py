"""Reverse process: DDPM ancestral sampling and DDIM, as pure steps plus a loop.

DDPM (Ho et al. 2020, Algorithm 2):
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

Flow matching's ODE solvers (Euler, Heun) live in ``flow``; ``iter_sample``, ``sample`` and
``sample_model`` hand a flow schedule's runs to them, so callers need not know the objective.

Index t runs 0..T-1. The loop comes as a pair: ``iter_sample`` yields every step, ``sample`` runs
it to the end and keeps evenly spaced frames. All randomness (x_T first, then the per-step noise)
comes from one explicit generator, so two samplers given the same seed and number of samples start
from the same x_T, and two models sampled with the same config get the same x_T and noise (common
random numbers). ``sample_model`` seeds that generator with the sampler's seed, or, with
``common_noise`` off, with the seed mixed with a digest of the run (``sampling_seed``).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .config import SamplerConfig, Variance
from .flow import iter_flow_sample, sample_flow
from .forward import frame_indices
from .schedules import NoiseSchedule
from .trajectory import SamplerStep, Trajectory

EpsFn = Callable[[torch.Tensor, int], torch.Tensor]  # (x (N, 2), t) -> eps (N, 2)


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


def predicted_x0(schedule: NoiseSchedule, x_t: torch.Tensor, noise_pred: torch.Tensor, t: int) -> torch.Tensor:
    """x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)."""
    return torch.add(x_t, noise_pred, alpha=-_at(schedule, "sqrt_one_minus_alphas_cumprod", t)).div_(
        _at(schedule, "sqrt_alphas_cumprod", t)
    )


def spaced_timesteps(num_timesteps: int, steps: int) -> np.ndarray:
    """``steps`` model times evenly spaced over 0..T-1, descending, from T - 1 down to 0."""
    T = num_timesteps
    steps = min(int(steps), T)
    if steps < 1:
        raise ValueError(f"steps must be a whole number from 1 to T = {T}; got {steps}")
    if steps == 1:  # one jump from x_T: it must start at the last time, not the first
        return np.array([T - 1])
    return np.unique(np.round(np.linspace(0, T - 1, steps)).astype(int))[::-1].copy()


def timesteps(schedule: NoiseSchedule, config: SamplerConfig, sample_steps: int | None = None) -> np.ndarray:
    """The model times visited, descending: all T for DDPM, ``sample_steps`` evenly spaced for DDIM.
    ``sample_steps`` given overrides the config's: for DDPM it respaces (Nichol & Dhariwal)."""
    T = schedule.num_timesteps
    if sample_steps is None:
        if config.kind == "ddpm":
            return np.arange(T - 1, -1, -1)
        sample_steps = config.sample_steps
    return spaced_timesteps(T, sample_steps)


def iter_sample(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    config: SamplerConfig,
    generator: torch.Generator,
    *,
    num_samples: int | None = None,
    device: torch.device | str = "cpu",
    sample_steps: int | None = None,
) -> Iterator[tuple[SamplerStep, torch.Tensor]]:
    """Yield (the state before each step, x after it). x_T ~ N(0, I) is drawn first, then all the
    per-step noise at once, both from ``generator`` (on the CPU: same draws on any device).
    ``sample_steps`` overrides the config's number of steps (``timesteps``): respaced DDPM."""
    if schedule.is_flow:
        yield from iter_flow_sample(eps_fn, config, generator, num_samples=num_samples, device=device,
                                    sample_steps=sample_steps, num_timesteps=schedule.num_timesteps)
        return
    n = config.num_samples if num_samples is None else num_samples
    ts = timesteps(schedule, config, sample_steps)
    x = torch.randn(n, 2, generator=generator).to(device)
    needs_noise = config.kind == "ddpm" or config.eta > 0
    noise = torch.randn(len(ts), n, 2, generator=generator).to(device) if needs_noise else None
    for i, t in enumerate(ts):
        t = int(t)
        z = noise[i] if noise is not None else None
        t_prev = int(ts[i + 1]) if i + 1 < len(ts) else -1
        with torch.inference_mode():  # entered per step: a generator must not leak the mode
            eps = eps_fn(x, t)
            if config.kind == "ddpm":
                x_next = ddpm_step(schedule, eps, t, x, z, config.variance, t_prev=t_prev, clip_x0=config.clip_x0)
            else:
                x_next = ddim_step(schedule, eps, t, t_prev, x, config.eta, z, clip_x0=config.clip_x0)
        yield SamplerStep(i, t, x, eps), x_next
        x = x_next


def sample(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    config: SamplerConfig,
    generator: torch.Generator,
    *,
    device: torch.device | str = "cpu",
    sample_steps: int | None = None,
) -> Trajectory:
    """Run the reverse process to the end, keeping ``config.num_frames`` evenly spaced frames.
    With ``clip_x0`` the frames' predicted x_0 are the clipped ones the sampler stepped with.
    A flow schedule's run goes to ``flow.sample_flow`` (Euler or Heun)."""
    if schedule.is_flow:
        return sample_flow(eps_fn, config, generator, device=device, sample_steps=sample_steps,
                           num_timesteps=schedule.num_timesteps)
    start = time.perf_counter()
    ts = timesteps(schedule, config, sample_steps)
    keep = set(frame_indices(len(ts) + 1, config.num_frames).tolist())  # states 0..S
    frames, frame_times, x0_preds = [], [], []
    x_end = None
    steps = iter_sample(eps_fn, schedule, config, generator, device=device, sample_steps=sample_steps)
    for step, x_end in steps:  # noqa: B007
        if step.index in keep:
            frames.append(step.x.cpu())
            frame_times.append(step.t + 1)
            x0 = predicted_x0(schedule, step.x, step.eps, step.t)
            x0_preds.append((x0.clamp_(-1.0, 1.0) if config.clip_x0 else x0).cpu())
    frames.append(x_end.cpu())  # x_0, the samples
    frame_times.append(0)
    x0_preds.append(x_end.cpu())
    return Trajectory(
        frames=torch.stack(frames).numpy(),
        frame_times=np.array(frame_times),
        predicted_x0=torch.stack(x0_preds).numpy(),
        seconds=time.perf_counter() - start,
    )


def training_salt(key: object) -> int:
    """A digest of a run for ``sample_model``'s ``run_salt``: the first 8 bytes of SHA-256 of
    ``repr(key)`` (e.g. a ``TrainingKey``, whose repr shows every setting and a point set's digest).
    The same in every process, unlike ``hash()``."""
    return int.from_bytes(hashlib.sha256(repr(key).encode()).digest()[:8], "big")


def weights_salt(model: torch.nn.Module) -> int:
    """A digest of a model's weights (SHA-256 of its state dict's bytes, first 8 bytes)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return int.from_bytes(digest.digest()[:8], "big")


def sampling_seed(config: SamplerConfig, run_salt: int) -> int:
    """The seed of the sampling generator: ``config.seed`` with common noise (every run gets the
    same x_T and noise), else a 63-bit digest of the seed and ``run_salt``."""
    if config.common_noise:
        return config.seed
    mixed = hashlib.sha256(f"{config.seed}:{int(run_salt)}".encode()).digest()
    return int.from_bytes(mixed[:8], "big") >> 1


def sample_model(
    model, schedule: NoiseSchedule, config: SamplerConfig, *, device="cpu", run_salt: int | None = None
) -> Trajectory:
    """Sample a trained ``Denoiser`` with the sampler's own seed. With ``config.common_noise`` off,
    the seed is mixed with ``run_salt`` (say ``training_salt(key)``), or, if none is given, with a
    digest of the model's weights (``weights_salt``): either way the same run gets the same noise."""
    salt = 0 if config.common_noise else (weights_salt(model) if run_salt is None else run_salt)
    generator = torch.Generator().manual_seed(sampling_seed(config, salt))
    with torch.inference_mode():
        eps_fn = model.at_fixed_times()
    return sample(eps_fn, schedule, config, generator, device=device)
