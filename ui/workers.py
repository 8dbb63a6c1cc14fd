"""Worker processes that train, so the server's process never does training arithmetic.

Why processes: a training step is ~35 small torch calls, and a thread re-takes the GIL around each;
any Python work beside it in the server (a script run, a figure, Streamlit's GC) makes every
handoff wait. With three or four users training in threads, pages took minutes to draw.

Each worker is a fresh interpreter (``python -m ui.workers FD``, never a fork of the server after
torch has started its threads) that imports only the core, runs one torch thread at a lower CPU
priority than the server, and talks to the server over one socket pair with
``multiprocessing.connection`` messages (pickled tuples):

    server -> worker   ("train", job_id, training_key, state | None, until_step, pace_seconds, wall,
                        watch_state | None)
                       ("stop", job_id)          hand the run back after the current chunk
                       ("quit",)
    worker -> server   ("ready",)
                       ("progress", job_id, step, new_losses, elapsed, wall, WatchUpdate)
                       ("stopped", job_id, state, watch_state, WatchUpdate, wall)   paused, preempted
                                                                                    or at until_step
                       ("finished", job_id, state, watch_state, WatchUpdate, wall)
                       ("failed", job_id, message, step, wall)

While it trains, a worker also watches the run (``diffusion.monitoring``): the loss binned by noise
level, every step, and a preview of the current weights every ``PREVIEW_EVERY_S`` of wall time
(and at every stop), but never more often than keeps previews under ``PREVIEW_MAX_SHARE`` of the
training time. The binned loss's state travels with the run like the trainer's.

A worker holds no state between runs: everything a run needs travels in ``TrainerState``, so a
paused run resumes on any worker, bit for bit. The worker dies with its server: however the server
ends, its end of the socket closes, and the worker sees end-of-file within one chunk (it looks at
the socket between chunks and while it waits). PR_SET_PDEATHSIG would not do: Linux sends it when
the *thread* that started the child exits, and Streamlit's script threads end after every run.

This module is the engine behind ``ui/jobs.py``; a pool on other machines (e.g. Ray actors) would
replace ``WorkerPool`` and keep the same messages.
"""

from __future__ import annotations

import atexit
import functools
import math
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from diffusion.monitoring import LossByT, LossByTSnapshot, Preview, Previewer, live_model, preview_interval


def send(conn: Connection, message: tuple) -> None:
    """Plain pickle, not multiprocessing's: torch would otherwise ship tensors through shared
    memory and file descriptors, which only multiprocessing's own children can receive."""
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def receive(conn: Connection) -> tuple:
    return pickle.loads(conn.recv_bytes())


CHUNK_STEPS = 25  # optimizer steps between looks at the socket (pause / stop)
PROGRESS_EVERY_S = 0.1  # at most this often a progress message (a chunk is a few ms)
WORKER_NICE = 19  # the lowest priority: pages and the server come first, training takes the rest of the CPU
ROOT = Path(__file__).resolve().parents[1]


# --- the worker side -----------------------------------------------------------------------------


def pace_wait(pace_seconds: float, step: int, total_steps: int, wall: float) -> float:
    """Seconds to wait before the chunk that starts at ``step``, so that a run paced to last
    ``pace_seconds`` starts each chunk at its share of that time (the first one at once).
    ``wall`` is the run's time so far. Pacing changes when steps happen, never what they compute."""
    return max(0.0, pace_seconds * step / total_steps - wall)


LOSS_BINS = 20  # noise-level bins of the loss by t (fewer when T is smaller)


def loss_bins(num_timesteps: int) -> int:
    return min(LOSS_BINS, num_timesteps)


PREVIEW_EVERY_S = 0.3  # a live preview this often (wall time) while a run trains
PREVIEW_MAX_SHARE = 0.1  # ... but previews never take more than this share of the training time
PREVIEW_POINTS = 300
PREVIEW_STEPS = 30  # DDIM steps of a preview (T if T is smaller)


@dataclass(frozen=True)
class WatchUpdate:
    """What a worker tells the page about a run besides its losses: a new preview (if one was
    taken since the last message) and the loss by noise level now."""

    preview: Preview | None
    loss_by_t: LossByTSnapshot


@functools.lru_cache(maxsize=64)  # a few kB each; a worker takes turns with many runs
def previewer_for(key) -> Previewer:
    """One previewer per training configuration: the same x_T and noise for every preview of a
    run, whichever worker takes it (seeded with the run's training seed)."""
    from diffusion.schedules import NoiseSchedule

    schedule = NoiseSchedule.from_config(key.schedule)
    return Previewer(schedule, key.data, seed=key.train.seed, num_points=PREVIEW_POINTS,
                     sample_steps=min(PREVIEW_STEPS, key.schedule.num_timesteps))


class Watch:
    """Live previews and the loss by noise level of one run, inside the worker."""

    def __init__(self, key, trainer, watch_state: dict | None, clock: Callable[[], float] = time.monotonic):
        self.trainer = trainer
        self.loss_by_t = (LossByT.from_state_dict(watch_state) if watch_state is not None
                          else LossByT.for_run(key.schedule.num_timesteps, key.total_steps,
                                               loss_bins(key.schedule.num_timesteps)))
        self.previewer = previewer_for(key)
        self.clock = clock
        self.last_preview_at = -math.inf
        self.last_preview_step = trainer.step
        self.preview_seconds = 0.0
        self.pending: Preview | None = None

    def record(self, record) -> None:
        self.loss_by_t.update(record.step, record.t, record.sample_losses)

    def due(self) -> bool:
        """A preview is due: ``PREVIEW_EVERY_S`` since the last one, and enough steps since that
        a preview costs at most ``PREVIEW_MAX_SHARE`` of the training time."""
        trainer = self.trainer
        if trainer.step == self.last_preview_step or self.clock() - self.last_preview_at < PREVIEW_EVERY_S:
            return False
        step_seconds = trainer.elapsed / max(trainer.step, 1)
        if step_seconds <= 0 or self.preview_seconds <= 0:
            return True
        least = preview_interval(self.preview_seconds, step_seconds, max_fraction=PREVIEW_MAX_SHARE)
        return trainer.step - self.last_preview_step >= least

    def preview(self) -> None:
        """Preview the live weights (the EMA when there is one) now."""
        preview = self.previewer.preview(live_model(self.trainer), step=self.trainer.step)
        self.preview_seconds = preview.seconds
        self.last_preview_at, self.last_preview_step = self.clock(), self.trainer.step
        self.pending = preview

    def update(self) -> WatchUpdate:
        """What to send now (the pending preview goes out once)."""
        update = WatchUpdate(self.pending, self.loss_by_t.snapshot())
        self.pending = None
        return update


def _train(conn: Connection, job_id: int, key, state, until_step: int, pace_seconds: float, wall: float,
           watch_state: dict | None) -> None:
    """Train one run until ``until_step``, the end, a stop request or a failure; report as it goes."""
    from diffusion.training import Trainer, TrainingDiverged

    trainer = Trainer(key) if state is None else Trainer.resume(key, state)
    watch = Watch(key, trainer, watch_state)
    started, sent_step, last_sent = time.monotonic(), trainer.step, 0.0

    def clock() -> float:
        return wall + time.monotonic() - started

    def send_progress(force: bool) -> None:
        nonlocal sent_step, last_sent
        now = time.monotonic()
        if trainer.step == sent_step or not force and now - last_sent < PROGRESS_EVERY_S:
            return
        new = trainer.losses[sent_step:]
        send(conn, ("progress", job_id, trainer.step, new, trainer.elapsed, clock(), watch.update()))
        sent_step, last_sent = trainer.step, now

    def hand_back(kind: str) -> None:
        send_progress(force=True)
        if watch.last_preview_step != trainer.step:
            watch.preview()  # the page shows the weights it stopped with
        send(conn, (kind, job_id, trainer.state(), watch.loss_by_t.state_dict(), watch.update(), clock()))

    while True:
        if conn.poll():  # a message during a run can only be stop or quit
            message = receive(conn)
            if message[0] == "quit":
                raise SystemExit(0)
            if message[0] != "stop" or message[1] != job_id:
                continue  # a late stop for an earlier run
            hand_back("stopped")
            return
        if trainer.done or trainer.step >= until_step:
            hand_back("finished" if trainer.done else "stopped")
            return
        wait = pace_wait(pace_seconds, trainer.step, trainer.total_steps, clock())
        if wait > 0:  # a short run paced to be watched: wait (waking for a stop), don't spin
            conn.poll(min(wait, 0.5))
            continue
        try:
            for record in trainer.run(min(CHUNK_STEPS, until_step - trainer.step)):
                watch.record(record)
        except TrainingDiverged as error:
            send_progress(force=True)
            send(conn, ("failed", job_id, str(error), trainer.step, clock()))
            return
        if watch.due():
            watch.preview()
        send_progress(force=watch.pending is not None)


def serve(conn: Connection) -> None:
    """The worker's loop: one run at a time, until told to quit or the server goes away."""
    import torch

    torch.set_num_threads(1)  # the MLP is tiny: one thread per worker, one worker per core
    send(conn, ("ready",))
    while True:
        try:
            message = receive(conn)
        except (EOFError, OSError):
            return
        if message[0] == "quit":
            return
        if message[0] != "train":
            continue  # a stop for a run that already ended
        _, job_id, key, state, until_step, pace_seconds, wall, watch_state = message
        try:
            _train(conn, job_id, key, state, until_step, pace_seconds, wall, watch_state)
        except (EOFError, BrokenPipeError, ConnectionResetError):
            return
        except Exception as error:  # noqa: BLE001 - report, then take the next run
            send(conn, ("failed", job_id, f"training stopped: {error!r}", -1, 0.0))


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the server's to handle; it stops us
    try:
        os.nice(WORKER_NICE)
    except OSError:
        pass
    conn = Connection(int(argv[0]))
    try:
        serve(conn)
    except SystemExit:
        pass
    finally:
        conn.close()
    return 0


# --- the server side -----------------------------------------------------------------------------


class Worker:
    """One worker process and its socket, seen from the server."""

    def __init__(self, index: int):
        self.index = index
        parent, child = socket.socketpair()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ui.workers", str(child.fileno())],
            pass_fds=(child.fileno(),), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
        )
        child.close()
        self.conn = Connection(parent.detach())
        self.send_lock = threading.Lock()
        self.job_id: int | None = None  # the run it trains now

    def send(self, message: tuple) -> bool:
        """False if the worker is gone (its reader reports that separately)."""
        try:
            with self.send_lock:
                send(self.conn, message)
            return True
        except (OSError, EOFError):
            return False

    @property
    def pid(self) -> int:
        return self.process.pid


class WorkerPool:
    """N worker processes, each with a reader thread that hands its messages to ``on_message``
    (worker, message) and reports a dead worker to ``on_exit`` (worker, exit code), then starts
    a replacement. The pool decides nothing about runs: ``ui/jobs.py`` does."""

    def __init__(self, size: int | None = None):
        self.size = max(1, size or default_size())
        self.on_message: Callable[[Worker, tuple], None] = lambda worker, message: None
        self.on_exit: Callable[[Worker, int | None], None] = lambda worker, code: None
        self.workers: list[Worker] = []
        self._closing = False
        self._lock = threading.Lock()
        for index in range(self.size):
            self._start(index)
        atexit.register(self.close)

    def _start(self, index: int) -> Worker:
        worker = Worker(index)
        with self._lock:
            if index < len(self.workers):
                self.workers[index] = worker
            else:
                self.workers.append(worker)
        threading.Thread(target=self._read, args=(worker,), name=f"worker-{index}-reader", daemon=True).start()
        return worker

    def _read(self, worker: Worker) -> None:
        while True:
            try:
                message = receive(worker.conn)
            except (EOFError, OSError):
                break
            except Exception as error:  # noqa: BLE001 - an unreadable message: the worker is unusable
                print(f"worker {worker.pid}: unreadable message ({error!r}); stopping it", file=sys.stderr)
                worker.process.kill()
                break
            self.on_message(worker, message)
        code = worker.process.wait()
        worker.conn.close()
        if self._closing:
            return
        self.on_exit(worker, code)
        self._start(worker.index)  # a replacement, so the pool keeps its size

    def idle(self) -> list[Worker]:
        with self._lock:
            return [w for w in self.workers if w.job_id is None and w.process.poll() is None]

    def pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self.workers]

    def close(self, timeout: float = 1.0) -> None:
        """Ask every worker to quit, wait up to ``timeout``, then kill what is left."""
        if self._closing:
            return
        self._closing = True
        with self._lock:
            workers = list(self.workers)
        for worker in workers:
            worker.send(("quit",))
        deadline = time.monotonic() + timeout
        for worker in workers:
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()


def default_size() -> int:
    """``DDPM_LAB_WORKERS`` if set, else one worker per core."""
    configured = os.environ.get("DDPM_LAB_WORKERS")
    if configured:
        return int(configured)
    return os.cpu_count() or 1


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy's: the classes the worker pickles
    # (WatchUpdate) must be ui.workers.WatchUpdate for the server to read them.
    from ui.workers import main as worker_main

    sys.exit(worker_main(sys.argv[1:]))
