"""Keyed ``st.plotly_chart`` against keyed ``st.echarts_chart`` for the live loss chart, in headless
Chromium: ``python -m bench.live_chart_probe [--tries 3] [--shots DIR]``.

Writes a tiny Streamlit app to a temporary folder (this checkout on its PYTHONPATH, the page's own
``.streamlit/config.toml``), starts it on a free 127.0.0.1 port with this interpreter and stops it
by its PID at the end. A probe, not a test: nothing is asserted, the numbers are printed (and
written as JSON with ``--json``).

- toggle: a fragment holds a 'Log-scale loss' ``st.toggle`` and the loss of 3,000 synthetic steps,
  either ``charts.loss_figure`` in a keyed ``st.plotly_chart`` or ``charts.live.loss_spec`` in a
  keyed ``st.echarts_chart``. After one untimed visit of each (the server's first runs), in each of
  ``--tries`` fresh browser contexts per kind, the kinds interleaved (a fresh session, an empty
  HTTP cache), it measures, with ``performance.now()`` in the page:
  - first paint: from the navigation's start (the document's time origin) to the animation frame
    after the chart is first drawn (Plotly: a visible ``.js-plotly-plot`` with a trace of points;
    ECharts: the chart's container carries an ``aria-label``, which ECharts writes when it renders
    an option);
  - linear -> log, then log -> linear: from the click's ``mousedown`` (a capturing listener stamps
    it) to the animation frame after the DOM shows the new axis (Plotly: the visible div's
    ``_fullLayout.yaxis.type``; ECharts: the container's ``aria-label`` says 'log axis' /
    'linear axis', the words ``loss_spec`` puts in its description);
  - whether the chart's node (Plotly's div; ECharts' canvas) is still the one drawn before.
- tick: a fragment with ``run_every=0.3 s`` grows the loss by 60 steps a tick, drawn both ways;
  over about 10 ticks it counts the distinct DOM nodes seen for each chart (one: updated in place).
- merge: a keyed ECharts chart shows option A (a blue and a magenta line), then, on a toggle,
  option B (the blue line alone); counts magenta pixels on the canvas after B is drawn (0: the
  frontend replaced the option, ``notMerge``; more: a removed series stays drawn).
- shots (with ``--shots DIR``): the four live ECharts charts (``charts.live``), laid out as the
  page lays them out, at 1400 x 900, then with the loss on a log axis; the same for the Plotly
  versions, for comparison.

Measured here (2 shared cores, Streamlit 1.67, Chromium 156; medians of 3 fresh contexts, two runs):
first paint Plotly 3.40 / 2.99 s, ECharts 1.58 / 1.93 s; linear -> log Plotly 0.28 / 0.20 s,
ECharts 0.15 / 0.15 s; log -> linear Plotly 0.15 / 0.16 s, ECharts 0.07 / 0.08 s. Plotly's div was a
new node after every toggle (10 nodes over 10 ticks), ECharts' canvas the same one throughout (1);
the series dropped from option B left 0 of its 8,326 pixels.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from bench.load.__main__ import free_port, health_get, stop_process
from bench.load.browser import CHROMIUM, CHROMIUM_ARGS, IDLE_JS

ROOT = Path(__file__).resolve().parents[1]
VIEWPORT = {"width": 1400, "height": 900}

APP = r'''
import numpy as np
import streamlit as st

import charts
from charts import live

mode = st.query_params.get("mode", "toggle")
kind = st.query_params.get("chart", "echarts")
st.set_page_config(layout="wide")
rng = np.random.default_rng(0)
steps = np.arange(1, 20_001)
ALL = 0.41 + 0.8 * np.exp(-steps / 600) + 0.25 * np.exp(-steps / 60)
ALL = ALL * np.exp(0.3 * rng.standard_normal(len(steps)))  # a noisy loss, 20,000 steps
FLOOR, TOTAL = 0.41, 5000


def loss_chart(losses, log_y, key, baseline=None):
    if kind == "plotly":
        st.plotly_chart(charts.loss_figure(losses, log_y=log_y, floor=FLOOR, total_steps=TOTAL, baseline=baseline),
                        key=key, config={"displaylogo": False})
    else:
        st.echarts_chart(live.loss_spec(losses, log_y=log_y, floor=FLOOR, total_steps=TOTAL, baseline=baseline),
                         key=key, height=live.LOSS_HEIGHT)


if mode == "toggle":
    @st.fragment
    def view():
        log_y = st.toggle("Log-scale loss", key="log_y")
        loss_chart(ALL[:3000], log_y, "loss_chart")
    view()

elif mode == "tick":
    @st.fragment(run_every=0.3)
    def ticking():
        n = st.session_state["n"] = st.session_state.get("n", 1000) + 60
        left, right = st.columns(2)
        with left:
            st.plotly_chart(charts.loss_figure(ALL[:n], floor=FLOOR, total_steps=TOTAL), key="loss_plotly")
        with right:
            st.echarts_chart(live.loss_spec(ALL[:n], floor=FLOOR, total_steps=TOTAL), key="loss_echarts",
                             height=live.LOSS_HEIGHT)
    ticking()

elif mode == "merge":
    @st.fragment
    def merging():
        b = st.toggle("Option B", key="b")
        blue = {"type": "line", "name": "blue", "data": [[0, 1], [1, 10], [2, 100]],
                "lineStyle": {"color": "#0000ff", "width": 6}}
        magenta = {"type": "line", "name": "magenta", "data": [[0, 100], [1, 10], [2, 1]],
                   "lineStyle": {"color": "#ff00ff", "width": 6}, "itemStyle": {"color": "#ff00ff"}}
        spec = {"animation": False, "aria": {"enabled": True, "label": {"description": "B" if b else "A"}},
                "xAxis": {"type": "value"}, "series": [blue] if b else [blue, magenta]}
        spec["yAxis"] = {} if b else {"type": "log"}
        st.echarts_chart(spec, key="merge_chart", height=300)
    merging()

else:  # the four live charts, as the page lays them out
    angle = rng.uniform(0, 2 * np.pi, 1000)
    data = np.stack([np.cos(angle), np.sin(angle)], 1) * 2 + 0.08 * rng.standard_normal((1000, 2))
    samples = data[:400] * 0.9 + 0.35 * rng.standard_normal((400, 2))
    ranges = charts.axis_range(data, pad=0.6)
    previews = np.array([[s, 0.5 * np.exp(-s / 700) + 0.004, 0.002, 0.1] for s in range(100, 2601, 250)])
    edges = np.round(np.linspace(0, 1000, 21)).astype(int)
    t_start, t_end = edges[:-1], edges[1:]
    floor_by_t = 0.05 + 0.9 * (1 - np.exp(-(t_start + 25) / 300))
    recent = floor_by_t * (1.1 + 0.3 * np.exp(-t_start / 200))
    label = "Live samples at step 2,600: energy distance 2.40 × floor"
    n, baseline = 2600, ALL[:TOTAL] * 1.1
    top_left, top_right = st.columns([3, 2])
    with top_left:
        st.toggle("Log-scale loss", key="log_y")
        loss_chart(ALL[:n], st.session_state["log_y"], "loss_chart", baseline=baseline)
    bottom_left, bottom_right = st.columns(2)
    if kind == "plotly":
        with top_right:
            st.plotly_chart(charts.preview_figure(samples, data, ranges, label), key="preview_chart")
        with bottom_left:
            st.plotly_chart(charts.quality_figure(previews, TOTAL), key="quality_chart")
        with bottom_right:
            st.plotly_chart(charts.loss_by_t_figure(t_start, t_end, recent, floor_by_t, 200), key="loss_by_t_chart")
    else:
        with top_right:
            st.echarts_chart(live.preview_spec(samples, data, ranges, label), key="preview_chart",
                             height=live.PREVIEW_HEIGHT)
        with bottom_left:
            st.echarts_chart(live.quality_spec(previews, TOTAL), key="quality_chart", height=live.QUALITY_HEIGHT)
        with bottom_right:
            st.echarts_chart(live.loss_by_t_spec(t_start, t_end, recent, floor_by_t, 200), key="loss_by_t_chart",
                             height=live.LOSS_BY_T_HEIGHT)
'''

# In the page: stamps, a requestAnimationFrame watcher, and how to find each chart.
PROBE_JS = r"""
window.__probe = {clickAt: null, seenAt: null, paintedAt: null, firstPaint: null};
document.addEventListener('mousedown', () => { window.__probe.clickAt = performance.now(); }, true);
const visible = (e) => e.getClientRects().length > 0 && !e.closest('[data-stale="true"]');
window.__plotly = (key) => [...document.querySelectorAll(`.st-key-${key} .js-plotly-plot`)].find(visible);
window.__echarts = (key) => [...document.querySelectorAll(`.st-key-${key} [_echarts_instance_]`)].find(visible);
window.__state = (kind, key) => {  // what the chart has painted: Plotly's y axis type, or ECharts' aria-label
  if (kind === 'plotly') {
    const d = window.__plotly(key);
    return d && d._fullData && d._fullData.length && d._fullData[0].x && d._fullData[0].x.length
      ? d._fullLayout.yaxis.type : null;
  }
  const e = window.__echarts(key);
  return e ? e.getAttribute('aria-label') : null;
};
window.__node = (kind, key) => kind === 'plotly' ? window.__plotly(key)
  : (window.__echarts(key) || document).querySelector('canvas');
window.__watch = (done) => {  // stamp the frame in which done() first holds, and the one after it
  const p = window.__probe; p.seenAt = p.paintedAt = null;
  const tick = () => {
    if (done()) { p.seenAt = performance.now(); requestAnimationFrame(() => { p.paintedAt = performance.now(); }); }
    else requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
};
const kind = new URLSearchParams(location.search).get('chart') || 'echarts';
window.__watch(() => window.__state(kind, 'loss_chart') !== null);  // the first paint
"""


def wait_until(page: Page, script: str, arg=None, timeout_s: float = 60.0):
    """Poll ``script`` in the page until it returns something truthy (events are delivered only
    inside Playwright calls, so this waits with ``page.wait_for_timeout``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = page.evaluate(script, arg)
        if value:
            return value
        page.wait_for_timeout(20)
    raise TimeoutError(f"not true within {timeout_s} s: {script}")


def settle(page: Page) -> None:
    wait_until(page, IDLE_JS)
    page.wait_for_timeout(400)


def toggle_try(browser, base: str, kind: str) -> dict:
    """One fresh context: first paint, then linear -> log -> linear by the toggle."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.add_init_script(PROBE_JS)
        page.goto(f"{base}/?mode=toggle&chart={kind}")
        first = wait_until(page, "() => window.__probe.paintedAt")
        settle(page)
        out = {"first_paint_s": round(first / 1000, 3)}
        for wanted in ("log", "linear"):
            node = "window.__before = window.__node(k, 'loss_chart')"
            page.evaluate(f"(k) => {{ {node}; }}", kind)
            check = ("(s) => s === 'log'" if wanted == "log" else "(s) => s === 'linear'") if kind == "plotly" else \
                f"(s) => !!s && s.includes('{wanted} axis')"
            page.evaluate(f"(k) => window.__watch(() => ({check})(window.__state(k, 'loss_chart')))", kind)
            page.get_by_text("Log-scale loss").click()
            painted = wait_until(page, "() => window.__probe.paintedAt")
            clicked = page.evaluate("() => window.__probe.clickAt")
            same = page.evaluate("(k) => window.__before === window.__node(k, 'loss_chart')", kind)
            out[f"to_{wanted}_s"] = round((painted - clicked) / 1000, 3)
            out[f"to_{wanted}_same_node"] = same
            settle(page)
        return out
    finally:
        context.close()


def tick_probe(browser, base: str, updates: int = 10) -> dict:
    """Distinct DOM nodes seen for each chart over ``updates`` fragment ticks."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(f"{base}/?mode=tick")
        wait_until(page, "() => !!window.document.querySelector('.st-key-loss_echarts canvas') && "
                         "!!document.querySelector('.st-key-loss_plotly .js-plotly-plot')")
        page.evaluate(r"""() => {
          const seen = window.__seen = {plotly: new Set(), echarts: new Set(), labels: new Set()};
          const vis = (e) => e && e.getClientRects().length > 0;
          const tick = () => {
            const p = [...document.querySelectorAll('.st-key-loss_plotly .js-plotly-plot')].filter(vis);
            const c = [...document.querySelectorAll('.st-key-loss_echarts canvas')].filter(vis);
            p.forEach(n => seen.plotly.add(n)); c.forEach(n => seen.echarts.add(n));
            const e = document.querySelector('.st-key-loss_echarts [_echarts_instance_]');
            if (e) seen.labels.add(e.getAttribute('aria-label'));
            requestAnimationFrame(tick);
          };
          requestAnimationFrame(tick);
        }""")
        wait_until(page, f"() => window.__seen.labels.size > {updates}", timeout_s=60)
        return page.evaluate("() => ({plotly_nodes: window.__seen.plotly.size, echarts_canvases: "
                             "window.__seen.echarts.size, echarts_labels_seen: window.__seen.labels.size})")
    finally:
        context.close()


MAGENTA_JS = r"""() => {
  const canvas = document.querySelector('.st-key-merge_chart canvas');
  const { width, height } = canvas;
  const pixels = canvas.getContext('2d').getImageData(0, 0, width, height).data;
  let count = 0;
  for (let i = 0; i < pixels.length; i += 4)
    if (pixels[i] > 200 && pixels[i + 1] < 80 && pixels[i + 2] > 200) count++;
  return count;
}"""


def merge_probe(browser, base: str) -> dict:
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.goto(f"{base}/?mode=merge")
        label = "() => { const e = document.querySelector('.st-key-merge_chart [_echarts_instance_]'); " \
                "return e && e.getAttribute('aria-label'); }"
        wait_until(page, f"() => ({label})() === 'A'")
        page.wait_for_timeout(300)
        before = page.evaluate(MAGENTA_JS)
        page.get_by_text("Option B").click()
        wait_until(page, f"() => ({label})() === 'B'")
        page.wait_for_timeout(300)
        return {"magenta_pixels_option_a": before, "magenta_pixels_after_option_b": page.evaluate(MAGENTA_JS)}
    finally:
        context.close()


def screenshots(browser, base: str, folder: Path) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind in ("echarts", "plotly"):
        context = browser.new_context(viewport=VIEWPORT)
        try:
            page = context.new_page()
            page.add_init_script(PROBE_JS)
            page.goto(f"{base}/?mode=gallery&chart={kind}")
            for key in ("loss_chart", "preview_chart", "quality_chart", "loss_by_t_chart"):
                wait_until(page, "([k, key]) => window.__state(k, key) !== null", [kind, key])
            settle(page)
            path = folder / f"live_charts_{kind}.png"
            page.screenshot(path=str(path))
            page.get_by_text("Log-scale loss").click()
            wait_until(page, "(k) => ['log', true].includes(k === 'plotly' ? window.__state(k, 'loss_chart') "
                             ": (window.__state(k, 'loss_chart') || '').includes('log axis'))", kind)
            settle(page)
            log_path = folder / f"live_charts_{kind}_log.png"
            page.screenshot(path=str(log_path))
            paths += [str(path), str(log_path)]
        finally:
            context.close()
    return paths


def start_app(folder: Path) -> tuple[subprocess.Popen, int, Path]:
    (folder / "app.py").write_text(APP)
    shutil.copytree(ROOT / ".streamlit", folder / ".streamlit")
    port, log = free_port(), folder / "server.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=folder, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited: {log.read_text()[-2000:]}")
        if health_get(port, timeout=2)[0] is not None:
            return process, port, log
        time.sleep(0.1)
    stop_process(process)
    raise RuntimeError("streamlit not healthy after 90 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=3, help="fresh browser contexts per chart kind")
    parser.add_argument("--shots", type=Path, help="write screenshots of the four live charts here")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--only", choices=("toggle", "tick", "merge", "shots"), action="append",
                        help="run only these parts (repeatable); default: all")
    args = parser.parse_args()
    parts = set(args.only or ("toggle", "tick", "merge", "shots"))
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        process, port, _ = start_app(Path(tmp))
        base = f"http://127.0.0.1:{port}"
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    if "toggle" in parts:
                        kinds = ("plotly", "echarts")
                        for kind in kinds:  # untimed: the server's first runs of the app (imports)
                            toggle_try(browser, base, kind)
                        tries = {kind: [] for kind in kinds}
                        for _ in range(args.tries):  # interleaved, so a slow spell of the machine hits both
                            for kind in kinds:
                                tries[kind].append(toggle_try(browser, base, kind))
                        for kind in kinds:
                            results[kind] = {"tries": tries[kind], "median": {
                                name: round(statistics.median(t[name] for t in tries[kind]), 3)
                                for name in tries[kind][0] if name.endswith("_s")}}
                            print(kind, json.dumps(results[kind]), flush=True)
                    if "tick" in parts:
                        results["tick"] = tick_probe(browser, base)
                        print("tick", results["tick"], flush=True)
                    if "merge" in parts:
                        results["merge"] = merge_probe(browser, base)
                        print("merge", results["merge"], flush=True)
                    if "shots" in parts and args.shots:
                        results["shots"] = screenshots(browser, base, args.shots)
                        print("shots", results["shots"], flush=True)
                finally:
                    browser.close()
        finally:
            stop_process(process)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
