"""How fast the page answers in headless Chromium: ``python -m bench --browser-only [--app-dir DIR]``
(or ``python -m bench.browser_latency [--app-dir DIR] [--tries N] [--only WORD,...]``).

Starts the dashboard of ``--app-dir`` (default: this checkout) on a free 127.0.0.1 port with this
interpreter, warms it (the default page's reference job trained to 'Finished', one more new run),
then measures each action ``--tries`` times (3: medians of 3), each try in a fresh browser context
(a fresh Streamlit session, empty HTTP cache), except the reload, which reloads one open page.
Last, each try of 'a fresh server's first page' starts a server of its own.

Every time is measured in the page with ``performance.now()``: from the action (a capturing
``mousedown`` / ``keydown`` listener stamps it; for the openings, the navigation's start, i.e. the
new document's time origin) to the first animation frame in which a ``requestAnimationFrame``
poller sees the change in the DOM, plus one more animation frame (so that frame was painted).
Only elements that are visible and not stale count: while a script or fragment reruns, Streamlit
keeps old copies of its elements, hidden or greyed out (``data-stale``).

What the poller reads (``_INIT_JS``), on the page as redesigned and on the Plotly page before it,
so one bench measures both (``--app-dir`` of an older checkout):
- a live chart ``key`` (loss_chart, preview_chart): the ECharts element's div (``.st-key-<key>
  [_echarts_instance_]``), whose ``aria-label`` ECharts writes inside the ``setOption`` that paints
  (``charts/live.py``: 'loss: 3000 steps of 5000, log axis, ...'); on the older page, the Plotly div
  (``.st-key-<key> .js-plotly-plot``: ``_fullData[0].x.length``, ``_fullLayout.yaxis.type``);
- the reverse animation: the ``.ddpm-anim`` root in the open shadow root under
  ``.st-key-reverse_animation`` (``data-draws``, ``data-trails``, ``data-playing``, ``paintLog``);
  on the older page the Plotly chart ``.st-key-reverse_chart``;
- the run's progress bar (``stProgress``): '**Label** · ... · step N';
- ᾱ_T: a caption or metric reading 'ᾱ_T (signal left in x_T) VALUE'.

The first view: the loss chart drawn with a point, the samples beside it painted (the reverse
animation's first frame, or the live samples chart of a run still training) and the progress
text shown. 'First chart': any of those charts painted, empty or not (the older page's first
screen, the loss as a static SVG, is not a chart and does not count).

Rows:
- open ``/`` (the reference job, trained during warm-up): the loss chart with a point; the whole
  first view;
- open ``/?seed=N`` (a run this server never trained): the same;
- open a finished run's link (``?pace=false``): its loss drawn and 'Finished ... step N' shown
  (what ``python -m bench.load`` calls the link's opening);
- reload: ``page.reload()`` of the open default page, its loss drawn;
- log-scale loss: click the 'Log-scale loss' toggle, until the loss chart's y axis is log;
- the same while two other pages (contexts of the same browser), opened after it, each train a
  long run (``?epochs=20000&batch=1024&pace=false&seed=N``) on the same server, a second into
  both training; the note says how many were still training after the click had painted;
- trails: on ``/?trails=0``, focus the animation's Trails slider and press ArrowRight, until the
  animation has drawn with one trail (the older page: the reverse chart has a 'paths' trace);
- pause: on ``/?epochs=20000&batch=1024&pace=false&seed=N``, once the first view is drawn and no
  full script run is under way, a second later, click 'Pause', until the progress bar says 'Paused'
  (the worker has handed the run back);
- T: type 500 / 600 / 700 into 'Diffusion steps T' and press Enter; from that key press, until
  the ᾱ_T shown has changed, and until the loss chart shows 1 or more points but fewer than the
  finished run had (the new run's first points);
- learning rate: ArrowRight / ArrowLeft on 'Learning rate' (from 1e-3, then from 2e-3, cached by
  the first try), until the new run's first points;
- play: the reverse animation's ▶ at the page's default frame duration, and at 16 ms (its Speed
  select); frames per second = (painted frames - 1) / (last - first paint time), from the
  element's ``paintLog`` (the older page: ``plotly_animatingframe`` events), and how many of the
  frames were painted;
- a fresh server's first page: a new server and, started just before it, a busy loop pinned to
  core 0 (a CPU-bound job of someone else's); once /_stcore/health answers, a fresh context opens
  ``/`` (a server with nothing trained: a new run); seconds from the health answer to the first
  chart painted and to the whole first view (page times as epoch times: ``performance.timeOrigin``).

Each try that starts training waits for the run to finish (or closes its page, which pauses the
run) before the next, so no training runs beside the next measurement. Servers and the busy loop
are stopped by their PIDs.
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
# A long run: the reference job's 20,000 steps end in about 8 s here, before the older page's
# staged opening has settled, and sometimes before a measurement beside it; batches of 1024 make it
# last (a chunk of 25 steps, the most Pause waits for the worker, takes a few ms more)
LONG_RUN = "epochs=20000&batch=1024&pace=false&seed={seed}"
LOAD_LINK = PAUSE_LINK = LONG_RUN
_TICKS = os.sysconf("SC_CLK_TCK")

# Installed in every document before the page's own scripts.
_INIT_JS = r"""
(() => {
  const b = window.__bench = {actAt: null, armed: false, token: 0, done: {}, firsts: {}};
  const stamp = () => { if (b.armed && b.actAt === null) b.actAt = performance.now(); };
  window.addEventListener('mousedown', stamp, true);
  window.addEventListener('keydown', stamp, true);
  const shown = (e) => e.getClientRects().length > 0 && !e.closest('[data-stale="true"]');
  // a keyed ECharts chart that has painted: the div it was started on, with the aria-label its setOption wrote
  b.echarts = (key) => [...document.querySelectorAll('.st-key-' + key + ' [_echarts_instance_]')]
      .find(e => shown(e) && e.getAttribute('aria-label'));
  // a Plotly chart drawn with key=... (the page before the redesign)
  b.plotly = (key) => [...document.querySelectorAll('.st-key-' + key + ' .js-plotly-plot')]
      .find(d => shown(d) && d._fullData && d._fullLayout);
  b.painted = (key) => !!(b.echarts(key) || b.plotly(key));
  // the loss chart: {points, axis} or null
  b.loss = () => {
    const e = b.echarts('loss_chart');
    if (e) {
      const m = /^loss: (\d+) steps of \d+, (log|linear) axis/.exec(e.getAttribute('aria-label'));
      return m ? {points: +m[1], axis: m[2]} : null;
    }
    const d = b.plotly('loss_chart');
    if (!d) return null;
    return {points: d._fullData.length && d._fullData[0].x ? d._fullData[0].x.length : 0, axis: d._fullLayout.yaxis.type};
  };
  b.points = () => { const l = b.loss(); return l ? l.points : -1; };
  // the reverse animation's root (components v2, in an open shadow root), if shown
  b.anim = () => {
    for (const host of document.querySelectorAll('.st-key-reverse_animation *')) {
      const root = host.shadowRoot && host.shadowRoot.querySelector('.ddpm-anim');
      if (root && shown(host)) return root;
    }
    return null;
  };
  b.animDrawn = () => { const r = b.anim(); return r ? +r.dataset.draws > 0 : !!b.plotly('reverse_chart'); };
  b.progress = () => [...document.querySelectorAll('[data-testid="stProgress"]')]
      .filter(shown).map(e => e.innerText).join('\n');
  b.abar = () => {
    for (const e of document.querySelectorAll('[data-testid="stCaptionContainer"], [data-testid="stMetric"]')) {
      if (!shown(e)) continue;
      const m = /signal left in x_T\)\s*([-+0-9.eE]+)/.exec(e.innerText);
      if (m) return m[1];
    }
    return null;
  };
  const progressShown = () => /\b(Training|Finished|Paused|Waiting|Pausing)\b[^\n]*\bstep [\d,]+/.test(b.progress());
  b.conds = {
    lossDrawn: () => b.points() > 0,
    firstChart: () => b.painted('loss_chart') || b.painted('preview_chart') || b.animDrawn(),
    firstView: () => b.points() > 0 && progressShown() && (b.animDrawn() || b.painted('preview_chart')),
    finishedDrawn: () => b.points() > 0 && /\bFinished\b[^\n]*\bstep [\d,]+/.test(b.progress()),
    logAxis: () => { const l = b.loss(); return !!l && l.axis === 'log'; },
    trails: (draws) => {
      const r = b.anim();
      if (r) return r.dataset.trails === '1' && +r.dataset.draws > draws;
      const d = b.plotly('reverse_chart');
      return !!d && d._fullData.some(t => t.name === 'paths');
    },
    newRun: (before) => { const n = b.points(); return n >= 1 && n < before; },
    abar: (before) => { const v = b.abar(); return v !== null && v !== before; },
    paused: () => /\bPaused\b/.test(b.progress()),
  };
  // from the document's start: the first frame in which each opening condition holds, then one more frame
  const FIRSTS = ['firstChart', 'lossDrawn', 'firstView', 'finishedDrawn'];
  const seen = new Set();
  const opening = () => {
    for (const name of FIRSTS) {
      if (!seen.has(name) && b.conds[name]()) {
        seen.add(name);
        requestAnimationFrame(() => { b.firsts[name] = performance.now(); });
      }
    }
    if (seen.size < FIRSTS.length && performance.now() < 300000) requestAnimationFrame(opening);
  };
  requestAnimationFrame(opening);
  // stamp the next action; from then on, check each condition every frame; once true, one more frame
  b.arm = (conds) => {  // conds: {name: arg}
    for (const [name, arg] of Object.entries(conds)) {
      if (b.conds[name](arg)) return name;  // already true before the action: nothing to measure
    }
    const token = ++b.token;
    b.actAt = null; b.done = {}; b.armed = true;
    const waiting = new Set(Object.keys(conds));
    const tick = () => {
      if (b.token !== token) return;
      if (b.actAt !== null) {
        for (const name of [...waiting]) {
          if (b.conds[name](conds[name])) {
            waiting.delete(name);
            requestAnimationFrame(() => { b.done[name] = performance.now(); });
          }
        }
      }
      if (waiting.size) requestAnimationFrame(tick);
      else b.armed = false;
    };
    requestAnimationFrame(tick);
    return null;
  };
})();
"""

# Listen to the older page's Plotly reverse chart; returns its frame count and Play's frame duration.
_WATCH_PLOTLY_PLAY_JS = """(d) => {
  window.__play = {at: [], names: [], end: null};
  d.on('plotly_animatingframe', (e) => { window.__play.at.push(performance.now()); window.__play.names.push(e.name); });
  d.on('plotly_animated', () => { window.__play.end = performance.now(); });
  const play = d._fullLayout.updatemenus[0].buttons[0];
  return {frames: d._transitionData._frames.length, frame_ms: play.args[1].frame.duration};
}"""


@dataclass
class Row:
    action: str
    target: str
    unit: str  # "s" or "fps"
    values: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    note: str = ""
    others: float | None = None  # cores other processes used, on average, while its tries ran

    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def cells(self) -> tuple[str, str, str, str, str]:
        def fmt(v: float) -> str:
            return f"{v:.2f} s" if self.unit == "s" else f"{v:.1f} fps"

        med = self.median()
        tries = ", ".join(fmt(v) for v in self.values) or "n/a"
        if self.errors:
            tries += f" ({len(self.errors)} failed)"
        action = self.action + (f" ({self.note})" if self.note else "")
        others = f"{self.others:.2f}" if self.others is not None else "?"
        return action, fmt(med) if med is not None else "n/a", tries, self.target, others


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

    @staticmethod
    def progress(page: Page) -> str:
        return page.evaluate("() => window.__bench.progress()")

    def wait_finished(self, page: Page, runs: Runs, timeout_s: float = 120) -> None:
        """The run shown is finished, the page idle and the reverse animation drawn."""
        deadline = time.monotonic() + timeout_s
        self.poll(page, lambda: "Finished" in self.progress(page), timeout_s, "the progress bar to say Finished")
        self.settle(page, runs, None, max(5.0, deadline - time.monotonic()))
        page.wait_for_function("() => window.__bench.animDrawn() && window.__bench.points() > 0",
                               polling=POLL_MS, timeout=max(5.0, deadline - time.monotonic()) * 1000)
        self.settle(page, runs, None, max(5.0, deadline - time.monotonic()))
        page.wait_for_timeout(300)  # let a chart finish any relayout

    def open_ready(self, context: BrowserContext, query: str = "") -> tuple[Page, Runs]:
        page, runs = self.page(context)
        page.goto(self.url(query), wait_until="commit")
        self.settle(page, runs, 0, 90)
        self.wait_finished(page, runs)
        return page, runs

    # --- measuring -------------------------------------------------------------------------------
    @staticmethod
    def first_s(page: Page, name: str, timeout_s: float = 60) -> float:
        """Seconds from the document's navigation start to the painted frame where ``name`` held."""
        handle = page.wait_for_function(f"() => window.__bench.firsts.{name}", polling=POLL_MS,
                                        timeout=timeout_s * 1000)
        return handle.json_value() / 1000

    @staticmethod
    def arm(page: Page, conds: dict) -> None:
        already = page.evaluate("(conds) => window.__bench.arm(conds)", conds)
        if already:
            raise RuntimeError(f"{already!r} already holds before the action")

    @staticmethod
    def measured_s(page: Page, names: list[str], timeout_s: float = 30) -> dict[str, float | None]:
        """Seconds from the stamped action to the painted frame of each condition in ``names``;
        None for those that had not held within ``timeout_s``."""
        check = ("(names) => { const b = window.__bench; return b.actAt !== null"
                 " && names.every(n => b.done[n] !== undefined); }")
        try:
            page.wait_for_function(check, arg=names, polling=POLL_MS, timeout=timeout_s * 1000)
        except Exception:  # noqa: BLE001 - a timeout: report what did hold
            pass
        out = page.evaluate("(names) => { const b = window.__bench; return Object.fromEntries(names.map(n =>"
                            " [n, b.actAt === null || b.done[n] === undefined ? null : b.done[n] - b.actAt])); }",
                            names)
        return {name: None if ms is None else ms / 1000 for name, ms in out.items()}

    def measured_one(self, page: Page, name: str, timeout_s: float = 30) -> float:
        value = self.measured_s(page, [name], timeout_s)[name]
        if value is None:
            raise TimeoutError(f"{name!r} did not hold within {timeout_s:.0f} s of the action")
        return value


def reveal(page: Page, widget: Locator, expander: str) -> Locator:
    """The visible ``widget``; if there is none, open the sidebar expander titled ``expander``."""
    widget = widget.filter(visible=True).first
    if widget.count() == 0 or not widget.is_visible():
        page.get_by_test_id("stSidebar").get_by_text(expander, exact=True).first.click()
        widget.wait_for(state="visible", timeout=10_000)
        page.wait_for_timeout(300)
    return widget


def _error_text(error: Exception) -> str:
    return f"{type(error).__name__}: {(str(error).splitlines() or [''])[0][:240]}"


def _tries(rows: dict[str, Row], one: Callable[[int], dict[str, float | None]], tries: int) -> list[Row]:
    """Run ``one`` ``tries`` times; each returns a value per row name (None: that row's value is missing)."""
    for i in range(tries):
        try:
            values = one(i)
        except Exception as error:  # noqa: BLE001 - a timeout or a page error: recorded, the rest go on
            for row in rows.values():
                row.errors.append(f"try {i + 1}: {_error_text(error)}")
            continue
        for name, row in rows.items():
            value = values.get(name)
            if value is None:
                row.errors.append(f"try {i + 1}: not seen")
            else:
                row.values.append(round(value, 3))
    return list(rows.values())


def _one(row: Row, one: Callable[[int], float], tries: int) -> list[Row]:
    return _tries({"value": row}, lambda i: {"value": one(i)}, tries)


class Measure:
    """The measurements against one server; each returns its rows."""

    def __init__(self, s: Session, tries: int):
        self.s = s
        self.tries = tries
        self.seeds = iter(range(1001, 1200))

    def fresh(self, body: Callable[[BrowserContext], object]) -> Callable[[int], object]:
        def one(_: int):
            context = self.s.context()
            try:
                return body(context)
            finally:
                context.close()
        return one

    # --- openings --------------------------------------------------------------------------------
    def open_cached(self) -> list[Row]:
        s = self.s

        def body(context):
            page, _ = s.page(context)
            page.goto(s.url(), wait_until="commit")
            return {"loss": s.first_s(page, "lossDrawn"), "view": s.first_s(page, "firstView")}

        return _tries({"loss": Row("open `/` (a finished run): the loss chart drawn with its points", "≤ 1.0 s", "s"),
                       "view": Row("open `/`: the whole first view (loss with points, the animation's first frame, "
                                   "progress text)", "≤ 2.0 s", "s")}, self.fresh(body), self.tries)

    def open_new(self) -> list[Row]:
        s = self.s

        def body(context):
            page, runs = s.page(context)
            page.goto(s.url(f"seed={next(self.seeds)}"), wait_until="commit")
            values = {"loss": s.first_s(page, "lossDrawn"), "view": s.first_s(page, "firstView")}
            s.wait_finished(page, runs)  # no training beside the next measurement
            return values

        return _tries({"loss": Row("open `/?seed=N` (a new run): the loss chart drawn with a point", "≤ 1.5 s", "s"),
                       "view": Row("open `/?seed=N`: the whole first view (loss with a point, live samples painted, "
                                   "progress text)", "≤ 2.0 s", "s")}, self.fresh(body), self.tries)

    def open_finished_link(self) -> list[Row]:
        s = self.s

        def body(context):
            page, _ = s.page(context)
            page.goto(s.url("pace=false"), wait_until="commit")
            return s.first_s(page, "finishedDrawn")

        return _one(Row("open a finished run's link (`?pace=false`), no load: its loss drawn and 'Finished … step N' "
                        "shown", "≤ 1.0 s", "s"), self.fresh(body), self.tries)

    def reload(self) -> list[Row]:
        s = self.s
        row = Row("reload of an open page (`/`): the loss chart drawn with its points", "≤ 1.0 s", "s")
        context = s.context()
        try:
            page, runs = s.open_ready(context)

            def one(_):
                since = runs.finished
                page.reload(wait_until="commit")
                value = s.first_s(page, "lossDrawn")
                s.settle(page, runs, since, 60)
                s.wait_finished(page, runs)
                return value

            _one(row, one, self.tries)
        except Exception as error:  # noqa: BLE001
            row.errors.append(_error_text(error))
        finally:
            context.close()
        return [row]

    # --- display changes ---------------------------------------------------------------------------
    def _toggle(self, page: Page) -> float:
        s = self.s
        toggle = reveal(page, page.get_by_text("Log-scale loss", exact=True), "Display")
        s.arm(page, {"logAxis": None})
        toggle.click()
        return s.measured_one(page, "logAxis")

    def log_scale(self) -> list[Row]:
        return _one(Row("'Log-scale loss' toggle → the loss chart's y axis painted log", "≤ 0.1 s", "s"),
                    self.fresh(lambda context: self._toggle(self.s.open_ready(context)[0])), self.tries)

    def log_scale_under_load(self) -> list[Row]:
        s = self.s
        training: list[str] = []

        def one(_):
            loaders = [s.context(), s.context()]
            context = s.context()
            try:
                page, _ = s.open_ready(context)
                pages = []
                for loader in loaders:
                    other, _ = s.page(loader)
                    other.goto(s.url(LOAD_LINK.format(seed=next(self.seeds))), wait_until="commit")
                    pages.append(other)
                for other in pages:
                    s.poll(other, lambda p=other: "Training" in s.progress(p), 90, "another page's run to train")
                page.wait_for_timeout(1000)  # a second of both training, their pages redrawing
                value = self._toggle(page)
                states = []
                for other in pages:  # its bar, once not stale (a rerun of its view may be under way)
                    s.poll(other, lambda p=other: s.progress(p) != "", 10, "another page's progress bar")
                    states.append("Training" in s.progress(other))
                training.append(str(sum(states)))
                return value
            finally:
                context.close()
                for loader in loaders:
                    loader.close()  # their runs pause once their sessions are gone

        row = Row(f"'Log-scale loss' toggle while 2 other pages each train a run (`?{LOAD_LINK.format(seed='N')}`) "
                  "on the same server", "≤ 0.3 s", "s")
        _one(row, one, self.tries)
        row.note = "other pages still training right after the click painted: " + (", ".join(training) or "n/a")
        return [row]

    def trails(self) -> list[Row]:
        s = self.s

        def body(context):
            page, _ = s.open_ready(context, "trails=0")
            # the animation's own Trails slider (in its shadow root; Playwright's locators pierce it), or
            # on the older page Streamlit's slider beside the animation or in the sidebar's 'Display'
            slider = reveal(page, page.get_by_role("slider", name=re.compile(r"^Trails")), "Display")
            slider.focus()
            draws = page.evaluate("() => { const r = window.__bench.anim(); return r ? +r.dataset.draws : -1; }")
            s.arm(page, {"trails": draws})
            slider.press("ArrowRight")
            return s.measured_one(page, "trails")

        return _one(Row("Trails 0 → 1 (ArrowRight) → the animation painted with a trail (older page: a 'paths' trace)",
                        "≤ 0.3 s", "s"), self.fresh(body), self.tries)

    # --- the run's controls and settings -------------------------------------------------------------
    def pause(self) -> list[Row]:
        s = self.s

        def body(context):
            page, runs = s.page(context)
            page.goto(s.url(PAUSE_LINK.format(seed=next(self.seeds))), wait_until="commit")
            s.poll(page, lambda: "Training" in s.progress(page), 90, "training")
            s.first_s(page, "firstView", 60)  # the whole first view drawn (the older page: its last stage)
            s.settle(page, runs, None, 30)  # no full script run under way: the button will not be redrawn
            page.wait_for_timeout(1000)  # a second of training, the live charts redrawing
            button = page.get_by_role("button", name=re.compile("Pause")).filter(visible=True).first
            s.arm(page, {"paused": None})
            button.click()
            return s.measured_one(page, "paused")

        return _one(Row(f"'Pause' while training (`?{PAUSE_LINK.format(seed='N')}`) → progress bar says 'Paused'",
                        "≤ 0.2 s", "s"), self.fresh(body), self.tries)

    def change_t(self) -> list[Row]:
        s = self.s
        new_t = iter((500, 600, 700, 800, 900))

        def body(context):
            page, runs = s.open_ready(context)
            field_ = reveal(page, page.get_by_test_id("stSidebar").get_by_role("spinbutton", name="Diffusion steps T"),
                            "Objective and noise schedule")
            field_.fill(str(next(new_t)))
            before = page.evaluate("() => [window.__bench.abar(), window.__bench.points()]")
            if before[0] is None:
                raise RuntimeError("no ᾱ_T shown before the change")
            s.arm(page, {"abar": before[0], "newRun": before[1]})
            field_.press("Enter")
            values = s.measured_s(page, ["abar", "newRun"])
            s.wait_finished(page, runs)
            return values

        return _tries({"abar": Row("'Diffusion steps T' 1000 → 500 / 600 / 700 + Enter → the new ᾱ_T shown", "≤ 0.2 s",
                                   "s"),
                       "newRun": Row("'Diffusion steps T' 1000 → 500 / 600 / 700 + Enter → the new run's first loss "
                                     "drawn", "≤ 0.5 s", "s")}, self.fresh(body), self.tries)

    def change_lr(self) -> list[Row]:
        s = self.s
        moves = iter((("", "ArrowRight"), ("", "ArrowLeft"), ("lr=0.002", "ArrowRight")) * 2)
        steps: list[str] = []

        def sidebar_slider(page):
            return page.get_by_test_id("stSidebar").get_by_role("slider", name="Learning rate")

        def body(context):
            query, key = next(moves)
            page, runs = s.open_ready(context, query)
            slider = reveal(page, sidebar_slider(page), "Training")
            slider.focus()
            start = slider.get_attribute("aria-valuetext")
            s.arm(page, {"newRun": page.evaluate("() => window.__bench.points()")})
            slider.press(key)
            value = s.measured_one(page, "newRun")
            s.wait_finished(page, runs)
            steps.append(f"{start} → {reveal(page, sidebar_slider(page), 'Training').get_attribute('aria-valuetext')}")
            return value

        row = Row("'Learning rate' one stop (ArrowRight / ArrowLeft) → new run's first loss drawn", "≤ 0.5 s", "s")
        _one(row, self.fresh(body), self.tries)
        row.note = ", ".join(steps)
        return [row]

    # --- the reverse animation -------------------------------------------------------------------------
    def play(self, frame_ms: int | None = None) -> list[Row]:
        s = self.s
        seen: dict = {"shown": []}

        def body(context):
            page, runs = s.open_ready(context)
            if page.evaluate("() => !!window.__bench.anim()"):
                return self._play_canvas(page, runs, frame_ms, seen)
            if frame_ms is not None:
                raise RuntimeError("this page's animation has no Speed choice")
            return self._play_plotly(page, seen)

        if frame_ms is None:
            row = Row("▶ the reverse animation at the page's default frame duration: frames painted per second",
                      "≥ 30 fps, every frame painted", "fps")
        else:
            row = Row(f"▶ the reverse animation at {frame_ms} ms a frame (its Speed select): frames painted per second",
                      "60 fps the aim", "fps")
        _one(row, self.fresh(body), self.tries)
        if "frames" in seen:
            row.note = (f"{seen['frames']} frames at {seen['frame_ms']} ms = nominal {1000 / seen['frame_ms']:.1f} fps"
                        + (f", {seen['moving']}" if seen.get("moving") else "")
                        + f"; frames painted: {', '.join(seen['shown'])}")
        return [row]

    def _play_canvas(self, page: Page, runs: Runs, frame_ms: int | None, seen: dict) -> float:
        s = self.s
        anim = page.locator(".st-key-reverse_animation .ddpm-anim").first
        anim.scroll_into_view_if_needed()
        if frame_ms is not None:  # a display choice: the animation reports it, its fragment reruns once
            anim.locator("select.speed").select_option(str(frame_ms))
            page.wait_for_timeout(1000)
            s.settle(page, runs, None, 30)
        page.wait_for_timeout(300)
        info = anim.evaluate("(r) => ({frames: +r.dataset.frames, frame_ms: +r.dataset.frameMs})")
        moving = re.search(r"all [\d,]+ move|[\d,]+ of them move", page.get_by_test_id("stMain").inner_text())
        seen.update(info, moving=moving.group(0) if moving else "")
        anim.locator("button.play").click()
        page.wait_for_function("() => { const r = window.__bench.anim(); return !!r && r.dataset.playing === 'false'"
                               " && r.paintLog.length > 1; }", polling=50,
                               timeout=max(30_000, info["frames"] * info["frame_ms"] * 5))
        log = page.evaluate("() => window.__bench.anim().paintLog")
        seen["shown"].append(f"{len({frame for frame, _ in log})}/{info['frames']}")
        return (len(log) - 1) / ((log[-1][1] - log[0][1]) / 1000)

    @staticmethod
    def _play_plotly(page: Page, seen: dict) -> float:
        chart = page.locator(".st-key-reverse_chart .js-plotly-plot").filter(visible=True).first
        chart.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
        info = chart.evaluate(_WATCH_PLOTLY_PLAY_JS)
        seen.update(info)
        chart.locator(".updatemenu-button").first.click()
        page.wait_for_function("() => window.__play.end !== null", polling=50,
                               timeout=max(30_000, info["frames"] * info["frame_ms"] * 5))
        result = page.evaluate("() => window.__play")
        at = result["at"]
        if len(at) < 2:
            raise RuntimeError(f"only {len(at)} frames shown")
        seen["shown"].append(f"{len(set(result['names']))}/{info['frames']}")
        return (len(at) - 1) / ((at[-1] - at[0]) / 1000)


MEASUREMENTS: dict[str, Callable[[Measure], list[Row]]] = {
    "open": Measure.open_cached,
    "open-new": Measure.open_new,
    "open-link": Measure.open_finished_link,
    "reload": Measure.reload,
    "toggle": Measure.log_scale,
    "toggle-load": Measure.log_scale_under_load,
    "trails": Measure.trails,
    "pause": Measure.pause,
    "t": Measure.change_t,
    "lr": Measure.change_lr,
    "play": Measure.play,
    "play-16": lambda m: m.play(16),
}
FRESH_SERVER = "fresh-server"


def measure_all(s: Session, log: Callable[[str], None], tries: int = TRIES, only: set[str] | None = None,
                load: OtherLoad | None = None) -> list[Row]:
    measure = Measure(s, tries)
    rows: list[Row] = []
    for name, method in MEASUREMENTS.items():
        if only is None or name in only:
            started = time.monotonic()
            for row in method(measure):
                rows.append(row)
                if load is not None:
                    row.others = load.mean_between(started, time.monotonic())
                log(" | ".join(row.cells()))
    return rows


class Burner:
    """A busy loop pinned to one core: someone else's CPU-bound job. Stopped by its PID."""

    def __init__(self, core: int = 0):
        self.process = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                        preexec_fn=lambda: os.sched_setaffinity(0, {core}))

    def __enter__(self) -> Burner:
        return self

    def __exit__(self, *exc) -> None:
        stop_process(self.process)


def fresh_server(browser: Browser, app_dir: Path, tries: int, log: Callable[[str], None],
                 load: OtherLoad | None = None) -> list[Row]:
    """Each try: a busy loop on core 0, a new server; once its health endpoint answers, a fresh
    context opens ``/``; seconds from that answer to the first chart and to the whole first view."""
    rows = {"chart": Row("a fresh server's first page, one core busy: the first chart painted, after /_stcore/health "
                         "answers", "≤ 3 s", "s"),
            "view": Row("a fresh server's first page, one core busy: the whole first view (a new run: loss with a "
                        "point, live samples, progress), after /_stcore/health answers", "", "s")}

    def one(_: int) -> dict[str, float]:
        with Burner(0), tempfile.TemporaryDirectory(prefix="bench-fresh-") as tmp:
            server, port = start_server(app_dir, Path(tmp) / "streamlit.log")
            healthy = time.time()  # start_server returns once /_stcore/health has answered 'ok'
            try:
                session = Session(browser, f"http://127.0.0.1:{port}")
                context = session.context()
                try:
                    page, _ = session.page(context)
                    page.goto(session.url(), wait_until="commit")
                    origin = page.evaluate("() => performance.timeOrigin") / 1000
                    chart = session.first_s(page, "firstChart", 120)
                    view = session.first_s(page, "firstView", 120)
                finally:
                    context.close()
            finally:
                stop_process(server)
        return {"chart": origin + chart - healthy, "view": origin + view - healthy}

    started = time.monotonic()
    out = _tries(rows, one, tries)
    for row in out:
        if load is not None:
            row.others = load.mean_between(started, time.monotonic())
        log(" | ".join(row.cells()))
    return out


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
        self.ends: list[float] = []  # time.monotonic() at the end of each interval
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
            self.ends.append(at)
            before, then = now, at

    def mean_between(self, start: float, end: float) -> float | None:
        """Cores other processes used on average in the intervals that ended between ``start``
        and ``end`` (``time.monotonic()``); None if none did."""
        n = min(len(self.samples), len(self.ends))  # the thread appends to both meanwhile
        picked = [(w, o) for (w, o, _), at in zip(self.samples[:n], self.ends[:n], strict=True) if start < at <= end + 1.0]
        wall = sum(w for w, _ in picked)
        return sum(o for _, o in picked) / wall if wall else None

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
                f"most over 10 s (this bench, its servers, browser and busy loop: {mine / wall:.2f})")


def browser_section(app_dir: Path | str = ROOT, log: Callable[[str], None] = print, tries: int = TRIES,
                    only: set[str] | None = None) -> tuple[str, list[Row]]:
    """Run every measurement (or those named in ``only``) against the dashboard in ``app_dir``;
    (heading, rows)."""
    app_dir = Path(app_dir).resolve()
    heading = (f"Browser latency: {describe(app_dir)}; headless Chromium, {os.cpu_count()} CPUs, "
               f"medians of {tries}, each in a fresh context (reload: one page); "
               f"load average at the start {os.getloadavg()[0]:.1f}")
    log(heading)
    rows: list[Row] = []
    with OtherLoad() as load, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            if only is None or set(MEASUREMENTS) & only:
                with tempfile.TemporaryDirectory(prefix="bench-browser-") as tmp:
                    server, port = start_server(app_dir, Path(tmp) / "streamlit.log")
                    try:
                        session = Session(browser, f"http://127.0.0.1:{port}")
                        warm(session, log)
                        rows += measure_all(session, log, tries, only, load)
                    finally:
                        stop_process(server)
            if only is None or FRESH_SERVER in only:
                rows += fresh_server(browser, app_dir, tries, log, load)
        finally:
            browser.close()
    for row in rows:
        for error in row.errors:
            log(f"  {row.action}: {error}")
    heading += f", at the end {os.getloadavg()[0]:.1f}; {load.summary()}"
    return heading, rows


def table(rows: list[Row]) -> str:
    tries = max((len(r.values) + len(r.errors) for r in rows), default=TRIES)
    lines = [f"| action | median | the {tries} tries | target | other processes' CPU meanwhile (cores) |",
             "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def parse_only(text: str | None) -> set[str] | None:
    """``--only`` names (comma-separated) checked against the measurements; None for all."""
    if not text:
        return None
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = names - set(MEASUREMENTS) - {FRESH_SERVER}
    if unknown:
        raise SystemExit(f"--only: unknown {sorted(unknown)}; choose from {[*MEASUREMENTS, FRESH_SERVER]}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tries", type=int, default=TRIES, help="tries per browser measurement (median reported)")
    parser.add_argument("--only", metavar="NAMES",
                        help=f"only these browser measurements, comma-separated: {', '.join([*MEASUREMENTS, FRESH_SERVER])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.browser_latency", description=__doc__.splitlines()[0])
    parser.add_argument("--app-dir", default=str(ROOT), help="the checkout whose dashboard.py is served")
    add_arguments(parser)
    args = parser.parse_args(argv)
    heading, rows = browser_section(args.app_dir, log=lambda line: print(line, file=sys.stderr, flush=True),
                                    tries=args.tries, only=parse_only(args.only))
    print(heading + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
