"""A server with training in its worker processes stops cleanly: SIGTERM while runs train exits with
status 0 and leaves no worker process behind, and a restarted server serves a page again."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect

from .conftest import BROWSER_ARTIFACTS, start_server, stop_server
from .dashboard_page import DashboardPage

pytestmark = pytest.mark.browser

LONG_RUN = "?preset=improved&epochs=20000&batch=512&dataset=moons&seed=3&pace=false"


def children(pid: int) -> set[int]:
    """Direct children of ``pid`` (Linux /proc)."""
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found |= {int(p) for p in text}
    return found


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # a zombie of someone else's is gone too


@pytest.mark.parametrize("attempt", range(1))  # python -m bench.shutdown repeats it 10 times
def test_sigterm_while_runs_train_exits_0_and_leaves_no_worker(browser, browser_context_args, attempt):
    BROWSER_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    process, server = start_server(BROWSER_ARTIFACTS / f"shutdown-{attempt}.log")
    context = browser.new_context(**browser_context_args)
    try:
        page = DashboardPage(context.new_page(), server.url)
        page.open(LONG_RUN)
        expect(page.progress).to_contain_text("Training", timeout=90_000)
        workers = children(process.pid)
        assert len(workers) >= 1  # the pool's processes
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=30)  # only keeps a hang from blocking the suite
        except subprocess.TimeoutExpired:
            stop_server(process)
            pytest.fail("the server did not exit after SIGTERM")
        assert code == 0, server.log.read_text(errors="replace")[-3000:]
        deadline = time.monotonic() + 10
        while not all(gone(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert all(gone(pid) for pid in workers), "a worker process outlived its server"
        assert "terminate called" not in server.log.read_text(errors="replace")
    finally:
        context.close()
        if process.poll() is None:
            stop_server(process)


def test_a_restarted_server_serves_a_reconnecting_page(browser, browser_context_args):
    process, server = start_server(BROWSER_ARTIFACTS / "restart-1.log")
    context = browser.new_context(**browser_context_args)
    try:
        page = DashboardPage(context.new_page(), server.url)
        page.open("?pace=false")
        page.wait_for_finished()
        port = server.url.rsplit(":", 1)[1]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        process, server = start_server(BROWSER_ARTIFACTS / "restart-2.log", port=int(port))
        page.page.reload()
        page.wait_for_finished()  # the chart code loads and the run is trained again
        expect(page.loss_chart).to_be_visible()
        expect(page.loss_chart).to_have_attribute("aria-label", re.compile(r"^loss: 1000 steps of 1000"))
        server.assert_no_traceback()
    finally:
        context.close()
        if process.poll() is None:
            stop_server(process)
