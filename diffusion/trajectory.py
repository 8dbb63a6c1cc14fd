"""What a sampler hands out: each step's state, and the kept frames of a whole run."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class SamplerStep:
    """The state before step ``index`` (x at model time ``t``), and the model's output there
    (DDPM: the level index t and eps; flow matching: t as t T, a float, and the velocity v; the
    path's ``output_name`` says which, its ``x0_hat`` and ``eps_hat`` turn it into x_0 and eps)."""

    index: int
    t: int | float
    x: torch.Tensor  # (N, 2)
    model_output: torch.Tensor  # (N, 2)


@dataclass(frozen=True)
class Trajectory:
    """Evenly spaced frames of one reverse run, x_T first and x_0 last."""

    frames: np.ndarray  # (K, N, 2)
    frame_times: np.ndarray  # (K,) time of each frame: T for x_T ... 0 for x_0 (flow: t T, floats)
    predicted_x0: np.ndarray  # (K, N, 2) the model's guess of x_0 at each frame (x_0 itself last)
    seconds: float = 0.0
    labels: np.ndarray | None = None  # (N,) int64: the class each point was sampled for (conditional models)

    @property
    def samples(self) -> np.ndarray:  # (N, 2)
        return self.frames[-1]

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.frames).all() and np.isfinite(self.predicted_x0).all())
