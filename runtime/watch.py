"""Watching a run while it trains, one mechanism for the page and the command: the loss binned by
noise level (every step) and previews of the live weights, taken when a policy says so.

    Timed      the page's: a preview every ``PREVIEW_EVERY_S`` of the run's clock, but never so
               often that previews take more than ``PREVIEW_MAX_SHARE`` of the training time
               (``monitoring.preview_interval``), and at every hand-back
    AtSteps    the command's: at fixed optimizer steps (``monitoring.preview_steps``), so the same
               run gets the same previews on any machine

Previews never change the trained weights (see ``monitoring.Previewer``).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from diffusion.config import TrainingKey
from diffusion.monitoring import (
    LOSS_BINS,
    PREVIEW_POINTS,
    PREVIEW_STEPS,
    LossByT,
    Preview,
    Previewer,
    live_model,
    preview_interval,
    preview_steps,
)
from diffusion.objectives import path_of
from diffusion.training import Trainer, TrainRecord

from .messages import WatchUpdate

PREVIEW_EVERY_S = 0.3  # a live preview this often (the run's clock) while a run trains
PREVIEW_MAX_SHARE = 0.1  # ... but previews never take more than this share of the training time
NUM_PREVIEWS = 20  # the command's previews: at most this many, at fixed steps


def loss_bins(num_timesteps: int) -> int:
    """Noise-level bins of the loss by t: ``LOSS_BINS``, or T when T is smaller."""
    return min(LOSS_BINS, num_timesteps)


@functools.lru_cache(maxsize=64)  # a few kB each; a worker takes turns with many runs
def previewer_for(key: TrainingKey) -> Previewer:
    """One previewer per training configuration: the same x_T and noise for every preview of a
    run, whichever process takes it (seeded with the run's training seed)."""
    schedule = path_of(key.schedule)
    return Previewer(schedule, key.data, seed=key.train.seed, num_points=PREVIEW_POINTS,
                     sample_steps=min(PREVIEW_STEPS, key.schedule.num_timesteps))


@dataclass(frozen=True)
class Timed:
    """Previews by the run's clock (the page's)."""

    clock: Callable[[], float] = time.monotonic
    every_s: float = PREVIEW_EVERY_S
    max_share: float = PREVIEW_MAX_SHARE


@dataclass(frozen=True)
class AtSteps:
    """Previews at fixed optimizer steps (the command's)."""

    steps: frozenset[int]

    @classmethod
    def for_run(cls, total_steps: int, count: int = NUM_PREVIEWS) -> AtSteps:
        return cls(frozenset(preview_steps(total_steps, count)))


class Watch:
    """The loss by noise level and the previews of one run, beside its trainer."""

    def __init__(self, key: TrainingKey, trainer: Trainer, policy: Timed | AtSteps, watch_state: dict | None = None):
        self.trainer = trainer
        self.policy = policy
        self.loss_by_t = (LossByT.from_state_dict(watch_state) if watch_state is not None
                          else LossByT.for_run(key.schedule.num_timesteps, key.total_steps,
                                               loss_bins(key.schedule.num_timesteps)))
        self.previewer = previewer_for(key)
        self.previews: list[Preview] = []  # with AtSteps: every preview, for the command's previews.csv
        self.last_preview_at = -math.inf
        self.last_preview_step = trainer.step
        self.preview_seconds = 0.0
        self.pending: Preview | None = None

    def record(self, record: TrainRecord) -> None:
        """Feed one optimizer step; with ``AtSteps``, preview at once when the step is one of them."""
        self.loss_by_t.update(record.step, record.t, record.sample_losses)
        if isinstance(self.policy, AtSteps) and record.step in self.policy.steps:
            self.preview()

    def due(self) -> bool:
        """A timed preview is due: ``every_s`` since the last one, and enough steps since that
        a preview costs at most ``max_share`` of the training time."""
        policy, trainer = self.policy, self.trainer
        if not isinstance(policy, Timed):
            return False
        if trainer.step == self.last_preview_step or policy.clock() - self.last_preview_at < policy.every_s:
            return False
        step_seconds = trainer.elapsed / max(trainer.step, 1)
        if step_seconds <= 0 or self.preview_seconds <= 0:
            return True
        least = preview_interval(self.preview_seconds, step_seconds, max_fraction=policy.max_share)
        return trainer.step - self.last_preview_step >= least

    def preview(self) -> None:
        """Preview the live weights (the EMA when there is one) now."""
        preview = self.previewer.preview(live_model(self.trainer), step=self.trainer.step)
        self.preview_seconds = preview.seconds
        self.last_preview_step = self.trainer.step
        if isinstance(self.policy, Timed):
            self.last_preview_at = self.policy.clock()
        if isinstance(self.policy, AtSteps):
            self.previews.append(preview)  # the command writes them all; the page's go out one by one
        self.pending = preview

    def preview_if_stale(self) -> None:
        """At a hand-back: preview the weights it stopped with, unless that was just done."""
        if self.last_preview_step != self.trainer.step:
            self.preview()

    def update(self) -> WatchUpdate:
        """What to report now (the pending preview goes out once)."""
        update = WatchUpdate(self.pending, self.loss_by_t.snapshot())
        self.pending = None
        return update
