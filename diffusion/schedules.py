"""Noise schedules: the immutable coefficient tables of DDPM (Ho et al. 2020).

Paper symbols, named once:
    beta_t            betas                   variance added at step t
    alpha_t           alphas                  1 - beta_t
    alpha-bar_t       alphas_cumprod          prod_{s<=t} alpha_s       (signal kept in x_t)
    alpha-bar_{t-1}   alphas_cumprod_prev     with alpha-bar_0 = 1
    beta-tilde_t      posterior_variance      Var q(x_{t-1} | x_t, x_0)  (eq. 7)
    SNR(t)            snr                     alpha-bar_t / (1 - alpha-bar_t)

Index t runs 0..T-1 here (paper t = index + 1). Everything is derived in float64 and held in
float32 tensors; ``float64`` keeps the float64 numpy copies for scalar look-ups in samplers.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from .config import ScheduleConfig, ScheduleKind

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


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """Immutable table of DDPM coefficients; each tensor has shape (T,)."""

    config: ScheduleConfig
    float64: dict[str, np.ndarray] = dataclasses.field(repr=False)
    betas: torch.Tensor = dataclasses.field(repr=False)
    alphas: torch.Tensor = dataclasses.field(repr=False)
    alphas_cumprod: torch.Tensor = dataclasses.field(repr=False)
    alphas_cumprod_prev: torch.Tensor = dataclasses.field(repr=False)
    sqrt_alphas_cumprod: torch.Tensor = dataclasses.field(repr=False)
    sqrt_one_minus_alphas_cumprod: torch.Tensor = dataclasses.field(repr=False)
    posterior_variance: torch.Tensor = dataclasses.field(repr=False)
    posterior_mean_coef1: torch.Tensor = dataclasses.field(repr=False)  # multiplies x_0 (eq. 7)
    posterior_mean_coef2: torch.Tensor = dataclasses.field(repr=False)  # multiplies x_t (eq. 7)

    @classmethod
    def from_config(cls, config: ScheduleConfig) -> NoiseSchedule:
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
        for values in table.values():
            values.flags.writeable = False
        tensors = {name: torch.tensor(table[name], dtype=torch.float32) for name in _TENSOR_FIELDS}
        return cls(config=config, float64=table, **tensors)

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """A copy whose tensors live on ``device``."""
        moved = {name: getattr(self, name).to(device, copy=True) for name in _TENSOR_FIELDS}
        return dataclasses.replace(self, **moved)

    @property
    def device(self) -> torch.device:
        return self.betas.device

    @property
    def num_timesteps(self) -> int:
        return len(self.float64["betas"])

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


def make_schedule(
    kind: ScheduleKind = "linear",
    num_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> NoiseSchedule:
    """Build a schedule; raises ValueError naming the bad argument and the allowed range."""
    return NoiseSchedule.from_config(ScheduleConfig(kind, num_timesteps, beta_start, beta_end))
