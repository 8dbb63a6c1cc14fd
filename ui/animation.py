"""The reverse animation as a canvas in the page: a Streamlit components v2 element.

The payload (``charts.animation.animation_payload``) is sent once; the browser plays it with
``requestAnimationFrame`` on a 2-D canvas (``ui/animation.js``, inline: no build step, no asset
folder), and play, pause, the frame slider, speed, trails, x̂_0 and the legend's layers all work
there, with no server round trip. Mounted with a key, the element keeps its identity across
reruns: the same data changes nothing, new data with the same frames keeps playback, new frames
start over at the payload's frame, and the user's display choices stay.

Display choices round-trip through the component's state: the browser calls
``setStateValue("display", {...})`` after a change of speed, trails, x̂_0 or a legend layer (once
per change, debounced; never for play, pause or the frame slider). In Streamlit 1.67 that call
reruns the script (``WidgetStateManager.setJsonValue(..., fromUser=True)``; inside a fragment,
the fragment alone), and the value is then the mount's ``["display"]`` and
``st.session_state[key]["display"]``, readable before the mount too. ``report=False`` never calls
it: no rerun, and the choices still survive reruns in the browser, but Python never sees them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import streamlit as st

_JS = (Path(__file__).with_name("animation.js")).read_text(encoding="utf-8")

_CSS = """
.ddpm-anim {
  --anim-bg: var(--st-background-color, #ffffff);
  --anim-grid: #e6e9ef;
  --anim-tick: #808495;
  --anim-text: var(--st-text-color, #31333f);
  --anim-accent: var(--st-primary-color, #ff4b4b);
  --anim-border: var(--st-border-color, rgba(49, 51, 63, 0.2));
  --anim-radius: var(--st-base-radius, 0.5rem);
  font-family: var(--st-font, "Source Sans Pro", "Source Sans", sans-serif);
  font-size: 14px;
  line-height: 1.4;
  color: var(--anim-text);
  background: var(--anim-bg);
  width: 100%;
  box-sizing: border-box;
}
.ddpm-anim *, .ddpm-anim *::before, .ddpm-anim *::after { box-sizing: border-box; }
.head { display: flex; flex-wrap: wrap; align-items: baseline; justify-content: space-between;
        gap: 0.25rem 1rem; margin-bottom: 0.25rem; }
.title { font-size: 15px; font-weight: 600; }
.legend { display: flex; flex-wrap: wrap; gap: 0.1rem 0.5rem; }
.legend .item { display: inline-flex; align-items: center; gap: 0.35rem; padding: 0.1rem 0.3rem;
                font: inherit; color: inherit; background: none; border: 0; border-radius: 0.25rem; }
.legend button.item { cursor: pointer; }
.legend button.item:hover { background: rgba(49, 51, 63, 0.06); }
.legend button.item[aria-pressed="false"] { opacity: 0.4; }
.legend .item[hidden] { display: none; }
.swatch { display: inline-block; width: 0.65rem; height: 0.65rem; border-radius: 50%; }
.stage { width: 100%; line-height: 0; }
canvas { display: block; }
.bar { display: flex; align-items: center; gap: 0.75rem; margin-top: 0.4rem; }
.play { flex: none; min-width: 6.2rem; min-height: 2.25rem; padding: 0.25rem 0.75rem; font: inherit;
        font-size: 15px; color: var(--anim-text); background: var(--anim-bg); border: 1px solid var(--anim-border);
        border-radius: var(--st-button-radius, 0.5rem); cursor: pointer; white-space: nowrap; }
.play:hover { border-color: var(--anim-accent); color: var(--anim-accent); }
.play:focus-visible { outline: 2px solid var(--anim-accent); outline-offset: 1px; }
input[type="range"] { accent-color: var(--anim-accent); cursor: pointer; margin: 0; }
input[type="range"]:focus-visible { outline: 2px solid color-mix(in srgb, var(--anim-accent) 35%, transparent);
                                    outline-offset: 3px; border-radius: 4px; }
sub { font-size: 0.75em; line-height: 0; }
.scrub { flex: 1 1 auto; min-width: 6rem; }
.frame-label { flex: none; min-width: 4rem; text-align: left; font-variant-numeric: tabular-nums; }
.options { display: flex; flex-wrap: wrap; align-items: center; gap: 0.4rem 1.5rem; margin-top: 0.5rem; }
.option { display: inline-flex; align-items: center; gap: 0.5rem; white-space: nowrap; }
.option .trails { width: 8rem; }
.trails-value { min-width: 1.4rem; font-variant-numeric: tabular-nums; }
select { font: inherit; color: inherit; padding: 0.3rem 0.5rem; border: 1px solid transparent;
         border-radius: var(--anim-radius); background: var(--st-secondary-background-color, #f0f2f6); cursor: pointer; }
select:focus-visible { outline: none; border-color: var(--anim-accent); }
.toggle { position: relative; cursor: pointer; }
.toggle input { position: absolute; opacity: 0; width: 1px; height: 1px; margin: 0; }
.toggle .track { position: relative; width: 2rem; height: 1.1rem; border-radius: 1rem; background: #d5dae5;
                 transition: background 0.15s; }
.toggle .track::after { content: ""; position: absolute; top: 0.15rem; left: 0.15rem; width: 0.8rem; height: 0.8rem;
                        border-radius: 50%; background: #fff; box-shadow: 0 1px 2px rgba(0, 0, 0, 0.25);
                        transition: transform 0.15s; }
.toggle input:checked + .track { background: var(--anim-accent); }
.toggle input:checked + .track::after { transform: translateX(0.9rem); }
.toggle input:focus-visible + .track { outline: 2px solid var(--anim-accent); outline-offset: 2px; }
.toggle.disabled { opacity: 0.4; cursor: default; }
"""

_component = st.components.v2.component("ddpm_lab_animation", js=_JS, css=_CSS)


def reverse_animation(payload: dict, *, key: str, height: int | None = None, report: bool = True,
                      on_change: Callable[[], None] | None = None) -> dict | None:
    """Mount the canvas animation of ``payload`` under ``key`` (keyed: it keeps its identity, and
    its playback, across reruns). ``height``: the canvas's height in CSS pixels; None, 0.62 of its
    width (240-620 px). ``report``: send the user's display choices back (each change reruns the
    script once); ``on_change``: called, as a widget callback, when they change.

    Returns the display choices the user made here, {"trails", "show_x0", "frame_ms", "hidden"},
    or None while there are none (use the payload's then)."""
    if height is not None and int(height) < 50:
        raise ValueError(f"height must be None or at least 50 pixels, got {height}")
    data = {**payload, "height": None if height is None else int(height), "report": bool(report)}
    result = _component(key=key, data=data, on_display_change=on_change or _ignore)
    return result.get("display")


def display_choices(key: str) -> dict | None:
    """The display choices the user made in the animation mounted under ``key``, readable before
    it is mounted in this run (to build the payload or the page's link from them); None if none."""
    state = st.session_state.get(key)
    return state.get("display") if isinstance(state, dict) else None


def _ignore() -> None:
    """A callback for the state to be declared (``on_display_change``) when the caller has none."""
