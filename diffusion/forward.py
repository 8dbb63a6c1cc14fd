"""The forward (noising) process q.

    q(x_t | x_0)        = N(sqrt(abar_t) x_0, (1 - abar_t) I)                     (eq. 4)
    q(x_t | x_{t-1})    = N(sqrt(alpha_t) x_{t-1}, beta_t I)                      (eq. 2)
    q(x_{t-1} | x_t, x_0) = N(coef1_t x_0 + coef2_t x_t, beta-tilde_t I)          (eqs. 6-7)
"""

from __future__ import annotations

import numpy as np
import torch

from .schedules import NoiseSchedule


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) given the noise: sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, the
    schedule's path (``NoiseSchedule.x_t``, what training draws). x0, noise (B, D); t (B,) long."""
    return schedule.x_t(x0, t, noise)


def q_posterior(schedule: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, float]:
    """Mean and variance of q(x_{t-1} | x_t, x_0) at a single step t."""
    table = schedule.float64
    mean = table["posterior_mean_coef1"][t] * x0 + table["posterior_mean_coef2"][t] * x_t
    return mean, float(table["posterior_variance"][t])


def frame_indices(num_states: int, num_frames: int) -> np.ndarray:
    """``num_frames`` evenly spaced indices into ``num_states`` states, first and last included."""
    num_frames = min(num_frames, num_states)
    return np.unique(np.round(np.linspace(0, num_states - 1, num_frames)).astype(int))


def forward_trajectory(
    schedule: NoiseSchedule, x0: torch.Tensor, num_frames: int, generator: torch.Generator
) -> tuple[torch.Tensor, np.ndarray]:
    """Run the Markov chain x_0 -> x_T step by step (eq. 2) and keep evenly spaced frames.

    Returns frames (K, N, D) and the time of each frame (0 = data, T = the end of the chain)."""
    T = schedule.num_timesteps
    keep = frame_indices(T + 1, num_frames)
    sqrt_alpha = np.sqrt(schedule.float64["alphas"])
    sqrt_beta = np.sqrt(schedule.float64["betas"])
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
