"""Drive the DDPM Lab dashboard in Playwright, and know without races when Streamlit is done.

Right after a click or a key press the page still shows the old, idle state for up to ~200 ms,
so DOM checks alone return too early (see ../shared/browser-testing.md). ``ScriptRuns`` listens
to the app's websocket instead: it decodes every ``ForwardMsg`` and counts the full script runs
that finished, tracks whether a script (or the training panel's fragment) is running, and keeps
every progress-bar text and loss-chart size the server sent, in order, tagged with the run that
drew them. ``DashboardPage.act(...)`` does something and returns once a new full run has finished
and the DOM has caught up.

Also collected on every page: console errors, uncaught page errors and requests to any host but
127.0.0.1; ``DashboardPage.check_clean()`` asserts there were none and no ``stException``.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import Locator, Page, WebSocket, expect
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from ui.panels import DEFERRED_NOTE

ALLOWED_HOSTS = {"127.0.0.1"}

# A full script run that ran to its end (fragment runs and runs cut short for a rerun don't count).
_FULL_RUN_DONE = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR}

# The page has caught up: no script running, connected, nothing shown greyed out as stale. (While
# a fragment reruns, Streamlit keeps earlier copies of its elements hidden, stale: those don't count.)
_IDLE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !!app && app.getAttribute('data-test-script-state') === 'notRunning'
    && app.getAttribute('data-test-connection-state') === 'CONNECTED'
    && ![...document.querySelectorAll('[data-stale="true"]')].some(e => e.getClientRects().length > 0);
}"""

# Plotly's own Pause button (and any animate call while one plays) interrupts the playing
# animation, and plotly.js then rejects the interrupted Plotly.animate promise with no reason, which
# nobody catches: Chromium reports "Uncaught (in promise) undefined". Only that rejection, within
# 10 s of a 'plotly_animationinterrupted' event on a chart the test watches, is excused; any other
# stays a page error.
_PAGE_HOOKS_JS = """
window.__e2e = {lastInterrupt: -1e9, excused: 0};
window.addEventListener('unhandledrejection', (event) => {
  if (event.reason === undefined && performance.now() - window.__e2e.lastInterrupt < 10000) {
    event.preventDefault();
    window.__e2e.excused += 1;
  }
});
"""

# Plotly 7 keeps typed arrays as {dtype, bdata}: decode them to plain numbers.
_DECODE_JS = """(value) => {
  if (value == null) return [];
  if (Array.isArray(value) || ArrayBuffer.isView(value)) return Array.from(value);
  const types = {f4: Float32Array, f8: Float64Array, i1: Int8Array, u1: Uint8Array, i2: Int16Array,
                 u2: Uint16Array, i4: Int32Array, u4: Uint32Array};
  const raw = atob(value.bdata);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return Array.from(new types[value.dtype](bytes.buffer));
}"""


@dataclass(frozen=True)
class Mark:
    """A point in a page's websocket history (see ``ScriptRuns.mark``)."""

    started: int  # full runs started before it
    records: int  # records received before it


@dataclass
class Record:
    """Something a script run drew: a progress-bar text or the number of points of the loss chart."""

    run: int  # the full run it belongs to: 1 for the first, counting fragment runs with their page run
    fragment: bool  # drawn by a fragment run (the training panel polling)
    kind: str  # "progress" or "loss_points"
    value: str | int


@dataclass
class ScriptRuns:
    """What the server told this page over its websocket."""

    started: int = 0  # full script runs started
    finished: int = 0  # full script runs that ran to the end (not fragment runs, not cut short)
    last_finished: int = 0  # the number of the last full run that ran to the end (see ``started``)
    fragments_finished: int = 0  # fragment runs that ran to the end (a view's own controls, the training poll)
    running: bool = False  # a script or fragment run is in progress
    in_fragment: bool = False
    records: list[Record] = field(default_factory=list)

    def on_websocket(self, socket: WebSocket) -> None:
        if urlsplit(socket.url).path.endswith("/_stcore/stream"):
            socket.on("framereceived", self._on_frame)

    def mark(self) -> Mark:
        return Mark(self.started, len(self.records))

    def after(self, mark: Mark, kind: str, *, new_runs_only: bool = True) -> list:
        """Values of ``kind`` received after ``mark``; with ``new_runs_only``, only from full runs
        started after it (and their fragment runs), not from a run of the previous settings."""
        return [r.value for r in self.records[mark.records:]
                if r.kind == kind and (r.run > mark.started or not new_runs_only)]

    def _on_frame(self, payload: str | bytes) -> None:
        if isinstance(payload, str):
            return
        message = ForwardMsg()
        message.ParseFromString(payload)
        kind = message.WhichOneof("type")
        if kind == "new_session":
            self.in_fragment = bool(message.metadata.run.fragment_ids)
            self.started += not self.in_fragment
        elif kind == "session_status_changed":
            self.running = message.session_status_changed.script_is_running
        elif kind == "script_finished":
            if message.script_finished in _FULL_RUN_DONE:
                self.finished += 1
                self.last_finished = self.started
            elif message.script_finished == ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY:
                self.fragments_finished += 1
        elif kind == "delta" and message.delta.WhichOneof("type") == "new_element":
            element = message.delta.new_element
            if element.WhichOneof("type") == "progress" and element.progress.text.startswith("**"):
                self._record("progress", element.progress.text)  # the training's bar ('**Label** · ...'), not a view's
            elif element.WhichOneof("type") == "plotly_chart" and element.plotly_chart.id.endswith("loss_chart"):
                self._record("loss_points", _points_in(json.loads(element.plotly_chart.spec)["data"][0].get("x")))

    def _record(self, kind: str, value: str | int) -> None:
        self.records.append(Record(self.started, self.in_fragment, kind, value))


_ITEM_BYTES = {"f4": 4, "f8": 8, "i1": 1, "u1": 1, "i2": 2, "u2": 2, "i4": 4, "u4": 4}


def _points_in(values) -> int:
    """Length of a Plotly data array as sent: a list, or {dtype, bdata} (base64)."""
    if values is None:
        return 0
    if isinstance(values, dict):
        return len(base64.b64decode(values["bdata"])) // _ITEM_BYTES[values["dtype"]]
    return len(values)


def progress_step(text: str) -> int:
    """The optimizer step in a progress text such as '**Training** · epoch 5 / 1,000 · step 5 · …'."""
    match = re.search(r"step ([\d,]+)", text)
    assert match, f"no step in progress text {text!r}"
    return int(match.group(1).replace(",", ""))


class DashboardPage:
    """One browser tab on the dashboard: a fresh Streamlit session."""

    def __init__(self, page: Page, base_url: str):
        self.page = page
        self.base_url = base_url.rstrip("/")
        self.runs = ScriptRuns()
        self.console_errors: list[str] = []
        self.foreign_requests: list[str] = []
        page.on("websocket", self.runs.on_websocket)
        page.on("websocket", lambda socket: self._check_url(socket.url))
        page.on("request", lambda request: self._check_url(request.url))
        page.on("console", self._on_console)
        page.on("pageerror", lambda error: self.console_errors.append(f"page error: {error}"))
        page.add_init_script(_PAGE_HOOKS_JS)

    # --- what the page must never do -------------------------------------------------------------
    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme in ("data", "blob", "about"):
            return
        if parts.hostname not in ALLOWED_HOSTS:
            self.foreign_requests.append(url)

    def _on_console(self, message) -> None:
        if message.type == "error":
            self.console_errors.append(f"console error: {message.text} ({message.location})")

    def exceptions(self) -> Locator:
        return self.page.locator('[data-testid="stException"]')

    def check_clean(self) -> None:
        """No Streamlit exception shown, no console errors, no request off this machine."""
        assert self.exceptions().count() == 0, "stException on the page:\n" + "\n".join(self.exceptions().all_inner_texts())
        assert not self.console_errors, "errors in the browser console:\n" + "\n".join(self.console_errors)
        assert not self.foreign_requests, "requests to hosts other than 127.0.0.1:\n" + "\n".join(self.foreign_requests)

    # --- waiting for Streamlit ---------------------------------------------------------------------
    def _poll(self, condition: Callable[[], bool], timeout_ms: float, what: str) -> None:
        """Wait for ``condition``; websocket events are only delivered inside Playwright calls."""
        deadline = time.monotonic() + timeout_ms / 1000
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_ms / 1000:.0f} s waiting for {what}")
            self.page.wait_for_timeout(50)

    def settle(self, since: int | None = None, timeout_ms: float = 60_000) -> None:
        """Wait until the ``since + 1``-th full run (or any, if None) has finished, no script runs,
        and the DOM shows it; then check that no exception is shown."""
        if since is not None:
            self._poll(lambda: self.runs.finished > since, timeout_ms, f"script run #{since + 1} to finish")
        self._poll(lambda: not self.runs.running, timeout_ms, "the script to stop running")
        self.page.wait_for_function(_IDLE_JS, timeout=timeout_ms)
        expect(self.exceptions()).to_have_count(0)

    def act(self, action: Callable[[], object], timeout_ms: float = 60_000) -> Mark:
        """Do ``action`` and wait for the rerun it causes. Returns a mark of the websocket history
        from just before it (see ``ScriptRuns.after``)."""
        mark = self.runs.mark()
        action()
        # a run that started before the action (a fragment asking for a page rerun) may end after
        # it: only a full run started after the mark answers the action
        self._poll(lambda: self.runs.last_finished > mark.started, timeout_ms, "a script run started after the action to finish")
        self.settle(None, timeout_ms)
        return mark

    def act_in_view(self, action: Callable[[], object], timeout_ms: float = 30_000) -> None:
        """Do ``action`` on a view's own control (drawn in the view's fragment) and wait for the
        fragment run it causes, not a page run."""
        since = self.runs.fragments_finished
        action()
        self._poll(lambda: self.runs.fragments_finished > since, timeout_ms, "the view's fragment run to finish")
        self.settle(None, timeout_ms)

    def open(self, url: str | None = None, timeout_ms: float = 90_000) -> None:
        """Load the dashboard (``url``: a full address, or a query such as '?lr=0.002') and wait
        for its first run."""
        if url is None:
            url = self.base_url + "/"
        elif url.startswith("?"):
            url = self.base_url + "/" + url
        self.page.goto(url)
        self.settle(0, timeout_ms)
        # a fresh page's first run leaves the animations out and asks for them once the loss is drawn: wait
        # for that run too, so it can't be taken for the answer to the test's next action
        expect(self.page.get_by_text(DEFERRED_NOTE)).to_have_count(0, timeout=timeout_ms)
        self.settle(None, timeout_ms)

    def wait_until(self, condition: Callable[[], bool], what: str, timeout_ms: float = 60_000) -> None:
        self._poll(condition, timeout_ms, what)

    def query(self) -> dict[str, str]:
        """The address bar's query parameters."""
        return {key: values[-1] for key, values in parse_qs(urlsplit(self.page.url).query).items()}

    def expect_query(self, wanted: dict[str, str], timeout_ms: float = 10_000) -> None:
        """Wait for the address bar to carry exactly ``wanted``, then for the run that wrote it to
        end: the page writes the query near the start of a run, so what the run draws after it
        (the progress bar, the charts) may still be on its way when the URL changes."""
        try:
            self._poll(lambda: self.query() == wanted, timeout_ms, f"the URL's query to be {wanted}")
        except AssertionError:
            assert self.query() == wanted, self.page.url
        self.settle()

    # --- training ----------------------------------------------------------------------------------
    @property
    def progress(self) -> Locator:
        """The training's progress bar (a view waiting for a worker's result draws its own)."""
        return self.page.locator(".st-key-training_progress").get_by_test_id("stProgress").filter(visible=True)

    def wait_for_finished(self, timeout_ms: float = 120_000) -> None:
        """Wait until training is finished, every view has its worker's result and the run that
        shows them has ended."""
        expect(self.progress).to_contain_text("Finished", timeout=timeout_ms)
        self.settle()
        self._poll(lambda: self.page.locator('[data-testid="stProgress"]:visible').count() == 1, timeout_ms,
                   "every view's result")
        self.settle()
        expect(self.page.get_by_role("heading", name="Downloads")).to_be_visible()

    def last_loss_caption(self) -> float:
        caption = self.page.get_by_text(re.compile(r"^last loss \d")).filter(visible=True).inner_text()
        return float(caption.split()[-1])

    # --- Plotly charts -----------------------------------------------------------------------------
    def chart(self, key: str) -> Locator:
        """The Plotly div of the chart drawn with ``key=`` (Streamlit adds the class st-key-<key>).
        While a fragment reruns, Streamlit keeps the previous copies of its elements in the DOM,
        hidden (display: none): only the visible one counts."""
        return self.page.locator(f".st-key-{key} .js-plotly-plot").filter(visible=True)

    @property
    def loss_chart(self) -> Locator:
        return self.chart("loss_chart")

    @property
    def reverse_chart(self) -> Locator:
        return self.chart("reverse_chart")

    def plotted(self, chart: Locator, function_js: str, arg=None, timeout_ms: float = 30_000):
        """``function_js(plotlyDiv, arg)`` evaluated on ``chart`` once Plotly has drawn it (a
        freshly mounted chart has no ``_fullData`` for a moment)."""
        wrapped = f"(d, arg) => d._fullData ? {{value: ({function_js})(d, arg)}} : null"
        deadline = time.monotonic() + timeout_ms / 1000
        while (result := chart.evaluate(wrapped, arg)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"Plotly did not draw {chart} within {timeout_ms / 1000:.0f} s")
            self.page.wait_for_timeout(50)
        return result["value"]

    def traces(self, chart: Locator) -> list[tuple[str, int]]:
        """(name, number of points) of each trace as drawn."""
        return [tuple(t) for t in self.plotted(chart, "d => d._fullData.map(t => [t.name, t.x ? t.x.length : 0])")]

    def trace_y(self, chart: Locator, index: int = 0) -> list[float]:
        return self.plotted(chart, "(d, i) => Array.from(d._fullData[i].y)", index)

    def trace_xy(self, chart: Locator, index: int) -> tuple[list[float], list[float]]:
        return tuple(self.plotted(chart, "(d, i) => [Array.from(d._fullData[i].x), Array.from(d._fullData[i].y)]", index))

    def frame_names(self, chart: Locator) -> list[str]:
        return self.plotted(chart, "d => d._transitionData._frames.map(f => f.name)")

    def frame_points(self, chart: Locator, frame: int = -1, trace: int = 0) -> tuple[list[float], list[float]]:
        """x and y of one trace of one animation frame (by index, negative from the end)."""
        return tuple(self.plotted(
            chart,
            f"""(d, [k, i]) => {{
                const decode = {_DECODE_JS};
                const frames = d._transitionData._frames;
                const data = frames[k < 0 ? frames.length + k : k].data[i];
                return [decode(data.x), decode(data.y)];
            }}""",
            [frame, trace],
        ))

    @staticmethod
    def watch_animation_interrupts(chart: Locator) -> None:
        """Excuse plotly.js's uncaught rejection when this chart's animation is interrupted."""
        chart.evaluate("d => d.on('plotly_animationinterrupted', () => { window.__e2e.lastInterrupt = performance.now(); })")

    def slider_active(self, chart: Locator) -> int:
        return self.plotted(chart, "d => d._fullLayout.sliders[0].active")

    # --- sidebar widgets ---------------------------------------------------------------------------
    @property
    def sidebar(self) -> Locator:
        return self.page.get_by_test_id("stSidebar")

    def choose(self, label: str, option: str) -> Mark:
        """Pick ``option`` in the sidebar's selectbox ``label``."""
        def action():
            box = self.sidebar.get_by_role("combobox", name=label)
            box.scroll_into_view_if_needed()
            box.click()
            box.press_sequentially(option)  # the list filters as one types (and opens if it closed)
            self.page.get_by_role("option", name=option, exact=True).click()
        return self.act(action)

    def press_slider(self, label: str, key: str, times: int = 1) -> Mark:
        """Move the sidebar's (select_)slider ``label`` from the keyboard: focus, then ``key``."""
        slider = self.sidebar.get_by_role("slider", name=label)

        def action():
            slider.focus()
            for _ in range(times):
                slider.press(key)
        return self.act(action)

    def type_number(self, label: str, value: int | float) -> Mark:
        """Type a new value into the sidebar's number input ``label`` and press Enter."""
        field = self.sidebar.get_by_role("spinbutton", name=label)

        def action():
            field.fill(str(value))
            field.press("Enter")
        return self.act(action)

    def upload(self, label: str, name: str, content: bytes, mime: str = "text/csv") -> Mark:
        """Give the sidebar's file uploader ``label`` a file, as if dropped on it."""
        chooser = self.sidebar.get_by_label(label, exact=True).get_by_test_id("stFileUploaderDropzoneInput")
        return self.act(lambda: chooser.set_input_files({"name": name, "mimeType": mime, "buffer": content}))

    def screenshot(self, path: Path, *, whole_page: bool = False) -> Path:
        """Save a screenshot; ``whole_page`` first grows the viewport to the content's full height
        (Streamlit scrolls inside the page, so full_page alone captures one viewport)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if not whole_page:
            self.page.screenshot(path=path)
            return path
        size = self.page.viewport_size
        height = self.page.evaluate(
            "() => Math.max(...['stMain', 'stAppViewContainer', 'stSidebarContent'].map("
            "id => { const e = document.querySelector(`[data-testid='${id}']`); return e ? e.scrollHeight : 0; }))"
        )
        self.page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height) + 40, 6000))})
        try:
            self.page.wait_for_function(_IDLE_JS)
            self.page.wait_for_timeout(500)  # let Plotly finish its relayout
            self.page.screenshot(path=path, full_page=True)
        finally:
            self.page.set_viewport_size(size)
        return path
