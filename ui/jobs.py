"""Training that survives Streamlit reruns: background jobs and a bounded store of finished runs.

Streamlit reruns the page script on every widget change, so training can't live in the script:
each run of a training configuration is a ``TrainingJob`` whose thread advances a resumable
``Trainer`` in short chunks and never touches Streamlit; the page polls ``snapshot()`` and draws.

- A job belongs to one browser session: another user's unfinished run never shows on your page.
- A finished run is stored under its ``TrainingKey`` and shared (same config + seed = same
  weights), in a bounded LRU; going back to an earlier setting shows it at once.
- At most ``max_running`` chunks train at the same time (the machine has 2 cores); a job whose
  page is gone (closed tab, no heartbeat) pauses itself instead of burning the CPU.
- A job that fails (non-finite loss) keeps its loss curve and error, and is never stored as
  finished.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from diffusion.config import SamplerConfig, TrainingKey
from diffusion.datasets import Dataset, make_dataset
from diffusion.denoiser import Denoiser
from diffusion.metrics import Evaluation, evaluate
from diffusion.samplers import Trajectory, sample_model
from diffusion.schedules import NoiseSchedule
from diffusion.training import Trainer, TrainingDiverged

Status = Literal["running", "paused", "finished", "failed"]

CHUNK_STEPS = 25  # optimizer steps between checks for pause / cancel / abandonment
ABANDON_AFTER_S = 120.0  # no heartbeat for this long: the page is gone, pause


@dataclass(frozen=True)
class RunSnapshot:
    """What the page draws about a run, copied out under no lock (cheap, immutable)."""

    status: Status
    step: int
    total_steps: int
    steps_per_epoch: int
    losses: np.ndarray  # (step,) one loss per optimizer step
    elapsed: float  # seconds of training (compute)
    error: str | None = None
    note: str | None = None  # e.g. why a job paused itself
    wall: float = 0.0  # seconds the job has been running, pacing included

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps

    @property
    def eta_seconds(self) -> float | None:
        if self.step == 0 or self.status == "finished":
            return None
        return max(self.wall, self.elapsed) / self.step * (self.total_steps - self.step)


class FinishedRun:
    """A trained model, its loss curve, and memoised samples per sampler setting."""

    MAX_SAMPLINGS = 8

    def __init__(self, key: TrainingKey, model: Denoiser, schedule: NoiseSchedule, losses, seconds: float,
                 source: str = "trained"):
        self.key = key
        self.source = source  # "trained" here, or "file:<digest>" for an uploaded model (part of cache keys)
        self.model = model.eval()
        self.schedule = schedule
        self.losses = np.asarray(losses, dtype=np.float64)
        self.losses.flags.writeable = False
        self.train_seconds = seconds
        self._samplings: OrderedDict[SamplerConfig, tuple[Trajectory, Evaluation | None]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_trainer(cls, trainer: Trainer) -> FinishedRun:
        return cls(trainer.config, trainer.sampling_model(), trainer.schedule, trainer.losses, trainer.elapsed)

    @property
    def dataset(self) -> Dataset:
        return make_dataset(self.key.data)

    def snapshot(self) -> RunSnapshot:
        steps = self.key.total_steps  # a model loaded from a file has no losses but was trained
        return RunSnapshot("finished", steps, steps, self.key.steps_per_epoch, self.losses, self.train_seconds)

    def sampled(self, sampler: SamplerConfig) -> tuple[Trajectory, Evaluation | None]:
        """The reverse trajectory for ``sampler`` and its metrics (None when not finite)."""
        with self._lock:  # one sampling at a time per run; a second caller waits for the memo
            if sampler in self._samplings:
                self._samplings.move_to_end(sampler)
                return self._samplings[sampler]
            trajectory = sample_model(self.model, self.schedule, sampler)
            usable = trajectory.finite and len(trajectory.samples) > 1
            scores = evaluate(trajectory.samples, self.dataset) if usable else None
            self._samplings[sampler] = (trajectory, scores)
            while len(self._samplings) > self.MAX_SAMPLINGS:
                self._samplings.popitem(last=False)
            return trajectory, scores


class TrainingJob:
    """One session's run of one training configuration: start, pause, step, resume."""

    def __init__(self, key: TrainingKey, on_finish: Callable[[TrainingJob], None], slots: threading.Semaphore):
        self.key = key
        self.trainer = Trainer(key)
        self.status: Status = "paused"
        self.error: str | None = None
        self.note: str | None = None
        self.last_seen = time.monotonic()
        self._on_finish = on_finish
        self._slots = slots
        self._trainer_lock = threading.Lock()  # the thread and step() never train at once
        self._pause = threading.Event()
        self._thread: threading.Thread | None = None
        self.is_watched: Callable[[], bool] = lambda: True
        self.pace_seconds = 0.0  # the page may ask a short run to last this long, to be watched
        self.resume_on_return = False  # paused because its page moved to other settings
        self.wall = 0.0

    def snapshot(self) -> RunSnapshot:
        trainer = self.trainer
        losses = np.array(trainer.losses, dtype=np.float64)  # a copy; the thread may append
        return RunSnapshot(self.status, len(losses), trainer.total_steps, trainer.steps_per_epoch,
                           losses, trainer.elapsed, self.error, self.note, self.wall)

    def heartbeat(self) -> None:
        self.last_seen = time.monotonic()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Train in the background until done, paused, failed or abandoned."""
        if self.status in ("finished", "failed") or self.alive:
            return
        self.heartbeat()
        self._pause.clear()
        self.status, self.note, self.resume_on_return = "running", None, False
        self._thread = threading.Thread(target=self._work, name=f"train-{id(self):x}", daemon=True)
        self._thread.start()

    def pause(self, note: str | None = None, wait: bool = True) -> None:
        """Ask the thread to stop after its current chunk; ``wait`` until it has."""
        if self.status != "running":
            return
        self.note = note
        self._pause.set()
        if wait and self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def step(self, steps: int) -> None:
        """Advance ``steps`` optimizer steps now, in the caller's thread (only while paused)."""
        if self.status != "paused":
            return
        with self._trainer_lock:
            self._advance(steps)

    def _advance(self, steps: int) -> None:
        try:
            for _ in self.trainer.run(steps):
                pass
        except TrainingDiverged as error:
            self.status, self.error = "failed", str(error)
            return
        except Exception as error:  # noqa: BLE001 - report, never kill the server
            self.status, self.error = "failed", f"training stopped: {error!r}"
            return
        if self.trainer.done:
            self.status = "finished"
            self._on_finish(self)

    def _work(self) -> None:
        started, wall_before = time.monotonic(), self.wall
        while self.status == "running":
            if self._pause.is_set():
                self.status = "paused"
            elif time.monotonic() - self.last_seen > ABANDON_AFTER_S or not self.is_watched():
                self.status, self.note = "paused", "paused because no page was showing it"
            elif not self._keep_pace(started, wall_before):
                with self._slots, self._trainer_lock:
                    if not self._pause.is_set():
                        self._advance(CHUNK_STEPS)
            self.wall = wall_before + time.monotonic() - started

    def _keep_pace(self, started: float, wall_before: float) -> bool:
        """Wait (not spin) while the next chunk would end ahead of ``pace_seconds`` x its share of
        the run, so that a short run lasts that long: the page asks for this so that its loss curve
        can be watched. It changes no result. True if it waited."""
        trainer = self.trainer
        due = self.pace_seconds * min(trainer.step + CHUNK_STEPS, trainer.total_steps) / trainer.total_steps
        ahead = due - (wall_before + time.monotonic() - started)
        if ahead <= 0:
            return False
        self._pause.wait(min(ahead, 0.5))
        return True


class RunRegistry:
    """Process-wide: finished runs (shared, LRU) and each session's unfinished jobs."""

    def __init__(self, max_finished: int = 16, max_jobs: int = 32, max_jobs_per_owner: int = 3, max_running: int = 2):
        self.max_finished = max_finished
        self.max_jobs = max_jobs
        self.max_jobs_per_owner = max_jobs_per_owner
        self._finished: OrderedDict[TrainingKey, FinishedRun] = OrderedDict()
        self._jobs: OrderedDict[tuple[str, TrainingKey], TrainingJob] = OrderedDict()
        self._slots = threading.BoundedSemaphore(max_running)
        self._lock = threading.RLock()

    # finished runs -------------------------------------------------------------------------
    def finished(self, key: TrainingKey) -> FinishedRun | None:
        with self._lock:
            run = self._finished.get(key)
            if run is not None:
                self._finished.move_to_end(key)
            return run

    def _store(self, job: TrainingJob) -> None:
        run = FinishedRun.from_trainer(job.trainer)
        with self._lock:
            self._finished[job.key] = run
            self._finished.move_to_end(job.key)
            while len(self._finished) > self.max_finished:
                self._finished.popitem(last=False)
            for owner_key, candidate in list(self._jobs.items()):
                if candidate is job:
                    del self._jobs[owner_key]

    # jobs ----------------------------------------------------------------------------------
    def job(self, owner: str, key: TrainingKey) -> TrainingJob | None:
        with self._lock:
            return self._jobs.get((owner, key))

    def jobs_of(self, owner: str) -> list[TrainingJob]:
        with self._lock:
            return [job for (who, _), job in self._jobs.items() if who == owner]

    def running(self) -> list[TrainingJob]:
        with self._lock:
            return [job for job in self._jobs.values() if job.status == "running"]

    def new_job(self, owner: str, key: TrainingKey) -> TrainingJob:
        """A fresh, paused job for (owner, key), replacing any earlier one; evicts old paused
        jobs beyond the caps (running ones are never evicted)."""
        job = TrainingJob(key, self._store, self._slots)
        with self._lock:
            old = self._jobs.pop((owner, key), None)
            self._jobs[(owner, key)] = job
            self._evict(owner)
        if old is not None:
            old.pause(wait=False)
        return job

    def focus(self, owner: str, key: TrainingKey) -> None:
        """The owner now looks at ``key``: pause the owner's other running jobs (kept, resumable)."""
        for job in self.jobs_of(owner):
            if job.key != key and job.status == "running":
                job.pause("paused when you changed the settings; go back to resume it", wait=False)
                job.resume_on_return = True

    def discard(self, owner: str, key: TrainingKey) -> None:
        with self._lock:
            job = self._jobs.pop((owner, key), None)
        if job is not None:
            job.pause(wait=False)

    def _evict(self, owner: str) -> None:
        def idle(item):  # paused, or asked to pause and finishing its chunk
            return item[1].status != "running" or item[1]._pause.is_set()

        mine = [item for item in self._jobs.items() if item[0][0] == owner and idle(item)]
        while len(mine) > self.max_jobs_per_owner:
            self._jobs.pop(mine.pop(0)[0])
        everyone = [item for item in self._jobs.items() if idle(item)]
        while len(self._jobs) > self.max_jobs and everyone:
            self._jobs.pop(everyone.pop(0)[0])

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"finished": len(self._finished), "jobs": len(self._jobs),
                    "running": sum(job.status == "running" for job in self._jobs.values())}
