"""The dashboard as a person uses it, in headless Chromium, against a real Streamlit server.

One server for the whole session. The first tests share one tab on the reference configuration
(``reference_tab``: it trains the reference run, then only looks at it); the others each open a
fresh tab (``dashboard``), which is a new Streamlit session. Finished runs are shared by all
sessions, so once the reference run has trained, every later tab shows it at once.

Throughout, every test also fails on a shown exception, a console error or a request to anything
but 127.0.0.1 (see conftest.py). Screenshots go to artifacts/ (artifacts/dashboard.png for the
README, artifacts/browser/<test>.png for each test).
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from pathlib import Path

import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import expect

from .conftest import ARTIFACTS, BROWSER_ARTIFACTS
from .dashboard_page import DashboardPage, Mark, progress_step

pytestmark = pytest.mark.browser

REFERENCE_STEPS = 1000  # the reference run: 1000 epochs of one fresh batch of 128
REFERENCE_FRAMES = 60
REFERENCE_SAMPLES = 1000
ANIMATED = 500  # "Points animated": the reverse animation moves 500 of the samples, evenly chosen
ANIMATED_IDS = [round(i * (REFERENCE_SAMPLES - 1) / (ANIMATED - 1)) for i in range(ANIMATED)]
DATA_MEAN, DATA_STD = 2.0, 0.5  # the reference data: N((2, 2), 0.5^2 I)
TRAINING_TIMEOUT_MS = 150_000  # one reference run takes ~2 s on an idle machine, ~15 s on a busy one
POINTS_UPLOADER = "Your points (CSV with columns x,y)"


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values)


def drawn_points(steps: int, most: int = 2000) -> int:
    """Points of the raw loss trace for ``steps`` steps: all, or 1 in k = ceil(steps / most)."""
    stride = -(-steps // most)
    return steps // stride


def _assert_fresh_run(app: DashboardPage, mark: Mark, total: int = REFERENCE_STEPS) -> None:
    """After ``mark`` a new run started training from scratch. (Race-free: the websocket history
    holds the progress bar that the rerun drew right after starting the job.)"""
    def steps() -> list[int]:
        return [progress_step(text) for text in app.runs.after(mark, "progress") if "**Training**" in text]

    app.wait_until(lambda: bool(steps()), "a 'Training' progress bar from the new run")
    assert steps()[0] < total // 2, f"not a fresh run: the first step shown is {steps()[0]}"
    assert steps() == sorted(steps()), steps()


# --- one tab on the reference configuration -------------------------------------------------------


def test_default_run_trains_and_shows_its_results(reference_tab: DashboardPage):
    app = reference_tab
    expect(app.page.get_by_role("heading", name="DDPM Lab")).to_be_visible()
    assert app.query() == {}
    app.wait_for_finished(TRAINING_TIMEOUT_MS)
    expect(app.progress).to_contain_text(f"step {REFERENCE_STEPS:,}")

    # it trained live: 'Training' with growing steps, and a loss curve that grew to one point a step
    start = Mark(0, 0)
    steps = [progress_step(text) for text in app.runs.after(start, "progress") if "**Training**" in text]
    assert steps and steps == sorted(steps), steps
    points = app.runs.after(start, "loss_points")
    assert points == sorted(points) and len(set(points)) >= 2 and points[-1] == REFERENCE_STEPS, points

    traces = dict(app.traces(app.loss_chart))
    assert traces["loss"] == REFERENCE_STEPS, traces
    losses = app.trace_y(app.loss_chart)
    assert len(losses) == REFERENCE_STEPS
    assert 0 < losses[-1] < 1.5
    assert abs(losses[-1] - app.last_loss_caption()) < 1e-3, (losses[-1], app.last_loss_caption())

    # the reverse animation: the configured frames, from t = T down to t = 0, ending near the data
    chart = app.reverse_chart
    names = app.frame_names(chart)
    assert len(names) == REFERENCE_FRAMES
    assert (names[0], names[-1]) == ("t = 1000", "t = 0")
    assert [name for name, _ in app.traces(chart)][:2] == ["data", "x_t"]
    xs, ys = app.frame_points(chart, -1)
    assert len(xs) == len(ys) == ANIMATED
    expect(app.page.get_by_text(re.compile(r"frames kept, sampled in"))).to_contain_text(
        f"{REFERENCE_SAMPLES:,} points, {REFERENCE_STEPS:,} DDPM steps")
    for axis, values in (("x", xs), ("y", ys)):
        mean, std = _stats(values)
        assert abs(mean - DATA_MEAN) < 0.25, f"last frame: {axis} mean {mean:.3f}, data {DATA_MEAN}"
        assert abs(std - DATA_STD) < 0.2, f"last frame: {axis} std {std:.3f}, data {DATA_STD}"
    noise_x, _ = app.frame_points(chart, 0)  # x_T ~ N(0, I)
    assert abs(_stats(noise_x)[0]) < 0.2 and abs(_stats(noise_x)[1] - 1) < 0.2

    shot = app.screenshot(ARTIFACTS / "dashboard.png", whole_page=True)  # for the README
    assert shot.stat().st_size > 50_000


def test_play_the_reverse_animation_and_drag_its_slider(reference_tab: DashboardPage):
    app = reference_tab
    app.wait_for_finished(TRAINING_TIMEOUT_MS)
    chart = app.reverse_chart
    # the controls sit at the chart's bottom edge: bring them to the middle of the viewport
    chart.locator(".slider-container").evaluate("e => e.scrollIntoView({block: 'center'})")
    app.watch_animation_interrupts(chart)
    start = app.slider_active(chart)
    start_x, _ = app.trace_xy(chart, 1)

    buttons = chart.locator(".updatemenu-button")
    expect(buttons.first).to_contain_text("Play")
    buttons.first.click()
    handle = chart.element_handle()
    app.page.wait_for_function("([d, a]) => d._fullLayout.sliders[0].active >= a + 3", arg=[handle, start],
                               timeout=20_000)
    buttons.nth(1).click()  # ❚❚ Pause
    app.page.wait_for_timeout(300)
    paused = app.slider_active(chart)
    assert paused > start
    app.page.wait_for_timeout(600)
    assert app.slider_active(chart) == paused, "the animation went on after Pause"
    shown_x, _ = app.trace_xy(chart, 1)
    assert shown_x != start_x, "the points did not move while playing"

    # drag the time slider's grip to the middle of its rail (a busy page can shift the layout
    # under the mouse, so a drag that didn't land is tried again from fresh coordinates)
    middle = (REFERENCE_FRAMES - 1) / 2
    for attempt in range(3):
        chart.locator(".slider-container").evaluate("e => e.scrollIntoView({block: 'center'})")
        app.page.wait_for_timeout(200)
        grip = chart.locator(".slider-grip-rect").bounding_box()
        rail = chart.locator(".slider-rail-rect").bounding_box()
        y = grip["y"] + grip["height"] / 2
        app.page.mouse.move(grip["x"] + grip["width"] / 2, y)
        app.page.mouse.down()
        app.page.mouse.move(rail["x"] + rail["width"] / 2, y, steps=8)
        app.page.mouse.up()
        try:
            app.page.wait_for_function(
                "([d, lo, hi]) => { const a = d._fullLayout.sliders[0].active; return a >= lo && a <= hi; }",
                arg=[handle, middle - 4, middle + 4], timeout=5_000)
            break
        except PlaywrightTimeoutError:
            if attempt == 2:
                raise
    active = app.slider_active(chart)
    current_value = chart.locator(".slider-group > text.slider-label")  # the label over the rail
    expect(current_value).to_have_text(app.frame_names(chart)[active])
    shown_x, shown_y = app.trace_xy(chart, 1)
    frame_x, frame_y = app.frame_points(chart, active)
    assert shown_x == pytest.approx(frame_x, abs=1e-5) and shown_y == pytest.approx(frame_y, abs=1e-5)


def _download(app: DashboardPage, button: str, tmp_path) -> Path:
    with app.page.expect_download() as download_info:
        app.page.get_by_role("button", name=button).click()
    download = download_info.value
    assert download.failure() is None
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    app.settle()
    return path


def test_download_the_samples_and_the_model(reference_tab: DashboardPage, tmp_path):
    app = reference_tab
    app.wait_for_finished(TRAINING_TIMEOUT_MS)
    shown_x, _ = app.frame_points(app.reverse_chart, -1)

    path = _download(app, "Samples (CSV)", tmp_path)
    assert path.name == "samples.csv"
    rows = list(csv.reader(io.StringIO(path.read_text())))
    assert rows[0] == ["x", "y"]
    assert len(rows) - 1 == REFERENCE_SAMPLES
    xs = [float(x) for x, _ in rows[1:]]
    assert [xs[i] for i in ANIMATED_IDS] == pytest.approx(shown_x, abs=1e-5)  # the samples the animation ends on

    path = _download(app, "Model (safetensors + config)", tmp_path)
    assert path.suffix == ".safetensors"
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    config = json.loads(header["__metadata__"]["config"])
    assert config["train"]["lr"] == 0.001 and config["sampler"]["num_samples"] == REFERENCE_SAMPLES, config


# --- fresh tabs ------------------------------------------------------------------------------------


def test_changing_hyperparameters_retrains_and_going_back_is_instant(dashboard: DashboardPage):
    dashboard.open()
    dashboard.wait_for_finished(TRAINING_TIMEOUT_MS)
    reference_progress = dashboard.progress.inner_text()
    reference_losses = dashboard.trace_y(dashboard.loss_chart)
    sidebar, progress = dashboard.sidebar, dashboard.progress
    lr = sidebar.get_by_role("slider", name="Learning rate")

    # learning rate one notch up, from the keyboard: a new run trains
    mark = dashboard.press_slider("Learning rate", "ArrowRight")
    expect(lr).to_have_attribute("aria-valuetext", "0.002")
    dashboard.expect_query({"lr": "0.002"})
    _assert_fresh_run(dashboard, mark)

    # T = 500, typed: another new run, from step 0
    mark = dashboard.type_number("Diffusion steps T", 500)
    expect(sidebar.get_by_role("spinbutton", name="Diffusion steps T")).to_have_value("500")
    dashboard.expect_query({"lr": "0.002", "T": "500"})
    _assert_fresh_run(dashboard, mark)

    # 20,000 epochs of batches of 1,024: long enough (20 s or more in a worker) to watch the loss
    # stream in, then pause and step
    dashboard.press_slider("Batch size", "ArrowRight", times=3)  # 128 -> 1024
    dashboard.expect_query({"lr": "0.002", "T": "500", "batch": "1024"})
    mark = dashboard.type_number("Epochs", 20_000)
    dashboard.expect_query({"lr": "0.002", "T": "500", "epochs": "20000", "batch": "1024"})
    _assert_fresh_run(dashboard, mark, total=20_000)
    expect(progress).to_contain_text("/ 20,000")
    # the loss chart is redrawn while the run trains (its length, once past 2,000 steps, is thinned
    # to at most 2,000 points, so it need not grow; the steps it stands for do)
    dashboard.wait_until(lambda: len(set(dashboard.runs.after(mark, "loss_points"))) >= 3,
                         "the loss chart to be redrawn while training", 60_000)
    shown = [progress_step(text) for text in dashboard.runs.after(mark, "progress") if "**Training**" in text]
    assert shown == sorted(shown) and shown[-1] > shown[0], shown
    expect(progress).to_contain_text("Training")

    dashboard.act(lambda: dashboard.page.get_by_role("button", name="❚❚ Pause").click())
    expect(progress).to_contain_text("Paused")
    paused = progress_step(progress.inner_text())
    assert paused < 20_000
    losses = dashboard.trace_y(dashboard.loss_chart)
    assert len(losses) == drawn_points(paused)  # every step, or 1 in k past 2,000 steps
    if drawn_points(paused) == paused:
        assert abs(losses[-1] - dashboard.last_loss_caption()) < 1e-3
    assert losses[:50] != reference_losses[:50]  # new settings, new loss curve
    dashboard.act(lambda: dashboard.page.get_by_role("button", name="Step +10 epochs").click())
    expect(progress).to_contain_text(f"Paused · epoch {paused + 10:,} / 20,000 · step {paused + 10:,}")
    assert len(dashboard.trace_y(dashboard.loss_chart)) == drawn_points(paused + 10)

    # back to the first setting: the finished reference run, at once, not trained again
    dashboard.press_slider("Batch size", "ArrowLeft", times=3)
    dashboard.type_number("Epochs", 1000)
    dashboard.type_number("Diffusion steps T", 1000)
    dashboard.expect_query({"lr": "0.002"})
    mark = dashboard.press_slider("Learning rate", "ArrowLeft")
    expect(lr).to_have_attribute("aria-valuetext", "0.001")
    dashboard.expect_query({})
    texts = dashboard.runs.after(mark, "progress")
    assert texts and all("**Finished**" in text for text in texts), f"trained again: {texts}"
    assert progress.inner_text() == reference_progress  # same steps, same training time
    assert dashboard.trace_y(dashboard.loss_chart) == reference_losses
    expect(dashboard.page.get_by_role("heading", name="Downloads")).to_be_visible()


def test_changing_only_the_sampler_resamples_without_retraining(dashboard: DashboardPage):
    dashboard.open()
    dashboard.wait_for_finished(TRAINING_TIMEOUT_MS)
    reference_progress = dashboard.progress.inner_text()
    losses = dashboard.trace_y(dashboard.loss_chart)
    ddpm_x, _ = dashboard.frame_points(dashboard.reverse_chart, -1)
    caption = dashboard.page.get_by_text(re.compile(r"frames kept, sampled in"))
    expect(caption).to_contain_text(f"{REFERENCE_STEPS:,} DDPM steps")

    mark = dashboard.choose("Sampler", "DDIM")
    dashboard.expect_query({"sampler": "ddim"})
    expect(caption).to_contain_text("50 DDIM steps")
    texts = dashboard.runs.after(mark, "progress")
    assert texts and all("**Finished**" in text for text in texts), f"training restarted: {texts}"
    assert dashboard.progress.inner_text() == reference_progress
    assert dashboard.trace_y(dashboard.loss_chart) == losses  # the same trained run

    chart = dashboard.reverse_chart
    frames = min(REFERENCE_FRAMES, 50 + 1)  # DDIM's 50 steps have 51 states to show
    expect(caption).to_contain_text(f"{frames} frames kept")
    names = dashboard.frame_names(chart)
    assert len(names) == frames and (names[0], names[-1]) == ("t = 1000", "t = 0"), names
    ddim_x, ddim_y = dashboard.frame_points(chart, -1)
    assert len(ddim_x) == ANIMATED and ddim_x != ddpm_x, "the samples did not change"
    for values in (ddim_x, ddim_y):
        assert abs(_stats(values)[0] - DATA_MEAN) < 0.25


def test_a_malformed_csv_gives_a_clear_message(dashboard: DashboardPage):
    dashboard.open()
    dashboard.choose("Dataset", "Your own points (CSV)")
    dashboard.expect_query({"dataset": "points", "points": "uploaded"})
    error = dashboard.sidebar.get_by_test_id("stAlertContentError")
    blocked = dashboard.page.get_by_text("Fix the setting marked in the sidebar to continue")

    dashboard.upload(POINTS_UPLOADER, "header.csv", b"a,b\n1,2\n3,4\n")
    expect(error).to_have_text("header.csv: the header must name columns x and y; found a, b")
    expect(blocked).to_be_visible()
    expect(dashboard.progress).to_have_count(0)

    dashboard.upload(POINTS_UPLOADER, "letters.csv", b"x,y\n1,2\nseven,3\n")
    expect(error).to_have_text("letters.csv: line 3 is not two numbers x,y: 'seven,3'")
    expect(blocked).to_be_visible()
    expect(dashboard.progress).to_have_count(0)


def _blobs_csv(n: int) -> bytes:
    """Two blobs far apart on the x axis: a shape unlike the reference Gaussian."""
    rows = ["x,y"]
    for i in range(n):
        centre = -3.0 if i % 2 else 3.0
        rows.append(f"{centre + 0.3 * ((i * 37) % 11 - 5) / 5:.4f},{0.3 * ((i * 53) % 13 - 6) / 6:.4f}")
    return ("\n".join(rows) + "\n").encode()


def test_upload_points_and_train_on_them(dashboard: DashboardPage):
    dashboard.open()
    dashboard.choose("Dataset", "Your own points (CSV)")
    expect(dashboard.sidebar.get_by_text("Upload a CSV file with columns x,y")).to_be_visible()

    mark = dashboard.upload(POINTS_UPLOADER, "blobs.csv", _blobs_csv(120))
    expect(dashboard.sidebar.get_by_text("120 points from blobs.csv, standardised.")).to_be_visible()
    dashboard.expect_query({"dataset": "points", "points": "uploaded"})
    _assert_fresh_run(dashboard, mark)
    dashboard.wait_for_finished(TRAINING_TIMEOUT_MS)
    assert len(dashboard.trace_y(dashboard.loss_chart)) == REFERENCE_STEPS  # 120 points < a batch: a step an epoch

    # the animation's faint data are the uploaded points in the file's own units: blobs at x = -3
    # and +3 (each 0.6 wide), y within +-0.3
    data_x, data_y = dashboard.trace_xy(dashboard.reverse_chart, 0)
    assert abs(_stats(data_x)[0]) < 0.5 and min(data_x) < -2.5 and max(data_x) > 2.5
    assert max(abs(y) for y in data_y) <= 0.3 + 1e-4
    # and the samples found both blobs
    samples_x, _ = dashboard.frame_points(dashboard.reverse_chart, -1)
    left, right = sum(x < 0 for x in samples_x), sum(x > 0 for x in samples_x)
    assert min(left, right) > 0.2 * len(samples_x), (left, right)


def test_a_copied_url_reproduces_the_configuration(dashboard: DashboardPage, base_url: str):
    dashboard.open()
    dashboard.choose("Sampler", "DDIM")
    dashboard.press_slider("Samples", "ArrowLeft")  # 1000 -> 500
    dashboard.wait_for_finished(TRAINING_TIMEOUT_MS)
    # drawn beside the animation, in its fragment: it reruns that view alone, and the link follows
    full_runs = dashboard.runs.started
    dashboard.act_in_view(lambda: dashboard.page.get_by_text("Show predicted x₀").click())
    assert dashboard.runs.started == full_runs
    wanted = {"sampler": "ddim", "samples": "500", "show_x0": "true"}
    dashboard.expect_query(wanted)
    summary = dashboard.sidebar.get_by_text(re.compile(r"^Preset reference")).inner_text()
    assert summary == "Preset reference, 2 setting(s) changed"  # show_x0 is display-only
    copied = dashboard.page.url

    other = DashboardPage(dashboard.page.context.new_page(), base_url)
    other.open(copied)
    assert other.query() == wanted
    sidebar = other.sidebar
    expect(sidebar.get_by_role("combobox", name="Sampler")).to_have_value("DDIM")
    expect(sidebar.get_by_role("slider", name="Samples")).to_have_attribute("aria-valuetext", "500")
    expect(sidebar.get_by_role("slider", name="Learning rate")).to_have_attribute("aria-valuetext", "0.001")
    expect(sidebar.get_by_role("combobox", name="Dataset")).to_have_value(re.compile("^Gaussian"))
    expect(sidebar.get_by_text(re.compile(r"^Preset reference"))).to_have_text(summary)
    other.wait_for_finished(TRAINING_TIMEOUT_MS)
    expect(other.page.get_by_role("switch", name="Show predicted x₀")).to_be_checked()
    traces = dict(other.traces(other.reverse_chart))
    assert traces["x_t"] == 500 and "predicted x₀" in traces, traces
    expect(other.page.get_by_text(re.compile(r"frames kept, sampled in"))).to_contain_text("500 points, 50 DDIM steps")
    other.screenshot(BROWSER_ARTIFACTS / "copied_url.png")
    other.check_clean()
