"""The noise predictor eps_theta(x_t, t): a small MLP on [x_t, time features]."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .config import DenoiserConfig

_ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU, "tanh": nn.Tanh}


def time_features(config: DenoiserConfig, num_timesteps: int) -> torch.Tensor:
    """Table of time features for t = 0..T-1, shape (T, F).

    scalar:      t / T (the reference), F = 1.
    sinusoidal:  [sin(w_k t), cos(w_k t)] with w_k = 1000^(-k / (F/2)) * (1000 / T), so the
                 frequencies cover the same range whatever T is (Vaswani et al. 2017)."""
    t = torch.arange(num_timesteps, dtype=torch.float32)
    if config.time_embedding == "scalar":
        return (t / num_timesteps)[:, None]
    half = config.embedding_dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float64) / half)
    angles = (t.double()[:, None] * 1000.0 / num_timesteps) * freqs[None, :]  # (T, F/2)
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


class Denoiser(nn.Module):
    """MLP: [x (2), features(t) (F)] -> hidden x depth -> eps (2).

    Weights are initialised like ``nn.Linear`` (Kaiming-uniform, a = sqrt(5)) but from the given
    generator, so a seed fixes them without touching torch's global RNG."""

    def __init__(self, config: DenoiserConfig, num_timesteps: int, generator: torch.Generator, data_dim: int = 2):
        super().__init__()
        self.config = config
        self.num_timesteps = num_timesteps
        self.register_buffer("time_table", time_features(config, num_timesteps), persistent=False)
        widths = [data_dim + self.time_table.shape[1]] + [config.hidden] * config.depth + [data_dim]
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            linear = nn.utils.skip_init(nn.Linear, fan_in, fan_out)
            nn.init.kaiming_uniform_(linear.weight, a=math.sqrt(5), generator=generator)
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(linear.bias, -bound, bound, generator=generator)
            layers.append(linear)
            if i < len(widths) - 2:
                layers.append(_ACTIVATIONS[config.activation]())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x (B, 2), t (B,) long in [0, T) -> predicted noise (B, 2)."""
        return self.net(torch.cat([x, self.time_table[t]], dim=1))  # (B, 2 + F)

    @torch.no_grad()
    def at_fixed_times(self) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """eps_theta(x, t) for a batch that shares one t (what a sampler needs), inference only.

        The time features are folded into the first layer's bias once for every t:
        W [x; f(t)] + b = W_x x + (W_f f(t) + b), so a step costs no concatenation.
        The returned function sees the weights as they are now."""
        first: nn.Linear = self.net[0]
        data_dim = first.in_features - self.time_table.shape[1]
        bias = torch.addmm(first.bias, self.time_table, first.weight[:, data_dim:].T)  # (T, hidden)
        weight_x = first.weight[:, :data_dim].T.contiguous()  # (2, hidden)
        rest = self.net[1:]

        def eps(x: torch.Tensor, t: int) -> torch.Tensor:
            return rest(torch.addmm(bias[t], x, weight_x))

        return eps


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
