"""How fast the views' sliders answer in a real browser: ``python -m bench.sliders``.

Starts the dashboard on a free 127.0.0.1 port, opens a finished run (the reference job on the
Gaussian, then the ring) in headless Chromium, and clicks along the t slider of the field view and
of the forward-against-reverse view. Each click's latency is measured in the page: from the
click (a capturing listener stamps ``performance.now()``) to the end of the frame change
(``plotly_animated``) plus the next painted frame (two ``requestAnimationFrame``s). Every frame is
already in the figure, so no request goes to the server.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from bench.load.__main__ import free_port
from bench.load.browser import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[1]

_ARM_JS = """(traceName) => {
  const gd = [...document.querySelectorAll('.js-plotly-plot')]
      .find(d => d._fullData && d._fullData.some(t => t.name === traceName));
  if (!gd) return false;
  gd.scrollIntoView({block: 'center'});
  window.__lat = [];
  if (!gd.__armed) {
    gd.__armed = true;
    document.addEventListener('mousedown', () => { window.__clickAt = performance.now(); }, true);
    gd.on('plotly_animated', () => {
      const start = window.__clickAt;
      requestAnimationFrame(() => requestAnimationFrame(() => window.__lat.push(performance.now() - start)));
    });
  }
  return true;
}"""

_RAIL_JS = """(traceName) => {
  const gd = [...document.querySelectorAll('.js-plotly-plot')]
      .find(d => d._fullData && d._fullData.some(t => t.name === traceName));
  const rail = gd.querySelector('.slider-rail-rect').getBoundingClientRect();
  return {x: rail.x, y: rail.y + rail.height / 2, width: rail.width, frames: gd._transitionData._frames.length};
}"""


def _start_server(port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "streamlit", "run", "dashboard.py", "--server.headless", "true",
               "--server.address", "127.0.0.1", "--server.port", str(port), "--browser.gatherUsageStats", "false",
               "--server.fileWatcherType", "none"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
                if answer.read().strip() == b"ok":
                    return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the dashboard did not start")


def measure(page, trace_name: str, clicks: int) -> list[float]:
    """Click ``clicks`` positions along the slider of the chart holding ``trace_name``; ms each."""
    page.wait_for_function(f"() => [...document.querySelectorAll('.js-plotly-plot')].some(d => d._fullData && "
                           f"d._fullData.some(t => t.name === {json.dumps(trace_name)}))", timeout=120_000)
    assert page.evaluate(_ARM_JS, trace_name)
    page.wait_for_timeout(500)
    rail = page.evaluate(_RAIL_JS, trace_name)
    latencies = []
    for i in range(clicks):
        fraction = (i * 7 % clicks + 0.5) / clicks  # jump around, never the current frame twice
        before = len(page.evaluate("() => window.__lat"))
        page.mouse.click(rail["x"] + fraction * rail["width"], rail["y"])
        page.wait_for_function(f"() => window.__lat.length > {before}", timeout=10_000)
        latencies.append(page.evaluate("() => window.__lat[window.__lat.length - 1]"))
        page.wait_for_timeout(150)
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sliders", description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=9)
    args = parser.parse_args(argv)
    port = free_port()
    server = _start_server(port)
    rows = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for query in ("pace=false", "pace=false&dataset=ring&preset=improved"):
                page = browser.new_page(viewport={"width": 1400, "height": 1600})
                page.goto(f"http://127.0.0.1:{port}/?{query}")
                for view, trace in (("field", "learned ε"), ("forward vs reverse", "drift")):
                    values = measure(page, trace, args.clicks)
                    rows.append((query, view, statistics.median(values), max(values)))
                page.close()
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    print("| page | view | slider click to painted frame, median ms | max ms |")
    print("|---|---|---|---|")
    for query, view, med, worst in rows:
        print(f"| `?{query}` | {view} | {med:.0f} | {worst:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
