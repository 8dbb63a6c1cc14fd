"""Training: a resumable trainer that reports progress outward as small records.

The loss is the simple DDPM objective (Ho et al. 2020, eq. 14):
    L = E_{x_0, t, eps} || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t) ||^2
averaged over the batch and the two coordinates, as ``nn.MSELoss`` does.

Each step draws, in this order and from the trainer's own generator: the batch x_0, the times t,
the noise eps. For the reference preset this is the seed script's order, so the same seed gives
the same run. Training in chunks gives exactly the result of training in one go.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import ExperimentConfig, TrainingKey
from .datasets import FixedPoints, make_dataset
from .denoiser import Denoiser
from .forward import q_sample
from .schedules import NoiseSchedule


@dataclass(frozen=True)
class TrainRecord:
    """One optimizer step, as a page or a progress bar wants it."""

    step: int  # optimizer steps done so far, 1-based
    total_steps: int
    epoch: int  # epochs completed
    loss: float
    lr: float
    elapsed: float  # seconds spent training so far


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number."""

    def __init__(self, step: int, loss: float, lr: float):
        self.step, self.loss, self.lr = step, loss, lr
        super().__init__(
            f"training diverged at step {step}: the loss became {loss} (learning rate {lr:g}). "
            f"Try a lower learning rate, e.g. {lr / 10:g}."
        )


def _as_training_key(config: ExperimentConfig | TrainingKey) -> TrainingKey:
    return config.training if isinstance(config, ExperimentConfig) else config


class Trainer:
    """Owns the model, the optimizer, the optional weight average and the random stream."""

    def __init__(self, config: ExperimentConfig | TrainingKey, device: torch.device | str = "cpu"):
        key = _as_training_key(config)
        self.config = key
        self.device = torch.device(device)
        self.schedule = NoiseSchedule.from_config(key.schedule).to(self.device)
        self.dataset = make_dataset(key.data)
        # The random stream lives on the CPU, so CPU and GPU runs see the same batches.
        self.generator = torch.Generator().manual_seed(key.train.seed)
        model = Denoiser(key.denoiser, key.schedule.num_timesteps, self.generator)
        self.model = model.to(self.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=key.train.lr)
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False) if key.train.ema_decay else None
        self.total_steps = key.total_steps
        self.steps_per_epoch = key.steps_per_epoch
        self.step = 0
        self.elapsed = 0.0
        self.losses: list[float] = []
        self._permutation: torch.Tensor | None = None

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    def learning_rate(self, step: int) -> float:
        """lr at 0-based ``step``: constant, or cosine-decayed to 0 over the run."""
        lr = self.config.train.lr
        if self.config.train.lr_schedule == "cosine":
            return lr * 0.5 * (1 + math.cos(math.pi * step / self.total_steps))
        return lr

    def _batch(self) -> torch.Tensor:  # (B, 2)
        batch_size = self.config.train.batch_size
        if not isinstance(self.dataset, FixedPoints):  # a fresh batch every step
            return self.dataset.sample(batch_size, self.generator)
        i = self.step % self.steps_per_epoch  # an epoch is one shuffled pass over the points
        if i == 0:
            self._permutation = torch.randperm(len(self.dataset.points), generator=self.generator)
        return self.dataset.points[self._permutation[i * batch_size : (i + 1) * batch_size]]

    def _train_step(self) -> float:
        x0 = self._batch()
        t = torch.randint(0, self.schedule.num_timesteps, (len(x0),), generator=self.generator)
        noise = torch.randn(x0.shape, generator=self.generator)
        if self.device.type != "cpu":
            x0, t, noise = x0.to(self.device), t.to(self.device), noise.to(self.device)
        loss = F.mse_loss(self.model(q_sample(self.schedule, x0, t, noise), t), noise)
        value = loss.item()
        lr = self.learning_rate(self.step)
        if not math.isfinite(value):
            raise TrainingDiverged(self.step + 1, value, lr)
        if self.config.train.lr_schedule != "constant":
            for group in self.optimizer.param_groups:
                group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.ema_model is not None:
            # EMA with the usual warm-up, so early weights don't linger: min(decay, (1+n)/(10+n))
            decay = min(self.config.train.ema_decay, (1 + self.step) / (10 + self.step))
            torch._foreach_lerp_(list(self.ema_model.parameters()), list(self.model.parameters()), 1 - decay)
        return value

    def run(self, max_steps: int | None = None) -> Iterator[TrainRecord]:
        """Advance up to ``max_steps`` optimizer steps (default: to the end), yielding a record
        after each. Stopping the iteration early leaves the trainer consistent and resumable."""
        end = self.total_steps if max_steps is None else min(self.total_steps, self.step + max_steps)
        self.model.train()
        while self.step < end:
            start = time.perf_counter()
            loss = self._train_step()
            self.elapsed += time.perf_counter() - start
            self.step += 1
            self.losses.append(loss)
            yield TrainRecord(
                step=self.step,
                total_steps=self.total_steps,
                epoch=self.step // self.steps_per_epoch,
                loss=loss,
                lr=self.learning_rate(self.step - 1),
                elapsed=self.elapsed,
            )

    def train(self) -> Trainer:
        """Run to the end; returns self."""
        for _ in self.run():
            pass
        return self

    def sampling_model(self) -> Denoiser:
        """The weights to sample with: the weight average when there is one. In eval mode."""
        return (self.ema_model or self.model).eval()
