"""Draw on the Data section's canvas with the mouse, train on the drawing, see its samples.

Expects the Data section, with dataset 'points', to offer a radio "Source" with options
"Upload a CSV" / "Draw"; "Draw" shows ``ui.drawing.drawing_section()`` (default key prefix "draw").
"""

from __future__ import annotations

import statistics

import pytest
from playwright.sync_api import expect

from .conftest import BROWSER_ARTIFACTS
from .dashboard_page import DashboardPage

pytestmark = pytest.mark.browser

SETTINGS = {"dataset": "points", "pace": "false", "T": "100", "epochs": "150", "samples": "200", "frames": "5"}
TRAINING_TIMEOUT_MS = 150_000
COUNT = 1000  # the point-count slider's default


def _draw_stroke(app: DashboardPage, start: tuple[float, float], end: tuple[float, float], steps: int = 30) -> None:
    """Drag the mouse across the canvas (fabric.js listens on its upper canvas), from ``start`` to
    ``end`` given as fractions of the canvas's width and height."""
    canvas = app.sidebar.locator("canvas.upper-canvas")
    expect(canvas).to_be_visible()
    box = canvas.bounding_box()
    x0, y0 = box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"]
    x1, y1 = box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"]
    app.page.mouse.move(x0, y0)
    app.page.mouse.down()
    for k in range(1, steps + 1):
        app.page.mouse.move(x0 + (x1 - x0) * k / steps, y0 + (y1 - y0) * k / steps)
    app.page.mouse.up()


def test_draw_a_stroke_with_the_mouse_and_train_on_it(dashboard: DashboardPage):
    app = dashboard
    app.open("?" + "&".join(f"{k}={v}" for k, v in SETTINGS.items()))
    app.act(lambda: app.sidebar.get_by_text("Draw", exact=True).click())
    expect(app.sidebar.get_by_text("The drawing is empty")).to_be_visible()

    # a horizontal stroke across the middle of the canvas; the canvas sends it on mouse up and the
    # section (a fragment) reruns: its preview and caption appear only once the stroke has arrived
    _draw_stroke(app, (0.15, 0.5), (0.85, 0.5))
    expect(app.sidebar.get_by_text(f"{COUNT:,} points; press 'Train on this' to use them.")).to_be_visible()
    preview = app.chart("draw_preview")
    assert [n for _, n in app.traces(preview)] == [COUNT]
    ys = app.trace_y(preview)
    assert max(ys) - min(ys) < 0.2, (min(ys), max(ys))  # flat: a horizontal stroke, jittered
    app.settle()

    app.act(lambda: app.sidebar.get_by_role("button", name="Train on this").click())
    expect(app.sidebar.get_by_text(f"Training on these {COUNT:,} points.")).to_be_visible()
    app.expect_query({**SETTINGS, "points": "drawn"})
    app.wait_for_finished(TRAINING_TIMEOUT_MS)

    # the animation's faint data are the drawn points, in drawing units (canvas half-width = 1): a
    # flat line from x = -0.7 to 0.7 through the canvas's middle, jittered by 0.02 (clipped at 3x)
    data_x, data_y = app.animation_data()
    assert len(data_x) == COUNT
    assert -0.8 < min(data_x) < -0.6 and 0.6 < max(data_x) < 0.8, (min(data_x), max(data_x))
    assert max(abs(y) for y in data_y) < 0.1, max(abs(y) for y in data_y)
    # and the samples lie along it: spread along x (a uniform over 1.4 has std 0.40), flat in y
    expect(app.animation).to_have_attribute("data-frames", SETTINGS["frames"])
    samples_x, samples_y = app.frame_points(-1)
    assert len(samples_x) == int(SETTINGS["samples"])
    spread_x, spread_y = statistics.pstdev(samples_x), statistics.pstdev(samples_y)
    assert 0.25 < spread_x < 0.6 and spread_y < 0.5 * spread_x, (spread_x, spread_y)
    assert min(samples_x) < -0.4 and max(samples_x) > 0.4, (min(samples_x), max(samples_x))
    app.screenshot(BROWSER_ARTIFACTS / "drawing_trained.png", whole_page=True)


def test_a_drawing_in_two_pens_trains_a_conditional_model_asked_for_one_colour(dashboard: DashboardPage):
    """Two strokes in two pens are two classes: the preview colours them, a conditional model trains
    on them, and asked for the red one its samples lie on the red (upper) stroke."""
    app = dashboard
    app.open("?" + "&".join(f"{k}={v}" for k, v in {**SETTINGS, "epochs": "300"}.items()))
    app.act(lambda: app.sidebar.get_by_text("Draw", exact=True).click())
    _draw_stroke(app, (0.15, 0.7), (0.85, 0.7))  # black, lower
    expect(app.sidebar.get_by_text(f"{COUNT:,} points; press 'Train on this' to use them.")).to_be_visible()
    app.act_in_view(lambda: app.sidebar.get_by_role("radiogroup", name="Pen").get_by_text("red").click())
    _draw_stroke(app, (0.15, 0.3), (0.85, 0.3))  # red, upper
    expect(app.sidebar.get_by_text(f"{COUNT:,} points in 2 classes (black, red); press 'Train on this'")).to_be_visible()
    app.settle()
    app.act(lambda: app.sidebar.get_by_role("button", name="Train on this").click())
    app.act(lambda: app.sidebar.get_by_text("Condition on the class").click())
    app.type_number("Class", 1)  # red
    app.wait_for_finished(TRAINING_TIMEOUT_MS)
    payload = app.animation_payload()
    assert set(payload["classes"]) == {1}
    samples_x, samples_y = app.frame_points(-1)
    assert statistics.median(samples_y) > 0.2, statistics.median(samples_y)  # on the upper (red) stroke, y = 0.4
    app.screenshot(BROWSER_ARTIFACTS / "drawing_two_pens.png", whole_page=True)
