"""What the server and a worker say to each other: frozen dataclasses, matched by type.

    server -> worker   Train      train a run from its state (or fresh) up to a step
                       Compute    run one task (sampling, field, drift, budget...) on given weights
                       Stop       hand the job back after the current chunk (or task row)
                       Quit       leave the loop
    worker -> server   Ready      the worker is up and idle
                       Progress   a training chunk's new losses, the run's times, what the watch saw
                       HandedBack a paused, preempted or Step-limited run's whole state
                       Finished   a run trained to its end, with its whole state
                       TaskProgress  a task's share done, with what it has so far
                       TaskDone   a task's result
                       Failed     a job that cannot go on, with a message for the page

Messages cross a socket as plain pickles (``pool.send``), so every field must pickle; tensors
travel inside ``TrainerState`` as CPU tensors. A worker keeps nothing between jobs: everything a
run needs is in its ``Train`` message, so a paused run resumes on any worker, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from diffusion.config import TrainingKey
from diffusion.monitoring import LossByTSnapshot, Preview
from diffusion.training import TrainerState


@dataclass(frozen=True)
class WatchUpdate:
    """What the watch of a training run reports besides its losses: a new preview (if one was
    taken since the last message) and the loss by noise level now."""

    preview: Preview | None
    loss_by_t: LossByTSnapshot


# --- server -> worker ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Train:
    job_id: int
    key: TrainingKey
    state: TrainerState | None  # None: fresh weights
    watch_state: dict | None  # the binned loss's state (``LossByT.state_dict``); None: fresh
    until_step: int  # hand the run back at this step ("Step +10 epochs") or at the end
    pace_seconds: float  # stretch a short run to last this long (0: as fast as it goes)
    wall: float  # seconds the run has trained or paced so far


@dataclass(frozen=True)
class Compute:
    job_id: int
    task: object  # a task of ``runtime.tasks`` (frozen, hashable: it is also the result's cache key)
    key: TrainingKey | None  # the run's; None for a task that needs no model
    weights: dict | None  # the model's sampling weights; None for a task that needs no model


@dataclass(frozen=True)
class Stop:
    job_id: int


@dataclass(frozen=True)
class Quit:
    pass


# --- worker -> server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    pass


@dataclass(frozen=True)
class Progress:
    job_id: int
    step: int  # optimizer steps done
    new_losses: np.ndarray  # the losses of steps step - len(new_losses) + 1 .. step
    elapsed: float  # seconds of training arithmetic
    wall: float  # seconds of training and pacing
    watch: WatchUpdate


@dataclass(frozen=True)
class _RunBack:
    """A run coming back from its worker, with everything to resume or keep it."""

    job_id: int
    state: TrainerState
    watch_state: dict  # the binned loss's state (``LossByT.state_dict``)
    watch: WatchUpdate
    wall: float


@dataclass(frozen=True)
class HandedBack(_RunBack):
    """The run stopped before its end (a Stop, or ``until_step``)."""


@dataclass(frozen=True)
class Finished(_RunBack):
    """The run trained to its end."""


@dataclass(frozen=True)
class TaskProgress:
    job_id: int
    done: int
    total: int
    text: str  # what was just done, for a progress bar
    partial: object = None  # what the task has so far (e.g. the budget's rows), if it shows early


@dataclass(frozen=True)
class TaskDone:
    job_id: int
    result: object
    seconds: float


@dataclass(frozen=True)
class Failed:
    job_id: int
    message: str
    step: int | None = None  # the step a training run failed at, when known
    wall: float | None = None  # None when the worker could not tell (a crash): the last known stands


ToWorker = Train | Compute | Stop | Quit
FromWorker = Ready | Progress | HandedBack | Finished | TaskProgress | TaskDone | Failed
