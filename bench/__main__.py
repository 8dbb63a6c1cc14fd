"""Benchmark: the project's reference preset against the seed script, side by side, in one run.

    python -m bench [--repeats 5] [--skip-browser | --browser-only] [--app-dir DIR] [--tries 3] [--only NAMES]

Alternates the seed script's own ``train``/``sample`` (imported from ../shared/reference, not
copied) with the project doing the same job, and reports medians and ratios; then measures the
dashboard's costs (streaming, reruns, cache hits, payload); then how fast the page answers in
headless Chromium (``bench/browser_latency.py``: opening, reload, display changes, new runs, play,
a fresh server's first page), against the dashboard of ``--app-dir`` (default: this checkout), each
measurement ``--tries`` times (``--only`` some of them). A benchmark, not a test: these
machines are shared and noisy, so only ratios measured in the same run mean much.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

from diffusion import reference
from diffusion.datasets import make_dataset
from diffusion.metrics import evaluate
from diffusion.samplers import sample_model
from diffusion.training import Trainer

ROOT = Path(__file__).resolve().parents[1]
SEED_SCRIPT = ROOT.parent / "shared" / "reference" / "seed_ddpm.py"
DEFAULT_THREADS = torch.get_num_threads()  # what the seed script gets when run as written


def load_seed_script():
    """Import the reference script as a module; matplotlib (only used to plot) is stubbed."""
    for name in ("matplotlib", "matplotlib.pyplot"):
        sys.modules.setdefault(name, types.ModuleType(name))
    spec = importlib.util.spec_from_file_location("seed_ddpm", SEED_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def stopwatch(into: list[float]):
    """Append the seconds the block took to ``into``."""
    start = time.perf_counter()
    yield
    into.append(time.perf_counter() - start)


# --- 1. the reference job, side by side ---------------------------------------------------------


def reference_job(repeats: int) -> list[tuple]:
    seed = load_seed_script()
    config = reference()
    dataset = make_dataset(config.data)
    rows = {k: [] for k in ("ref_train", "ref_sample", "our_train", "our_sample", "ref_ed", "our_ed")}
    for i in range(repeats):  # alternate, so drifts in machine load hit both alike
        torch.manual_seed(i)
        with contextlib.redirect_stdout(io.StringIO()), stopwatch(rows["ref_train"]):
            model = seed.train()
        with stopwatch(rows["ref_sample"]):
            samples = seed.sample(model, 1000, torch.device("cpu"))
        rows["ref_ed"].append(evaluate(samples.detach().numpy(), dataset, seed=i).energy_distance.ratio)

        run = config.replace(train={"seed": i}, sampler={"seed": i})
        with stopwatch(rows["our_train"]):
            trainer = Trainer(run).train()
        with stopwatch(rows["our_sample"]):
            trajectory = sample_model(trainer.sampling_model(), trainer.schedule, run.sampler)
        rows["our_ed"].append(evaluate(trajectory.samples, dataset, seed=i).energy_distance.ratio)
    med = {k: statistics.median(v) for k, v in rows.items()}
    ref_total, our_total = med["ref_train"] + med["ref_sample"], med["our_train"] + med["our_sample"]
    return [
        ("training steps per second", f"{1000 / med['ref_train']:,.0f}", f"{1000 / med['our_train']:,.0f}",
         f"{med['ref_train'] / med['our_train']:.1f}x faster", ">= 4x for the whole job"),
        ("sampling 1000 points x 1000 steps", f"{med['ref_sample']:.3f} s", f"{med['our_sample']:.3f} s",
         f"{med['ref_sample'] / med['our_sample']:.1f}x faster", ">= 2x"),
        ("whole job (train + sample)", f"{ref_total:.2f} s", f"{our_total:.2f} s",
         f"{ref_total / our_total:.1f}x faster", ">= 4x"),
        ("energy distance / noise floor (median)", f"{med['ref_ed']:.2f}", f"{med['our_ed']:.2f}",
         "equal or better" if med["our_ed"] <= med["ref_ed"] * 1.15 else "WORSE", "equal or better"),
    ]


def as_shipped(repeats: int) -> list[tuple]:
    """The seed script as its users run it (torch's default threads) against the project as it
    ships (one thread, set by the command and the page)."""
    seed = load_seed_script()
    config = reference()
    ref, ours = [], []
    default_threads = torch.get_num_threads()
    for i in range(repeats):
        torch.set_num_threads(DEFAULT_THREADS)
        torch.manual_seed(i)
        with contextlib.redirect_stdout(io.StringIO()), stopwatch(ref):
            seed.sample(seed.train(), 1000, torch.device("cpu"))
        torch.set_num_threads(1)
        run = config.replace(train={"seed": i}, sampler={"seed": i})
        with stopwatch(ours):
            trainer = Trainer(run).train()
            sample_model(trainer.sampling_model(), trainer.schedule, run.sampler)
    torch.set_num_threads(default_threads)
    r, o = statistics.median(ref), statistics.median(ours)
    return [(f"whole job as shipped (script: {DEFAULT_THREADS} threads; project: 1)", f"{r:.2f} s", f"{o:.2f} s",
             f"{r / o:.1f}x faster", ">= 4x")]


def autograd_baseline(repeats: int) -> list[tuple]:
    """What the hand-written backward pass and the lean Adam bought: the same model, batches and
    loss, stepped the usual way (autograd + torch.optim.Adam)."""
    import torch.nn.functional as F

    from diffusion.forward import q_sample

    config = reference()
    usual, ours = [], []
    for _ in range(repeats):
        trainer = Trainer(config)
        optimizer = torch.optim.Adam(trainer.model.parameters(), lr=config.train.lr)
        g, T = trainer.generator, trainer.schedule.num_timesteps
        with stopwatch(usual):
            for _ in range(1000):
                x0 = trainer.dataset.sample(128, g)
                t = torch.randint(0, T, (128,), generator=g)
                noise = torch.randn(x0.shape, generator=g)
                loss = F.mse_loss(trainer.model(q_sample(trainer.schedule, x0, t, noise), t), noise)
                loss.item()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        with stopwatch(ours):
            Trainer(config).train()
    u, o = statistics.median(usual), statistics.median(ours)
    return [("1000 training steps: autograd + torch.optim.Adam vs the project's step", f"{u:.2f} s (autograd)",
             f"{o:.2f} s", f"{u / o:.1f}x faster", "(what the hand-written backward + lean Adam bought)")]


# --- 2. peak memory of the headless job, each in its own process --------------------------------

_SEED_AS_WRITTEN = f"""
import sys, types
for name in ("matplotlib", "matplotlib.pyplot"):
    m = types.ModuleType(name); m.figure = m.subplot = m.scatter = m.title = m.xlabel = m.ylabel = \\
        m.legend = m.tight_layout = m.show = lambda *a, **k: None; sys.modules[name] = m
sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]
import runpy; runpy.run_path({str(SEED_SCRIPT)!r}, run_name="__main__")
"""


def peak_rss_mb(argv: list[str]) -> float:
    """Peak resident memory of a child process, in MB."""
    code = ("import resource, runpy, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True); "
            "assert p.returncode == 0, p.stderr.decode()[-500:]; "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, check=True)
    return int(out.stdout.strip()) / 1024


def memory() -> list[tuple]:
    ref = peak_rss_mb([sys.executable, "-c", _SEED_AS_WRITTEN])
    ours = peak_rss_mb([sys.executable, "-m", "diffusion", "--preset", "reference", "--json"])
    baseline = peak_rss_mb([sys.executable, "-c", "import torch"])
    return [("peak memory, headless reference job", f"{ref:,.0f} MB", f"{ours:,.0f} MB",
             f"{ref / ours:.1f}x less", f"<= 400 MB (import torch alone: {baseline:,.0f} MB)")]


# --- 3. the dashboard ------------------------------------------------------------------------------


def streaming_throughput(repeats: int) -> list[tuple]:
    """Training while the page streams the loss vs headless. Training runs in a worker process, as
    on the page, which also takes the live previews and keeps the loss by noise level; this process
    plays the server and does what the page's live views do every 0.3 s: snapshot the job, build the
    loss, preview, quality and loss-by-t ECharts options, serialise them as st.echarts_chart does."""
    import charts
    from charts import live
    from runtime.registry import RunRegistry

    def sent(spec: dict) -> int:
        return len(json.dumps(spec, allow_nan=False))

    epochs = 10_000
    config = reference().replace(train={"epochs": epochs})
    data = make_dataset(config.data).sample(1000, torch.Generator().manual_seed(1)).numpy()
    ranges = charts.axis_range(data, pad=0.6)
    headless_seconds, streamed_seconds, preview_ms, extra_bytes = [], [], [], []
    registry = RunRegistry(1)
    for _ in range(repeats):
        with stopwatch(headless_seconds):
            Trainer(config).train()
        job = registry.new_job("bench", config.training)
        registry.start(job)
        while registry.finished(config.training) is None:
            snapshot = registry.snapshot(job)
            sent(live.loss_spec(snapshot.losses, total_steps=snapshot.total_steps))
            extras = [live.preview_spec(None if snapshot.preview is None else snapshot.preview.points, data,
                                        ranges, "live")]
            if len(snapshot.previews):
                extras.append(live.quality_spec(snapshot.previews, snapshot.total_steps))
            if snapshot.loss_by_t is not None and snapshot.loss_by_t.step:
                by_t = snapshot.loss_by_t
                extras.append(live.loss_by_t_spec(by_t.t_start, by_t.t_end, by_t.recent_loss, None, by_t.window))
            if len(extras) == 3:
                extra_bytes.append(sum(sent(spec) for spec in extras))
            time.sleep(0.3)
            if job.status == "failed":
                raise RuntimeError(job.error)
        streamed_seconds.append(job.wall)  # the job's own wall time, start to last step, previews included
        preview_ms += list(registry.finished(config.training).snapshot().previews[:, 3] * 1000)
        registry.discard_finished(config.training)
    registry.close()
    headless, streamed = epochs / statistics.median(headless_seconds), epochs / statistics.median(streamed_seconds)
    return [
        ("training while the loss and live previews stream (10,000 steps)", f"{headless:,.0f} steps/s headless",
         f"{streamed:,.0f} steps/s", f"{streamed / headless:.0%} of headless", ">= 90%"),
        ("one live preview (300 points, 30 DDIM steps, scored)", "", f"{statistics.median(preview_ms):.1f} ms",
         f"{len(preview_ms) / repeats:.0f} previews a run", "<= 10% of training"),
        ("extra bytes per poll (preview, quality, loss by t charts)", "",
         f"{statistics.median(extra_bytes) / 1000:.1f} kB" if extra_bytes else "n/a", "", ""),
    ]


def page_costs() -> list[tuple]:
    """Server time of reruns, measured with Streamlit's AppTest (script run time in this process)."""
    os.environ.setdefault("STREAMLIT_LOGGER_LEVEL", "error")
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from ui import panels

    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "dashboard.py"), default_timeout=120)
    at.run()
    def status() -> str:  # the training's bar ('**Label** · ...'), not a view's waiting for a worker
        return next((b.proto.text for b in at.get("progress") if b.proto.text.startswith("**")), "")

    while "**Finished**" not in status():
        time.sleep(0.2)
        at.run()
    at.run()
    while len(at.get("progress")) > 1:  # a view still waits for a worker's result
        time.sleep(0.2)
        at.run()
    payload = len(next(e.proto.json for e in at.get("bidi_component")
                       if e.proto.component_name.endswith("ddpm_lab_animation")).encode())
    display = []
    for value in (True, False, True, False, True):
        with stopwatch(display):
            at.toggle(key="log_y").set_value(value).run()
    at.select_slider(key="lr").set_value(0.003).run()
    while "**Finished**" not in status():
        time.sleep(0.2)
        at.run()
    cached = []
    for value in (0.001, 0.003, 0.001, 0.003, 0.001):
        with stopwatch(cached):
            at.select_slider(key="lr").set_value(value).run()
        assert "**Finished**" in status(), "a revisited configuration retrained"
    runs = panels.registry()
    for job in runs.running():
        runs.pause(job)
    return [
        ("rerun after a display-only change", "", f"{statistics.median(display) * 1000:.0f} ms", "", "< 150 ms"),
        ("showing a cached configuration again", "", f"{statistics.median(cached) * 1000:.0f} ms", "", "< 300 ms"),
        ("default animation payload (60 frames x 1000 points, with x0)", "", f"{payload / 1e6:.2f} MB", "", "<= 3 MB"),
    ]


def first_loss_point() -> list[tuple]:
    """Process start to the first loss record of the headless job."""
    code = ("import time; t0 = time.perf_counter(); from diffusion import reference; "
            "from diffusion.training import Trainer; tr = Trainer(reference()); next(tr.run(1)); "
            "print(time.perf_counter() - t0)")
    torch_only = "import time; t0 = time.perf_counter(); import torch; print(time.perf_counter() - t0)"

    def median_of(snippet):
        return statistics.median(float(subprocess.run([sys.executable, "-c", snippet], capture_output=True,
                                                      text=True, cwd=ROOT, check=True).stdout) for _ in range(3))

    return [("process start to the first loss point", f"import torch alone: {median_of(torch_only):.2f} s",
             f"{median_of(code):.2f} s", "", "nothing compiled, no unused imports")]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    browser = parser.add_mutually_exclusive_group()
    browser.add_argument("--skip-browser", action="store_true", help="leave out the browser latency section")
    browser.add_argument("--browser-only", action="store_true", help="only the browser latency section")
    parser.add_argument("--app-dir", default=str(ROOT),
                        help="the checkout whose dashboard the browser section serves (default: this one)")
    parser.add_argument("--tries", type=int, default=3, help="tries per browser measurement (median reported)")
    parser.add_argument("--only", metavar="NAMES", help="only these browser measurements, comma-separated "
                                                        "(names: python -m bench.browser_latency --help)")
    args = parser.parse_args(argv)
    rows = []
    if not args.browser_only:
        torch.set_num_threads(1)
        print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads 1 (script as shipped: {DEFAULT_THREADS}), "
              f"{args.repeats} repeats (medians)\n", flush=True)
        sections = (lambda: reference_job(args.repeats), lambda: as_shipped(args.repeats),
                    lambda: autograd_baseline(args.repeats), memory, lambda: streaming_throughput(3), page_costs,
                    first_loss_point)
        for section in sections:
            new = section()
            rows += new
            for row in new:
                print(" | ".join(row), flush=True)
        print()
        print("| measure | reference script | this project | ratio | target |")
        print("|---|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
    browser_rows = None
    if not args.skip_browser:
        from bench import browser_latency  # playwright: only for this section

        heading, browser_rows = browser_latency.browser_section(args.app_dir, log=lambda line: print(line, flush=True),
                                                                tries=args.tries,
                                                                only=browser_latency.parse_only(args.only))
        print()
        print(heading + "\n")
        print(browser_latency.table(browser_rows))
    if args.json:
        if browser_rows is None:
            Path(args.json).write_text(json.dumps(rows, indent=2))
        else:
            browser = [{"action": r.action, "note": r.note, "unit": r.unit, "median": r.median(), "values": r.values,
                        "target": r.target, "errors": r.errors, "other_cores": r.others} for r in browser_rows]
            Path(args.json).write_text(json.dumps({"rows": rows, "browser": browser}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
