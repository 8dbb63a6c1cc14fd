"""The forward (noising) process q.

    q(x_t | x_0)        = N(sqrt(abar_t) x_0, (1 - abar_t) I)                     (eq. 4)
    q(x_t | x_{t-1})    = N(sqrt(alpha_t) x_{t-1}, beta_t I)                      (eq. 2)
    q(x_{t-1} | x_t, x_0) = N(coef1_t x_0 + coef2_t x_t, beta-tilde_t I)          (eqs. 6-7)

The posterior's coefficients are columns of the schedule's table (``posterior_mean_coef1``,
``posterior_mean_coef2``, ``posterior_variance``), which the DDPM sampler steps with.
"""

from __future__ import annotations

import numpy as np
import torch

from .schedules import NoiseSchedule


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Draw x_t ~ q(x_t | x_0) given the noise: sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, the
    schedule's path (``NoiseSchedule.x_t``, what training draws). x0, noise (B, D); t (B,) long."""
    return schedule.x_t(x0, t, noise)


def frame_indices(num_states: int, num_frames: int) -> np.ndarray:
    """``num_frames`` evenly spaced indices into ``num_states`` states, first and last included."""
    num_frames = min(num_frames, num_states)
    return np.unique(np.round(np.linspace(0, num_states - 1, num_frames)).astype(int))


def forward_trajectory(
    schedule: NoiseSchedule, x0: torch.Tensor, num_frames: int, generator: torch.Generator
) -> tuple[torch.Tensor, np.ndarray]:
    """Run the Markov chain x_0 -> x_T step by step (eq. 2) and keep evenly spaced frames.

    Returns frames (K, N, D) and the time of each frame (0 = data, T = the end of the chain)."""
    return schedule.forward_frames(x0, num_frames, generator)
