"""Training that survives Streamlit reruns: jobs trained by worker processes, a fair queue, and a
bounded store of finished runs. No Streamlit here.

Streamlit reruns the page script on every widget change, so training can't live in the script;
and threads in the server's process stall it (see ``ui/workers.py``). So each run of a training
configuration is a ``TrainingJob`` whose arithmetic happens in a worker process; the server keeps
its record (status, losses, and while it is paused, its whole ``TrainerState``) and the page reads
``snapshot()``, which never waits on a worker.

- A job belongs to one browser session: another user's unfinished run never shows on your page.
- A finished run is stored under its ``TrainingKey`` and shared (same config + seed = same
  weights), in a bounded LRU; going back to an earlier setting shows it at once.
- Runs wanting to train share the workers fairly: one waiting for a worker goes to the back of the
  queue, and a run that has had a worker for ``slice_seconds`` while others wait hands it back
  (its state travels with it) and queues again. No run starves.
- A paused job holds no worker. A job whose page is gone (closed tab, no heartbeat) pauses itself.
- A job that fails (non-finite loss, or its worker died) keeps its loss curve and error, and is
  never stored as finished.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

from diffusion.config import SamplerConfig, TrainingKey
from diffusion.datasets import Dataset, make_dataset
from diffusion.denoiser import Denoiser
from diffusion.metrics import Evaluation, evaluate
from diffusion.monitoring import LossByTSnapshot, Preview
from diffusion.samplers import Trajectory, sample_model, training_salt
from diffusion.schedules import NoiseSchedule
from diffusion.training import TrainerState
from ui.workers import WatchUpdate, Worker, WorkerPool

Status = Literal["queued", "running", "paused", "finished", "failed"]

ABANDON_AFTER_S = 120.0  # no heartbeat for this long: the page is gone, pause
SLICE_SECONDS = 3.0  # a run keeps a worker this long while others wait for one
TICK_SECONDS = 0.1  # how often the scheduler looks at slices and abandoned pages


@dataclass(frozen=True)
class RunSnapshot:
    """What the page draws about a run: immutable, taken without waiting on any worker."""

    status: Status
    step: int
    total_steps: int
    steps_per_epoch: int
    losses: np.ndarray  # (step,) one loss per optimizer step, read-only
    elapsed: float  # seconds of training (compute)
    error: str | None = None
    note: str | None = None  # e.g. why a job paused itself
    wall: float = 0.0  # seconds the job has been training or pacing, waits in the queue excluded
    queue_position: int | None = None  # 1 = next to get a worker, while queued
    eta_seconds: float | None = None
    preview: Preview | None = None  # the latest live preview
    previews: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # (k, 4): step, energy distance, floor, seconds
    loss_by_t: LossByTSnapshot | None = None

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps

    @property
    def active(self) -> bool:
        """Training or waiting to: the page keeps polling."""
        return self.status in ("running", "queued")


class Watched:
    """What the workers reported about a run besides its losses: its previews and its loss by
    noise level (mutable, under the registry's lock; snapshots copy it out)."""

    def __init__(self):
        self.preview: Preview | None = None
        self.previews: list[tuple[int, float, float, float]] = []
        self.loss_by_t: LossByTSnapshot | None = None
        self.state: dict | None = None  # the binned loss's state while no worker holds the run

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


class FinishedRun:
    """A trained model, its loss curve, and memoised samples per sampler setting."""

    MAX_SAMPLINGS = 8

    def __init__(self, key: TrainingKey, model: Denoiser, schedule: NoiseSchedule, losses, seconds: float,
                 source: str = "trained", watched: Watched | None = None):
        self.key = key
        self.watched = watched or Watched()
        self.source = source  # "trained" here, or "file:<digest>" for an uploaded model (part of cache keys)
        self.model = model.eval()
        self.schedule = schedule
        self.losses = np.asarray(losses, dtype=np.float64)
        self.losses.flags.writeable = False
        self.train_seconds = seconds
        self._samplings: OrderedDict[SamplerConfig, tuple[Trajectory, Evaluation | None]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def from_state(cls, key: TrainingKey, state: TrainerState, watched: Watched | None = None) -> FinishedRun:
        model = Denoiser(key.denoiser, key.schedule.num_timesteps, torch.Generator().manual_seed(0),
                         objective=key.schedule.objective)
        model.load_state_dict(state.sampling_weights())
        return cls(key, model, NoiseSchedule.from_config(key.schedule), state.losses, state.elapsed,
                   watched=watched)

    @property
    def dataset(self) -> Dataset:
        return make_dataset(self.key.data)

    def snapshot(self) -> RunSnapshot:
        steps = self.key.total_steps  # a model loaded from a file has no losses but was trained
        w = self.watched
        return RunSnapshot("finished", steps, steps, self.key.steps_per_epoch, self.losses, self.train_seconds,
                           preview=w.preview, previews=w.previews_array(), loss_by_t=w.loss_by_t)

    def sampled(self, sampler: SamplerConfig) -> tuple[Trajectory, Evaluation | None]:
        """The reverse trajectory for ``sampler`` and its metrics (None when not finite)."""
        with self._lock:  # one sampling at a time per run; a second caller waits for the memo
            if sampler in self._samplings:
                self._samplings.move_to_end(sampler)
                return self._samplings[sampler]
            trajectory = sample_model(self.model, self.schedule, sampler, run_salt=training_salt(self.key))
            usable = trajectory.finite and len(trajectory.samples) > 1
            scores = evaluate(trajectory.samples, self.dataset) if usable else None
            self._samplings[sampler] = (trajectory, scores)
            while len(self._samplings) > self.MAX_SAMPLINGS:
                self._samplings.popitem(last=False)
            return trajectory, scores


class TrainingJob:
    """One session's run of one training configuration. Its methods ask the registry, which
    decides when a worker trains it; they never wait on a worker (but ``pause(wait=True)``)."""

    def __init__(self, registry: RunRegistry, owner: str, key: TrainingKey):
        self.id = next(_job_ids)
        self.registry = registry
        self.owner = owner
        self.key = key
        self.status: Status = "paused"
        self.step = 0
        self.total_steps = key.total_steps
        self.steps_per_epoch = key.steps_per_epoch
        self.losses = np.zeros(key.total_steps, dtype=np.float64)  # filled up to step; never reallocated
        self.elapsed = 0.0
        self.wall = 0.0
        self.error: str | None = None
        self.note: str | None = None
        self.state: TrainerState | None = None  # while no worker holds the run
        self.watched = Watched()
        self.until_step = key.total_steps  # "Step +10 epochs" stops earlier
        self.last_seen = registry.clock()
        self.is_watched: Callable[[], bool] = lambda: True
        self.pace_seconds = 0.0  # the page may ask a short run to last this long, to be watched
        self.resume_on_return = False  # paused because its page moved to other settings
        self.worker: Worker | None = None
        self.slice_started = 0.0
        self.stop_reason: str | None = None  # why a stop was asked: "pause", "preempt", "discard"
        self.changed = threading.Condition(registry._lock)

    def snapshot(self) -> RunSnapshot:
        with self.registry._lock:
            losses = self.losses[: self.step]
            losses.flags.writeable = False  # a view: later steps only write beyond it
            position = self.registry._queue_position(self)
            w = self.watched
            return RunSnapshot(self.status, self.step, self.total_steps, self.steps_per_epoch, losses,
                               self.elapsed, self.error, self.note, self.wall, position,
                               self.registry._eta(self, position), w.preview, w.previews_array(), w.loss_by_t)

    def heartbeat(self) -> None:
        self.last_seen = self.registry.clock()

    def wait_for_first_steps(self, timeout: float) -> bool:
        """While the run trains but has reported no step yet, wait up to ``timeout`` seconds for its
        first progress (a worker reports its first chunk a few ms after it starts). Returns whether
        it has steps. So a page that starts a run can draw its first loss points in that same script
        run, instead of an empty chart and the points one poll later."""
        with self.registry._lock:
            return self.changed.wait_for(lambda: self.step > 0 or self.status != "running", timeout) and self.step > 0

    def start(self) -> None:
        """Train in a worker until done, paused, failed or abandoned."""
        self.registry.start(self, self.total_steps)

    def advance(self, steps: int) -> None:
        """Train ``steps`` more optimizer steps, then pause (only while paused)."""
        if self.status == "paused":
            self.registry.start(self, min(self.step + steps, self.total_steps))

    def pause(self, note: str | None = None, wait: bool = True, timeout: float = 10.0) -> None:
        """Stop after the current chunk and keep everything; ``wait`` until the state is back."""
        self.registry.pause(self, note, wait, timeout)


_job_ids = itertools.count(1)


class RunRegistry:
    """Process-wide: finished runs (shared, LRU), each session's unfinished jobs, and the queue
    of jobs waiting for a worker of ``pool``."""

    def __init__(self, pool: WorkerPool, max_finished: int = 16, max_jobs: int = 32, max_jobs_per_owner: int = 3,
                 slice_seconds: float = SLICE_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.pool = pool
        self.max_finished = max_finished
        self.max_jobs = max_jobs
        self.max_jobs_per_owner = max_jobs_per_owner
        self.slice_seconds = slice_seconds
        self.clock = clock
        self._lock = threading.RLock()
        self._finished: OrderedDict[TrainingKey, FinishedRun] = OrderedDict()
        self._jobs: OrderedDict[tuple[str, TrainingKey], TrainingJob] = OrderedDict()
        self._by_id: dict[int, TrainingJob] = {}
        self._queue: deque[TrainingJob] = deque()
        self._closed = False
        pool.on_message = self._on_message
        pool.on_exit = self._on_worker_exit
        self._ticker = threading.Thread(target=self._tick_forever, name="run-scheduler", daemon=True)
        self._ticker.start()

    # finished runs -------------------------------------------------------------------------
    def finished(self, key: TrainingKey) -> FinishedRun | None:
        with self._lock:
            run = self._finished.get(key)
            if run is not None:
                self._finished.move_to_end(key)
            return run

    def _store(self, job: TrainingJob, state: TrainerState) -> None:
        run = FinishedRun.from_state(job.key, state, job.watched)
        self._finished[job.key] = run
        self._finished.move_to_end(job.key)
        while len(self._finished) > self.max_finished:
            self._finished.popitem(last=False)
        self._forget(job)

    # jobs ----------------------------------------------------------------------------------
    def job(self, owner: str, key: TrainingKey) -> TrainingJob | None:
        with self._lock:
            return self._jobs.get((owner, key))

    def jobs_of(self, owner: str) -> list[TrainingJob]:
        with self._lock:
            return [job for (who, _), job in self._jobs.items() if who == owner]

    def running(self) -> list[TrainingJob]:
        """Jobs training or waiting to."""
        with self._lock:
            return [job for job in self._jobs.values() if job.status in ("running", "queued")]

    def new_job(self, owner: str, key: TrainingKey) -> TrainingJob:
        """A fresh, paused job for (owner, key), replacing any earlier one; evicts old paused
        jobs beyond the caps (running ones are never evicted)."""
        with self._lock:
            old = self._jobs.pop((owner, key), None)
            if old is not None:
                self._drop(old)
            job = TrainingJob(self, owner, key)
            self._jobs[(owner, key)] = job
            self._by_id[job.id] = job
            self._evict(owner)
            return job

    def focus(self, owner: str, key: TrainingKey) -> None:
        """The owner now looks at ``key``: pause the owner's other active jobs (kept, resumable)."""
        for job in self.jobs_of(owner):
            if job.key != key and job.status in ("running", "queued"):
                job.pause("paused when you changed the settings; go back to resume it", wait=False)
                job.resume_on_return = True

    def discard(self, owner: str, key: TrainingKey) -> None:
        with self._lock:
            job = self._jobs.pop((owner, key), None)
            if job is not None:
                self._drop(job)

    def _drop(self, job: TrainingJob) -> None:
        """Forget ``job``; a worker training it hands it back and the result is thrown away."""
        if job in self._queue:
            self._queue.remove(job)
        if job.worker is not None:
            job.stop_reason = "discard"
            job.worker.send(("stop", job.id))
        elif job.status in ("queued", "running"):
            job.status = "paused"
        job.changed.notify_all()
        if job.worker is None:
            self._by_id.pop(job.id, None)

    def _forget(self, job: TrainingJob) -> None:
        for owner_key, candidate in list(self._jobs.items()):
            if candidate is job:
                del self._jobs[owner_key]
        self._by_id.pop(job.id, None)

    def _evict(self, owner: str) -> None:
        def idle(job):
            return job.status in ("paused", "failed") and job.worker is None

        mine = [(k, j) for k, j in self._jobs.items() if k[0] == owner and idle(j)]
        while len(mine) > self.max_jobs_per_owner:
            key, job = mine.pop(0)
            del self._jobs[key]
            self._by_id.pop(job.id, None)
        everyone = [(k, j) for k, j in self._jobs.items() if idle(j)]
        while len(self._jobs) > self.max_jobs and everyone:
            key, job = everyone.pop(0)
            del self._jobs[key]
            self._by_id.pop(job.id, None)

    # scheduling ---------------------------------------------------------------------------
    def start(self, job: TrainingJob, until_step: int) -> None:
        with self._lock:
            if self._closed or job.status in ("finished", "failed", "running", "queued"):
                return
            job.heartbeat()
            job.until_step = until_step
            job.status, job.note, job.resume_on_return = "queued", None, False
            self._queue.append(job)
            self._dispatch()

    def pause(self, job: TrainingJob, note: str | None, wait: bool, timeout: float) -> None:
        with self._lock:
            if job.status == "queued":
                self._queue.remove(job)
                job.status, job.note = "paused", note
                return
            if job.status != "running" or job.worker is None:
                return
            already_asked = job.stop_reason is not None
            job.note, job.stop_reason = note, "pause"
            if not already_asked:
                job.worker.send(("stop", job.id))
            if wait:
                job.changed.wait_for(lambda: job.worker is None, timeout)

    def _dispatch(self) -> None:
        """Give idle workers to the jobs at the front of the queue (under the lock)."""
        for worker in self.pool.idle():
            if not self._queue:
                return
            job = self._queue.popleft()
            worker.job_id, job.worker = job.id, worker
            job.status, job.slice_started, job.stop_reason = "running", self.clock(), None
            pace = job.pace_seconds
            message = ("train", job.id, job.key, job.state, job.until_step, pace, job.wall, job.watched.state)
            if not worker.send(message):
                worker.job_id, job.worker, job.status = None, None, "queued"
                self._queue.appendleft(job)
                return
            job.state = None  # the worker holds the run now

    def _queue_position(self, job: TrainingJob) -> int | None:
        if job.status != "queued":
            return None
        return list(self._queue).index(job) + 1 if job in self._queue else None

    def _eta(self, job: TrainingJob, position: int | None) -> float | None:
        """Seconds to the end: remaining steps at this run's own measured rate, times the share
        of a worker it gets while more runs than workers want one, plus its wait for the first
        worker where it has never run."""
        if job.status not in ("running", "queued") or job.step == 0:
            return None
        rate = job.step / max(job.wall, job.elapsed, 1e-9)
        wanting = sum(1 for j in self._by_id.values() if j.status in ("running", "queued"))
        share = min(1.0, self.pool.size / max(wanting, 1))
        return (job.until_step - job.step) / rate / share

    # messages from workers (reader threads) -------------------------------------------------
    def _on_message(self, worker: Worker, message: tuple) -> None:
        kind = message[0]
        if kind == "ready":
            with self._lock:
                self._dispatch()
            return
        with self._lock:
            job = self._by_id.get(message[1])
            if job is None or job.worker is not worker:
                if kind != "progress":  # a run that ended: free the worker
                    worker.job_id = None
                    self._dispatch()
                return
            if kind == "progress":
                _, _, step, new_losses, elapsed, wall, update = message
                job.losses[step - len(new_losses) : step] = new_losses
                job.step, job.elapsed, job.wall = step, elapsed, wall
                job.watched.add(update)
                job.changed.notify_all()  # a page waiting for a new run's first points
                return
            worker.job_id, job.worker = None, None
            job.wall = message[-1]
            if kind == "failed":
                job.status, job.error = "failed", message[2]
            elif kind == "finished":
                job.state, job.status = message[2], "finished"
                job.step = message[2].step
                job.watched.state = message[3]
                job.watched.add(message[4])
                self._store(job, message[2])
            else:  # stopped: paused, preempted, discarded, or at until_step
                job.state = message[2]
                job.watched.state = message[3]
                job.watched.add(message[4])
                if job.stop_reason == "preempt":
                    job.status = "queued"
                    self._queue.append(job)
                elif job.stop_reason == "discard":
                    job.status = "paused"
                    self._by_id.pop(job.id, None)
                else:
                    job.status = "paused"
                    self._evict(job.owner)  # it counts against its owner's cap of paused runs now
            job.changed.notify_all()
            self._dispatch()

    def _on_worker_exit(self, worker: Worker, code: int | None) -> None:
        with self._lock:
            job = self._by_id.get(worker.job_id) if worker.job_id is not None else None
            worker.job_id = None
            if job is not None and job.worker is worker:
                job.worker = None
                job.status = "failed"
                job.error = (f"the training process stopped unexpectedly (exit code {code}); this run's progress "
                             "since it last paused is lost. Press Reset to train it again.")
                job.changed.notify_all()

    # the scheduler's clock ---------------------------------------------------------------------
    def _tick_forever(self) -> None:
        while not self._closed:
            time.sleep(TICK_SECONDS)
            self.tick()

    def tick(self) -> None:
        """Pause runs whose page is gone; hand back the worker of a run whose slice is over while
        others wait; start waiting runs on free workers."""
        now = self.clock()
        with self._lock:
            for job in list(self._by_id.values()):
                if job.status not in ("running", "queued"):
                    continue
                if now - job.last_seen > ABANDON_AFTER_S or not job.is_watched():
                    self.pause(job, "paused because no page was showing it", wait=False, timeout=0)
                    job.resume_on_return = False
                elif (self._queue and job.worker is not None and job.stop_reason is None
                      and now - job.slice_started > self.slice_seconds):
                    job.stop_reason = "preempt"
                    job.worker.send(("stop", job.id))
            self._dispatch()

    def close(self) -> None:
        """Stop scheduling and hand back every worker; the pool itself lives on (``shared_pool``)."""
        with self._lock:
            self._closed = True
            for job in list(self._by_id.values()):
                if job.worker is not None:
                    job.stop_reason = "discard"
                    job.worker.send(("stop", job.id))
            self._queue.clear()

    def active_count(self) -> int:
        """Runs training or waiting to, over all sessions."""
        with self._lock:
            return sum(job.status in ("running", "queued") for job in self._by_id.values())

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"finished": len(self._finished), "jobs": len(self._jobs),
                    "running": sum(job.status == "running" for job in self._jobs.values()),
                    "queued": len(self._queue), "workers": self.pool.size}


@dataclass(frozen=True)
class RunChoice:
    """What the page shows for a configuration: a job (training, paused, failed) or a finished run."""

    job: TrainingJob | None
    finished: FinishedRun | None


def open_run(runs: RunRegistry, owner: str, key: TrainingKey, *, loaded: FinishedRun | None = None,
             pace_seconds: float = 0.0, is_watched: Callable[[], bool] = lambda: True) -> RunChoice:
    """The run policy of the page, decided in one place: the owner now looks at ``key``.

    Their other active jobs pause (kept; coming back resumes them). A model file they loaded for
    this key is shown as it is. Otherwise their own unfinished job, else a finished run anyone
    trained, else a new job that starts at once. ``pace_seconds`` (a short run stretched to be
    watched) is set before the job starts and takes effect when it next gets a worker."""
    runs.focus(owner, key)
    if loaded is not None and loaded.key == key:
        return RunChoice(None, loaded)
    job = runs.job(owner, key)
    finished = runs.finished(key) if job is None else None
    if finished is not None:
        return RunChoice(None, finished)
    if job is None:
        job = runs.new_job(owner, key)
        job.pace_seconds, job.is_watched = pace_seconds, is_watched
        job.start()
    else:
        job.pace_seconds, job.is_watched = pace_seconds, is_watched
        if job.status == "paused" and job.resume_on_return:
            job.start()  # paused when the settings changed; coming back resumes it
    return RunChoice(job, None)


POLL_SECONDS = 0.3  # how often a page showing an active run redraws it, when the workers keep up
MAX_POLL_SECONDS = 1.0


def poll_interval(active_runs: int, workers: int) -> float:
    """Seconds between a page's redraws of its active run. While more runs want a worker than there
    are workers, each advances proportionally slower, so its page redraws proportionally less often
    (up to once a second): the server's work per second stays about the same however many pages
    are open, and stays small beside the workers'."""
    return min(MAX_POLL_SECONDS, POLL_SECONDS * max(1.0, active_runs / max(workers, 1)))


_POOL: WorkerPool | None = None
_POOL_LOCK = threading.Lock()


def shared_pool() -> WorkerPool:
    """The process's worker pool, started on first use (one per server, closed at exit)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = WorkerPool()
        return _POOL
