"""A lightweight Streamlit user: one websocket session that behaves like an open browser tab.

    python -m bench.load.client --port 8501 --query 'preset=improved&seed=3' [--query ...]

What the browser's frontend (Streamlit 1.67, ``App.tsx`` / ``WebsocketConnection``) does, and
this client does too, without drawing anything:

- connects to ``ws://HOST:PORT/_stcore/stream`` with subprotocol ``streamlit`` and a same-origin
  ``Origin`` header;
- sends ``BackMsg.rerun_script`` (a ``ClientState``) with the link's query string, an empty
  ``page_script_hash`` and ``page_name`` for the first run (the server answers with the main
  page's hash in ``new_session``, used from then on), the widget states, the hashes of the
  ForwardMsgs it has cached and a ``context_info`` (timezone, locale, url);
- follows ``page_info_changed`` (the page rewrote its query string: the next rerun sends it);
- ``auto_rerun{interval, fragment_id}``: a timer per fragment that sends
  ``rerun_script{fragment_id, is_auto_rerun: true, ...}`` every ``interval`` seconds (as the
  frontend's ``setInterval(() => widgetMgr.sendUpdateWidgetsMessage(fragmentId, true))``); an
  identical message keeps the running timer, a new interval replaces it;
  ``stop_auto_rerun{fragment_ids}`` cancels those timers, and a ``new_session`` of a full run
  (no fragment ids in ``metadata.run``) cancels them all (``cleanupAutoReruns``);
- keeps the ForwardMsg cache: a message whose ``metadata.cacheable`` is set is kept under its
  ``hash``; a later ``ref_hash`` is answered from it; entries older than the server's
  ``max_cached_message_age`` script runs expire (``ForwardMsgCache.incrementRunCount``);
- answers nothing else: the browser sends no heartbeat on its own (only when a host page asks),
  and websocket pings are answered by the websocket library.

Widget states: the browser sends the value of every widget it shows. This client sends empty
widget states: every widget on the page is keyed, and the server keeps a keyed widget's value
in the session when it is not sent, so the page behaves the same (it just never changes a widget).

Churn (``--churn``): the user finishes short runs again and again. Each query may hold
``{cycle}``, replaced by 0, 1, 2...: a new session opens the next cycle's link once the last one
showed 'Finished' with every view drawn (a full script run with no '…' in any text: no view
waiting for a worker). One 'cycle' event per finished, fully drawn run, with its seconds.

Training progress is read from the page itself: any text element (``st.progress`` text,
markdown, caption...) matching '**Label** ... step N' is parsed into (label, step). Output: one
JSON line per event on stdout, timestamps from ``time.time()``.

CPU: protobuf parsing of what the server sends, nothing else; one asyncio loop for all users.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

# '**Training** · epoch 5 / 1,000 · step 5 · 1.0 s · ETA 3.0 s' (the label may change; 'step N' stays)
PROGRESS_RE = re.compile(r"\*\*([^*]+)\*\*(.*?)\bstep ([\d,]+)")
MAX_TEXT = 4000  # longer strings (chart specs) are not progress texts: skip them, cheaply

FULL_RUN_DONE = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR}
RUN_DONE = FULL_RUN_DONE | {ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY}


def progress_in(text: str) -> tuple[str, int] | None:
    """(label, step) from a progress text such as '**Training** · ... · step 1,234 · ...'."""
    match = PROGRESS_RE.search(text)
    if match is None:
        return None
    return match.group(1).strip(), int(match.group(3).replace(",", ""))


def _texts(element) -> list[str]:
    """The short strings of an element (its one set ``type`` field, one level down)."""
    kind = element.WhichOneof("type")
    if kind is None:
        return []
    inner = getattr(element, kind)
    out = []
    for _descriptor, value in inner.ListFields():
        if isinstance(value, str) and len(value) <= MAX_TEXT:
            out.append(value)
    return out


@dataclass
class _Cached:
    raw: bytes
    run_count: int
    fragment_id: str | None


@dataclass
class UserStats:
    """What one user saw (also sent as events)."""

    user: int
    query: str
    connected_at: float | None = None
    full_runs: int = 0  # full script runs finished
    fragment_runs: int = 0  # fragment runs finished
    reruns_sent: int = 0
    auto_reruns_sent: int = 0
    messages: int = 0
    bytes: int = 0
    ref_hits: int = 0
    last_progress: tuple[str, int] | None = None
    errors: list[str] = field(default_factory=list)


class StreamlitUser:
    """One session on the server, driven like the browser drives it."""

    def __init__(self, user: int, port: int, query: str, emit: Callable[[dict], None], host: str = "127.0.0.1",
                 churn: bool = False):
        self.user = user
        self.url = f"ws://{host}:{port}/_stcore/stream"
        self.origin = f"http://{host}:{port}"
        self.template = query.lstrip("?")
        self.churn = churn
        self.cycle = 0
        self.query = self.template.replace("{cycle}", "0")
        self._busy_run = False  # a text with '…' in this full run: something still to come
        self._cycle_done = False
        self.emit = emit
        self.stats = UserStats(user, self.query)
        self.page_script_hash = ""
        self.page_name = ""
        self.max_cached_age = 2
        self.script_running = False
        self._cache: dict[str, _Cached] = {}
        self._run_count = 0
        self._fragments_this_run: list[str] = []
        self._timers: dict[str, tuple[float, asyncio.Task]] = {}
        self._ws = None

    # --- what the client sends ---------------------------------------------------------------
    def _rerun_msg(self, fragment_id: str | None = None, auto: bool = False) -> bytes:
        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = self.query
        state.widget_states.SetInParent()
        state.page_script_hash = self.page_script_hash
        state.page_name = self.page_name
        if fragment_id:
            state.fragment_id = fragment_id
        state.is_auto_rerun = auto
        state.cached_message_hashes.extend(self._cache.keys())
        info = state.context_info
        info.timezone = "UTC"
        info.timezone_offset = 0
        info.locale = "en-US"
        info.url = f"{self.origin}/?{self.query}" if self.query else f"{self.origin}/"
        info.is_embedded = False
        info.color_scheme = "light"
        return msg.SerializeToString()

    async def _send_rerun(self, fragment_id: str | None = None, auto: bool = False) -> None:
        await self._ws.send(self._rerun_msg(fragment_id, auto))
        self.stats.reruns_sent += 1
        self.stats.auto_reruns_sent += auto

    async def _auto_rerun(self, fragment_id: str, interval: float) -> None:
        while True:  # setInterval: fires every interval, whether or not a run is in progress
            await asyncio.sleep(interval)
            try:
                await self._send_rerun(fragment_id, auto=True)
            except ConnectionClosed:
                return  # the session is over; run() reports it

    def _set_timer(self, fragment_id: str, interval: float) -> None:
        current = self._timers.get(fragment_id)
        if current is not None and current[0] == interval:
            return
        self._clear_timer(fragment_id)
        self._timers[fragment_id] = (interval, asyncio.ensure_future(self._auto_rerun(fragment_id, interval)))

    def _clear_timer(self, fragment_id: str) -> None:
        entry = self._timers.pop(fragment_id, None)
        if entry is not None:
            entry[1].cancel()

    def _clear_timers(self) -> None:
        for fragment_id in list(self._timers):
            self._clear_timer(fragment_id)

    # --- what the server sends ---------------------------------------------------------------
    def _handle(self, raw: bytes) -> None:
        msg = ForwardMsg()
        msg.ParseFromString(raw)
        self.stats.messages += 1
        self.stats.bytes += len(raw)
        kind = msg.WhichOneof("type")
        if kind == "ref_hash":
            cached = self._cache.get(msg.ref_hash)
            if cached is None:
                self._error(f"ForwardMsg cache miss for {msg.ref_hash}")
                return
            cached.run_count = self._run_count
            metadata = msg.metadata
            msg = ForwardMsg()
            msg.ParseFromString(cached.raw)
            msg.metadata.CopyFrom(metadata)
            self.stats.ref_hits += 1
            kind = msg.WhichOneof("type")
        elif msg.metadata.cacheable and msg.hash and msg.hash not in self._cache:
            fragment = msg.delta.fragment_id if kind == "delta" else ""
            self._cache[msg.hash] = _Cached(raw, self._run_count, fragment or None)

        if kind == "new_session":
            fragments = list(msg.metadata.run.fragment_ids)
            self._fragments_this_run = fragments
            if not fragments:  # a full run: the frontend drops every auto-rerun timer
                self._busy_run = False
                self._clear_timers()
                session = msg.new_session
                if session.page_script_hash:
                    self.page_script_hash = session.page_script_hash
                if session.config.max_cached_message_age:
                    self.max_cached_age = session.config.max_cached_message_age
        elif kind == "session_status_changed":
            self.script_running = msg.session_status_changed.script_is_running
        elif kind == "page_info_changed":
            self.query = msg.page_info_changed.query_string
        elif kind == "auto_rerun":
            if msg.auto_rerun.fragment_id:
                self._set_timer(msg.auto_rerun.fragment_id, msg.auto_rerun.interval)
        elif kind == "stop_auto_rerun":
            for fragment_id in msg.stop_auto_rerun.fragment_ids:
                self._clear_timer(fragment_id)
        elif kind == "script_finished":
            status = msg.script_finished
            if status in RUN_DONE:
                self._expire_cache()
            if status in FULL_RUN_DONE:
                self.stats.full_runs += 1
                self.emit({"event": "script_finished", "user": self.user, "full": True})
                finished = self.stats.last_progress is not None and self.stats.last_progress[0] == "Finished"
                if self.churn and finished and not self._busy_run:
                    self._cycle_done = True
            elif status == ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY:
                self.stats.fragment_runs += 1
        elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
            element = msg.delta.new_element
            if element.WhichOneof("type") == "exception":  # the page shows a Python exception
                self._error(f"page exception: {element.exception.type}: {element.exception.message}"[:500])
            texts = _texts(element)
            if any("…" in text for text in texts):  # a view's progress, polled by its fragment until a worker is done
                self._busy_run = True
            for text in texts:
                found = progress_in(text)
                if found is not None:
                    if found != self.stats.last_progress:
                        self.stats.last_progress = found
                        self.emit({"event": "progress", "user": self.user, "label": found[0], "step": found[1],
                                   "fragment": bool(msg.delta.fragment_id)})
                    break

    def _expire_cache(self) -> None:
        self._run_count += 1
        fragments = self._fragments_this_run
        for key, entry in list(self._cache.items()):
            if fragments and (not entry.fragment_id or entry.fragment_id not in fragments):
                continue
            if self._run_count - entry.run_count > self.max_cached_age:
                del self._cache[key]

    def _error(self, text: str) -> None:
        self.stats.errors.append(text)
        self.emit({"event": "error", "user": self.user, "error": text})

    # --- the session -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, exit_when: str | None = None) -> None:
        """Connect, open the link, stay until ``stop`` (or until the progress label is
        ``exit_when``), then close the websocket cleanly so the server ends the session. With
        ``churn``, open the next cycle's link in a new session after each finished run, until ``stop``."""
        try:
            while not stop.is_set():
                started = time.time()
                await self._session(stop, exit_when)
                if not (self.churn and self._cycle_done):
                    break
                self.emit({"event": "cycle", "user": self.user, "cycle": self.cycle, "seconds": time.time() - started})
                self.cycle += 1
                self.query = self.template.replace("{cycle}", str(self.cycle))
                self._cycle_done, self._busy_run, self.stats.last_progress = False, False, None
                self.page_script_hash = self.page_name = ""
                self._cache.clear()
        finally:
            self._clear_timers()
            self.emit({"event": "closed", "user": self.user, "stats": _public(self.stats)})

    async def _session(self, stop: asyncio.Event, exit_when: str | None) -> None:
        try:
            async with connect(self.url, subprotocols=["streamlit"], origin=self.origin, max_size=None,
                               open_timeout=60, ping_interval=20, ping_timeout=60, close_timeout=5) as ws:
                self._ws = ws
                self.stats.connected_at = time.time()
                self.emit({"event": "connected", "user": self.user, "cycle": self.cycle})
                await self._send_rerun()
                receiver = asyncio.ensure_future(self._receive(ws, exit_when, stop))
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
                for task in (receiver, stopper):
                    task.cancel()
        except (TimeoutError, OSError) as error:
            self._error(f"connection: {error!r}")
        except Exception as error:  # noqa: BLE001 - report and end this user only
            self._error(f"{type(error).__name__}: {error}")
        finally:
            self._clear_timers()

    async def _receive(self, ws, exit_when: str | None, stop: asyncio.Event) -> None:
        async for raw in ws:
            if isinstance(raw, str):
                continue
            self._handle(raw)
            if self._cycle_done:
                return  # this run is finished and drawn: the next cycle opens a new session
            if exit_when and self.stats.last_progress and self.stats.last_progress[0] == exit_when \
                    and not self.script_running:
                return  # this user leaves; the others stay
        self._error("the server closed the websocket")


def _public(stats: UserStats) -> dict:
    out = dict(vars(stats))
    out["last_progress"] = list(stats.last_progress) if stats.last_progress else None
    return out


async def run_users(port: int, queries: list[str], duration: float, exit_when: str | None = None,
                    stagger: float = 0.0, churn: bool = False) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def emit(event: dict) -> None:
        event["t"] = time.time()
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

    users = [StreamlitUser(i, port, q, emit, churn=churn) for i, q in enumerate(queries)]
    tasks = []
    for user in users:
        tasks.append(asyncio.ensure_future(user.run(stop, exit_when)))
        if stagger:
            await asyncio.sleep(stagger)
    async def deadline() -> None:
        await asyncio.sleep(duration)
        stop.set()

    watchdog = asyncio.ensure_future(deadline())
    try:
        await asyncio.gather(*tasks)  # until stopped (signal, deadline) or, with exit_when, all left
    finally:
        stop.set()
        watchdog.cancel()
        emit({"event": "done"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--query", action="append", required=True, help="a link's query string, one per user")
    parser.add_argument("--duration", type=float, default=900.0, help="stop after this many seconds at most")
    parser.add_argument("--exit-when", default=None, help="each user leaves once its progress label is this")
    parser.add_argument("--stagger", type=float, default=0.0, help="seconds between users' connections")
    parser.add_argument("--churn", action="store_true", help="open the next cycle's link after each finished run")
    args = parser.parse_args(argv)
    asyncio.run(run_users(args.port, args.query, args.duration, args.exit_when, args.stagger, args.churn))


if __name__ == "__main__":
    main()
