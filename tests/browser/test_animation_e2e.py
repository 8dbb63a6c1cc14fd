"""The canvas animation (``ui.animation.reverse_animation``) in headless Chromium, in a small app of
its own: playback paints every frame, the slider and the display controls work in the browser
without a rerun (a display choice reruns once, to report itself), and a rerun keeps the element,
its playback and its display choices. Also measures frames painted per second (printed and written
to artifacts/browser/animation_fps.json, never asserted: the machine is shared).
"""

from __future__ import annotations

import json
import re
import subprocess
import textwrap
from collections.abc import Iterator

import pytest
from playwright.sync_api import Locator, expect

from .conftest import BROWSER_ARTIFACTS, REPO_ROOT, Server, _finish, start_server, stop_server
from .dashboard_page import DashboardPage

pytestmark = pytest.mark.browser

FRAMES, POINTS = 60, 1000
LABELS = [f"t = {round(999 * (1 - k / (FRAMES - 1)))}" for k in range(FRAMES)]

# A synthetic reverse run: Gaussian noise drifting onto a ring of data, x̂_0 and a baseline beside it.
APP = textwrap.dedent(f"""
    import json

    import numpy as np
    import streamlit as st

    from charts.animation import animation_payload
    from ui.animation import display_choices, reverse_animation

    @st.cache_data
    def payload(seed):
        rng = np.random.default_rng(seed)
        angle = rng.uniform(0, 2 * np.pi, {POINTS})
        data = np.stack([np.cos(angle), np.sin(angle)], 1) * 2 + rng.normal(0, 0.05, ({POINTS}, 2))
        noise = rng.normal(size=({POINTS}, 2))
        s = np.linspace(0, 1, {FRAMES})[:, None, None] ** 2
        frames = (1 - s) * noise + s * data  # (K, N, 2)
        labels = {LABELS!r}
        return animation_payload(frames, labels, data, predicted_x0=0.5 * (frames + data), baseline=frames[:, ::2] * 0.8)

    st.session_state["runs"] = st.session_state.get("runs", 0) + 1
    variant = st.session_state.setdefault("variant", {{"title": None, "height": None, "seed": 0}})
    st.button("Rerun")
    if st.button("Retitle"):  # new data, the same frames
        variant.update(title="Retitled", height=300)
    if st.button("New frames"):
        variant["seed"] += 1
    shown = payload(variant["seed"])
    if variant["title"]:
        shown = {{**shown, "title": variant["title"]}}
    st.text("before the mount: " + json.dumps(display_choices("anim"), sort_keys=True))
    display = reverse_animation(shown, key="anim", height=variant["height"])
    st.markdown(f"runs: {{st.session_state['runs']}}")
    st.text("display: " + json.dumps(display, sort_keys=True))
""")


def _start_app(directory, log_path) -> tuple[subprocess.Popen, Server]:
    """`streamlit run app.py` in ``directory`` with the repository importable, on a free port."""
    return start_server(log_path, env={"PYTHONPATH": str(REPO_ROOT)}, script="app.py", cwd=directory)


@pytest.fixture(scope="module")
def anim_server(tmp_path_factory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("animation_app")
    (directory / "app.py").write_text(APP)
    BROWSER_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    process, server = _start_app(directory, BROWSER_ARTIFACTS / "animation-server.log")
    try:
        yield server
    finally:
        stop_server(process)


@pytest.fixture
def app(page, anim_server: Server, request: pytest.FixtureRequest) -> Iterator[DashboardPage]:
    """A fresh tab on the animation app, opened, the canvas mounted."""
    page.set_default_timeout(30_000)
    tab = DashboardPage(page, anim_server.url)
    tab.open()
    expect(root(tab)).to_have_attribute("data-frames", str(FRAMES))
    yield tab
    _finish(tab, anim_server, request.node.name)


def root(app: DashboardPage) -> Locator:
    return app.page.locator(".ddpm-anim")  # inside the component's open shadow root: CSS locators pierce it


def attr(app: DashboardPage, name: str) -> str:
    return root(app).get_attribute(f"data-{name}")


def canvas_pixels(app: DashboardPage) -> str:
    """The canvas as drawn, once the frame asked for is on it."""
    app.page.wait_for_timeout(100)  # a redraw waits for the next animation frame
    return root(app).locator("canvas").evaluate("c => c.toDataURL()")


def play_to_end(app: DashboardPage, timeout_ms: float = 60_000) -> list[list[float]]:
    """Press Play from the first frame, wait for the last, and return the paint log: [frame, ms]."""
    app.page.locator(".ddpm-anim .scrub").fill("0")
    app.page.get_by_role("button", name="Play").click()
    expect(root(app)).to_have_attribute("data-playing", "false", timeout=timeout_ms)
    expect(root(app)).to_have_attribute("data-frame", str(FRAMES - 1))
    return root(app).evaluate("r => r.paintLog")


def display_text(app: DashboardPage) -> dict | None:
    """What the app's run read back: the mount's value, checked equal to ``display_choices`` before it."""
    text = app.page.get_by_text("display: ").inner_text()
    before = app.page.get_by_text("before the mount: ").inner_text()
    assert before.removeprefix("before the mount: ") == text.removeprefix("display: ")
    return json.loads(text.removeprefix("display: "))


def test_play_paints_every_frame_and_the_controls_need_no_rerun(app: DashboardPage):
    runs_before = app.runs.started
    painted = int(attr(app, "painted"))
    log = play_to_end(app)
    assert [int(frame) for frame, _ in log] == list(range(FRAMES)), "each frame painted once, in order"
    assert int(attr(app, "painted")) - painted == FRAMES - 1  # one rAF paint per frame after the first
    expect(root(app).locator(".frame-label")).to_have_text(LABELS[-1])

    # Pause stops it where it is
    app.page.get_by_role("button", name="Play").click()
    app.wait_until(lambda: int(attr(app, "frame")) >= 5, "five frames to play")
    app.page.get_by_role("button", name="Pause").click()
    stopped = attr(app, "frame")
    app.page.wait_for_timeout(300)
    assert attr(app, "playing") == "false" and attr(app, "frame") == stopped

    # the scrub slider moves the frame, from the keyboard too
    scrub = app.page.locator(".ddpm-anim .scrub")
    scrub.fill("20")
    expect(root(app)).to_have_attribute("data-frame", "20")
    expect(root(app).locator(".frame-label")).to_have_text(LABELS[20])
    scrub.press("ArrowRight")
    expect(root(app)).to_have_attribute("data-frame", "21")
    app.page.wait_for_timeout(500)  # longer than the browser's report delay
    assert app.runs.started == runs_before, "play, pause and the frame slider ran the script"

    # trails: drawn paths; 0 again gives back the very same picture
    scrub.fill("40")
    plain = canvas_pixels(app)
    app.act(lambda: app.page.locator(".ddpm-anim .trails").fill("8"))  # a display choice: reported, one rerun
    expect(root(app)).to_have_attribute("data-trails", "8")
    with_trails = canvas_pixels(app)
    assert with_trails != plain
    assert display_text(app) == {"frame_ms": 40, "hidden": [], "show_x0": False, "trails": 8}
    app.act(lambda: app.page.locator(".ddpm-anim .trails").fill("0"))
    assert canvas_pixels(app) == plain

    # dragging the trails slider is many moves and one report: one rerun
    runs = app.runs.started
    box = app.page.locator(".ddpm-anim .trails").bounding_box()
    y = box["y"] + box["height"] / 2
    app.page.mouse.move(box["x"] + 2, y)
    app.page.mouse.down()
    for k in range(1, 21):
        app.page.mouse.move(box["x"] + 2 + k * (box["width"] - 4) / 20, y)
    app.page.mouse.up()
    expect(root(app)).to_have_attribute("data-trails", "32")
    app.settle(None)
    app.page.wait_for_timeout(800)
    app.settle(None)
    assert app.runs.started == runs + 1
    assert display_text(app)["trails"] == 32


def test_a_rerun_keeps_the_element_its_playback_and_display(app: DashboardPage):
    app.act(lambda: app.page.locator(".ddpm-anim .trails").fill("5"))
    app.act(lambda: app.page.locator(".ddpm-anim .toggle").click())  # predicted x₀ on
    app.act(lambda: app.page.locator(".ddpm-anim .speed").select_option("200"))
    app.act(lambda: app.page.get_by_role("button", name="baseline").click())  # the legend hides the baseline
    assert display_text(app) == {"frame_ms": 200, "hidden": ["baseline"], "show_x0": True, "trails": 5}
    kept = ("5", "true", "200")  # trails, x0, ms
    root(app).evaluate("r => { r.e2eTag = 'before'; r.querySelector('canvas').e2eTag = 'canvas'; }")

    app.page.locator(".ddpm-anim .scrub").fill("0")
    app.page.get_by_role("button", name="Play").click()
    app.wait_until(lambda: int(attr(app, "frame")) >= 3, "three frames to play")
    runs = app.runs.started
    app.act(lambda: app.page.get_by_role("button", name="Rerun").click())
    assert app.runs.started == runs + 1
    expect(app.page.get_by_text(f"runs: {runs + 1}")).to_be_visible()

    assert root(app).evaluate("r => r.e2eTag") == "before", "the rerun replaced the element"
    assert root(app).locator("canvas").evaluate("c => c.e2eTag") == "canvas", "the rerun replaced the canvas"
    assert attr(app, "playing") == "true" and int(attr(app, "frame")) >= 3, "the rerun stopped or restarted playback"
    assert (attr(app, "trails"), attr(app, "show-x0"), attr(app, "frame-ms")) == kept
    expect(app.page.get_by_role("button", name="baseline")).to_have_attribute("aria-pressed", "false")

    # new data with the same frames (a title, a height): the module is called again on the same element
    calls, frame, digest = int(attr(app, "calls")), int(attr(app, "frame")), attr(app, "digest")
    app.act(lambda: app.page.get_by_role("button", name="Retitle").click())
    expect(root(app)).to_have_attribute("data-calls", str(calls + 1))
    expect(root(app).locator(".title")).to_have_text("Retitled")
    expect(root(app).locator("canvas")).to_have_attribute("style", re.compile(r"height: 300px"))
    assert root(app).evaluate("r => r.e2eTag") == "before"
    assert attr(app, "playing") == "true" and int(attr(app, "frame")) >= frame and attr(app, "digest") == digest
    # and it played on through both runs without skipping a frame
    expect(root(app)).to_have_attribute("data-playing", "false", timeout=30_000)
    assert [int(frame) for frame, _ in root(app).evaluate("r => r.paintLog")] == list(range(FRAMES))

    # new frames: playback starts over, paused at the first frame; the display choices stay
    app.act(lambda: app.page.get_by_role("button", name="New frames").click())
    expect(root(app)).not_to_have_attribute("data-digest", digest)
    assert (attr(app, "playing"), attr(app, "frame")) == ("false", "0")
    assert root(app).evaluate("r => r.e2eTag") == "before"
    assert (attr(app, "trails"), attr(app, "show-x0"), attr(app, "frame-ms")) == kept


def test_frames_per_second(app: DashboardPage):
    """Frames painted per second of playback, 1000 points: first to last painted frame. Reported, not
    asserted (a shared 2-core machine); that every frame was painted is asserted."""
    results = {}
    controls = root(app)
    for frame_ms, extras in ((40, False), (16, False), (40, True), (16, True)):
        if controls.locator(".speed").input_value() != str(frame_ms):
            app.act(lambda ms=frame_ms: controls.locator(".speed").select_option(str(ms)))
        if extras and attr(app, "trails") != "8":
            app.act(lambda: controls.locator(".trails").fill("8"))
            app.act(lambda: controls.locator(".toggle").click())
        draws, draw_ms = int(attr(app, "draws")), controls.evaluate("r => r.drawMs")
        log = play_to_end(app)
        assert [int(frame) for frame, _ in log] == list(range(FRAMES))
        cost = (controls.evaluate("r => r.drawMs") - draw_ms) / (int(attr(app, "draws")) - draws)
        painted = log[1:]  # the frames painted by requestAnimationFrame (frame 0 is drawn by the click)
        seconds = (painted[-1][1] - painted[0][1]) / 1000
        name = f"{frame_ms} ms{' + trails 8 + x0' if extras else ''}"
        results[name] = {"fps": round((len(painted) - 1) / seconds, 1), "ms_per_draw": round(cost, 2)}
    print("animation (60 frames x 1000 points):", results)
    (BROWSER_ARTIFACTS / "animation_fps.json").write_text(json.dumps(results, indent=1))
