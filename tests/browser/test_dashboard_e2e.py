"""The dashboard as a person uses it, in headless Chromium, against a real Streamlit server.

One server for the whole session. The first tests share one tab on the reference configuration
(``reference_tab``: it trains the reference run, then only looks at it); the others each open a
fresh tab (``dashboard``), which is a new Streamlit session. Finished runs are shared by all
sessions, so once the reference run has trained, every later tab shows it at once.

The live charts are read through their DOM hook, the aria-label ECharts writes from the option's
description when it paints (with the option itself from the websocket), and the reverse animation
through its canvas element's data-* attributes and paint log (see dashboard_page.py).

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
from playwright.sync_api import expect

from charts.live import MAX_POINTS
from diffusion.config import PRESETS
from ui.controls import SETTINGS
from ui.panels import file_stem

from .conftest import ARTIFACTS, BROWSER_ARTIFACTS
from .dashboard_page import DashboardPage, Mark, progress_step

pytestmark = pytest.mark.browser

REFERENCE_STEPS = 1000  # the reference run: 1000 epochs of one fresh batch of 128
REFERENCE_FRAMES = 60
REFERENCE_SAMPLES = 1000  # "Points animated" is 1000 by default: every sample moves
DATA_MEAN, DATA_STD = 2.0, 0.5  # the reference data: N((2, 2), 0.5^2 I)
TRAINING_TIMEOUT_MS = 150_000  # one reference run takes ~5 s (paced) on an idle machine, ~15 s on a busy one
POINTS_UPLOADER = "Your points (CSV with columns x,y)"
REVERSE_CAPTION = re.compile(r"frames kept, sampled in")


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.pstdev(values)


def _loss_steps(label: str) -> int:
    """The steps a loss chart's description names: 'loss: 2500 steps of 20000, ...' -> 2500."""
    match = re.match(r"loss: (\d+) steps of", label)
    assert match, label
    return int(match.group(1))


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

    # the loss chart as painted: its description, and every step's loss
    expect(app.loss_chart).to_have_attribute(
        "aria-label", re.compile(rf"^loss: {REFERENCE_STEPS} steps of {REFERENCE_STEPS}, linear axis, floor 0\.\d+"))
    loss_steps, losses = app.loss_values()
    assert loss_steps == list(range(1, REFERENCE_STEPS + 1))
    assert 0 < losses[-1] < 1.5
    assert abs(losses[-1] - app.last_loss_caption()) < 1e-3, (losses[-1], app.last_loss_caption())

    # the reverse animation: the configured frames, from t = T down to t = 0, ending near the data
    expect(app.animation).to_have_attribute("data-frames", str(REFERENCE_FRAMES))
    names = app.frame_names()
    assert len(names) == REFERENCE_FRAMES
    assert (names[0], names[-1]) == ("t = 1000", "t = 0")
    expect(app.animation.locator(".frame-label")).to_have_text(names[-1])  # it opens on the samples, x_0
    legend = app.animation.locator(".legend .item").filter(visible=True)
    expect(legend).to_have_text(["xt", "data", "predicted x₀"])  # no baseline pinned: none in the legend
    xs, ys = app.frame_points(-1)
    assert len(xs) == len(ys) == REFERENCE_SAMPLES
    expect(app.page.get_by_text(REVERSE_CAPTION)).to_contain_text(
        f"{REFERENCE_SAMPLES:,} points, {REFERENCE_STEPS:,} DDPM steps")
    expect(app.page.get_by_text(REVERSE_CAPTION)).to_contain_text(f"all {REFERENCE_SAMPLES:,} move")
    for axis, values in (("x", xs), ("y", ys)):
        mean, std = _stats(values)
        assert abs(mean - DATA_MEAN) < 0.25, f"last frame: {axis} mean {mean:.3f}, data {DATA_MEAN}"
        assert abs(std - DATA_STD) < 0.2, f"last frame: {axis} std {std:.3f}, data {DATA_STD}"
    noise_x, _ = app.frame_points(0)  # x_T ~ N(0, I)
    assert abs(_stats(noise_x)[0]) < 0.2 and abs(_stats(noise_x)[1] - 1) < 0.2

    shot = app.screenshot(ARTIFACTS / "dashboard.png", whole_page=True)  # for the README
    assert shot.stat().st_size > 50_000


def test_play_the_reverse_animation_paints_every_frame_and_its_slider_scrubs(reference_tab: DashboardPage):
    """Play, Pause and the frame slider work in the browser, with no script run; played from the
    start, the canvas paints each frame once, in order (counted, not timed)."""
    app = reference_tab
    app.wait_for_finished(TRAINING_TIMEOUT_MS)
    anim = app.animation
    anim.evaluate("r => r.scrollIntoView({block: 'center'})")
    names = app.frame_names()
    runs, fragments = app.runs.started, app.runs.fragments_finished
    painted = int(app.anim_attr("painted"))
    anim.locator(".scrub").fill("0")
    first = app.canvas_pixels()

    log = app.play_to_end()
    assert [int(frame) for frame, _ in log] == list(range(REFERENCE_FRAMES)), "each frame painted once, in order"
    assert int(app.anim_attr("painted")) - painted == REFERENCE_FRAMES - 1  # one rAF paint per frame after the first
    expect(anim.locator(".frame-label")).to_have_text(names[-1])
    assert app.canvas_pixels() != first, "the canvas still shows the first frame"

    # Pause stops it where it is
    anim.get_by_role("button", name="Play", exact=True).click()
    app.wait_until(lambda: int(app.anim_attr("frame")) >= 5, "five frames to play")
    anim.get_by_role("button", name="Pause", exact=True).click()
    stopped = app.anim_attr("frame")
    app.page.wait_for_timeout(300)
    assert app.anim_attr("playing") == "false" and app.anim_attr("frame") == stopped, "it went on after Pause"

    # drag the frame slider's thumb from the start to the middle of its rail
    scrub = anim.locator(".scrub")
    scrub.fill("0")
    expect(anim).to_have_attribute("data-frame", "0")
    box = scrub.bounding_box()
    y = box["y"] + box["height"] / 2
    app.page.mouse.move(box["x"] + 4, y)
    app.page.mouse.down()
    app.page.mouse.move(box["x"] + box["width"] / 2, y, steps=8)
    app.page.mouse.up()
    middle = (REFERENCE_FRAMES - 1) / 2
    app.wait_until(lambda: abs(int(app.anim_attr("frame")) - middle) <= 3, "the dragged slider to reach the middle",
                   10_000)
    frame = int(app.anim_attr("frame"))
    expect(anim.locator(".frame-label")).to_have_text(names[frame])
    assert app.canvas_pixels() != first
    app.page.wait_for_timeout(600)  # longer than the component's report delay: nothing to report
    assert (app.runs.started, app.runs.fragments_finished) == (runs, fragments), \
        "play, pause or the frame slider ran the script"


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
    shown_x, _ = app.frame_points(-1)
    app.open_tab("samples")
    app.wait_for_finished(TRAINING_TIMEOUT_MS)
    expect(app.page.get_by_role("heading", name="Downloads")).to_be_visible()
    stem = file_stem(PRESETS["reference"]())  # the run's data, objective and T, and a digest of its settings
    assert re.fullmatch(r"ddpm-lab_gaussian_ddpm-T1000_[0-9a-f]{8}", stem), stem

    path = _download(app, "Samples (CSV)", tmp_path)
    assert path.name == f"{stem}_samples.csv"
    rows = list(csv.reader(io.StringIO(path.read_text())))
    assert rows[0] == ["x", "y"]
    assert len(rows) - 1 == REFERENCE_SAMPLES
    xs = [float(x) for x, _ in rows[1:]]
    assert xs == pytest.approx(shown_x, abs=1e-5)  # the samples the animation ends on

    path = _download(app, "Model (safetensors + config)", tmp_path)
    assert path.name == f"{stem}.safetensors"
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
    _, reference_losses = dashboard.loss_values()
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
    # the loss chart is redrawn while the run trains (past 2,000 steps it is thinned to at most 2,000
    # points, so its length need not grow; the steps its description names do)
    dashboard.wait_until(lambda: len(set(dashboard.runs.after(mark, "loss_label"))) >= 3,
                         "the loss chart to be redrawn while training", 60_000)
    # on past MAX_POINTS steps, so that the chart has to thin the curve
    dashboard.wait_until(lambda: _loss_steps(dashboard.runs.after(mark, "loss_label")[-1]) > MAX_POINTS,
                         f"the run to pass {MAX_POINTS} steps", 60_000)
    shown = [progress_step(text) for text in dashboard.runs.after(mark, "progress") if "**Training**" in text]
    assert shown == sorted(shown) and shown[-1] > shown[0], shown
    expect(progress).to_contain_text("Training")

    # Pause and Step are drawn in the training view (a fragment): a click reruns that view first
    dashboard.act_in_view(lambda: dashboard.page.get_by_role("button", name="❚❚ Pause").click())
    expect(progress).to_contain_text("Paused")
    paused = progress_step(progress.inner_text())
    assert paused < 20_000
    expect(dashboard.loss_chart).to_have_attribute("aria-label", re.compile(rf"^loss: {paused} steps of 20000, "))
    steps, losses = dashboard.loss_values()
    assert steps[0] == 1 and steps[-1] == paused and steps == sorted(set(steps)), steps[-3:]
    assert paused > MAX_POINTS and len(losses) <= MAX_POINTS  # thinned: the first, the last, each block's low and high
    assert abs(losses[-1] - dashboard.last_loss_caption()) < 1e-3  # the last step is always drawn
    assert losses[:50] != reference_losses[:50]  # new settings, new loss curve
    dashboard.act_in_view(lambda: dashboard.page.get_by_role("button", name="+10 epochs").click())
    expect(progress).to_contain_text(f"Paused · epoch {paused + 10:,} / 20,000 · step {paused + 10:,}")
    expect(dashboard.loss_chart).to_have_attribute("aria-label", re.compile(rf"^loss: {paused + 10} steps of 20000, "))
    assert dashboard.loss_values()[0][-1] == paused + 10

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
    assert dashboard.loss_values()[1] == reference_losses
    dashboard.wait_for_finished(TRAINING_TIMEOUT_MS)  # and sampled: its reverse animation is back


def test_resume_on_a_page_drawn_while_paused_streams_the_run_again(dashboard: DashboardPage):
    app = dashboard
    app.open("?seed=303&epochs=20000&batch=1024&pace=false")  # long: about a minute in a worker
    progress = app.progress
    expect(progress).to_contain_text("Training")
    app.act_in_view(lambda: app.page.get_by_role("button", name="❚❚ Pause").click())
    expect(progress).to_contain_text("Paused")
    app.open_tab("noise")  # a whole page run while the run is paused
    expect(progress).to_contain_text("Paused")
    paused = progress_step(progress.inner_text())

    app.act_in_view(lambda: app.page.get_by_role("button", name="▶ Resume").click())
    try:
        app.wait_until(lambda: progress_step(progress.inner_text()) > paused, "the progress to move on after Resume",
                       15_000)
        expect(progress).to_contain_text("Training")
        expect(app.loss_chart).not_to_have_attribute("aria-label", re.compile(rf"^loss: {paused} steps of "))
    finally:  # don't leave the run holding a worker for the next tests
        app.act_in_view(lambda: app.page.get_by_role("button", name="❚❚ Pause").click())


def test_changing_only_the_sampler_resamples_without_retraining(dashboard: DashboardPage):
    dashboard.open()
    dashboard.wait_for_finished(TRAINING_TIMEOUT_MS)
    reference_progress = dashboard.progress.inner_text()
    _, losses = dashboard.loss_values()
    ddpm_x, _ = dashboard.frame_points(-1)
    digest = dashboard.anim_attr("digest")
    caption = dashboard.page.get_by_text(REVERSE_CAPTION)
    expect(caption).to_contain_text(f"{REFERENCE_STEPS:,} DDPM steps")

    mark = dashboard.choose("Sampler", "DDIM")
    dashboard.expect_query({"sampler": "ddim"})
    expect(caption).to_contain_text("50 DDIM steps")
    texts = dashboard.runs.after(mark, "progress")
    assert texts and all("**Finished**" in text for text in texts), f"training restarted: {texts}"
    assert dashboard.progress.inner_text() == reference_progress
    assert dashboard.loss_values()[1] == losses  # the same trained run

    # the canvas got the new frames
    frames = min(REFERENCE_FRAMES, 50 + 1)  # DDIM's 50 steps have 51 states to show
    expect(caption).to_contain_text(f"{frames} frames kept")
    expect(dashboard.animation).not_to_have_attribute("data-digest", digest)
    expect(dashboard.animation).to_have_attribute("data-frames", str(frames))
    names = dashboard.frame_names()
    assert len(names) == frames and (names[0], names[-1]) == ("t = 1000", "t = 0"), names
    ddim_x, ddim_y = dashboard.frame_points(-1)
    assert len(ddim_x) == REFERENCE_SAMPLES and ddim_x != ddpm_x, "the samples did not change"
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
    assert len(dashboard.loss_values()[1]) == REFERENCE_STEPS  # 120 points < a batch: a step an epoch

    # the animation's faint data are the uploaded points in the file's own units: blobs at x = -3
    # and +3 (each 0.6 wide), y within +-0.3
    data_x, data_y = dashboard.animation_data()
    uploaded = {tuple(float(v) for v in row.split(",")) for row in _blobs_csv(120).decode().split()[1:]}
    assert all((round(x, 3), round(y, 3)) in {(round(a, 3), round(b, 3)) for a, b in uploaded}
               for x, y in zip(data_x, data_y, strict=True)), "a data point that is not one of the file's"
    assert abs(_stats(data_x)[0]) < 0.5 and min(data_x) < -2.5 and max(data_x) > 2.5
    assert max(abs(y) for y in data_y) <= 0.3 + 1e-4
    # and the samples found both blobs
    samples_x, _ = dashboard.frame_points(-1)
    left, right = sum(x < 0 for x in samples_x), sum(x > 0 for x in samples_x)
    assert min(left, right) > 0.2 * len(samples_x), (left, right)


def test_a_copied_url_reproduces_the_configuration(dashboard: DashboardPage, base_url: str):
    dashboard.open()
    dashboard.choose("Sampler", "DDIM")
    dashboard.press_slider("Samples", "ArrowLeft")  # 1000 -> 500
    dashboard.wait_for_finished(TRAINING_TIMEOUT_MS)
    # the animation's own x₀ switch: it reports the choice, which reruns the animation's view alone, and the
    # link follows
    full_runs = dashboard.runs.started
    dashboard.act_in_view(lambda: dashboard.animation.locator(".toggle").click())
    expect(dashboard.animation).to_have_attribute("data-show-x0", "true")
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
    expect(other.animation).to_have_attribute("data-show-x0", "true")
    expect(other.animation.get_by_role("switch", name="predicted x₀")).to_be_checked()
    expect(other.animation.get_by_role("button", name="predicted x₀")).to_have_attribute("aria-pressed", "true")
    payload = other.animation_payload()
    assert payload["display"]["show_x0"] is True and payload["predicted_x0"]["shape"] == [51, 500, 2]
    assert payload["num_points"] == 500
    expect(other.page.get_by_text(REVERSE_CAPTION)).to_contain_text("500 points, 50 DDIM steps")
    other.screenshot(BROWSER_ARTIFACTS / "copied_url.png")
    other.check_clean()


# --- the live charts update in place; the animation's choices travel in the link ---------------------


def test_the_loss_chart_is_one_element_updated_in_place_while_training(dashboard: DashboardPage):
    """A keyed ECharts chart keeps its DOM node: ECharts repaints it with each new option, rather
    than the page replacing the chart at every update."""
    app = dashboard
    app.open("?seed=101&epochs=20000&pace=false")  # a run no other test trains, long enough to watch (~20 s)
    expect(app.progress).to_contain_text("Training")
    chart = app.loss_chart
    expect(chart).to_have_count(1)
    chart.evaluate("e => { e.e2eTag = 'the first loss chart'; }")
    seen = [app.chart_label("loss_chart")]  # its descriptions, in the order painted

    def more_steps_twice() -> bool:
        label = app.chart_label("loss_chart")
        if label != seen[-1]:
            seen.append(label)
        return len({_loss_steps(label) for label in seen}) >= 3

    try:
        app.wait_until(more_steps_twice, "the loss chart to be painted with more steps twice", 90_000)
    except AssertionError as error:
        raise AssertionError(f"{error}; painted: {seen}; progress: {app.progress.inner_text()}") from None
    steps = [_loss_steps(label) for label in seen]
    assert steps == sorted(steps), seen  # it changed because the run went on
    expect(chart).to_have_count(1)
    assert chart.evaluate("e => e.e2eTag") == "the first loss chart", "the loss chart was replaced by a new element"
    # Pause (which frees the worker for the next tests) redraws the view again, in the same element
    app.act_in_view(lambda: app.page.get_by_role("button", name="❚❚ Pause").click())
    expect(app.progress).to_contain_text("Paused")
    expect(chart).to_have_attribute("aria-label", re.compile(rf"^loss: {progress_step(app.progress.inner_text())} steps of"))
    assert chart.evaluate("e => e.e2eTag") == "the first loss chart", "pausing replaced the loss chart"


def test_the_log_scale_toggle_redraws_the_loss_chart_in_place(dashboard: DashboardPage):
    app = dashboard
    app.open()
    app.wait_for_finished(TRAINING_TIMEOUT_MS)
    assert app.query() == {}
    smoothing = app.page.get_by_role("slider", name="Loss smoothing")
    expect(smoothing).to_have_value("0.9")
    chart = app.loss_chart
    expect(chart).to_have_attribute("aria-label", re.compile(r"^loss: 1000 steps of 1000, linear axis, "))
    chart.evaluate("e => { e.e2eTag = 'before the toggle'; }")
    assert app.chart_spec("loss_chart")["yAxis"]["type"] == "value"
    full_runs = app.runs.started

    app.act_in_view(lambda: app.page.get_by_text("Log-scale loss", exact=True).click())  # the training view alone
    expect(app.page.get_by_role("switch", name="Log-scale loss")).to_be_checked()
    expect(chart).to_have_attribute("aria-label", re.compile(r"^loss: 1000 steps of 1000, log axis, "))
    assert app.chart_spec("loss_chart")["yAxis"]["type"] == "log"
    assert chart.evaluate("e => e.e2eTag") == "before the toggle", "the toggle replaced the loss chart"
    assert app.runs.started == full_runs, "the toggle reran the whole page"
    expect(smoothing).to_have_value("0.9")  # the axis alone changed
    app.expect_query({"log_y": "true"})

    app.act_in_view(lambda: app.page.get_by_text("Log-scale loss", exact=True).click())
    expect(chart).to_have_attribute("aria-label", re.compile(r"^loss: 1000 steps of 1000, linear axis, "))
    assert chart.evaluate("e => e.e2eTag") == "before the toggle"
    app.expect_query({})


def test_trails_chosen_in_the_animation_go_into_the_link_and_survive_a_reload(dashboard: DashboardPage):
    app = dashboard
    app.open()
    app.wait_for_finished(TRAINING_TIMEOUT_MS)
    anim = app.animation
    expect(anim).to_have_attribute("data-trails", str(SETTINGS["trails"].default))  # the default
    anim.locator(".scrub").fill(str(REFERENCE_FRAMES - 1))  # the last frame: the trails are whole paths
    before = app.canvas_pixels()

    app.act_in_view(lambda: anim.locator(".trails").fill("12"))  # reported once, after its debounce
    expect(anim).to_have_attribute("data-trails", "12")
    assert app.canvas_pixels() != before, "12 trails look like the default"
    app.expect_query({"trails": "12"})
    assert "trails=12" in app.page.url

    since = app.runs.finished
    app.page.reload()
    app.settle(since)
    app.wait_for_finished(TRAINING_TIMEOUT_MS)
    assert app.query() == {"trails": "12"}
    expect(anim).to_have_attribute("data-trails", "12")
    expect(anim.locator(".trails")).to_have_value("12")
    expect(anim.locator(".trails-value")).to_have_text("12")
    assert app.animation_payload()["display"]["trails"] == 12  # the page sent it: it read the link
