"""Drive the DDPM Lab dashboard in Playwright, and know without races when Streamlit is done.

Right after a click or a key press the page still shows the old, idle state for up to ~200 ms,
so DOM checks alone return too early (see ../shared/browser-testing.md). ``ScriptRuns`` listens
to the app's websocket instead: it decodes every ``ForwardMsg`` and counts the full script runs
that finished, tracks whether a script (or the training panel's fragment) is running, and keeps
every progress-bar text and loss-chart size the server sent, in order, tagged with the run that
drew them, the last option of each keyed ECharts chart and the last payload of the reverse
animation. ``DashboardPage.act(...)`` does something and returns once a new full run has finished
and the DOM has caught up.

What is drawn is read through the page's own hooks: a live chart's ``aria-label`` (ECharts writes
the option's description there in the ``setOption`` that paints it), and the canvas animation's
``data-*`` attributes and ``paintLog`` (ui/animation.js). The numbers behind them (a chart's
series, the animation's frames) come from the websocket, once the DOM shows that very message.

Also collected on every page: console errors, uncaught page errors and requests to any host but
127.0.0.1; ``DashboardPage.check_clean()`` asserts there were none and no ``stException``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from playwright.sync_api import Locator, Page, WebSocket, expect
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from charts.animation import decode_points
from ui.controls import VIEW_LABELS

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

@dataclass(frozen=True)
class Mark:
    """A point in a page's websocket history (see ``ScriptRuns.mark``)."""

    started: int  # full runs started before it
    records: int  # records received before it


@dataclass
class Record:
    """Something a script run drew: a progress-bar text, or the number of points and the
    description of the loss chart."""

    run: int  # the full run it belongs to: 1 for the first, counting fragment runs with their page run
    fragment: bool  # drawn by a fragment run (the training panel polling)
    kind: str  # "progress", "loss_points" or "loss_label"
    value: str | int


ANIMATION_COMPONENT = "ddpm_lab_animation"  # ui/animation.py's components v2 name


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
    echarts: dict[str, dict] = field(default_factory=dict)  # the last option sent for each chart key
    animation: dict | None = None  # the last payload sent to the reverse animation
    # Streamlit sends a large message once, then only its hash while it is unchanged ("ref_hash"):
    # keep the elements we read by hash, so a repeated one counts as drawn again
    _cached: dict[str, ForwardMsg] = field(default_factory=dict)

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
        elif kind == "ref_hash" and message.ref_hash in self._cached:
            self._on_element(self._cached[message.ref_hash].delta.new_element)
        elif kind == "delta" and message.delta.WhichOneof("type") == "new_element":
            if self._on_element(message.delta.new_element) and message.hash:
                self._cached[message.hash] = message

    def _on_element(self, element) -> bool:
        """Read an element the page was sent; True if it is one we read (worth caching)."""
        match element.WhichOneof("type"):
            case "progress" if element.progress.text.startswith("**"):
                self._record("progress", element.progress.text)  # the training's bar ('**Label** · ...'), not a view's
            case "echarts_chart":
                key = element.echarts_chart.id.rsplit("-", 1)[-1]
                spec = self.echarts[key] = json.loads(element.echarts_chart.spec)
                if key == "loss_chart":
                    self._record("loss_points", len(spec["series"][0]["data"]))
                    self._record("loss_label", chart_description(spec))
            case "bidi_component" if element.bidi_component.component_name.endswith(ANIMATION_COMPONENT):
                self.animation = json.loads(element.bidi_component.json)
            case _:
                return False
        return True

    def _record(self, kind: str, value: str | int) -> None:
        self.records.append(Record(self.started, self.in_fragment, kind, value))


def chart_description(spec: dict) -> str:
    """What an ECharts option says it draws: ECharts writes it as the chart's aria-label."""
    return spec["aria"]["label"]["description"]


def series(spec: dict, name: str | None = None, index: int | None = None) -> list[list[float]]:
    """The [x, y] pairs (or values) of one series of an ECharts option, by name or position."""
    if index is not None:
        return spec["series"][index]["data"]
    found = [s["data"] for s in spec["series"] if s.get("name") == name]
    assert found, f"no series {name!r} in {[s.get('name') for s in spec['series']]}"
    return found[0]


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
        """Do ``action`` on a control drawn in a view's fragment (a view's display setting, the
        training buttons, the animation's reported choices) and wait for the run it causes: the
        fragment's, or the page's when the fragment hands over to a page run (``st.rerun()``, as
        the training view does when a run starts or pauses)."""
        since = self.runs.fragments_finished + self.runs.finished
        action()
        self._poll(lambda: self.runs.fragments_finished + self.runs.finished > since, timeout_ms,
                   "the run the view's control caused to finish")
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
        """Wait until training is finished, the run is sampled (the reverse animation is mounted
        with its frames), every view of the open tab has its worker's result, and the run that
        shows them has ended."""
        expect(self.progress).to_contain_text("Finished", timeout=timeout_ms)
        self.settle()
        self._poll(lambda: self.page.locator('[data-testid="stProgress"]:visible').count() == 1, timeout_ms,
                   "every view's result")
        self.settle()
        expect(self.page.get_by_role("heading", name="Reverse process: from noise to data")).to_be_visible()
        expect(self.animation).to_have_attribute("data-frames", re.compile(r"^[1-9]"))

    def last_loss_caption(self) -> float:
        caption = self.page.get_by_text(re.compile(r"^last loss \d")).filter(visible=True).inner_text()
        return float(caption.split()[-1])

    # --- the tabs ------------------------------------------------------------------------------------
    def tab(self, view: str) -> Locator:
        """The tab of ``view`` ('quality', 'samples', 'noise', 'field', 'compare')."""
        return self.page.get_by_role("tab", name=VIEW_LABELS[view], exact=True)

    def open_tab(self, view: str) -> Mark:
        """Click the tab of ``view``, as a user does, and wait for the page run it causes (tabs
        are lazy: only the open one is built)."""
        mark = self.act(lambda: self.tab(view).click())
        expect(self.tab(view)).to_have_attribute("aria-selected", "true")
        return mark

    # --- the live charts (keyed ECharts) --------------------------------------------------------------
    def echart(self, key: str) -> Locator:
        """The div ECharts was started on for the chart drawn with ``key=``: it carries the
        instance's id and the option's description as its aria-label, and stays the same node
        across updates."""
        return self.page.locator(f".st-key-{key} [_echarts_instance_]").filter(visible=True)

    @property
    def loss_chart(self) -> Locator:
        return self.echart("loss_chart")

    def chart_label(self, key: str) -> str:
        return self.echart(key).get_attribute("aria-label") or ""

    def chart_spec(self, key: str, timeout_ms: float = 30_000) -> dict:
        """The option the chart ``key`` shows now: the last one the server sent, once ECharts has
        painted it (the DOM's aria-label is its description)."""
        def shown() -> bool:
            spec = self.runs.echarts.get(key)
            return spec is not None and self.echart(key).count() == 1 and \
                self.chart_label(key) == chart_description(spec)
        self._poll(shown, timeout_ms, f"the chart {key} to show the last option sent")
        return self.runs.echarts[key]

    def loss_values(self) -> tuple[list[float], list[float]]:
        """(steps, losses) of the loss chart's raw series, as drawn."""
        data = series(self.chart_spec("loss_chart"), index=0)
        return [x for x, _ in data], [y for _, y in data]

    def series_lengths(self, key: str) -> dict[str, int]:
        """Points of each series of the chart ``key``, by name (absent series have 0)."""
        return {s["name"]: len(s["data"]) for s in self.chart_spec(key)["series"]}

    # --- the reverse animation (a components v2 canvas) ----------------------------------------------
    @property
    def animation(self) -> Locator:
        """The animation's root, inside the component's open shadow root (CSS locators pierce it)."""
        return self.page.locator(".ddpm-anim")

    def anim_attr(self, name: str) -> str:
        return self.animation.get_attribute(f"data-{name}")

    def animation_payload(self, timeout_ms: float = 30_000) -> dict:
        """The payload the animation shows now: the last one sent, once the canvas has taken it
        (its data-digest is the payload's)."""
        def shown() -> bool:
            payload = self.runs.animation
            return payload is not None and self.animation.count() == 1 and \
                self.anim_attr("digest") == payload["digest"]
        self._poll(shown, timeout_ms, "the animation to show the last payload sent")
        return self.runs.animation

    def frame_names(self) -> list[str]:
        return self.animation_payload()["labels"]

    def frame_points(self, frame: int = -1) -> tuple[list[float], list[float]]:
        """x and y of the moving points in one frame (by index, negative from the end), in the
        units drawn."""
        points = decode_points(self.animation_payload()["frames"])[frame]
        return points[:, 0].tolist(), points[:, 1].tolist()

    def animation_data(self) -> tuple[list[float], list[float]]:
        """x and y of the faint data points behind the animation."""
        points = decode_points(self.animation_payload()["data"])
        return points[:, 0].tolist(), points[:, 1].tolist()

    def canvas_pixels(self) -> str:
        """The animation's canvas as drawn, once the frame asked for is on it."""
        self.page.wait_for_timeout(100)  # a redraw waits for the next animation frame
        return self.animation.locator("canvas").evaluate("c => c.toDataURL()")

    def play_to_end(self, timeout_ms: float = 60_000) -> list[list[float]]:
        """Press the animation's Play from the first frame, wait for the last, and return its paint
        log: [frame, ms] of each frame painted."""
        self.animation.locator(".scrub").fill("0")
        expect(self.animation).to_have_attribute("data-frame", "0")
        self.animation.get_by_role("button", name="Play", exact=True).click()
        expect(self.animation).to_have_attribute("data-playing", "false", timeout=timeout_ms)
        expect(self.animation).to_have_attribute("data-frame", str(int(self.anim_attr("frames")) - 1))
        return self.animation.evaluate("r => r.paintLog")

    # --- Plotly charts -----------------------------------------------------------------------------
    def chart(self, key: str) -> Locator:
        """The Plotly div of the chart drawn with ``key=`` (Streamlit adds the class st-key-<key>).
        While a fragment reruns, Streamlit keeps the previous copies of its elements in the DOM,
        hidden (display: none): only the visible one counts."""
        return self.page.locator(f".st-key-{key} .js-plotly-plot").filter(visible=True)

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
