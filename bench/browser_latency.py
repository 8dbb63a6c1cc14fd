"""How fast the page answers in headless Chromium: ``python -m bench --browser-only [--app-dir DIR]``
(or ``python -m bench.browser_latency [--app-dir DIR]``).

Starts the dashboard of ``--app-dir`` (default: this checkout) on a free 127.0.0.1 port with this
interpreter, warms it (the default page's reference job trained to 'Finished', one more new run),
then measures each action three times, each try in a fresh browser context (a fresh Streamlit
session, empty HTTP cache), except the reload, which reloads one open page.

Every time is measured in the page with ``performance.now()``: from the action (a capturing
``mousedown`` / ``keydown`` listener stamps it; for the openings, the navigation's start, i.e. the
new document's time origin) to the first animation frame in which a ``requestAnimationFrame``
poller sees the change in the DOM, plus one more animation frame (so that frame was painted).
Only charts that are visible and not stale count: while a script or fragment reruns, Streamlit
keeps old copies of its elements, hidden or greyed out (``data-stale``).

- open, cached run: ``/`` (the reference job, trained during warm-up) in a fresh context, until the
  loss chart (``.st-key-loss_chart``) has drawn a trace with a point, or the first screen of a fresh
  page shows the loss as an SVG curve (``.st-key-loss_first svg polyline``), whichever comes first;
- open, new run: ``/?seed=N`` (an N this server never trained), the same;
- reload: ``page.reload()`` of the open default page, the same;
- log-scale loss: click the 'Log-scale loss' toggle, until the loss chart's y axis is 'log';
- trails: on ``/?trails=0``, focus the Trails slider (beside the animation, or in the sidebar's
  'Display' expander) and press ArrowRight, until the
  reverse animation (``.st-key-reverse_chart``) has a trace named 'paths';
- T: type 500 / 600 / 700 into 'Diffusion steps T' and press Enter, until the loss chart shows
  1 or more points but fewer than the finished run had (the new run's first points);
- learning rate: ArrowRight / ArrowLeft on 'Learning rate' (from 1e-3, then from 2e-3, cached by
  the first try), the same;
- pause: on ``/?epochs=20000&pace=false&seed=N``, a second into training, click 'Pause', until the
  progress bar says 'Paused' (the worker has handed the run back);
- play: press the reverse animation's '▶ Play' at the page's default frame duration; frames per
  second = (plotly_animatingframe events - 1) / time from the first to the last of them.

Each try that starts training waits for the run to finish before its context closes, so no
training runs beside the next measurement. The server is stopped by its PID.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Locator, Page, sync_playwright

from bench.load.__main__ import start_server, stop_process  # start_server binds via free_port
from bench.load.browser import CHROMIUM, CHROMIUM_ARGS, IDLE_JS, VIEWPORT, Runs

ROOT = Path(__file__).resolve().parents[1]
TRIES = 3
POLL_MS = 25
_TICKS = os.sysconf("SC_CLK_TCK")

# Installed in every document before the page's own scripts.
_INIT_JS = r"""
(() => {
  const b = window.__bench = {actAt: null, doneAt: null, armed: false, firstLossAt: null, token: 0};
  const stamp = () => { if (b.armed && b.actAt === null) b.actAt = performance.now(); };
  window.addEventListener('mousedown', stamp, true);
  window.addEventListener('keydown', stamp, true);
  // the Plotly div of the chart drawn with key=..., if it is visible, current (not stale) and drawn
  b.chart = (key) => [...document.querySelectorAll('.st-key-' + key + ' .js-plotly-plot')].find(d =>
      d.getClientRects().length > 0 && !d.closest('[data-stale="true"]') && d._fullData && d._fullLayout);
  b.points = (key) => {
    const d = b.chart(key);
    if (!d) return -1;
    return d._fullData.length && d._fullData[0].x ? d._fullData[0].x.length : 0;
  };
  b.progress = () => [...document.querySelectorAll('[data-testid="stProgress"]')]
      .filter(e => e.getClientRects().length > 0 && !e.closest('[data-stale="true"]')).map(e => e.innerText).join('\n');
  b.conds = {
    // the Plotly loss chart with a point, or a fresh page's first screen: the loss as an SVG polyline
    lossDrawn: () => b.points('loss_chart') > 0 || [...document.querySelectorAll('.st-key-loss_first svg polyline')]
        .some(e => e.getClientRects().length > 0 && !e.closest('[data-stale="true"]')),
    logAxis: () => { const d = b.chart('loss_chart'); return !!d && d._fullLayout.yaxis.type === 'log'; },
    paths: () => { const d = b.chart('reverse_chart'); return !!d && d._fullData.some(t => t.name === 'paths'); },
    newRun: (before) => { const n = b.points('loss_chart'); return n >= 1 && n < before; },
    paused: () => /\bPaused\b/.test(b.progress()),
  };
  // from the document's start: the first frame with a loss point drawn, then one more frame
  const firstLoss = () => {
    if (b.conds.lossDrawn()) requestAnimationFrame(() => { b.firstLossAt = performance.now(); });
    else requestAnimationFrame(firstLoss);
  };
  requestAnimationFrame(firstLoss);
  // stamp the next action; from then on, check ``name`` every frame; once true, one more frame
  b.arm = (name, arg) => {
    const cond = b.conds[name];
    if (cond && cond(arg)) return false;  // already true before the action: nothing to measure
    const token = ++b.token;
    b.actAt = null; b.doneAt = null; b.armed = true;
    if (!cond) return true;
    const tick = () => {
      if (b.token !== token) return;
      if (b.actAt !== null && cond(arg)) requestAnimationFrame(() => { b.doneAt = performance.now(); b.armed = false; });
      else requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
    return true;
  };
})();
"""

# Listen to the reverse chart's animation; returns its frame count and Play's frame duration.
_WATCH_PLAY_JS = """(d) => {
  window.__play = {at: [], names: [], end: null};
  d.on('plotly_animatingframe', (e) => { window.__play.at.push(performance.now()); window.__play.names.push(e.name); });
  d.on('plotly_animated', () => { window.__play.end = performance.now(); });
  const play = d._fullLayout.updatemenus[0].buttons[0];
  return {frames: d._transitionData._frames.length, frame_ms: play.args[1].frame.duration, label: play.label};
}"""


@dataclass
class Row:
    action: str
    target: str
    unit: str  # "s" or "fps"
    values: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    note: str = ""

    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def cells(self) -> tuple[str, str, str, str]:
        def fmt(v: float) -> str:
            return f"{v:.2f} s" if self.unit == "s" else f"{v:.1f} fps"

        med = self.median()
        tries = ", ".join(fmt(v) for v in self.values) or "n/a"
        if self.errors:
            tries += f" ({len(self.errors)} failed)"
        action = self.action + (f" ({self.note})" if self.note else "")
        return action, fmt(med) if med is not None else "n/a", tries, self.target


class Session:
    """One browser on one server; each ``page()`` a Streamlit session with the bench hooks."""

    def __init__(self, browser: Browser, base_url: str):
        self.browser = browser
        self.base_url = base_url.rstrip("/")

    def context(self) -> BrowserContext:
        return self.browser.new_context(viewport=VIEWPORT)

    def page(self, context: BrowserContext) -> tuple[Page, Runs]:
        page = context.new_page()
        runs = Runs()
        runs.attach(page)
        page.add_init_script(_INIT_JS)
        return page, runs

    def url(self, query: str = "") -> str:
        return f"{self.base_url}/" + (f"?{query}" if query else "")

    # --- waiting -------------------------------------------------------------------------------
    @staticmethod
    def poll(page: Page, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Wait for ``condition()``; Playwright delivers events only inside its own calls."""
        deadline = time.monotonic() + timeout_s
        while not condition():
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            page.wait_for_timeout(POLL_MS)

    def settle(self, page: Page, runs: Runs, since: int | None, timeout_s: float = 60) -> None:
        """A full run after ``since`` (any, with None) has ended, nothing runs, the DOM is current."""
        self.poll(page, lambda: (since is None or runs.finished > since) and not runs.running, timeout_s,
                  "the script run to end")
        page.wait_for_function(IDLE_JS, polling=POLL_MS, timeout=timeout_s * 1000)
        if runs.exceptions:
            raise RuntimeError(f"exception on the page: {runs.exceptions[0]}")

    def wait_finished(self, page: Page, runs: Runs, timeout_s: float = 120) -> None:
        """The run shown is finished, the page idle and the reverse animation drawn."""
        deadline = time.monotonic() + timeout_s
        self.poll(page, lambda: "Finished" in page.evaluate("() => window.__bench.progress()"), timeout_s,
                  "the progress bar to say Finished")
        self.settle(page, runs, None, max(5.0, deadline - time.monotonic()))
        page.wait_for_function("() => !!window.__bench.chart('reverse_chart') && window.__bench.points('loss_chart') > 0",
                               polling=POLL_MS, timeout=max(5.0, deadline - time.monotonic()) * 1000)
        self.settle(page, runs, None, max(5.0, deadline - time.monotonic()))
        page.wait_for_timeout(300)  # let Plotly finish any relayout

    def open_ready(self, context: BrowserContext, query: str = "") -> tuple[Page, Runs]:
        page, runs = self.page(context)
        page.goto(self.url(query), wait_until="commit")
        self.settle(page, runs, 0, 90)
        self.wait_finished(page, runs)
        return page, runs

    # --- measuring -------------------------------------------------------------------------------
    @staticmethod
    def first_loss_s(page: Page, timeout_s: float = 60) -> float:
        """Seconds from the document's navigation start to the first painted loss point."""
        handle = page.wait_for_function("() => window.__bench.firstLossAt", polling=POLL_MS, timeout=timeout_s * 1000)
        return handle.json_value() / 1000

    @staticmethod
    def arm(page: Page, condition: str, arg=None) -> None:
        if not page.evaluate("([name, arg]) => window.__bench.arm(name, arg)", [condition, arg]):
            raise RuntimeError(f"{condition!r} already holds before the action")

    @staticmethod
    def measured_s(page: Page, timeout_s: float = 30) -> float:
        handle = page.wait_for_function(
            "() => window.__bench.doneAt !== null && window.__bench.actAt !== null"
            " ? window.__bench.doneAt - window.__bench.actAt : null",
            polling=POLL_MS, timeout=timeout_s * 1000)
        return handle.json_value() / 1000


def reveal(page: Page, widget: Locator, expander: str) -> Locator:
    """The visible ``widget``; if there is none, open the sidebar expander titled ``expander``."""
    widget = widget.filter(visible=True).first
    if widget.count() == 0 or not widget.is_visible():
        page.get_by_test_id("stSidebar").get_by_text(expander, exact=True).first.click()
        widget.wait_for(state="visible", timeout=10_000)
        page.wait_for_timeout(300)
    return widget


def _tries(row: Row, one: Callable[[int], float]) -> Row:
    for i in range(TRIES):
        try:
            row.values.append(round(one(i), 3))
        except Exception as error:  # noqa: BLE001 - a timeout or a page error: recorded, the rest go on
            row.errors.append(f"try {i + 1}: {type(error).__name__}: {str(error).splitlines()[0][:240]}")
    return row


def measure_all(s: Session, log: Callable[[str], None]) -> list[Row]:
    rows: list[Row] = []
    seeds = iter(range(1001, 1100))

    def fresh(body: Callable[[BrowserContext], float]) -> Callable[[int], float]:
        def one(_: int) -> float:
            context = s.context()
            try:
                return body(context)
            finally:
                context.close()
        return one

    # 1a. open the cached default page
    def open_cached(context):
        page, _ = s.page(context)
        page.goto(s.url(), wait_until="commit")
        return s.first_loss_s(page)

    rows.append(_tries(Row("open the page, first loss point drawn: cached run", "≤ 1.5 s", "s"), fresh(open_cached)))
    log(" | ".join(rows[-1].cells()))

    # 1b. open a configuration never trained here
    def open_new(context):
        page, runs = s.page(context)
        page.goto(s.url(f"seed={next(seeds)}"), wait_until="commit")
        value = s.first_loss_s(page)
        s.wait_finished(page, runs)  # no training beside the next measurement
        return value

    rows.append(_tries(Row("open the page, first loss point drawn: new run (`?seed=N`)", "≤ 1.5 s", "s"),
                       fresh(open_new)))
    log(" | ".join(rows[-1].cells()))

    # 1c. reload an open page (one context, one page)
    row = Row("reload of an open page, first loss point drawn", "≤ 1.0 s", "s")
    context = s.context()
    try:
        page, runs = s.open_ready(context)

        def reload(_):
            since = runs.finished
            page.reload(wait_until="commit")
            value = s.first_loss_s(page)
            s.settle(page, runs, since, 60)
            s.wait_finished(page, runs)
            return value

        _tries(row, reload)
    except Exception as error:  # noqa: BLE001
        row.errors.append(f"{type(error).__name__}: {str(error).splitlines()[0][:240]}")
    finally:
        context.close()
    rows.append(row)
    log(" | ".join(rows[-1].cells()))

    # 2. a display-only change: log-scale loss
    def log_scale(context):
        page, _ = s.open_ready(context)
        toggle = reveal(page, page.get_by_text("Log-scale loss", exact=True), "Display")
        s.arm(page, "logAxis")
        toggle.click()
        return s.measured_s(page)

    rows.append(_tries(Row("'Log-scale loss' toggle → loss chart's y axis is log", "≤ 0.3 s", "s"), fresh(log_scale)))
    log(" | ".join(rows[-1].cells()))

    # 3. trails slider one step (from 0: the 'paths' trace appears)
    def trails(context):
        page, _ = s.open_ready(context, "trails=0")
        # beside the reverse animation, or in the sidebar's 'Display' expander in older versions
        slider = reveal(page, page.get_by_role("slider", name=re.compile(r"^Trails")), "Display")
        slider.focus()
        s.arm(page, "paths")
        slider.press("ArrowRight")
        return s.measured_s(page)

    rows.append(_tries(Row("Trails slider 0 → 1 (ArrowRight) → reverse chart has a 'paths' trace", "≤ 0.3 s", "s"),
                       fresh(trails)))
    log(" | ".join(rows[-1].cells()))

    # 3b. Pause while a long run trains: the progress bar says 'Paused' (the worker has handed it back)
    def pause(context):
        page, _ = s.page(context)
        page.goto(s.url(f"epochs=20000&pace=false&seed={next(seeds)}"), wait_until="commit")
        s.poll(page, lambda: "Training" in page.evaluate("() => window.__bench.progress()"), 90, "training")
        page.wait_for_timeout(1000)  # a second of training, the live charts redrawing
        button = page.get_by_role("button", name=re.compile("Pause")).filter(visible=True).first
        s.arm(page, "paused")
        button.click()
        return s.measured_s(page)

    rows.append(_tries(Row("'Pause' while training → progress bar says 'Paused'", "≤ 0.2 s", "s"), fresh(pause)))
    log(" | ".join(rows[-1].cells()))

    # 4. T: a new run's first loss points
    new_t = iter((500, 600, 700))

    def change_t(context):
        page, runs = s.open_ready(context)
        field_ = reveal(page, page.get_by_test_id("stSidebar").get_by_role("spinbutton", name="Diffusion steps T"),
                        "Objective and noise schedule")
        field_.fill(str(next(new_t)))
        s.arm(page, "newRun", page.evaluate("() => window.__bench.points('loss_chart')"))
        field_.press("Enter")
        value = s.measured_s(page)
        s.wait_finished(page, runs)
        return value

    rows.append(_tries(Row("'Diffusion steps T' 1000 → 500 / 600 / 700 + Enter → new run's first loss points",
                           "≤ 0.5 s", "s"), fresh(change_t)))
    log(" | ".join(rows[-1].cells()))

    # 5. learning rate: a new run's first loss points (the third try starts at 2e-3, cached by the first)
    moves = iter((("", "ArrowRight"), ("", "ArrowLeft"), ("lr=0.002", "ArrowRight")))

    def change_lr(context):
        query, key = next(moves)
        page, runs = s.open_ready(context, query)
        slider = reveal(page, sidebar_slider(page), "Training")
        slider.focus()
        start = slider.get_attribute("aria-valuetext")
        s.arm(page, "newRun", page.evaluate("() => window.__bench.points('loss_chart')"))
        slider.press(key)
        value = s.measured_s(page)
        s.wait_finished(page, runs)
        steps.append(f"{start} → {reveal(page, sidebar_slider(page), 'Training').get_attribute('aria-valuetext')}")
        return value

    def sidebar_slider(page):
        return page.get_by_test_id("stSidebar").get_by_role("slider", name="Learning rate")

    steps: list[str] = []
    row = _tries(Row("'Learning rate' one stop (ArrowRight / ArrowLeft) → new run's first loss points", "≤ 0.5 s", "s"),
                 fresh(change_lr))
    row.note = ", ".join(steps)
    rows.append(row)
    log(" | ".join(rows[-1].cells()))

    # 6. play the reverse animation at the default frame duration
    seen: dict = {}

    def play(context):
        page, _ = s.open_ready(context)
        chart = page.locator(".st-key-reverse_chart .js-plotly-plot").filter(visible=True).first
        chart.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        info = chart.evaluate(_WATCH_PLAY_JS)
        seen.update(info)
        chart.locator(".updatemenu-button").first.click()
        page.wait_for_function("() => window.__play.end !== null", polling=50,
                               timeout=max(30_000, info["frames"] * info["frame_ms"] * 5))
        result = page.evaluate("() => window.__play")
        at = result["at"]
        if len(at) < 2:
            raise RuntimeError(f"only {len(at)} frames shown")
        seen.setdefault("shown", []).append(f"{len(set(result['names']))}/{info['frames']}")
        return (len(at) - 1) / ((at[-1] - at[0]) / 1000)

    row = _tries(Row("'▶ Play' the reverse animation: frames shown per second", "≥ 20 fps", "fps"), fresh(play))
    if seen:
        row.note = (f"{seen['frames']} frames at {seen['frame_ms']} ms = nominal {1000 / seen['frame_ms']:.1f} fps; "
                    f"distinct frames shown: {', '.join(seen.get('shown', []))}")
    rows.append(row)
    log(" | ".join(rows[-1].cells()))
    return rows


def warm(s: Session, log: Callable[[str], None]) -> None:
    """Train the default page's run (and one more new run, so the workers are warm) to the end."""
    started = time.monotonic()
    context = s.context()
    try:
        s.open_ready(context, "pace=false")
        s.open_ready(context, "pace=false&seed=999")
        s.open_ready(context)
    finally:
        context.close()
    log(f"warm-up (reference job trained, one more new run): {time.monotonic() - started:.1f} s")


def describe(app_dir: Path) -> str:
    def git(*args: str) -> str:
        out = subprocess.run(["git", "-C", str(app_dir), *args], capture_output=True, text=True)
        return out.stdout.rstrip() if out.returncode == 0 else "?"

    commit = git("log", "-1", "--oneline")
    commit = commit if len(commit) <= 80 else commit[:79] + "…"
    dirty = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return f"{app_dir} at `{commit}`" + (f" (uncommitted changes: {', '.join(dirty)})" if dirty else " (clean)")


class OtherLoad:
    """CPU used meanwhile by processes outside this one's tree (another user's tests, say): a
    thread reads /proc every second; processes that live under a second are missed."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float, float]] = []  # (wall, others' CPU s, ours) per interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _read() -> dict[tuple[int, int], tuple[int, float]]:
        """(pid, start time) -> (parent pid, CPU seconds) of every process."""
        out = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
                except OSError:
                    continue
                out[(int(entry), int(fields[19]))] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS)
        return out

    def _run(self) -> None:
        before, then = self._read(), time.monotonic()
        while not self._stop.wait(1.0):
            now, at = self._read(), time.monotonic()
            children: dict[int, list[int]] = {}
            for (pid, _), (ppid, _) in now.items():
                children.setdefault(ppid, []).append(pid)
            ours, todo = set(), [os.getpid()]
            while todo:
                pid = todo.pop()
                ours.add(pid)
                todo += children.get(pid, [])
            mine = others = 0.0
            for key, (_, cpu) in now.items():
                used = cpu - before.get(key, (0, 0.0))[1]
                if key[0] in ours:
                    mine += used
                else:
                    others += used
            self.samples.append((at - then, others, mine))
            before, then = now, at

    def __enter__(self) -> OtherLoad:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        wall = sum(w for w, _, _ in self.samples) or 1.0
        others, mine = sum(o for _, o, _ in self.samples), sum(m for _, _, m in self.samples)
        windows = [sum(o for _, o, _ in self.samples[i:i + 10]) / max(sum(w for w, _, _ in self.samples[i:i + 10]), 1e-9)
                   for i in range(0, max(len(self.samples) - 9, 1))]
        return (f"CPU used meanwhile by other processes: {others / wall:.2f} cores on average, {max(windows):.2f} at "
                f"most over 10 s (this bench, its server and browser: {mine / wall:.2f})")


def browser_section(app_dir: Path | str = ROOT, log: Callable[[str], None] = print) -> tuple[str, list[Row]]:
    """Run every measurement against the dashboard in ``app_dir``; (heading, rows)."""
    app_dir = Path(app_dir).resolve()
    heading = (f"Browser latency: {describe(app_dir)}; headless Chromium, {os.cpu_count()} CPUs, "
               f"medians of {TRIES}, each in a fresh context (reload: one page); "
               f"load average at the start {os.getloadavg()[0]:.1f}")
    log(heading)
    with OtherLoad() as load, tempfile.TemporaryDirectory(prefix="bench-browser-") as tmp:
        log_path = Path(tmp) / "streamlit.log"
        server, port = start_server(app_dir, log_path)
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    session = Session(browser, f"http://127.0.0.1:{port}")
                    warm(session, log)
                    rows = measure_all(session, log)
                finally:
                    browser.close()
        finally:
            stop_process(server)
    for row in rows:
        for error in row.errors:
            log(f"  {row.action}: {error}")
    heading += f", at the end {os.getloadavg()[0]:.1f}; {load.summary()}"
    return heading, rows


def table(rows: list[Row]) -> str:
    lines = ["| action | median | the 3 tries | target |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.browser_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--app-dir", default=str(ROOT), help="the checkout whose dashboard.py is served")
    args = parser.parse_args(argv)
    heading, rows = browser_section(args.app_dir, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(heading + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
