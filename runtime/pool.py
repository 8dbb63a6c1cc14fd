"""Worker processes seen from the server: start them, send them jobs, read what they say.

Why processes: a training step is ~35 small torch calls, and a thread re-takes the GIL around each;
any Python work beside it in the server (a script run, a figure, Streamlit's GC) makes every
handoff wait. With three or four users training in threads, pages took minutes to draw.

Each worker is a fresh interpreter (``python -m runtime.worker FD``, never a fork of the server
after torch has started its threads) that imports only the core and this package, runs one torch
thread at a lower CPU priority than the server, and talks over one socket pair
(``runtime.messages``). The worker dies with its server: however the server ends, its end of the
socket closes, and the worker sees end-of-file within one chunk. PR_SET_PDEATHSIG would not do:
Linux sends it when the *thread* that started the child exits, and Streamlit's script threads end
after every run.

The pool decides nothing about jobs: its owner (``runtime.registry.RunRegistry``) gets every
message and every exit through the two callbacks it passes in.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

from .messages import FromWorker, Quit, ToWorker
from .worker import receive, send

ROOT = Path(__file__).resolve().parents[1]


class Worker:
    """One worker process and its socket."""

    where: str | None = None  # on this machine: the page names no place (a Ray worker names its node)

    def __init__(self, index: int):
        self.index = index
        parent, child = socket.socketpair()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
            [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runtime.worker", str(child.fileno())],
            pass_fds=(child.fileno(),), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
        )
        child.close()
        self.conn = Connection(parent.detach())
        self._send_lock = threading.Lock()

    def send(self, message: ToWorker) -> bool:
        """False if the worker is gone (its reader reports that separately)."""
        try:
            with self._send_lock:
                send(self.conn, message)
            return True
        except (OSError, EOFError):
            return False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class ReadingPool:
    """What every backend's pool shares: ``size`` workers (made by ``_new_worker``), each with a
    reader thread (``_read``) that hands its messages to ``on_message(worker, message)``; a worker
    lost is reported to ``on_exit(worker, reason)`` and replaced (``_lost``), so the pool keeps its
    size."""

    reader_name = "worker"  # the reader threads' names: "<reader_name>-<index>-reader"

    def __init__(self, size: int, on_message: Callable[[object, FromWorker], None],
                 on_exit: Callable[[object, str], None]):
        self.size = max(1, size)
        self._on_message, self._on_exit = on_message, on_exit
        self.workers: list = []
        self._closing = False
        self._lock = threading.Lock()
        for index in range(self.size):
            self._start(index)
        atexit.register(self.close)

    def _new_worker(self, index: int):
        raise NotImplementedError

    def _read(self, worker) -> None:
        raise NotImplementedError

    def close(self, timeout: float = 1.0) -> None:
        raise NotImplementedError

    def _start(self, index: int):
        worker = self._new_worker(index)
        with self._lock:
            if index < len(self.workers):
                self.workers[index] = worker
            else:
                self.workers.append(worker)
        threading.Thread(target=self._read, args=(worker,), name=f"{self.reader_name}-{index}-reader",
                         daemon=True).start()
        return worker

    def _lost(self, worker, reason: str) -> None:
        """A reader's end: report the worker and start its replacement, unless the pool is closing."""
        if self._closing:
            return
        self._on_exit(worker, reason)
        self._start(worker.index)

    def _closing_workers(self) -> list:
        """The workers to stop, once: empty when the pool was closed already."""
        if self._closing:
            return []
        self._closing = True
        with self._lock:
            return list(self.workers)

    def pids(self) -> list[int]:
        with self._lock:
            return [w.pid for w in self.workers if w.pid is not None]


class WorkerPool(ReadingPool):
    """``size`` worker processes on this machine."""

    def _new_worker(self, index: int) -> Worker:
        return Worker(index)

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
            self._on_message(worker, message)
        code = worker.process.wait()
        worker.conn.close()
        self._lost(worker, f"exit code {code}")

    def close(self, timeout: float = 1.0) -> None:
        """Ask every worker to quit, wait up to ``timeout``, then kill what is left."""
        workers = self._closing_workers()
        for worker in workers:
            worker.send(Quit())
        deadline = time.monotonic() + timeout
        for worker in workers:
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()


def configured_size() -> int | None:
    """``DDPM_LAB_WORKERS`` if set (a whole number from 1), else None: the backend's default."""
    configured = os.environ.get("DDPM_LAB_WORKERS", "").strip()
    if not configured:
        return None
    if not configured.isdigit() or int(configured) < 1:
        raise ValueError(f"DDPM_LAB_WORKERS={configured!r} is not a number of workers: use a whole number from 1")
    return int(configured)


BACKENDS = ("local", "ray")


def backend_from_env() -> str:
    """``DDPM_LAB_BACKEND``: ``local`` (worker processes on this machine, the default) or ``ray``."""
    backend = os.environ.get("DDPM_LAB_BACKEND", "").strip().lower() or "local"
    if backend not in BACKENDS:
        raise ValueError(f"DDPM_LAB_BACKEND={backend!r} is not a backend: use one of {', '.join(BACKENDS)}")
    return backend


def make_pool(size: int | None, on_message: Callable, on_exit: Callable[[object, str], None],
              backend: str | None = None):
    """The workers for a registry: ``size`` local processes (None: ``DDPM_LAB_WORKERS``, else one per
    core), or actors on the Ray cluster ``RAY_ADDRESS`` names (None: ``DDPM_LAB_WORKERS``, else one
    per CPU of the cluster). Ray is imported only then: it is an optional install."""
    backend = backend or backend_from_env()
    size = size or configured_size()
    if backend == "ray":
        try:
            from .ray_pool import RayWorkerPool
        except ImportError as error:
            raise RuntimeError("DDPM_LAB_BACKEND=ray needs Ray: pip install -r requirements-ray.txt") from error
        return RayWorkerPool(size, on_message, on_exit)
    if backend not in BACKENDS:
        raise ValueError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    return WorkerPool(size or os.cpu_count() or 1, on_message, on_exit)
