"""Fixtures for the browser tests: one Streamlit server for the session, Debian's Chromium through
pytest-playwright, and dashboard tabs that fail the test on any error they see.

Chromium: /usr/lib/chromium/chromium, or $CHROMIUM_EXECUTABLE. Never `playwright install` (no
download here). Without the binary the tests skip with how to install it; under CI=true they fail.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import expect

from .dashboard_page import DashboardPage

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO_ROOT / "artifacts"  # gitignored; artifacts/dashboard.png is the README's screenshot
BROWSER_ARTIFACTS = ARTIFACTS / "browser"
CHROMIUM = os.environ.get("CHROMIUM_EXECUTABLE", "/usr/lib/chromium/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    # without these three Chromium keeps trying to reach the internet
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1700}  # tall: Streamlit scrolls inside the page
SERVER_START_TIMEOUT_S = 60

# The machine is small and shared: the page's main thread can be busy for seconds drawing figures.
expect.set_options(timeout=20_000)


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    if os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    message = (
        f"Chromium not found at {CHROMIUM}: the browser tests use Debian's Chromium. Install it with "
        "`sudo apt-get install -y chromium` (scripts/test.sh does), or set CHROMIUM_EXECUTABLE to a "
        "Chromium binary. Not `playwright install`."
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _require_chromium(chromium_executable: str) -> None:
    """Skip (fail under CI=true) every browser test before any server or browser starts."""


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict, chromium_executable: str) -> dict:
    args = [*browser_type_launch_args.get("args", []), *CHROMIUM_ARGS]
    return {**browser_type_launch_args, "executable_path": chromium_executable, "args": args}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict) -> dict:
    return {**browser_context_args, "viewport": VIEWPORT, "accept_downloads": True}


@dataclass(frozen=True)
class Server:
    url: str
    log: Path

    def assert_no_traceback(self) -> None:
        text = self.log.read_text(errors="replace")
        assert "Traceback" not in text, f"the server logged an exception ({self.log}):\n{text[-4000:]}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(log_path: Path, env: dict | None = None, port: int | None = None, script: str = "dashboard.py",
                 cwd: Path = REPO_ROOT) -> tuple[subprocess.Popen, Server]:
    """`streamlit run SCRIPT` in ``cwd`` on a free port of 127.0.0.1 (or ``port``), output in
    ``log_path``; returns once it answers its health check."""
    port = port or _free_port()
    server = Server(f"http://127.0.0.1:{port}", log_path)
    command = [
        sys.executable, "-m", "streamlit", "run", script,
        "--server.headless", "true",
        "--server.address", "127.0.0.1",
        "--server.port", str(port),
        "--browser.gatherUsageStats", "false",
        "--server.fileWatcherType", "none",
    ]
    with open(server.log, "wb") as log:
        process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"streamlit exited with code {process.returncode} before it was healthy:\n"
                        + server.log.read_text(errors="replace")[-3000:], pytrace=False)
        try:
            with urllib.request.urlopen(f"{server.url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return process, server
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_server(process)
            pytest.fail(f"streamlit not healthy after {SERVER_START_TIMEOUT_S} s:\n"
                        + server.log.read_text(errors="replace")[-3000:], pytrace=False)
        time.sleep(0.1)


def stop_server(process: subprocess.Popen) -> None:
    """Stop exactly the process we started, by its PID: terminate, wait, then kill."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def app_server() -> Iterator[Server]:
    """The dashboard's server for the suite, output in artifacts/browser/streamlit-server.log.
    Stopped at the end by its PID: other Streamlit servers on the machine are left alone."""
    BROWSER_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    process, server = start_server(BROWSER_ARTIFACTS / "streamlit-server.log")
    try:
        yield server
    finally:
        stop_server(process)


@pytest.fixture(scope="session")
def base_url(app_server: Server) -> str:
    """pytest-playwright's base URL: the server under test."""
    return app_server.url


def _finish(app: DashboardPage, server: Server, name: str) -> None:
    """End of a test on ``app``: a screenshot (also after a failure), then what must hold
    throughout: no stException, no console errors, no request off 127.0.0.1, no server traceback."""
    if not app.page.is_closed():
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
        try:
            app.screenshot(BROWSER_ARTIFACTS / f"{safe}.png")
        except Exception as error:  # noqa: BLE001 - a screenshot must not hide the real failure
            print(f"no screenshot for {name}: {error}")
    try:
        app.check_clean()
        server.assert_no_traceback()
    finally:
        app.console_errors.clear()
        app.foreign_requests.clear()


@pytest.fixture
def dashboard(page, app_server: Server, request: pytest.FixtureRequest) -> Iterator[DashboardPage]:
    """A fresh tab (a new Streamlit session), not yet opened: the test calls ``open()``."""
    page.set_default_timeout(30_000)
    app = DashboardPage(page, app_server.url)
    yield app
    _finish(app, app_server, request.node.name)


@pytest.fixture(scope="module")
def _reference_tab(browser, browser_context_args: dict, app_server: Server) -> Iterator[DashboardPage]:
    context = browser.new_context(**browser_context_args)
    page = context.new_page()
    page.set_default_timeout(30_000)
    app = DashboardPage(page, app_server.url)
    app.open()
    yield app
    context.close()


@pytest.fixture
def reference_tab(_reference_tab: DashboardPage, app_server: Server,
                  request: pytest.FixtureRequest) -> Iterator[DashboardPage]:
    """One tab on the reference configuration, opened once and shared by the tests that only look
    at it: each page load costs the browser seconds of drawing on 2 cores."""
    yield _reference_tab
    _finish(_reference_tab, app_server, request.node.name)
