"""One real Chromium page: how fast a user sees a display-only change, and a finished run's link.

Elements are found by what they say, not where they sit, so the page's layout may change:
- the loss chart is the visible, current (not stale) ECharts chart whose ``aria-label`` (written by
  ECharts inside the ``setOption`` that paints; ``charts/live.py``) reads 'loss: N steps of M,
  log|linear axis, ...'; on pages before the ECharts charts, the visible Plotly chart whose y-axis
  title mentions 'loss' (``_fullData[0].x``, ``_fullLayout.yaxis.type``);
- the finished state is a visible text matching 'Finished ... step N';
- the toggle is 'Log-scale loss': beside the loss chart (a rerun of that view alone), or in the
  sidebar's 'Display' expander in versions of the page that kept it there.

Knowing that a rerun has finished (../../shared/browser-testing.md): the page's websocket frames
are decoded (``ForwardMsg``), full script runs that finished are counted and
``session_status_changed`` is tracked; after an action we wait for the count to grow, for no
script to run, then for the DOM to show it (``stApp`` notRunning, CONNECTED, nothing stale).
The "visible" time is measured in the page, as ``bench/browser_latency.py`` does: from the
click's ``mousedown`` (a capturing listener stamps ``performance.now()``) to the first animation
frame in which a ``requestAnimationFrame`` poller finds the loss chart's y axis in its new type
(content only the new run can draw), plus one more animation frame (so that frame was painted).
"""

from __future__ import annotations

import statistics
import time
from urllib.parse import urlsplit

from playwright.sync_api import Browser, BrowserContext, Page, Playwright, WebSocket
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

CHROMIUM = "/usr/lib/chromium/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1600}
POLL_MS = 20

_FULL_RUN_DONE = {ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_WITH_COMPILE_ERROR}

_FIND_LOSS_JS = """
const visible = (e) => e.getClientRects().length > 0 && !e.closest('[data-stale="true"]');
// the loss chart as {points, axis} ('log' or 'linear'), or null
const lossChart = () => {
  for (const e of document.querySelectorAll('[_echarts_instance_][aria-label]')) {
    const m = /^loss: (\\d+) steps of \\d+, (log|linear) axis/.exec(e.getAttribute('aria-label'));
    if (m && visible(e)) return {points: +m[1], axis: m[2]};
  }
  const d = [...document.querySelectorAll('.js-plotly-plot')].find(d => visible(d) && d._fullLayout && d._fullData
      && /loss/i.test(((d._fullLayout.yaxis || {}).title || {}).text || ''));
  if (!d) return null;
  return {points: d._fullData.length && d._fullData[0].x ? d._fullData[0].x.length : 0, axis: d._fullLayout.yaxis.type};
};
const pageText = () => (document.querySelector('[data-testid="stMain"]') || document.body).innerText;
"""

# performance.now() once a finished run's loss curve is drawn, else null
_FINISHED_DRAWN_JS = "() => {" + _FIND_LOSS_JS + """
  const d = lossChart();
  return d && d.points > 0 && /\\bFinished\\b[^\\n]*\\bstep [\\d,]+/.test(pageText()) ? performance.now() : null;
}"""

# Arms the poller for a flip to ``wanted``; window.__benchFlip.done - .at is then the time it took
_ARM_AXIS_JS = "(wanted) => {" + _FIND_LOSS_JS + """
  const flip = window.__benchFlip = {at: null, done: null, wanted};
  const tick = () => {
    if (window.__benchFlip !== flip) return;
    const d = lossChart();
    if (flip.at !== null && d && d.axis === wanted) requestAnimationFrame(() => { flip.done = performance.now(); });
    else requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""

_AXIS_TYPE_JS = "() => {" + _FIND_LOSS_JS + """
  const d = lossChart();
  return d ? d.axis : null;
}"""

IDLE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !!app && app.getAttribute('data-test-script-state') === 'notRunning'
    && app.getAttribute('data-test-connection-state') === 'CONNECTED'
    && ![...document.querySelectorAll('[data-stale="true"]')].some(e => e.getClientRects().length > 0);
}"""

# the action's stamp: the first mousedown or keydown after the poller was armed
_STAMP_ACTIONS_JS = """
(() => {
  const stamp = () => { const f = window.__benchFlip; if (f && f.at === null) f.at = performance.now(); };
  window.addEventListener('mousedown', stamp, true);
  window.addEventListener('keydown', stamp, true);
})();
"""


class Runs:
    """What the server told one page over its websocket: full runs finished, script running."""

    def __init__(self) -> None:
        self.finished = 0
        self.fragments = 0  # fragment runs that finished
        self.running = False
        self.frames = 0
        self.exceptions: list[str] = []

    def attach(self, page: Page) -> None:
        page.on("websocket", self._on_websocket)

    def _on_websocket(self, socket: WebSocket) -> None:
        if urlsplit(socket.url).path.endswith("/_stcore/stream"):
            socket.on("framereceived", self._on_frame)

    def _on_frame(self, payload) -> None:
        if isinstance(payload, str):
            return
        self.frames += 1
        msg = ForwardMsg()
        msg.ParseFromString(payload)
        kind = msg.WhichOneof("type")
        if kind == "session_status_changed":
            self.running = msg.session_status_changed.script_is_running
        elif kind == "script_finished":
            self.finished += msg.script_finished in _FULL_RUN_DONE
            self.fragments += msg.script_finished == ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY
        elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element" \
                and msg.delta.new_element.WhichOneof("type") == "exception":
            self.exceptions.append(msg.delta.new_element.exception.message[:300])


class PageTimer:
    """Owns the browser; each measurement opens its own page (a fresh Streamlit session)."""

    def __init__(self, playwright: Playwright, base_url: str, executable: str = CHROMIUM):
        self.base_url = base_url.rstrip("/")
        self.browser: Browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        self.context: BrowserContext = self.browser.new_context(viewport=VIEWPORT)
        self.foreign: list[str] = []

    def close(self) -> None:
        self.context.close()
        self.browser.close()

    def _page(self) -> tuple[Page, Runs]:
        page = self.context.new_page()
        runs = Runs()
        runs.attach(page)
        page.on("request", self._check_host)
        page.add_init_script(_STAMP_ACTIONS_JS)
        return page, runs

    def _check_host(self, request) -> None:
        host = urlsplit(request.url).hostname
        if host not in (None, "127.0.0.1") and not request.url.startswith(("data:", "blob:")):
            self.foreign.append(request.url)

    @staticmethod
    def _poll(page: Page, condition, timeout_s: float) -> bool:
        """Wait for ``condition()``; events are delivered only inside Playwright calls."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                return False
            page.wait_for_timeout(POLL_MS)
        return True

    def _settle(self, page: Page, runs: Runs, since: int, timeout_s: float, fragments_since: int | None = None) -> bool:
        """Wait for a full run after ``since`` (or a full or fragment run, with ``fragments_since``)."""
        deadline = time.monotonic() + timeout_s

        def done() -> bool:
            if fragments_since is not None and runs.fragments > fragments_since:
                return not runs.running
            return runs.finished > since and not runs.running

        if not self._poll(page, done, timeout_s):
            return False
        try:
            page.wait_for_function(IDLE_JS, timeout=max(1.0, deadline - time.monotonic()) * 1000, polling=POLL_MS)
        except Exception:  # noqa: BLE001 - a timeout: report it as not settled
            return False
        return True

    def open_finished(self, query: str, timeout_s: float = 90.0, keep: bool = False):
        """Open the link of a finished run in a new page; seconds until its loss curve is drawn
        (and 'Finished ... step N' shown), measured from the navigation's start in the page, and
        until the first script run has ended. Returns (result dict, page or None)."""
        page, runs = self._page()
        url = f"{self.base_url}/?{query.lstrip('?')}" if query else f"{self.base_url}/"
        started = time.monotonic()
        result = {"query": query, "drawn_s": None, "wall_drawn_s": None, "settled_s": None, "error": None}
        try:
            page.goto(url, wait_until="commit", timeout=timeout_s * 1000)
            handle = page.wait_for_function(_FINISHED_DRAWN_JS, timeout=timeout_s * 1000, polling=POLL_MS)
            result["drawn_s"] = round(handle.json_value() / 1000, 3)  # performance.now(): since navigation start
            result["wall_drawn_s"] = round(time.monotonic() - started, 3)
            if self._settle(page, runs, 0, max(5.0, timeout_s - (time.monotonic() - started))):
                result["settled_s"] = round(time.monotonic() - started, 3)
        except Exception as error:  # noqa: BLE001 - a timeout or a closed page: recorded, not fatal
            result["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        if runs.exceptions:
            result["error"] = (result["error"] or "") + f" page exception: {runs.exceptions[0]}"
        if keep and result["error"] is None:
            return result, (page, runs)
        page.close()
        return result, None

    def display_toggles(self, query: str, times: int = 5, timeout_s: float = 60.0) -> dict:
        """Open the finished run's link and flip 'Log-scale loss' (beside the loss chart, or in the
        sidebar's 'Display' expander on older pages) ``times`` times. For each flip: seconds from
        the click's mousedown until a painted frame shows the loss chart's y axis in the new scale
        (in the page), and until the rerun has finished and the page is idle (frame counting)."""
        opened, kept = self.open_finished(query, timeout_s=max(timeout_s, 90.0), keep=True)
        out = {"open": opened, "visible_s": [], "settled_s": [], "error": opened["error"]}
        if kept is None:
            return out
        page, runs = kept
        try:
            # the toggle's label, as a user sees and clicks it (its input is visually hidden)
            toggle = page.get_by_text("Log-scale loss", exact=True).first
            if not toggle.is_visible():
                sidebar = page.get_by_test_id("stSidebar")
                sidebar.get_by_text("Display", exact=True).click(timeout=timeout_s * 1000)
                toggle.wait_for(state="visible", timeout=timeout_s * 1000)
            for _ in range(times):
                current = page.evaluate(_AXIS_TYPE_JS)
                wanted = "linear" if current == "log" else "log"
                since, fragments_since = runs.finished, runs.fragments
                started = time.monotonic()
                page.evaluate(_ARM_AXIS_JS, wanted)
                toggle.click(timeout=timeout_s * 1000)
                handle = page.wait_for_function("() => window.__benchFlip.done !== null && window.__benchFlip.at !== null"
                                                " ? window.__benchFlip.done - window.__benchFlip.at : null",
                                                timeout=timeout_s * 1000, polling=POLL_MS)
                out["visible_s"].append(round(handle.json_value() / 1000, 3))
                if not self._settle(page, runs, since, timeout_s, fragments_since):
                    out["error"] = f"the rerun after a flip did not settle within {timeout_s:.0f} s"
                    break
                out["settled_s"].append(round(time.monotonic() - started, 3))
        except Exception as error:  # noqa: BLE001
            out["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
        if runs.exceptions:
            out["error"] = (out["error"] or "") + f" page exception: {runs.exceptions[0]}"
        page.close()
        return out


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None
