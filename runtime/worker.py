"""A worker: the loop that trains runs and computes tasks, one job at a time, in its own process
(``python -m runtime.worker FD``) or in the caller's (``Inline``, for the command and tests).

``run_job`` executes one ``Train`` or ``Compute`` message against a ``Channel``: ``emit`` a
message back, ``stop_asked`` (a ``Stop`` for this job arrived), ``wait`` (sleep, waking early on a
stop). A training run looks at the channel between chunks of ``CHUNK_STEPS`` optimizer steps (a
few ms), so a pause takes effect within one chunk; a task looks between its steps.

A worker holds no state between jobs (but a small cache of previewers, which are pure functions
of a run's key): everything a run needs travels in ``Train``, so a paused run resumes on any worker.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Protocol

import numpy as np

from diffusion.training import Trainer, TrainingDiverged

from . import tasks
from .messages import (
    Compute,
    Failed,
    Finished,
    FromWorker,
    HandedBack,
    Progress,
    Quit,
    Ready,
    Stop,
    TaskDone,
    TaskProgress,
    ToWorker,
    Train,
)
from .watch import Timed, Watch

CHUNK_STEPS = 25  # optimizer steps between looks at the channel (pause / stop)
PROGRESS_EVERY_S = 0.1  # at most this often a progress message (a chunk is a few ms)
TASK_PROGRESS_EVERY_S = 0.1
WORKER_NICE = 19  # the lowest priority: pages and the server come first, training takes the rest of the CPU


class Channel(Protocol):
    def emit(self, message: FromWorker) -> None: ...
    def stop_asked(self, job_id: int) -> bool: ...
    def wait(self, seconds: float, job_id: int) -> None: ...


class QuitAsked(Exception):
    """The server asked this worker to quit in the middle of a job."""


def pace_wait(pace_seconds: float, step: int, total_steps: int, wall: float) -> float:
    """Seconds to wait before the chunk that starts at ``step``, so that a run paced to last
    ``pace_seconds`` starts each chunk at its share of that time (the first one at once).
    ``wall`` is the run's time so far. Pacing changes when steps happen, never what they compute."""
    return max(0.0, pace_seconds * step / total_steps - wall)


def train(job: Train, channel: Channel, clock: Callable[[], float] = time.monotonic) -> None:
    """Train ``job`` until its ``until_step``, its end, a stop or a failure; report as it goes."""
    trainer = Trainer(job.key) if job.state is None else Trainer.resume(job.key, job.state)
    started = clock()

    def run_clock() -> float:  # the run's own time: what it had, plus this stint
        return job.wall + clock() - started

    watch = Watch(job.key, trainer, Timed(run_clock), job.watch_state)
    sent_step, last_sent = trainer.step, -float("inf")
    losses: list[float] = []  # since the last progress message

    def send_progress(force: bool) -> None:
        nonlocal sent_step, last_sent
        now = clock()
        if trainer.step == sent_step or not force and now - last_sent < PROGRESS_EVERY_S:
            return
        channel.emit(Progress(job.job_id, trainer.step, np.array(losses), trainer.elapsed, run_clock(), watch.update()))
        losses.clear()
        sent_step, last_sent = trainer.step, now

    def hand_back(finished: bool) -> None:
        send_progress(force=True)
        watch.preview_if_stale()  # the page shows the weights it stopped with
        kind = Finished if finished else HandedBack
        channel.emit(kind(job.job_id, trainer.state(), watch.loss_by_t.state_dict(), watch.update(), run_clock()))

    while True:
        if trainer.done or trainer.step >= job.until_step:
            hand_back(finished=trainer.done)
            return
        if channel.stop_asked(job.job_id):
            hand_back(finished=False)
            return
        wait = pace_wait(job.pace_seconds, trainer.step, trainer.total_steps, run_clock())
        if wait > 0:  # a short run paced to be watched: wait (waking for a stop), don't spin
            channel.wait(min(wait, 0.5), job.job_id)
            continue
        try:
            for record in trainer.run(min(CHUNK_STEPS, job.until_step - trainer.step)):
                watch.record(record)
                losses.append(record.loss)
        except TrainingDiverged as error:
            send_progress(force=True)
            channel.emit(Failed(job.job_id, str(error), trainer.step, run_clock()))
            return
        if watch.due():
            watch.preview()
        send_progress(force=watch.pending is not None)


def compute(job: Compute, channel: Channel, clock: Callable[[], float] = time.monotonic) -> None:
    """Run ``job.task`` on the weights it carries and send back the result."""
    started, last = clock(), -float("inf")

    def report(done: int, total: int, text: str, partial: object) -> None:
        nonlocal last
        if clock() - last >= TASK_PROGRESS_EVERY_S or done == total:
            channel.emit(TaskProgress(job.job_id, done, total, text, partial))
            last = clock()

    model = tasks.model_from(job.key, job.weights) if job.weights is not None else None
    result = tasks.compute(job.task, job.key, model, report, lambda: channel.stop_asked(job.job_id))
    channel.emit(TaskDone(job.job_id, result, clock() - started))


def run_job(job: Train | Compute, channel: Channel) -> None:
    """One job; any error but a quit is reported as the job's failure, and the worker goes on."""
    try:
        match job:
            case Train():
                train(job, channel)
            case Compute():
                compute(job, channel)
    except (QuitAsked, EOFError, BrokenPipeError, ConnectionResetError):
        raise
    except Exception as error:  # noqa: BLE001 - report, then take the next job
        what = "training" if isinstance(job, Train) else "this computation"
        channel.emit(Failed(job.job_id, f"{what} stopped: {error!r}"))


# --- a worker process -----------------------------------------------------------------------------


def send(conn: Connection, message: ToWorker | FromWorker) -> None:
    """Plain pickle, not multiprocessing's: torch would otherwise ship tensors through shared
    memory and file descriptors, which only multiprocessing's own children can receive."""
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def receive(conn: Connection) -> ToWorker | FromWorker:
    return pickle.loads(conn.recv_bytes())


class SocketChannel:
    """The worker's end of its socket to the server. While a job runs, the only messages that can
    arrive are a ``Stop`` (for this job or a late one for an earlier job) or a ``Quit``."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self.stopped: set[int] = set()

    def emit(self, message: FromWorker) -> None:
        send(self.conn, message)

    def _drain(self, timeout: float = 0.0) -> None:
        while self.conn.poll(timeout):
            match receive(self.conn):
                case Stop(job_id=job_id):
                    self.stopped.add(job_id)
                case Quit():
                    raise QuitAsked
            timeout = 0.0

    def stop_asked(self, job_id: int) -> bool:
        self._drain()
        return job_id in self.stopped

    def wait(self, seconds: float, job_id: int) -> None:
        if job_id not in self.stopped:
            self._drain(seconds)


def serve(conn: Connection) -> None:
    """The worker's loop: one job at a time, until told to quit or the server goes away."""
    import torch

    torch.set_num_threads(1)  # the MLP is tiny: one thread per worker, one worker per core
    channel = SocketChannel(conn)
    send(conn, Ready())
    while True:
        try:
            message = receive(conn)
        except (EOFError, OSError):
            return
        match message:
            case Quit():
                return
            case Train() | Compute():
                channel.stopped.clear()  # stops for earlier jobs are moot now
                try:
                    run_job(message, channel)
                except (QuitAsked, EOFError, BrokenPipeError, ConnectionResetError):
                    return
            case _:
                continue  # a stop for a job that already ended


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle; it stops us
    try:
        os.nice(WORKER_NICE)
    except OSError:
        pass
    conn = Connection(int(argv[0]))
    try:
        serve(conn)
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy's: the classes pickled across must be
    # runtime.messages' for the server to read them (they are; this keeps one copy of this module).
    from runtime.worker import main as worker_main

    sys.exit(worker_main(sys.argv[1:]))
