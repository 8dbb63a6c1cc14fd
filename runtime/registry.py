"""The runtime's server side: every session's runs and every computation on a finished model, run
by the registry's own worker processes. No Streamlit here: the page and the command are clients.

- A run belongs to one browser session (``owner``): another user's unfinished run never shows on
  your page. A finished run is stored under its ``TrainingKey`` and shared (same config + seed =
  same weights), in a bounded LRU; going back to an earlier setting shows it at once.
- Runs share the workers fairly: a run waiting for a worker goes to the back of the queue, and a
  run that has had a worker for ``slice_seconds`` while others wait hands it back (its state
  travels with it) and queues again. A paused run holds no worker; a run whose page is gone (no
  heartbeat, or its browser session closed) pauses itself.
- A task (``runtime.tasks``: sampling, the field, the drift, the budget) on a finished run goes
  before training: it takes the next free worker, or the worker of the run that has trained longest
  since it got one, which hands its run back within a chunk and queues again. Its result is cached
  under (run, task) and shared by every page that asks.
- A run that fails (non-finite loss, or its worker died) keeps its loss curve and error, and is
  never stored as finished.

Every change of a run's state goes through ``RunState``'s transitions (``runtime.state``), under
the registry's one lock. Messages from the workers arrive on the pool's reader threads.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from diffusion.config import TrainingKey
from diffusion.denoiser import Denoiser
from diffusion.monitoring import LossByTSnapshot, Preview

from . import tasks
from .messages import (
    Compute,
    Failed,
    Finished,
    FromWorker,
    HandedBack,
    Progress,
    Ready,
    Stop,
    TaskDone,
    TaskProgress,
    Train,
)
from .pool import Worker, backend_from_env, make_pool
from .state import RunState, Status, TaskState, Watched

ABANDON_AFTER_S = 120.0  # no heartbeat for this long: the page is gone, pause
SLICE_SECONDS = 3.0  # a run keeps a worker this long while others wait for one
TICK_SECONDS = 0.1  # how often the scheduler looks at slices and abandoned pages
POLL_SECONDS = 0.3  # how often a page showing an active run redraws it, when the workers keep up
MAX_POLL_SECONDS = 1.0


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
    note: str | None = None  # e.g. why a run paused itself
    wall: float = 0.0  # seconds the run has been training or pacing, waits in the queue excluded
    queue_position: int | None = None  # 1 = next to get a worker, while queued
    eta_seconds: float | None = None
    preview: Preview | None = None  # the latest live preview
    previews: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))  # (k, 4): step, energy distance, floor, seconds
    loss_by_t: LossByTSnapshot | None = None
    where: str | None = None  # the machine training it, on a cluster backend ("Ray node 5ae39561")

    @property
    def epoch(self) -> int:
        return self.step // self.steps_per_epoch

    @property
    def fraction(self) -> float:
        return self.step / self.total_steps

    @property
    def active(self) -> bool:
        """Training or waiting to: the page keeps polling."""
        return self.status in ("running", "queued", "stopping")


class FinishedRun:
    """A trained model's weights, its loss curve and what was watched while it trained. The
    server never runs the model: ask the registry for a task on it (``RunRegistry.compute``)."""

    def __init__(self, key: TrainingKey, weights: dict[str, torch.Tensor], losses: np.ndarray, seconds: float,
                 source: str = "trained", watched: Watched | None = None, wall: float = 0.0):
        self.key = key
        self.weights = weights
        self.source = source  # "trained" here, or "file:<digest>" for an uploaded model (part of cache keys)
        self.losses = losses
        self.losses.flags.writeable = False
        self.train_seconds = seconds
        self.wall = wall  # seconds it trained or was paced, as its page showed them while it trained
        self.watched = watched or Watched()

    @classmethod
    def loaded(cls, key: TrainingKey, model: Denoiser, digest: str) -> FinishedRun:
        """A model read from a file: no losses, kept in its session only (its source names the file)."""
        weights = {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}
        return cls(key, weights, np.zeros(0), 0.0, source=f"file:{digest}")

    @property
    def model(self) -> Denoiser:
        """The network, built from the weights (for a download; nothing here calls it)."""
        return tasks.model_from(self.key, self.weights)

    def snapshot(self) -> RunSnapshot:
        steps = self.key.total_steps  # a model loaded from a file has no losses but was trained
        w = self.watched
        return RunSnapshot("finished", steps, steps, self.key.steps_per_epoch, self.losses, self.train_seconds,
                           wall=self.wall, preview=w.preview, previews=w.previews_array(), loss_by_t=w.loss_by_t)


class RunRegistry:
    """Finished runs (shared, LRU), each session's unfinished runs, the tasks' results, and the
    queues of what waits for one of the registry's ``workers`` worker processes."""

    def __init__(self, workers: int | None = None, *, max_finished: int = 16, max_jobs: int = 32,
                 max_jobs_per_owner: int = 3, max_results: int = 64, slice_seconds: float = SLICE_SECONDS,
                 clock: Callable[[], float] = time.monotonic, tick_seconds: float | None = TICK_SECONDS,
                 backend: str | None = None):
        self.max_finished, self.max_jobs, self.max_jobs_per_owner = max_finished, max_jobs, max_jobs_per_owner
        self.max_results = max_results
        self.slice_seconds = slice_seconds
        self.clock = clock
        self._lock = threading.RLock()
        self.changed = threading.Condition(self._lock)  # notified on every message
        self._finished: OrderedDict[TrainingKey, FinishedRun] = OrderedDict()
        self._runs: dict[int, RunState] = {}  # unfinished runs by id, including discarded ones a worker still holds
        self._queue: deque[RunState] = deque()
        self._results: OrderedDict[tuple, TaskState] = OrderedDict()
        self._tasks: dict[int, TaskState] = {}  # queued or running, by id
        self._task_queue: deque[TaskState] = deque()
        self._watching: dict[int, Callable[[], bool]] = {}  # run id -> is its page still open
        self._closed = False
        self.backend = backend or backend_from_env()  # "local" worker processes or "ray" actors
        self.pool = make_pool(workers, self._on_message, self._on_worker_exit, self.backend)
        if tick_seconds:
            threading.Thread(target=self._tick_forever, args=(tick_seconds,), name="run-scheduler", daemon=True).start()

    # --- finished runs ----------------------------------------------------------------------------
    def finished(self, key: TrainingKey) -> FinishedRun | None:
        with self._lock:
            run = self._finished.get(key)
            if run is not None:
                self._finished.move_to_end(key)
            return run

    def discard_finished(self, key: TrainingKey) -> None:
        """Forget the finished run of ``key`` (a bench trains the same configuration again)."""
        with self._lock:
            self._finished.pop(key, None)

    def _store(self, run: RunState) -> None:
        state = run.trainer_state
        done = FinishedRun(run.key, state.sampling_weights(), run.losses[: run.step], run.elapsed, watched=run.watched,
                           wall=run.wall)
        self._finished[run.key] = done
        self._finished.move_to_end(run.key)
        while len(self._finished) > self.max_finished:
            self._finished.popitem(last=False)
        self._forget(run)

    # --- runs ---------------------------------------------------------------------------------------
    def job(self, owner: str, key: TrainingKey) -> RunState | None:
        with self._lock:
            return next((r for r in self._runs.values() if r.owner == owner and r.key == key and r.kept), None)

    def jobs_of(self, owner: str) -> list[RunState]:
        with self._lock:
            return [r for r in self._runs.values() if r.owner == owner and r.kept]

    def running(self) -> list[RunState]:
        """Runs training or waiting to, over all sessions."""
        with self._lock:
            return [r for r in self._runs.values() if r.active]

    def new_job(self, owner: str, key: TrainingKey) -> RunState:
        """A fresh, paused run for (owner, key), replacing any earlier one; evicts old paused runs
        beyond the caps (active ones are never evicted)."""
        with self._lock:
            old = self.job(owner, key)
            if old is not None:
                self._discard(old)
            run = RunState(owner, key, last_seen=self.clock())
            self._runs[run.id] = run
            self._evict(owner)
            return run

    def discard(self, owner: str, key: TrainingKey) -> None:
        with self._lock:
            run = self.job(owner, key)
            if run is not None:
                self._discard(run)

    def _discard(self, run: RunState) -> None:
        """Forget ``run``; a worker training it hands it back and the state is thrown away."""
        if run.status == "queued":
            self._queue.remove(run)
        if run.status in ("running", "stopping"):
            if run.ask_stop("discard"):
                run.worker.send(Stop(run.id))
        else:
            run.discard()
            self._forget(run)
        self.changed.notify_all()

    def _forget(self, run: RunState) -> None:
        self._runs.pop(run.id, None)
        self._watching.pop(run.id, None)

    def _evict(self, owner: str) -> None:
        idle = [r for r in self._runs.values() if r.status in ("paused", "failed")]
        mine = [r for r in idle if r.owner == owner]
        while len(mine) > self.max_jobs_per_owner:
            run = mine.pop(0)
            run.discard()
            self._forget(run)
        idle = [r for r in idle if r.id in self._runs]
        while len(self._runs) > self.max_jobs and idle:
            run = idle.pop(0)
            run.discard()
            self._forget(run)

    def focus(self, owner: str, key: TrainingKey) -> None:
        """The owner now looks at ``key``: pause the owner's other active runs (kept, resumable)."""
        with self._lock:
            for run in self.jobs_of(owner):
                if run.key != key and run.status in ("running", "queued"):
                    self.pause(run, "paused when you changed the settings; go back to resume it")
                    run.resume_on_return = True

    def watch(self, run: RunState, is_watched: Callable[[], bool], pace_seconds: float = 0.0) -> None:
        """Who watches ``run`` (its page's liveness) and how long a short run should last to be
        watched; both take effect the next time it gets a worker."""
        with self._lock:
            self._watching[run.id] = is_watched
            run.pace_seconds = pace_seconds

    def heartbeat(self, run: RunState) -> None:
        run.last_seen = self.clock()

    # --- the page's requests on a run -----------------------------------------------------------
    def start(self, run: RunState, until_step: int | None = None) -> None:
        """Train in a worker until done (or ``until_step``), paused, failed or abandoned."""
        with self._lock:
            if self._closed or run.status != "paused":
                return
            run.queue(run.key.total_steps if until_step is None else until_step, self.clock())
            self._queue.append(run)
            self._dispatch()

    def advance(self, run: RunState, steps: int) -> None:
        """Train ``steps`` more optimizer steps, then pause (only while paused)."""
        self.start(run, run.step + steps)

    def pause(self, run: RunState, note: str | None = None) -> None:
        """Stop after the current chunk and keep everything. Never waits: the worker hands the run
        back within a chunk (``runtime.worker.CHUNK_STEPS``)."""
        with self._lock:
            if run.status == "queued":
                self._queue.remove(run)
                run.unqueue(note)
            elif run.status in ("running", "stopping") and run.ask_stop("pause", note):
                run.worker.send(Stop(run.id))
            self.changed.notify_all()

    def snapshot(self, run: RunState) -> RunSnapshot:
        with self._lock:
            losses = run.losses[: run.step]
            losses.flags.writeable = False  # a view: later steps only write beyond it
            position = self._queue.index(run) + 1 if run.status == "queued" and run in self._queue else None
            w = run.watched
            return RunSnapshot(run.status, run.step, run.key.total_steps, run.key.steps_per_epoch, losses,
                               run.elapsed, run.error, run.note, run.wall, position, self._eta(run),
                               w.preview, w.previews_array(), w.loss_by_t, run.worker.where if run.worker else None)

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (the lock released) until ``predicate()`` holds after some message, or ``timeout``."""
        with self._lock:
            return self.changed.wait_for(predicate, timeout)

    def wait_for_first_steps(self, run: RunState, timeout: float) -> bool:
        """While the run trains but has reported no step yet, wait up to ``timeout`` seconds for its
        first progress (a worker reports its first chunk a few ms after it starts), so a page that
        starts a run draws its first loss points in that same script run."""
        return self.wait_until(lambda: run.step > 0 or not run.active, timeout) and run.step > 0

    def _eta(self, run: RunState) -> float | None:
        """Seconds to the end: remaining steps at this run's own measured rate, times the share
        of a worker it gets while more runs than workers want one."""
        if not run.active or run.step == 0:
            return None
        rate = run.step / max(run.wall, run.elapsed, 1e-9)
        wanting = sum(1 for r in self._runs.values() if r.active)
        share = min(1.0, self.pool.size / max(wanting, 1))
        return (run.until_step - run.step) / rate / share

    # --- tasks on finished runs -------------------------------------------------------------------
    def compute(self, run: FinishedRun | None, task) -> TaskState:
        """The task's state for ``run`` (None for a task that needs no model): its result if
        computed, else queued (once) for the next worker. Every caller asking for the same (run,
        task) gets the same object."""
        cache_key = _cache_key(run, task)
        with self._lock:
            state = self._results.get(cache_key)
            if state is not None:
                self._results.move_to_end(cache_key)
                return state
            state = (TaskState(run.key, run.source, task, run.weights) if run is not None
                     else TaskState(None, "", task, None))
            self._results[cache_key] = state
            while len(self._results) > self.max_results:
                _, old = self._results.popitem(last=False)
                if old.status == "queued":
                    self._task_queue.remove(old)
                    self._tasks.pop(old.id, None)
            self._tasks[state.id] = state
            self._task_queue.append(state)
            self._dispatch()
            return state

    def result(self, run: FinishedRun | None, task) -> TaskState | None:
        """The task's state for ``run`` if someone asked for it (and it is still kept), else None:
        nothing is started."""
        with self._lock:
            return self._results.get(_cache_key(run, task))

    def wait_for(self, task: TaskState, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for ``task`` to be ready; whether it is."""
        return self.wait_until(lambda: task.ready, timeout)

    # --- scheduling -------------------------------------------------------------------------------
    def _busy(self) -> set[Worker]:
        return {r.worker for r in self._runs.values() if r.worker is not None} | \
               {t.worker for t in self._tasks.values() if t.worker is not None}

    def _dispatch(self) -> None:
        """Give idle workers to waiting tasks first, then to the runs at the front of the queue;
        with tasks still waiting, ask the longest-running run to hand its worker back."""
        busy = self._busy()
        for worker in [w for w in self.pool.workers if w not in busy and w.alive]:
            if self._task_queue:
                task = self._task_queue.popleft()
                task.status, task.worker = "running", worker
                if not worker.send(Compute(task.id, task.task, task.key, task.weights)):
                    task.status, task.worker = "queued", None
                    self._task_queue.appendleft(task)
            elif self._queue:
                run = self._queue.popleft()
                run.assign(worker, self.clock())
                message = Train(run.id, run.key, run.trainer_state, run.watch_state, run.until_step, run.pace_seconds,
                                run.wall)
                if not worker.send(message):
                    run.unassign()  # the worker is gone: back to the front
                    self._queue.appendleft(run)
                    return
                run.trainer_state = None  # the worker holds the run now
        if self._task_queue:
            running = [r for r in self._runs.values() if r.status == "running"]
            stopping = sum(r.status == "stopping" and r.stop_reason == "preempt" for r in self._runs.values())
            for run in sorted(running, key=lambda r: r.slice_started)[: max(0, len(self._task_queue) - stopping)]:
                if run.ask_stop("preempt"):
                    run.worker.send(Stop(run.id))

    # --- messages from workers (reader threads) ---------------------------------------------------
    def _on_message(self, worker: Worker, message: FromWorker) -> None:
        with self._lock:
            match message:
                case Ready():
                    pass
                case Progress(job_id=job_id) if (run := self._held(job_id, worker)) is not None:
                    run.progressed(message.step, message.new_losses, message.elapsed, message.wall, message.watch)
                case HandedBack(job_id=job_id) if (run := self._held(job_id, worker)) is not None:
                    run.handed_back(message.state, message.watch_state, message.watch, message.wall)
                    if run.status == "queued":
                        self._queue.append(run)
                    elif run.status == "discarded":
                        self._forget(run)
                    else:
                        self._evict(run.owner)  # it counts against its owner's cap of paused runs now
                case Finished(job_id=job_id) if (run := self._held(job_id, worker)) is not None:
                    discarded = run.stop_reason == "discard"
                    run.finished(message.state, message.watch_state, message.watch, message.wall)
                    if discarded:
                        self._forget(run)
                    else:
                        self._store(run)
                case TaskProgress(job_id=job_id) if (task := self._tasks.get(job_id)) is not None:
                    task.done, task.total, task.text, task.partial = (message.done, message.total, message.text,
                                                                      message.partial)
                case TaskDone(job_id=job_id) if (task := self._tasks.pop(job_id, None)) is not None:
                    task.result, task.seconds, task.status = message.result, message.seconds, "done"
                    task.worker = task.weights = None
                case Failed(job_id=job_id):
                    if (run := self._held(job_id, worker)) is not None:
                        run.failed(message.message, message.wall, message.step)
                    elif (task := self._tasks.pop(job_id, None)) is not None:
                        task.error, task.status, task.worker, task.weights = message.message, "failed", None, None
            self.changed.notify_all()
            self._dispatch()

    def _held(self, job_id: int, worker: Worker) -> RunState | None:
        """The run ``job_id`` if ``worker`` holds it (else the message is a late one: ignored)."""
        run = self._runs.get(job_id)
        return run if run is not None and run.worker is worker else None

    def _on_worker_exit(self, worker: Worker, reason: str) -> None:
        with self._lock:
            for run in [r for r in self._runs.values() if r.worker is worker]:
                if run.stop_reason == "discard":
                    run.worker = None
                    run.discard()
                    self._forget(run)
                else:
                    run.failed(f"the training process stopped unexpectedly ({reason}); this run's progress "
                               "since it last paused is lost. Press Reset to train it again.", None)
            for task in [t for t in self._tasks.values() if t.worker is worker]:
                self._tasks.pop(task.id)
                task.status, task.worker = "failed", None
                task.error = f"the worker computing this stopped unexpectedly ({reason})"
            self.changed.notify_all()

    # --- the scheduler's clock --------------------------------------------------------------------
    def _tick_forever(self, seconds: float) -> None:
        while not self._closed:
            time.sleep(seconds)
            self.tick()

    def tick(self) -> None:
        """Pause runs whose page is gone; hand back the worker of a run whose slice is over while
        others wait; start waiting runs on free workers."""
        now = self.clock()
        with self._lock:
            for run in list(self._runs.values()):
                if run.status not in ("running", "queued"):
                    continue
                watched = self._watching.get(run.id, lambda: True)
                if now - run.last_seen > ABANDON_AFTER_S or not watched():
                    self.pause(run, "paused because no page was showing it")
                    run.resume_on_return = False
                elif self._queue and run.status == "running" and now - run.slice_started > self.slice_seconds:
                    if run.ask_stop("preempt"):
                        run.worker.send(Stop(run.id))
            self._dispatch()

    def reset(self) -> None:
        """Forget everything: finished runs, results, and every unfinished run (a worker holding one
        hands it back and it is thrown away). The workers stay (tests reuse one registry)."""
        with self._lock:
            for run in list(self._runs.values()):
                if run.kept:
                    self._discard(run)
            self._finished.clear()
            self._results.clear()
            self._task_queue.clear()

    def close(self) -> None:
        """Stop scheduling, throw away what is unfinished and stop the workers."""
        with self._lock:
            self._closed = True
            self._queue.clear()
            self._task_queue.clear()
        self.pool.close()

    # --- figures for the page and the load bench ---------------------------------------------------
    def active_count(self) -> int:
        """Runs training or waiting to, over all sessions."""
        with self._lock:
            return sum(r.active for r in self._runs.values())

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"finished": len(self._finished), "jobs": sum(r.kept for r in self._runs.values()),
                    "running": sum(r.status == "running" for r in self._runs.values()),
                    "queued": len(self._queue), "tasks": len(self._tasks), "workers": self.pool.size}


def _cache_key(run: FinishedRun | None, task) -> tuple:
    return (None, None, task) if run is None else (run.key, run.source, task)


@dataclass(frozen=True)
class RunChoice:
    """What the page shows for a configuration: a run (training, paused, failed) or a finished one."""

    job: RunState | None
    finished: FinishedRun | None


def open_run(runs: RunRegistry, owner: str, key: TrainingKey, *, loaded: FinishedRun | None = None,
             pace_seconds: float = 0.0, is_watched: Callable[[], bool] = lambda: True) -> RunChoice:
    """The run policy of the page, decided in one place: the owner now looks at ``key``.

    Their other active runs pause (kept; coming back resumes them). A model file they loaded for
    this key is shown as it is. Otherwise their own unfinished run, else a finished run anyone
    trained, else a new run that starts at once."""
    runs.focus(owner, key)
    if loaded is not None and loaded.key == key:
        return RunChoice(None, loaded)
    job = runs.job(owner, key)
    finished = runs.finished(key) if job is None else None
    if finished is not None:
        return RunChoice(None, finished)
    if job is None:
        job = runs.new_job(owner, key)
        runs.watch(job, is_watched, pace_seconds)
        runs.start(job)
    else:
        runs.watch(job, is_watched, pace_seconds)
        if job.status == "paused" and job.resume_on_return:
            runs.start(job)  # paused when the settings changed; coming back resumes it
    return RunChoice(job, None)


def poll_interval(active_runs: int, workers: int) -> float:
    """Seconds between a page's redraws of its active run. While more runs want a worker than there
    are workers, each advances proportionally slower, so its page redraws proportionally less often
    (up to once a second): the server's work per second stays about the same however many pages
    are open, and stays small beside the workers'."""
    return min(MAX_POLL_SECONDS, POLL_SECONDS * max(1.0, active_runs / max(workers, 1)))


_SHARED: RunRegistry | None = None
_SHARED_LOCK = threading.Lock()


def shared_registry() -> RunRegistry:
    """The process's registry, started on first use: one per server, shared by every session, its
    workers stopped when the process exits (``WorkerPool`` registers that)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None or _SHARED._closed:
            _SHARED = RunRegistry()
        return _SHARED
