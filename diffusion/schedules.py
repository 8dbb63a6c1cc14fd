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

Both objectives share three columns, the path x_t = signal_t x_0 + sigma_t eps that the views
(ideal denoiser, loss floor, drift) work from, and the network's time input:
    signal    sqrt(abar_t)          flow matching: 1 - tau_k, with tau_k = (k + 1) / T
    sigma     sqrt(1 - abar_t)      flow matching: tau_k
    times     k / T                 flow matching: tau_k (the continuous time of grid level k)
For flow matching (``objective == "flow"``) training draws tau continuously in [0, 1]; the T
levels tau_k = 1/T .. 1 are where the views look, and the DDPM columns (betas ...) are absent.
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
    betas: torch.Tensor | None = dataclasses.field(repr=False)  # None for flow matching (and the rest)
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
        if config.objective == "flow":
            tau = np.arange(1, config.num_timesteps + 1, dtype=np.float64) / config.num_timesteps
            table = {"signal": 1.0 - tau, "sigma": tau, "times": tau}
            for values in table.values():
                values.flags.writeable = False
            return cls(config=config, float64=table, **dict.fromkeys(_TENSOR_FIELDS))
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
        table |= {"signal": table["sqrt_alphas_cumprod"], "sigma": table["sqrt_one_minus_alphas_cumprod"],
                  "times": np.arange(config.num_timesteps, dtype=np.float64) / config.num_timesteps}
        for values in table.values():
            values.flags.writeable = False
        tensors = {name: torch.tensor(table[name], dtype=torch.float32) for name in _TENSOR_FIELDS}
        return cls(config=config, float64=table, **tensors)

    def to(self, device: torch.device | str) -> NoiseSchedule:
        """A copy whose tensors live on ``device``."""
        if self.is_flow:
            return self
        moved = {name: getattr(self, name).to(device, copy=True) for name in _TENSOR_FIELDS}
        return dataclasses.replace(self, **moved)

    @property
    def is_flow(self) -> bool:
        return self.config.objective == "flow"

    @property
    def device(self) -> torch.device:
        return torch.device("cpu") if self.is_flow else self.betas.device

    @property
    def num_timesteps(self) -> int:
        return len(self.float64["signal"])

    def path_at_frame(self, k: float) -> tuple[float, float]:
        """(signal, sigma) of the state at frame time k in [0, T] (k = 0: the data; k >= 1: the
        state the model sees at index k - 1). A flow trajectory's frame times k = tau T need not be
        whole: its path is exact at any tau, (1 - tau, tau)."""
        if k == 0:
            return 1.0, 0.0
        if self.is_flow:
            tau = float(k) / self.num_timesteps
            return 1.0 - tau, tau
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


def make_schedule(
    kind: ScheduleKind = "linear",
    num_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
) -> NoiseSchedule:
    """Build a schedule; raises ValueError naming the bad argument and the allowed range."""
    return NoiseSchedule.from_config(ScheduleConfig(kind=kind, num_timesteps=num_timesteps, beta_start=beta_start, beta_end=beta_end))
