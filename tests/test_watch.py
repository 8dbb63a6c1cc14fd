"""The page's preview policy (``runtime.watch.Timed``), driven by a fake clock: a preview every
0.3 s of the run's clock or every total_steps / 40 steps, whichever comes first, while previews
take at most 5% of the run's time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from diffusion.config import reference
from diffusion.monitoring import Preview, preview_affordable
from runtime import watch
from runtime.watch import PREVIEW_MAX_SHARE, Timed, Watch

CHUNK = 25  # steps between the worker's looks at the policy (runtime.worker.CHUNK_STEPS)


@dataclass
class FakeTrainer:
    step: int = 0
    model: object = None
    ema_model: object = None


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakePreviewer:
    """A preview that takes ``seconds`` of the clock."""

    def __init__(self, clock: Clock, seconds: float):
        self.clock, self.seconds = clock, seconds

    def preview(self, model, step=None) -> Preview:
        self.clock.now += self.seconds
        return Preview(step, np.zeros((2, 2), np.float32), 1.0, 1.0, self.seconds)


def simulate(total_steps: int, chunk_seconds: float, preview_seconds: float, until: int | None = None):
    """The worker's loop (``runtime.worker.train``): a chunk of steps, then a preview if due.
    Returns the steps previewed and, at each preview, (previews' seconds so far, the clock)."""
    key = reference().replace(train={"epochs": total_steps}).training
    clock, trainer = Clock(), FakeTrainer()
    w = Watch(key, trainer, Timed(clock))
    w.previewer = FakePreviewer(clock, preview_seconds)
    steps, budget = [], []
    while trainer.step < (until or total_steps):
        trainer.step += CHUNK
        clock.now += chunk_seconds
        if w.due():
            w.preview()
            steps.append(trainer.step)
            budget.append((w.spent, clock.now))
    return steps, budget


def test_a_run_at_full_speed_previews_only_within_its_share_of_the_time():
    """0.3 ms a step, 4 ms a preview: each preview waits until all of them fit in 5% of the
    clock: after k previews at step s, 4 (k + 1) ms <= 0.05 (0.3 s + 4 k + 4) ms, so the next comes
    at s >= 253.3 (k + 1): steps 525 and 775 after the first (the last, at the hand-back, is the
    worker's)."""
    steps, budget = simulate(1000, CHUNK * 3e-4, 4e-3)
    assert steps == [25, 525, 775]
    assert all(spent <= PREVIEW_MAX_SHARE * now * (1 + 1e-9) for spent, now in budget[1:])


def test_a_paced_run_previews_every_fortieth_of_its_steps():
    """A 1000-step run paced to last 5 s (a chunk every 0.125 s, mostly waiting): a preview at
    every total / 40 = 25 steps, sooner than every 0.3 s, and well within 5% of the time."""
    steps, budget = simulate(1000, 0.125, 4e-3)
    assert steps == list(range(25, 1001, 25))
    assert budget[-1][0] / budget[-1][1] < 0.04


def test_a_long_run_previews_every_0_3_s_of_its_clock():
    """20,000 steps of 2^-9 s (total / 40 = 500 steps apart): a preview once 0.3 s have passed
    since the last, i.e. every 7 chunks of 25 steps (6 take 0.293 s)."""
    steps, _ = simulate(20_000, CHUNK * 2.0**-9, 2.0**-8, until=2000)
    assert steps == list(range(25, 2001, 7 * CHUNK))


def test_no_preview_twice_at_one_step_and_none_for_the_command_s_policy():
    key = reference().replace(train={"epochs": 100}).training
    clock, trainer = Clock(), FakeTrainer(step=50)
    w = Watch(key, trainer, Timed(clock))
    w.previewer = FakePreviewer(clock, 1e-3)
    assert not w.due()  # no step since it began (a resumed run previewed where it stopped)
    trainer.step = 75
    assert w.due()
    fixed = Watch(key, trainer, watch.AtSteps.for_run(100))
    assert not fixed.due()


def test_preview_affordable_counts_the_next_preview_in_the_share():
    assert preview_affordable(0.0, 0.0, 0.0)  # the first preview: its cost not known yet
    # one 4 ms preview done, a second of 4 ms: 8 ms <= 0.05 (elapsed + 4 ms) once 156 ms have passed
    assert preview_affordable(0.004, 0.004, 0.160, max_share=0.05)
    assert not preview_affordable(0.004, 0.004, 0.150, max_share=0.05)
    with pytest.raises(ValueError, match="max_share"):
        preview_affordable(0.0, 0.0, 1.0, max_share=1.0)
    with pytest.raises(ValueError, match="must not be negative"):
        preview_affordable(-1.0, 0.0, 1.0)
