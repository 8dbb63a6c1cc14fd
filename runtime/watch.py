"""Watching a run while it trains, one mechanism for the page and the command: the loss binned by
noise level (every step) and previews of the live weights, taken when a policy says so.

    Timed      the page's: a preview every ``PREVIEW_EVERY_S`` of the run's clock or every
               total_steps / ``PREVIEWS_PER_RUN`` steps, whichever comes first, but only while
               previews take at most ``PREVIEW_MAX_SHARE`` of the run's time
               (``monitoring.preview_affordable``), and at every hand-back
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
    preview_affordable,
    preview_steps,
)
from diffusion.objectives import path_of
from diffusion.training import Trainer, TrainRecord

from .messages import WatchUpdate

PREVIEW_EVERY_S = 0.3  # a live preview this often (the run's clock) while a run trains
PREVIEWS_PER_RUN = 40  # ... or every total_steps / 40 steps, whichever comes first
PREVIEW_MAX_SHARE = 0.05  # ... but previews never take more than this share of the run's time
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
    """Previews by the run's clock and its steps (the page's). ``clock``: the run's time in seconds
    (a test gives its own)."""

    clock: Callable[[], float] = time.monotonic
    every_s: float = PREVIEW_EVERY_S
    per_run: int = PREVIEWS_PER_RUN
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
        self.preview_seconds = 0.0  # the last preview's, what the next one is expected to take
        self.spent = 0.0  # seconds of all previews of this watch
        self.every_steps = math.ceil(key.total_steps / policy.per_run) if isinstance(policy, Timed) else None
        self.started = policy.clock() if isinstance(policy, Timed) else 0.0
        self.pending: Preview | None = None

    def record(self, record: TrainRecord) -> None:
        """Feed one optimizer step; with ``AtSteps``, preview at once when the step is one of them."""
        self.loss_by_t.update(record.step, record.t, record.sample_losses)
        if isinstance(self.policy, AtSteps) and record.step in self.policy.steps:
            self.preview()

    def due(self) -> bool:
        """A timed preview is due: ``every_s`` or ``every_steps`` since the last one, whichever
        comes first, if previews stay within ``max_share`` of the time since this watch began."""
        policy, trainer = self.policy, self.trainer
        if not isinstance(policy, Timed) or trainer.step == self.last_preview_step:
            return False
        now = policy.clock()
        if now - self.last_preview_at < policy.every_s and trainer.step - self.last_preview_step < self.every_steps:
            return False
        return preview_affordable(self.spent, self.preview_seconds, now - self.started, max_share=policy.max_share)

    def preview(self) -> None:
        """Preview the live weights (the EMA when there is one) now."""
        preview = self.previewer.preview(live_model(self.trainer), step=self.trainer.step)
        self.preview_seconds = preview.seconds
        self.spent += preview.seconds
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
