"""One run's state on the server, and the only place it changes: ``RunState``'s transitions.

    paused ──start──▶ queued ──assign──▶ running ──ask_stop──▶ stopping
      ▲  ▲               │                 │  │                  │
      │  └────pause──────┘                 │  └─Finished─▶ finished (also from stopping)
      │                                    ├─HandedBack at until_step─▶ paused
      └──────────HandedBack (pause, discard)───────────────────┤
                          queued ◀──HandedBack (preempt)───────┘
    running / stopping ──Failed or the worker died──▶ failed

A transition not in ``ALLOWED`` raises ``IllegalTransition``: a late or duplicated message can't
silently move a run backwards. The state holds the run's one copy of its losses (filled by the
workers' progress messages, never reallocated), the trainer's and the watch's state while no
worker holds the run, and what the page shows about it. Tasks (``TaskState``) are the same idea
for a computation on a finished model.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from diffusion.config import TrainingKey
from diffusion.monitoring import LossByTSnapshot, Preview
from diffusion.training import TrainerState

from .messages import WatchUpdate

Status = Literal["queued", "running", "stopping", "paused", "finished", "failed", "discarded"]
StopReason = Literal["pause", "preempt", "discard"]

ALLOWED: dict[Status, frozenset[Status]] = {
    "paused": frozenset({"queued", "discarded"}),
    "queued": frozenset({"running", "paused", "discarded"}),
    "running": frozenset({"stopping", "paused", "queued", "finished", "failed"}),
    "stopping": frozenset({"paused", "queued", "finished", "failed", "discarded"}),
    "finished": frozenset(),
    "failed": frozenset({"discarded"}),
    "discarded": frozenset(),
}

_STRENGTH: dict[StopReason | None, int] = {None: 0, "preempt": 1, "pause": 2, "discard": 3}
_ids = itertools.count(1)


class IllegalTransition(RuntimeError):
    pass


@dataclass
class Watched:
    """What the workers reported about a run besides its losses: its previews and its loss by
    noise level (snapshots copy them out)."""

    preview: Preview | None = None
    previews: list[tuple[int, float, float, float]] = field(default_factory=list)  # step, distance, floor, seconds
    loss_by_t: LossByTSnapshot | None = None

    def add(self, update: WatchUpdate) -> None:
        if update.preview is not None:
            p = update.preview
            self.preview = p
            self.previews.append((p.step, p.energy_distance, p.floor, p.seconds))
        self.loss_by_t = update.loss_by_t

    def previews_array(self) -> np.ndarray:
        out = np.array(self.previews, dtype=np.float64).reshape(-1, 4)
        out.flags.writeable = False
        return out


@dataclass(eq=False)
class RunState:
    """A session's run of one training configuration, from fresh weights to finished."""

    owner: str
    key: TrainingKey
    id: int = field(default_factory=lambda: next(_ids))
    status: Status = "paused"
    stop_reason: StopReason | None = None  # while stopping: why
    until_step: int = 0  # a worker hands the run back here ("Step +10 epochs") or at the end
    step: int = 0
    elapsed: float = 0.0  # seconds of training arithmetic
    wall: float = 0.0  # seconds trained or paced, waits in the queue excluded
    losses: np.ndarray = field(init=False)  # (total_steps,) filled up to step: the run's one copy
    watched: Watched = field(default_factory=Watched)
    trainer_state: TrainerState | None = None  # while no worker holds the run (None: fresh weights)
    watch_state: dict | None = None
    worker: object | None = None  # the worker holding it (running, stopping)
    slice_started: float = 0.0
    last_seen: float = 0.0
    pace_seconds: float = 0.0
    note: str | None = None  # why it paused itself, for the page
    error: str | None = None
    resume_on_return: bool = False  # paused because its page moved to other settings

    def __post_init__(self):
        self.losses = np.zeros(self.key.total_steps, dtype=np.float64)
        self.until_step = self.key.total_steps

    def _to(self, status: Status) -> None:
        if status not in ALLOWED[self.status]:
            raise IllegalTransition(f"run {self.id}: {self.status} -> {status}")
        self.status = status

    @property
    def active(self) -> bool:
        """Training or waiting to."""
        return self.status in ("queued", "running", "stopping")

    @property
    def kept(self) -> bool:
        """Not thrown away (nor being, while its worker hands it back)."""
        return self.status != "discarded" and self.stop_reason != "discard"

    # --- the page's requests ---
    def queue(self, until_step: int, now: float) -> None:
        self._to("queued")
        self.until_step = min(until_step, self.key.total_steps)
        self.note, self.resume_on_return, self.last_seen = None, False, now

    def unqueue(self, note: str | None) -> None:
        self._to("paused")
        self.note = note

    def ask_stop(self, reason: StopReason, note: str | None = None) -> bool:
        """Ask the worker to hand the run back; True if a Stop must be sent now (not asked before).
        Asked again, the stronger reason wins: discard over pause over preempt."""
        if self.status == "stopping":
            if _STRENGTH[reason] > _STRENGTH[self.stop_reason]:
                self.stop_reason, self.note = reason, note
            return False
        self._to("stopping")
        self.stop_reason, self.note = reason, note
        return True

    def discard(self) -> None:
        self._to("discarded")

    # --- the scheduler ---
    def assign(self, worker: object, now: float) -> None:
        self._to("running")
        self.worker, self.slice_started, self.stop_reason = worker, now, None

    def unassign(self) -> None:
        """The worker it was given could not take it (gone before the Train message reached it)."""
        self._to("queued")
        self.worker = None

    # --- the worker's reports ---
    def progressed(self, step: int, new_losses: np.ndarray, elapsed: float, wall: float, update: WatchUpdate) -> None:
        self.losses[step - len(new_losses) : step] = new_losses
        self.step, self.elapsed, self.wall = step, elapsed, wall
        self.watched.add(update)

    def handed_back(self, state: TrainerState, watch_state: dict, update: WatchUpdate, wall: float) -> None:
        self.trainer_state, self.watch_state, self.wall, self.worker = state, watch_state, wall, None
        self.step, self.elapsed = state.step, state.elapsed
        self.watched.add(update)
        reason, self.stop_reason = self.stop_reason, None
        self._to({"preempt": "queued", "discard": "discarded"}.get(reason, "paused"))

    def finished(self, state: TrainerState, watch_state: dict, update: WatchUpdate, wall: float) -> None:
        self.trainer_state, self.watch_state, self.wall, self.worker = state, watch_state, wall, None
        self.step, self.elapsed, self.stop_reason = state.step, state.elapsed, None
        self.watched.add(update)
        self._to("finished")

    def failed(self, message: str, wall: float | None, step: int | None = None) -> None:
        """Failed at ``step`` (its last good step, when the worker knows it)."""
        self.worker, self.stop_reason, self.error = None, None, message
        if step is not None and step >= 0:
            self.step = max(self.step, step)
        if wall is not None:
            self.wall = wall
        self._to("failed")


TaskStatus = Literal["queued", "running", "done", "failed"]


@dataclass(eq=False)
class TaskState:
    """One computation on a finished run's weights (``runtime.tasks``), shared by every page that
    asks for it: its progress while it runs, then its result or error."""

    key: TrainingKey | None  # None for a task that needs no model
    source: str
    task: object
    weights: dict | None = field(repr=False, default=None)  # dropped once the task is done
    id: int = field(default_factory=lambda: next(_ids))
    status: TaskStatus = "queued"
    worker: object | None = None
    done: int = 0
    total: int = 0
    text: str = ""
    partial: object = None
    result: object = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ready(self) -> bool:
        return self.status in ("done", "failed")

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0
