"""What the page tests share: opening the dashboard in AppTest with a short run, reading its
training status, and waiting for it. AppTest runs the real script and real caches in this process."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from ui import panels

APP = str(Path(__file__).resolve().parents[1] / "dashboard.py")
# A short run so tests stay quick; pacing off (full speed).
FAST = {"T": "100", "epochs": "150", "samples": "200", "frames": "5", "pace": "false"}


@pytest.fixture
def fresh_caches():
    """Caches persist between AppTest instances in one process: start and end each test clean,
    with no training left running."""
    st.cache_data.clear()
    st.cache_resource.clear()
    panels.registry().reset()
    yield
    panels.registry().reset()
    st.cache_resource.clear()


def open_page(fast: dict[str, str] = FAST, owner: str | None = None, **params) -> AppTest:
    """A fresh session with ``fast`` and ``params`` as query parameters (``view=`` opens a tab).
    AppTest gives every instance the same session id, so a second user needs its own ``owner``."""
    at = AppTest.from_file(APP, default_timeout=60)
    if owner is not None:
        at.session_state["_owner"] = owner
    for name, value in {**fast, **params}.items():
        at.query_params[name] = value
    at.run()
    return at


def open_tab(at: AppTest, view: str) -> AppTest:
    """Open the page's tab ``view`` (one of ``controls.VIEW_LABELS``), as a click on it does."""
    at.session_state["view"] = view
    return at.run()


def status(at: AppTest) -> str:
    """The training progress text: '**Training** · epoch ...', '**Finished** · ...'."""
    texts = [bar.proto.text for bar in at.get("progress")]
    return next((text for text in texts if text.startswith("**")), "")  # not a view's bar waiting for a worker


def poll_until(at: AppTest, done, timeout: float = 90.0) -> AppTest:
    """Rerun the page (run_every fragments don't fire by themselves in AppTest) until ``done(at)``."""
    deadline = time.monotonic() + timeout
    while not done(at):
        assert time.monotonic() < deadline, f"timed out: {status(at)!r}"
        assert not at.exception, at.exception[0].value
        time.sleep(0.05)
        at.run()
    return at


def computing(at: AppTest) -> bool:
    """A view still waits for a worker's result (sampling, the field, the drift, the budget): its
    progress bar is drawn beside the training's."""
    return len(at.get("progress")) > 1


def wait_finished(at: AppTest, timeout: float = 90.0) -> AppTest:
    """Until the run is finished and every view has its worker's result."""
    poll_until(at, lambda at: "**Finished**" in status(at), timeout)
    return poll_until(at.run(), lambda at: not computing(at), timeout)


def echarts(at: AppTest) -> dict[str, dict]:
    """The page's ECharts options (the live charts) by their element key: 'loss_chart', ..."""
    return {element.proto.id.rsplit("-", 1)[-1]: json.loads(element.proto.spec) for element in at.get("echarts_chart")}


def series(spec: dict, name: str) -> list:
    """The data of the series ``name`` of an ECharts option."""
    return next(s["data"] for s in spec["series"] if s.get("name") == name)


def has_points(at: AppTest, chart: str, name: str) -> bool:
    """Whether the ECharts chart ``chart`` has a series ``name`` with data yet (a live chart is
    drawn with its series empty until its first values come)."""
    spec = echarts(at).get(chart)
    return bool(spec) and any(s.get("name") == name and len(s.get("data") or []) for s in spec["series"])


def animation(at: AppTest) -> dict | None:
    """The reverse animation's payload (``charts.animation.animation_payload``), or None if the page
    has none; its arrays decode with ``charts.animation.decode_points``."""
    elements = [e for e in at.get("bidi_component") if e.proto.component_name.endswith("ddpm_lab_animation")]
    return json.loads(elements[0].proto.json) if elements else None
