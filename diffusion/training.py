"""Training: a resumable trainer that reports progress outward as small records.

The loss is the path's (``paths.ObjectivePath``): L = E_{x_0, t, eps} || target - model(x_t, t) ||^2
averaged over the batch and the two coordinates, as ``nn.MSELoss`` does. For DDPM it is the simple
objective (Ho et al. 2020, eq. 14), target eps at x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps;
for flow matching the velocity eps - x_0 at x_t = (1 - t) x_0 + t eps with t ~ U[0, 1], eps
optionally reordered within the batch by the optimal-transport coupling.

Each step draws, in this order and from the trainer's own generator: the batch x_0, then the path's
``training_draw``, the times t and the noise eps. For the reference preset this is the seed
script's order, so the same seed gives the same run. A conditional run (``train.conditional``) draws
its batch with the points' classes and, last, which of them drop to the null class. Training in chunks gives exactly the result of
training in one go. Each record also carries the level of each t (a level index; flow matching's t
in [k / T, (k + 1) / T) is level k) and per-sample losses, for the loss by noise level
(``monitoring.LossByT``).

Speed: at the reference's size (a 4.5k-parameter MLP, batches of 128) a step's arithmetic takes
tens of microseconds and torch's per-call machinery the rest. So a step calls the denoiser's
hand-written backward pass (``Denoiser.losses_and_grads``) instead of autograd, and ``Adam`` below
instead of ``torch.optim.Adam``; both give torch's numbers (see their docstrings). Together they
take a reference step from about 650 to 250 us on one core.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from .config import ExperimentConfig, TrainingKey
from .datasets import FixedPoints, make_dataset
from .denoiser import Denoiser
from .objectives import path_of


@dataclass(frozen=True)
class TrainRecord:
    """One optimizer step, as a page or a progress bar wants it.

    ``t`` and ``sample_losses`` are the step's own tensors, handed out as they are (no copy, no
    conversion per step): the times t_i it drew, (B,) int64 on the CPU, and the per-sample losses
    l_i = ||eps_i - eps_theta(x_t_i, t_i)||^2 / 2, (B,) float32 on the trainer's device, whose mean
    is ``loss`` (up to float32 rounding). What ``monitoring.LossByT`` is fed with."""

    step: int  # optimizer steps done so far, 1-based
    total_steps: int
    epoch: int  # epochs completed
    loss: float
    lr: float
    elapsed: float  # seconds spent training so far
    t: torch.Tensor = field(repr=False, compare=False)  # (B,) int64
    sample_losses: torch.Tensor = field(repr=False, compare=False)  # (B,) float32


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number."""

    def __init__(self, step: int, loss: float, lr: float):
        self.step, self.loss, self.lr = step, loss, lr
        super().__init__(
            f"training diverged at step {step}: the loss became {loss} (learning rate {lr:g}). "
            f"Try a lower learning rate, e.g. {lr / 10:g}."
        )


class Adam:
    """Adam (Kingma & Ba 2015) with torch's defaults (betas 0.9, 0.999; eps 1e-8; no weight decay),
    stepped with the gradients passed in.

    It runs the kernel behind ``torch.optim.Adam(fused=True)``, so the update is torch's, bit for
    bit (``tests/test_denoiser.py`` checks it against torch's, which also catches the private
    kernel changing in a new torch). What it leaves out is ``Optimizer.step``'s bookkeeping (hooks,
    profiler labels, regrouping the tensors by device, one step counter per tensor), and that is
    why it is kept: measured with ``python -m bench.optimizer`` (torch 2.13 CPU, one thread, whole
    runs alternating, medians of 9; three runs), ``torch.optim.Adam(fused=True)`` adds 82 - 150 us
    a step, 19 - 26% of a reference run's time (the run 24 - 36% slower), 16 - 24% of an improved
    run's; this class's whole step takes 20 - 30 us. ``param_groups`` keeps torch's layout, so the
    lr is set the usual way."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float):
        self.params = list(params)
        self.param_groups = [{"params": self.params, "lr": lr, "betas": (0.9, 0.999), "eps": 1e-8}]
        self.exp_avgs = [torch.zeros_like(p) for p in self.params]  # m_t
        self.exp_avg_sqs = [torch.zeros_like(p) for p in self.params]  # v_t
        self.step_count = torch.zeros((), device=self.params[0].device)  # t; the kernel reads a tensor

    @torch.no_grad()
    def step(self, grads: list[torch.Tensor]) -> None:
        group = self.param_groups[0]
        beta1, beta2 = group["betas"]
        self.step_count += 1
        torch._fused_adam_(
            self.params,
            grads,
            self.exp_avgs,
            self.exp_avg_sqs,
            [],  # max_exp_avg_sqs: only for amsgrad
            [self.step_count] * len(self.params),
            lr=group["lr"],
            beta1=beta1,
            beta2=beta2,
            weight_decay=0.0,
            eps=group["eps"],
            amsgrad=False,
            maximize=False,
        )


@dataclass(frozen=True)
class TrainerState:
    """Everything a run needs to continue exactly where it stopped, as CPU tensors: picklable,
    so a paused run can travel to another process and resume there bit for bit. The losses are
    not in it: they are what the run reports (``TrainRecord``), kept by whoever watches it."""

    step: int
    elapsed: float
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    exp_avgs: list[torch.Tensor]  # Adam's m_t, one per parameter
    exp_avg_sqs: list[torch.Tensor]  # Adam's v_t
    adam_step: float
    generator: torch.Tensor  # the random stream's state (ByteTensor)
    permutation: torch.Tensor | None  # the current epoch's order of a fixed point set

    def sampling_weights(self) -> dict[str, torch.Tensor]:
        """The weights to sample with: the weight average when there is one."""
        return self.ema if self.ema is not None else self.model


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: value.detach().to("cpu", copy=True) for name, value in tensors.items()}


def _as_training_key(config: ExperimentConfig | TrainingKey) -> TrainingKey:
    return config.training if isinstance(config, ExperimentConfig) else config


class Trainer:
    """Owns the model, the optimizer, the optional weight average and the random stream."""

    def __init__(self, config: ExperimentConfig | TrainingKey, device: torch.device | str = "cpu"):
        key = _as_training_key(config)
        self.config = key
        self.device = torch.device(device)
        self.schedule = path_of(key.schedule).to(self.device)
        self.dataset = make_dataset(key.data)
        # The random stream lives on the CPU, so CPU and GPU runs see the same batches.
        self.generator = torch.Generator().manual_seed(key.train.seed)
        model = Denoiser(key.denoiser, key.schedule.num_timesteps, self.generator, objective=key.schedule.objective,
                         num_classes=key.num_classes)
        self.model = model.to(self.device)
        self.optimizer = Adam(list(self.model.parameters()), lr=key.train.lr)
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False) if key.train.ema_decay else None
        if self.ema_model is not None:  # built once: the EMA update runs every step
            self._ema_pairs = (list(self.ema_model.parameters()), list(self.model.parameters()))
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

    def _batch(self) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:  # (B, 2), with (B,) labels if conditional
        batch_size = self.config.train.batch_size
        if not isinstance(self.dataset, FixedPoints):  # a fresh batch every step
            if self.config.num_classes:
                return self.dataset.sample_labelled(batch_size, self.generator)
            return self.dataset.sample(batch_size, self.generator)
        i = self.step % self.steps_per_epoch  # an epoch is one shuffled pass over the points
        if i == 0:
            self._permutation = torch.randperm(len(self.dataset.points), generator=self.generator)
        index = self._permutation[i * batch_size : (i + 1) * batch_size]
        if self.config.num_classes:
            return self.dataset.points[index], self.dataset.labels[index]
        return self.dataset.points[index]

    def _train_step(self) -> tuple[float, torch.Tensor, torch.Tensor]:
        """One optimizer step: (loss, t (B,) on the CPU, per-sample losses (B,) on the device)."""
        x0, labels = self._batch(), None
        if self.config.num_classes:
            x0, labels = x0
        t, drawn_t, noise = self.schedule.training_draw(
            x0, self.generator, self.config.train.coupling, self.config.train.time_power)  # on the CPU
        if labels is not None:  # classifier-free guidance's label dropout: some points learn the null class
            dropped = torch.rand(len(labels), generator=self.generator) < self.config.train.label_dropout
            labels = labels.masked_fill(dropped, self.model.null_class)
        if self.device.type != "cpu":
            x0, t, noise = x0.to(self.device), t.to(self.device), noise.to(self.device)
            labels = None if labels is None else labels.to(self.device)
        x_t, target = self.schedule.x_t(x0, t, noise), self.schedule.target(x0, noise)
        loss, sample_losses, grads = self.model.losses_and_grads(x_t, t, target, labels)
        value = loss.item()
        lr = self.learning_rate(self.step)
        if not math.isfinite(value):
            raise TrainingDiverged(self.step + 1, value, lr)
        self.optimizer.param_groups[0]["lr"] = lr
        self.optimizer.step(grads)
        if self.ema_model is not None:
            # EMA with the usual warm-up, so early weights don't linger: min(decay, (1+n)/(10+n))
            decay = min(self.config.train.ema_decay, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                torch._foreach_lerp_(*self._ema_pairs, 1 - decay)
        return value, drawn_t, sample_losses

    def run(self, max_steps: int | None = None) -> Iterator[TrainRecord]:
        """Advance up to ``max_steps`` optimizer steps (default: to the end), yielding a record
        after each. Stopping the iteration early leaves the trainer consistent and resumable."""
        end = self.total_steps if max_steps is None else min(self.total_steps, self.step + max_steps)
        self.model.train()
        while self.step < end:
            start = time.perf_counter()
            loss, t, sample_losses = self._train_step()
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
                t=t,
                sample_losses=sample_losses,
            )

    def train(self) -> Trainer:
        """Run to the end; returns self."""
        for _ in self.run():
            pass
        return self

    def state(self) -> TrainerState:
        """A copy of everything that decides the rest of the run (see ``TrainerState``)."""
        return TrainerState(
            step=self.step,
            elapsed=self.elapsed,
            model=_cpu(self.model.state_dict()),
            ema=_cpu(self.ema_model.state_dict()) if self.ema_model is not None else None,
            exp_avgs=[m.detach().cpu().clone() for m in self.optimizer.exp_avgs],
            exp_avg_sqs=[v.detach().cpu().clone() for v in self.optimizer.exp_avg_sqs],
            adam_step=float(self.optimizer.step_count),
            generator=self.generator.get_state(),
            permutation=None if self._permutation is None else self._permutation.clone(),
        )

    @classmethod
    def resume(cls, config: ExperimentConfig | TrainingKey, state: TrainerState,
               device: torch.device | str = "cpu", losses: list[float] | None = None) -> Trainer:
        """A trainer that continues from ``state`` exactly as the one that wrote it would have.
        ``losses``, the losses of its first ``state.step`` steps where the caller kept them, start
        its ``losses`` list (else it holds only the steps trained from here)."""
        trainer = cls(config, device)
        with torch.no_grad():
            trainer.model.load_state_dict(state.model)
            if trainer.ema_model is not None:
                trainer.ema_model.load_state_dict(state.ema)
            for mine, saved in zip(trainer.optimizer.exp_avgs, state.exp_avgs, strict=True):
                mine.copy_(saved)
            for mine, saved in zip(trainer.optimizer.exp_avg_sqs, state.exp_avg_sqs, strict=True):
                mine.copy_(saved)
            trainer.optimizer.step_count.fill_(state.adam_step)
        trainer.generator.set_state(state.generator)
        trainer.step, trainer.elapsed = state.step, state.elapsed
        trainer.losses = list(losses) if losses is not None else []
        trainer._permutation = None if state.permutation is None else state.permutation.clone()
        return trainer

    def sampling_model(self) -> Denoiser:
        """The weights to sample with: the weight average when there is one. In eval mode."""
        return (self.ema_model or self.model).eval()
