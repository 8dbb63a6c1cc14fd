"""Load benchmark: N users on one real Streamlit server, each training its own long run.

    python -m bench.load [--users 1,2,4,8] [--seconds 25] [--json PATH] [--app-root DIR] [--backend ray]

1. Headless rate: one training run of the long-run configuration alone, in a process of its own
   (``diffusion.training.Trainer``, 1 torch thread), in steps/s; times the cores = what the
   machine can train ("the cores' headless rate").
2. A real server: ``python -m streamlit run dashboard.py`` on a free port of 127.0.0.1.
3. A finished small run: the link ``--finished-link`` (default ``pace=false``: the default page)
   is opened once by a websocket client until it shows 'Finished'.
4. For N = 0 (no load; the baseline) and each N of ``--users``: N lightweight websocket users
   (``bench/load/client.py``, one process for all) each open a different long run by a link
   (``--link`` with {dataset} and {seed}; new seeds for every N, so nothing is cached) and keep
   their session open, rerunning the training fragment as a browser does. Once every user shows
   'Training', for ``--seconds``: health endpoint latency (GET /_stcore/health every 0.2 s), CPU %
   and RSS of the server and each process under it and of the clients, and each job's steps/s
   read from its page's progress text ('step N'). Then, still under that load, one real Chromium
   page (the "N+1-th user"): opens the finished run's link, flips 'Log-scale loss' in the
   sidebar's 'Display' expander ``--toggles`` times, and opens the link ``--opens`` more times in
   new pages.
5. A markdown table per N, a summary against the targets, JSON with ``--json``.

``--churn``: instead of one long run each, every user finishes short runs again and again
(``--churn-link``, its seed changing each cycle, ``{cycle}``): each finish samples and computes every
view (the reverse animation, results, field, drift) on the workers and draws them. The table adds the
runs each user finished in the window and their median seconds; the targets are health <= 50 ms at
the max and a display change <= 0.3 s.

Every process started here is stopped by its PID (terminate, wait, kill); the server listens on
127.0.0.1 only; every wait has a deadline.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.load import procstat

REPO_ROOT = Path(__file__).resolve().parents[2]
DATASETS = ["moons", "ring", "swiss_roll", "circles", "checkerboard", "spiral", "gaussian"]
DEFAULT_LINK = "preset=improved&epochs=20000&batch=1024&dataset={dataset}&seed={seed}&pace=false"
FINISHED_LINK = "pace=false"
CHURN_LINK = "epochs=400&dataset={dataset}&seed={seed}{cycle}&samples=500&pace=false"  # the reference job, shorter
SERVER_START_S = 90
READY_TIMEOUT_S = 180  # every user's page shows 'Training'
HEALTH_EVERY_S = 0.2

# Run in a process of its own with the app's root as cwd: one training run alone, 1 torch thread.
HEADLESS_CODE = r"""
import json, sys, time
from urllib.parse import parse_qsl
import torch
torch.set_num_threads(1)
from diffusion import config as C
from diffusion.training import Trainer
from ui import controls

query, seconds = sys.argv[1], float(sys.argv[2])
_, values, _ = controls.read_link({key: [raw] for key, raw in parse_qsl(query)})
experiment = controls.experiment_from_values(values, C.DataConfig(values["dataset"]))
trainer = Trainer(experiment)
for _ in trainer.run(50):
    pass
start, steps = time.perf_counter(), 0
for _ in trainer.run():
    steps += 1
    if time.perf_counter() - start >= seconds:
        break
elapsed = time.perf_counter() - start
print(json.dumps({"steps": steps, "seconds": elapsed, "steps_per_s": steps / elapsed,
                  "total_steps": trainer.total_steps}))
"""


# --- processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def stop_process(process: subprocess.Popen | None, grace_s: float = 10.0) -> None:
    """Terminate ``process`` (ours, by its PID), wait, then kill."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=grace_s)


def health_get(port: int, timeout: float = 5.0) -> tuple[float | None, str | None]:
    """Seconds for one GET /_stcore/health on a new connection (as a load balancer does)."""
    started = time.perf_counter()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        connection.request("GET", "/_stcore/health")
        response = connection.getresponse()
        body = response.read()
        connection.close()
    except OSError as error:
        return None, repr(error)
    if response.status != 200 or body.strip() != b"ok":
        return None, f"HTTP {response.status} {body[:60]!r}"
    return time.perf_counter() - started, None


def start_server(app_root: Path, log_path: Path, backend: str = "local") -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, "-m", "streamlit", "run", "dashboard.py",
               "--server.headless", "true", "--server.address", "127.0.0.1", "--server.port", str(port),
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=app_root, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", "DDPM_LAB_BACKEND": backend})
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited ({process.returncode}):\n{log_path.read_text(errors='replace')[-2000:]}")
        latency, _ = health_get(port, timeout=2)
        if latency is not None:
            return process, port
        time.sleep(0.1)
    stop_process(process)
    raise RuntimeError(f"streamlit not healthy after {SERVER_START_S} s; log: {log_path}")


class Clients:
    """The lightweight users: one ``bench.load.client`` process; its events are collected here."""

    def __init__(self, port: int, queries: list[str], duration_s: float, exit_when: str | None = None,
                 churn: bool = False):
        command = [sys.executable, "-m", "bench.load.client", "--port", str(port), "--duration", str(duration_s)]
        for query in queries:
            command += ["--query", query]
        if exit_when:
            command += ["--exit-when", exit_when]
        if churn:
            command += ["--churn"]
        self.count = len(queries)
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.stderr = b""

    def _read(self) -> None:
        for line in self.process.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._lock:
                self.events.append(event)

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self.events)

    def last_labels(self) -> dict[int, str]:
        labels = {}
        for event in self.snapshot():
            if event["event"] == "progress":
                labels[event["user"]] = event["label"]
        return labels

    def errors(self) -> list[str]:
        return [f"user {e.get('user')}: {e['error']}" for e in self.snapshot() if e["event"] == "error"]

    def wait(self, condition, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            if self.process.poll() is not None:
                return condition()
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # the client closes its websockets cleanly
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            stop_process(self.process)
        self._reader.join(timeout=5)
        self.stderr = self.process.stderr.read() if self.process.stderr else b""


class HealthProbe(threading.Thread):
    """GET /_stcore/health every ``HEALTH_EVERY_S`` until stopped."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            latency, error = health_get(self.port)
            if latency is None:
                self.failures.append(error)
            else:
                self.latencies.append(latency)
            self._stop_event.wait(HEALTH_EVERY_S)

    def stop(self) -> dict:
        self._stop_event.set()
        self.join(timeout=10)
        values = sorted(self.latencies)
        if not values:
            return {"count": 0, "failures": len(self.failures)}
        p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
        return {"count": len(values), "failures": len(self.failures),
                "median_ms": round(1000 * statistics.median(values), 1), "p95_ms": round(1000 * p95, 1),
                "max_ms": round(1000 * values[-1], 1)}


# --- measurements ------------------------------------------------------------------------------


def headless_rate(app_root: Path, query: str, seconds: float) -> dict:
    try:
        out = subprocess.run([sys.executable, "-c", HEADLESS_CODE, query, str(seconds)], cwd=app_root,
                             capture_output=True, timeout=seconds + 120, env={**os.environ, "PYTHONPATH": str(app_root)})
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
    if out.returncode != 0:
        return {"error": out.stderr.decode(errors="replace")[-800:]}
    result = json.loads(out.stdout.decode().strip().splitlines()[-1])
    result["cores"] = os.cpu_count()
    result["cores_rate"] = result["steps_per_s"] * result["cores"]
    return result


def job_rates(events: list[dict], users: int, start: float, end: float) -> list[dict]:
    """Per user: steps/s over [start, end] as its page showed them (the step shown at ``end``
    minus the step shown at ``start``, over the time), progress updates received, the longest
    wait between two updates, and the label at the end."""
    rows = []
    for user in range(users):
        seen = [(e["t"], e["step"], e["label"]) for e in events if e["event"] == "progress" and e["user"] == user]
        before = [s for s in seen if s[0] <= start]
        inside = [s for s in seen if start < s[0] <= end]
        step_at_start = before[-1][1] if before else (inside[0][1] if inside else None)
        last = inside[-1] if inside else (before[-1] if before else None)
        if last is None or step_at_start is None:
            rows.append({"user": user, "steps_per_s": None, "updates": 0, "label": None})
            continue
        times = [start] + [s[0] for s in inside] + [end]
        rows.append({
            "user": user, "steps_per_s": round((last[1] - step_at_start) / (end - start), 1),
            "step_start": step_at_start, "step_end": last[1], "updates": len(inside),
            "updates_per_s": round(len(inside) / (end - start), 2),
            "max_gap_s": round(max(b - a for a, b in zip(times, times[1:], strict=False)), 2), "label": last[2],
        })
    return rows


def fill(link: str, **values) -> str:
    """``link`` with ``{name}`` replaced for each of ``values`` (``{cycle}`` is left to the client)."""
    for name, value in values.items():
        link = link.replace("{" + name + "}", str(value))
    return link


def cycle_counts(events: list[dict], users: int, start: float, end: float) -> list[dict]:
    """Per user (``--churn``): the runs it finished and drew within [start, end], and their seconds
    from opening the link to every view drawn."""
    rows = []
    for user in range(users):
        inside = [e["seconds"] for e in events if e["event"] == "cycle" and e["user"] == user and start < e["t"] <= end]
        rows.append({"user": user, "runs": len(inside), "median_s": round(statistics.median(inside), 2) if inside else None})
    return rows


def process_rows(groups: dict[str, tuple[procstat.Snapshot, procstat.Snapshot]]) -> list[dict]:
    rows = []
    for label, (before, after) in groups.items():
        rows += procstat.usage(before, after, label)
    return rows


@dataclass
class Phase:
    users: int
    queries: list[str] = field(default_factory=list)
    ready_s: float | None = None
    window_s: float | None = None
    health: dict = field(default_factory=dict)
    processes: list[dict] = field(default_factory=list)
    machine_cpu_percent: float | None = None
    jobs: list[dict] = field(default_factory=list)
    jobs_during_browser: list[dict] = field(default_factory=list)
    cycles: list[dict] = field(default_factory=list)  # --churn: per user, runs finished and drawn in the window
    browser_processes: list[dict] = field(default_factory=list)
    toggles: dict = field(default_factory=dict)
    opens: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def run_phase(n: int, index: int, args, port: int, server: subprocess.Popen, timer) -> Phase:
    phase = Phase(users=n)
    link = args.churn_link if args.churn else args.link
    phase.queries = [fill(link, dataset=DATASETS[i % len(DATASETS)], seed=100 * (index + 1) + i) for i in range(n)]
    server_tree = procstat.ProcessTree(server.pid, "server")
    clients = None
    try:
        if n:
            clients = Clients(port, phase.queries, duration_s=args.seconds + READY_TIMEOUT_S + 900, churn=args.churn)
            client_tree = procstat.ProcessTree(clients.process.pid, "clients")
            started = time.monotonic()
            if args.churn:  # every user has finished and drawn a run once: all are cycling
                ready = clients.wait(lambda: len({e["user"] for e in clients.snapshot() if e["event"] == "cycle"}) == n,
                                     READY_TIMEOUT_S)
            else:  # 'Waiting': queued for a worker (more runs than workers); it trains in its turn
                ready = clients.wait(lambda: sum(label in ("Training", "Waiting") for label in
                                                 clients.last_labels().values()) == n, READY_TIMEOUT_S)
            phase.ready_s = round(time.monotonic() - started, 2)
            if not ready:
                phase.errors.append(f"only {len(clients.last_labels())} of {n} pages showed training within "
                                    f"{READY_TIMEOUT_S} s: {clients.last_labels()}")
        print(f"  N={n}: measuring for {args.seconds:g} s", file=sys.stderr, flush=True)
        probe = HealthProbe(port)
        trees = {"server": server_tree} | ({"clients": client_tree} if clients else {})
        before = {label: tree.snapshot() for label, tree in trees.items()}
        machine_before = procstat.machine_cpu_seconds()
        window_start = time.time()
        probe.start()
        time.sleep(args.seconds)
        window_end = time.time()
        phase.health = probe.stop()
        after = {label: tree.snapshot() for label, tree in trees.items()}
        machine_after = procstat.machine_cpu_seconds()
        phase.window_s = round(window_end - window_start, 2)
        phase.processes = process_rows({label: (before[label], after[label]) for label in trees})
        busy = machine_after[0] - machine_before[0]
        total = machine_after[1] - machine_before[1]
        phase.machine_cpu_percent = round(100 * busy / total * (os.cpu_count() or 1), 1) if total else None
        if clients and args.churn:
            phase.cycles = cycle_counts(clients.snapshot(), n, window_start, window_end)
        elif clients:
            phase.jobs = job_rates(clients.snapshot(), n, window_start, window_end)

        if timer is not None:
            print(f"  N={n}: browser: {args.toggles} display changes, {args.opens} link opens", file=sys.stderr, flush=True)
            main_tree = procstat.ProcessTree(os.getpid(), "browser")
            others = set(procstat.descendants(server.pid)) | (set(procstat.descendants(clients.process.pid)) if clients else set())
            b_before = main_tree.snapshot()
            b_start = time.time()
            phase.toggles = timer.display_toggles(args.finished_link, times=args.toggles, timeout_s=args.action_timeout)
            for _ in range(args.opens):
                result, _ = timer.open_finished(args.finished_link, timeout_s=args.action_timeout * 1.5)
                phase.opens.append(result)
            b_end = time.time()
            b_after = main_tree.snapshot()
            for snap in (b_before, b_after):
                for pid in list(snap.procs):
                    if pid in others or pid == os.getpid():
                        del snap.procs[pid]
            phase.browser_processes = procstat.usage(b_before, b_after, "browser")
            if clients and not args.churn:
                phase.jobs_during_browser = job_rates(clients.snapshot(), n, b_start, b_end)
        if clients:
            phase.errors += clients.errors()[:10]
    finally:
        if clients is not None:
            clients.stop()
    return phase


def cool_down(server: subprocess.Popen, limit_s: float = 45.0, below_percent: float = 15.0) -> float:
    """Wait until the server's processes use under ``below_percent`` of a core over a second
    (the previous users' jobs have paused); returns the seconds waited."""
    tree = procstat.ProcessTree(server.pid, "server")
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        before = tree.snapshot()
        time.sleep(1.0)
        used = sum(row["cpu_percent"] for row in procstat.usage(before, tree.snapshot(), "server"))
        if used < below_percent:
            break
    return round(time.monotonic() - started, 1)


# --- report ------------------------------------------------------------------------------------


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def _fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def phase_summary(phase: Phase, headless: dict, baseline_open: float | None) -> dict:
    server = [r for r in phase.processes if r["group"] == "server"]
    clients = [r for r in phase.processes if r["group"] == "clients"]
    rates = [j["steps_per_s"] for j in phase.jobs if j.get("steps_per_s") is not None]
    aggregate = round(sum(rates), 1) if phase.users else None
    cores_rate = headless.get("cores_rate")
    toggles = phase.toggles or {}
    open_times = [o["drawn_s"] for o in phase.opens]
    summary = {
        "users": phase.users,
        "health_median_ms": phase.health.get("median_ms"), "health_max_ms": phase.health.get("max_ms"),
        "server_cpu_percent": round(sum(r["cpu_percent"] for r in server), 1),
        "server_rss_mb": round(sum(r["rss_mb"] for r in server), 1),
        "server_processes": len(server),
        "clients_cpu_percent": round(sum(r["cpu_percent"] for r in clients), 1) if clients else None,
        "machine_cpu_percent": phase.machine_cpu_percent,
        "aggregate_steps_per_s": aggregate if not phase.cycles else None,
        "percent_of_headless": round(100 * aggregate / cores_rate, 1) if aggregate is not None and cores_rate else None,
        "min_job_steps_per_s": min(rates) if rates else None,
        "toggle_visible_median_s": _median(toggles.get("visible_s", [])),
        "toggle_settled_median_s": _median(toggles.get("settled_s", [])),
        "open_drawn_median_s": _median(open_times),
        "runs_finished": sum(c["runs"] for c in phase.cycles) if phase.cycles else None,
        "run_median_s": _median([c["median_s"] for c in phase.cycles if c["median_s"] is not None]),
    }
    if baseline_open and summary["open_drawn_median_s"]:
        summary["open_vs_no_load"] = round(summary["open_drawn_median_s"] / baseline_open, 2)
    checks = {}
    limit = 0.3 if phase.cycles else 0.5
    if summary["toggle_visible_median_s"] is not None or toggles:
        checks[f"display change <= {limit} s"] = summary["toggle_visible_median_s"] is not None \
            and summary["toggle_visible_median_s"] <= limit and len(toggles.get("visible_s", [])) >= 1
    if phase.users and baseline_open:
        checks["link open within 20% of no load"] = summary.get("open_vs_no_load") is not None \
            and summary["open_vs_no_load"] <= 1.2
    if phase.health:
        checks["health <= 50 ms (max)"] = phase.health.get("max_ms") is not None and phase.health["max_ms"] <= 50 \
            and not phase.health.get("failures")
    if phase.users and cores_rate and not phase.cycles:
        checks["aggregate >= 70% of headless x cores"] = (summary["percent_of_headless"] or 0) >= 70 \
            and all(r > 0 for r in rates) and len(rates) == phase.users
    summary["checks"] = checks
    return summary


def print_phase(phase: Phase, summary: dict) -> None:
    n = phase.users
    doing = "finishing short runs again and again" if phase.cycles else "training"
    print(f"\n### {n} user{'s' if n != 1 else ''} {doing}" + (" (no load)" if n == 0 else ""))
    if phase.ready_s is not None:
        print(f"\nAll {n} pages showed 'Training' after {phase.ready_s} s; measured over {phase.window_s} s.")
    if phase.cycles:
        print("\n| user | link | runs finished and drawn in the window | median s from link to every view |")
        print("|---|---|---|---|")
        for row, query in zip(phase.cycles, phase.queries, strict=True):
            print(f"| {row['user']} | `{query}` | {row['runs']} | {_fmt(row['median_s'])} |")
    if phase.jobs:
        print("\n| user | link | steps/s | step at start -> end | page updates/s | longest wait (s) | label |")
        print("|---|---|---|---|---|---|---|")
        for job, query in zip(phase.jobs, phase.queries, strict=True):
            print(f"| {job['user']} | `{query}` | {_fmt(job.get('steps_per_s'), 1)} | {_fmt(job.get('step_start'))} -> "
                  f"{_fmt(job.get('step_end'))} | {_fmt(job.get('updates_per_s'))} | {_fmt(job.get('max_gap_s'))} | "
                  f"{_fmt(job.get('label'))} |")
        if phase.jobs_during_browser:
            during = [j.get("steps_per_s") for j in phase.jobs_during_browser]
            print(f"\nSteps/s per job while the browser measured: {', '.join(_fmt(r, 1) for r in during)}")
    rows = phase.processes + phase.browser_processes
    if rows:
        print("\n| process | pid | CPU % (100 = 1 core) | RSS MB | threads |")
        print("|---|---|---|---|---|")
        for row in sorted(rows, key=lambda r: (r["group"], -r["cpu_percent"])):
            if row["group"] == "browser" and row["cpu_percent"] < 1 and row["rss_mb"] < 50:
                continue
            print(f"| {row['group']}: {row['name'][:60]} | {row['pid']} | {row['cpu_percent']} | {row['rss_mb']} | "
                  f"{row['threads']} |")
    t = phase.toggles or {}
    print("\n| measure | value |\n|---|---|")
    h = phase.health
    print(f"| health GET (median / p95 / max ms, n, failures) | {_fmt(h.get('median_ms'), 1)} / {_fmt(h.get('p95_ms'), 1)}"
          f" / {_fmt(h.get('max_ms'), 1)}, {h.get('count')}, {h.get('failures')} |")
    print(f"| machine CPU % (200 = both cores) | {_fmt(phase.machine_cpu_percent, 0)} |")
    if n and not phase.cycles:
        print(f"| aggregate steps/s (% of headless x cores) | {_fmt(summary['aggregate_steps_per_s'], 1)} "
              f"({_fmt(summary['percent_of_headless'], 1)}%) |")
    if t:
        print(f"| display change visible, s (each) | {', '.join(_fmt(v) for v in t.get('visible_s', [])) or '-'} "
              f"(median {_fmt(summary['toggle_visible_median_s'])}) |")
        print(f"| display change rerun settled, s (each) | {', '.join(_fmt(v) for v in t.get('settled_s', [])) or '-'} "
              f"(median {_fmt(summary['toggle_settled_median_s'])}) |")
        print(f"| 9th-user page open: loss drawn / settled, s | {_fmt((t.get('open') or {}).get('drawn_s'))} / "
              f"{_fmt((t.get('open') or {}).get('settled_s'))} |")
    if phase.opens:
        print(f"| finished link opened: loss drawn, s (each) | {', '.join(_fmt(o['drawn_s']) for o in phase.opens)} "
              f"(median {_fmt(summary['open_drawn_median_s'])}"
              + (f", x{summary['open_vs_no_load']} of no load" if summary.get("open_vs_no_load") else "") + ") |")
    for name, ok in summary["checks"].items():
        print(f"| target: {name} | {'PASS' if ok else 'FAIL'} |")
    errors = phase.errors + [e for e in [t.get("error")] + [o.get("error") for o in phase.opens] if e]
    for error in errors[:10]:
        print(f"\n- error: {error}")


def print_overview(summaries: list[dict], headless: dict) -> None:
    print("\n### Summary\n")
    if "steps_per_s" in headless:
        print(f"Headless rate: {headless['steps_per_s']:.0f} steps/s alone (1 thread) x {headless['cores']} cores = "
              f"{headless['cores_rate']:.0f} steps/s.\n")
    print("| users | health median / max ms | server CPU % | server RSS MB | clients CPU % | aggregate steps/s "
          "(% headless) | slowest job steps/s | display change visible s | settled s | finished link loss drawn s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for s in summaries:
        print(f"| {s['users']} | {_fmt(s['health_median_ms'], 1)} / {_fmt(s['health_max_ms'], 1)} | "
              f"{_fmt(s['server_cpu_percent'], 0)} | {_fmt(s['server_rss_mb'], 0)} | {_fmt(s['clients_cpu_percent'], 0)} | "
              f"{_fmt(s['aggregate_steps_per_s'], 0)} ({_fmt(s['percent_of_headless'], 0)}%) | "
              f"{_fmt(s['min_job_steps_per_s'], 0)} | {_fmt(s['toggle_visible_median_s'])} | "
              f"{_fmt(s['toggle_settled_median_s'])} | {_fmt(s['open_drawn_median_s'])} |")


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", default="1,2,4,8", help="comma-separated numbers of training users")
    parser.add_argument("--seconds", type=float, default=25.0, help="measurement window per N")
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    parser.add_argument("--app-root", type=Path, default=REPO_ROOT, help="the checkout whose dashboard.py to serve")
    parser.add_argument("--link", default=DEFAULT_LINK, help="a long run's query string, with {dataset} and {seed}")
    parser.add_argument("--churn", action="store_true", help="users finish short runs again and again")
    parser.add_argument("--churn-link", default=CHURN_LINK, help="--churn's short run, with {dataset}, {seed}, {cycle}")
    parser.add_argument("--finished-link", default=FINISHED_LINK, help="a small run's query string, trained once first")
    parser.add_argument("--toggles", type=int, default=5, help="display-only changes per N (median reported)")
    parser.add_argument("--opens", type=int, default=3, help="openings of the finished run's link per N")
    parser.add_argument("--action-timeout", type=float, default=60.0, help="seconds one browser action may take")
    parser.add_argument("--headless-seconds", type=float, default=4.0)
    parser.add_argument("--no-baseline", action="store_true", help="skip N = 0 (no load)")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--chromium", default="/usr/lib/chromium/chromium")
    parser.add_argument("--backend", choices=["local", "ray"], default="local",
                        help="the server's workers: local processes, or Ray actors (RAY_ADDRESS's cluster, else a "
                             "local Ray the server starts)")
    args = parser.parse_args(argv)
    user_counts = [int(v) for v in args.users.split(",") if v.strip()]
    phases_n = ([] if args.no_baseline else [0]) + user_counts
    app_root = args.app_root.resolve()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-load-"))

    first_query = fill(args.link, dataset=DATASETS[0], seed=1)
    print(f"Headless rate of `{first_query}` ({args.headless_seconds:g} s, 1 thread)...", file=sys.stderr, flush=True)
    headless = headless_rate(app_root, first_query, args.headless_seconds)
    if "error" in headless:
        print(f"  headless rate failed: {headless['error']}", file=sys.stderr)

    results: dict = {"app_root": str(app_root), "backend": args.backend, "link": args.link, "finished_link": args.finished_link,
                     "cpu_count": os.cpu_count(), "headless": headless, "phases": [], "summaries": []}
    server = None
    playwright = timer = None
    try:
        server, port = start_server(app_root, log_dir / "server.log", args.backend)
        print(f"Server pid {server.pid} on 127.0.0.1:{port}, log {log_dir / 'server.log'}", file=sys.stderr, flush=True)
        results["server_log"] = str(log_dir / "server.log")
        started = time.monotonic()
        warm = Clients(port, [args.finished_link], duration_s=240, exit_when="Finished")
        try:
            warm.process.wait(timeout=300)
        except subprocess.TimeoutExpired:
            pass
        warm.stop()
        labels = warm.last_labels()
        results["finished_run_trained_s"] = round(time.monotonic() - started, 1)
        if labels.get(0) != "Finished":
            raise RuntimeError(f"the finished link never showed 'Finished': {labels} {warm.errors()}")
        print(f"Finished run ready ({results['finished_run_trained_s']} s)", file=sys.stderr, flush=True)
        if not args.no_browser:
            from playwright.sync_api import sync_playwright

            from bench.load.browser import PageTimer

            playwright = sync_playwright().start()
            timer = PageTimer(playwright, f"http://127.0.0.1:{port}", executable=args.chromium)
            timer.open_finished(args.finished_link, timeout_s=120)  # warm the browser's cache (Plotly's bundle)
        baseline_open = None
        for index, n in enumerate(phases_n):
            print(f"Phase N={n}", file=sys.stderr, flush=True)
            phase = run_phase(n, index, args, port, server, timer)
            summary = phase_summary(phase, headless, baseline_open)
            if n == 0:
                baseline_open = summary["open_drawn_median_s"]
            print_phase(phase, summary)
            sys.stdout.flush()
            results["phases"].append(vars(phase))
            results["summaries"].append(summary)
            waited = cool_down(server)
            print(f"  cooled down in {waited} s", file=sys.stderr, flush=True)
            if args.json:
                args.json.write_text(json.dumps(results, indent=2, default=str))
        if timer is not None:
            results["foreign_requests"] = timer.foreign[:20]
        print_overview(results["summaries"], headless)
    finally:
        if timer is not None:
            try:
                timer.close()
            except Exception:  # noqa: BLE001
                pass
        if playwright is not None:
            playwright.stop()
        stop_process(server)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
            print(f"\nJSON: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
