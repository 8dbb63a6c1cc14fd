"""The workers as Ray actors: the same jobs and messages as ``runtime.pool``'s processes, on a Ray
cluster (``DDPM_LAB_BACKEND=ray``; Ray's own ``RAY_ADDRESS`` names the cluster, unset: a local one).

Each worker is an actor holding one CPU, so Ray places ``size`` of them across the cluster's nodes.
The registry is unchanged: it sees ``RayWorker``s with the pool's ``send``/``alive``/``pid`` and
gets every message and every death through the same two callbacks, so queueing, fairness, pause,
step, cancel and tasks work as they do locally. What crosses per call:

    server -> actor   ``run(job)``      one ``Train`` (the run's whole state, a few hundred kB) or
                                        ``Compute`` (the weights a task needs)
                      ``stop(job_id)``  a few bytes
    actor -> server   ``take()``        the messages since the last call (``Progress`` per chunk,
                                        at most ten a second; the end state once per job)

``take`` is a long poll: the server's reader thread for a worker waits in it until the actor has
something (or half a second passes). The code travels once per cluster (``diffusion`` and
``runtime`` as Ray ``py_modules``); each node needs the same Python packages (requirements.txt).

A worker lost with its node (or killed) raises in its reader's ``take``: the registry fails the
run it held with a message (its progress since it last paused is gone; finished runs live in the
registry on the server and are kept), and the pool asks Ray for a replacement actor, which takes
jobs once Ray has placed it.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import ray
from ray.exceptions import RayError

from .messages import Compute, FromWorker, Quit, Ready, Stop, ToWorker, Train
from .pool import ReadingPool
from .worker import WORKER_NICE, QuitAsked, run_job

ROOT = Path(__file__).resolve().parents[1]
TAKE_WAIT_S = 0.5  # the longest a reader's long poll waits for a message


class Mailbox:
    """The actor's side of its jobs: a ``runtime.worker.Channel`` whose messages wait here until
    the server takes them, and the stops the server sent.

    A run keeps its id across stints (pause, resume, Step), and a threaded actor may take a stop
    before the ``run`` it was sent after, so each stop names the stint it is for: the number of jobs
    the server had sent this actor when it sent the stop (``RayWorker``), which is the stint's own."""

    def __init__(self):
        self._changed = threading.Condition()
        self._out: list[FromWorker] = []
        self._stopped: set[tuple[int, int]] = set()  # (job id, stint)
        self._stint = 0
        self._quit = False

    def begin(self, stint: int) -> None:
        with self._changed:
            self._stint = stint
            self._stopped = {s for s in self._stopped if s[1] >= stint}

    def emit(self, message: FromWorker) -> None:
        with self._changed:
            self._out.append(message)
            self._changed.notify_all()

    def stop(self, job_id: int, stint: int) -> None:
        with self._changed:
            self._stopped.add((job_id, stint))
            self._changed.notify_all()

    def quit(self) -> None:
        with self._changed:
            self._quit = True
            self._changed.notify_all()

    def _asked(self, job_id: int) -> bool:
        return (job_id, self._stint) in self._stopped

    def stop_asked(self, job_id: int) -> bool:
        with self._changed:
            if self._quit:
                raise QuitAsked
            return self._asked(job_id)

    def wait(self, seconds: float, job_id: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self._quit or self._asked(job_id), seconds)

    def take(self, seconds: float) -> list[FromWorker]:
        with self._changed:
            self._changed.wait_for(lambda: bool(self._out), seconds)
            out, self._out = self._out, []
            return out


@ray.remote(num_cpus=1, max_concurrency=4, max_restarts=0)
class WorkerActor:
    """One worker: runs one job at a time (``run``) while the server takes its messages and sends
    stops on the actor's other threads."""

    def __init__(self):
        import torch

        torch.set_num_threads(1)  # as a local worker: one thread, one CPU, bit-identical results
        try:
            os.nice(WORKER_NICE)
        except OSError:
            pass
        self.mailbox = Mailbox()

    def placed(self) -> tuple[int, str]:
        """This actor's process id and the id of the Ray node it runs on."""
        return os.getpid(), ray.get_runtime_context().get_node_id()

    def run(self, job: Train | Compute, stint: int) -> None:
        self.mailbox.begin(stint)
        try:
            run_job(job, self.mailbox)
        except QuitAsked:
            pass

    def stop(self, job_id: int, stint: int) -> None:
        self.mailbox.stop(job_id, stint)

    def quit(self) -> None:
        self.mailbox.quit()

    def take(self, seconds: float) -> list[FromWorker]:
        return self.mailbox.take(seconds)


class RayWorker:
    """The server's handle on one actor. ``alive`` once Ray has placed and started it (a replacement
    waiting for a free CPU takes no jobs) and until it is lost."""

    def __init__(self, index: int):
        self.index = index
        self.actor = WorkerActor.remote()
        self.pid: int | None = None
        self.node_id: str | None = None
        self.ready = False
        self.lost = False
        self._stints = 0  # jobs sent to the actor so far: a stop is for the latest (``Mailbox``)

    def send(self, message: ToWorker) -> bool:
        if self.lost:
            return False
        match message:
            case Train() | Compute():
                self._stints += 1
                self.actor.run.remote(message, self._stints)
            case Stop(job_id=job_id):
                self.actor.stop.remote(job_id, self._stints)
            case Quit():
                self.actor.quit.remote()
        return True

    @property
    def alive(self) -> bool:
        return self.ready and not self.lost

    @property
    def where(self) -> str | None:
        """The node, as the page names it (``ray status`` and Ray's dashboard show the same ids)."""
        return f"Ray node {self.node_id[:8]}" if self.node_id else None


def job_runtime_env() -> dict:
    """Where the code comes from on the cluster's nodes: this checkout's two packages, shipped once
    per connection (Ray allows local directories only for the whole job, at ``ray.init``)."""
    return {"py_modules": [str(ROOT / "diffusion"), str(ROOT / "runtime")], "env_vars": {"OMP_NUM_THREADS": "1"}}


def connect(address: str | None = None) -> None:
    """Join the cluster at ``address`` or ``RAY_ADDRESS`` (neither: start a Ray of its own, even where
    `ray start` left one running on this machine), unless this
    process has joined one already (it must then have passed ``job_runtime_env()`` itself).

    ``ray.init`` runs on a thread of its own that stays alive with the process: a local cluster's
    processes are started to die with the thread that started them (Linux's parent-death signal is
    per thread), and the page's first caller is a script thread that ends with its rerun."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    _check_listening(address)  # None: "local", a Ray of this process's own, not one `ray start` left here
    done: dict = {}
    started = threading.Event()

    def keep() -> None:
        try:
            ray.init(address=address or "local", runtime_env=job_runtime_env(),
                     log_to_driver=False, include_dashboard=False, configure_logging=False)
        except BaseException as error:  # noqa: BLE001 - handed to the caller below
            done["error"] = error
        started.set()
        if "error" not in done:
            threading.Event().wait()  # the cluster's processes live as long as this thread

    with _CONNECT_LOCK:
        if ray.is_initialized():
            return
        threading.Thread(target=keep, name="ray-connection", daemon=True).start()
        started.wait()
    error = done.get("error")
    if isinstance(error, ConnectionError):
        raise ConnectionError(unreachable(address, error)) from error
    if error is not None:
        raise error


_CONNECT_LOCK = threading.Lock()


def _check_listening(address: str | None) -> None:
    """Fail at once where nothing listens at a ``host:port`` address (Ray itself retries for minutes)."""
    host, _, port = (address or "").rpartition(":")
    if not host or not port.isdigit() or "://" in address:
        return  # a local start, "auto" or a client address: Ray's own checks
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise ConnectionError(unreachable(address, error)) from error


def unreachable(address: str | None, error: Exception) -> str:
    """Why joining the cluster at ``address`` failed, and the two usual causes: no cluster there, or
    one that wants a token (``ray start`` turns token authentication on) from a process without it."""
    why = f"could not join the Ray cluster at RAY_ADDRESS={address!r} ({error}). Is it started (`ray start --head`)?"
    if os.environ.get("RAY_AUTH_MODE", "").strip().lower() != "token":
        why += (" If it asks for a token, set RAY_AUTH_MODE=token here too (the token is read from ~/.ray/auth_token,"
                " or from RAY_AUTH_TOKEN: `ray get-auth-token` on the head prints it).")
    return why + " Unset RAY_ADDRESS to start a local Ray instead."


class RayWorkerPool(ReadingPool):
    """``size`` worker actors (None: one per CPU of the cluster), read and replaced as
    ``runtime.pool.WorkerPool``'s processes are."""

    reader_name = "ray-worker"

    def __init__(self, size: int | None, on_message: Callable[[RayWorker, FromWorker], None],
                 on_exit: Callable[[RayWorker, str], None]):
        connect()
        super().__init__(size or int(ray.cluster_resources().get("CPU", 1)), on_message, on_exit)

    def _new_worker(self, index: int) -> RayWorker:
        return RayWorker(index)

    def _read(self, worker: RayWorker) -> None:
        try:
            worker.pid, worker.node_id = ray.get(worker.actor.placed.remote())
            worker.ready = True
            self._on_message(worker, Ready())
            while not self._closing:
                for message in ray.get(worker.actor.take.remote(TAKE_WAIT_S)):
                    self._on_message(worker, message)
        except RayError as error:
            reason = f"its Ray worker was lost: {type(error).__name__}"
        except Exception as error:  # noqa: BLE001 - an unreadable message: the worker is unusable
            print(f"ray worker {worker.pid}: {error!r}; stopping it", file=sys.stderr)
            ray.kill(worker.actor, no_restart=True)
            reason = f"its Ray worker failed: {error!r}"
        else:
            return
        worker.lost = True
        self._lost(worker, reason)

    def node_ids(self) -> list[str]:
        with self._lock:
            return [w.node_id for w in self.workers if w.node_id is not None]

    def close(self, timeout: float = 1.0) -> None:
        """Kill every actor (Ray stops their processes); the cluster itself stays up."""
        for worker in self._closing_workers():
            worker.lost = True
            try:
                ray.kill(worker.actor, no_restart=True)
            except RayError:
                pass
