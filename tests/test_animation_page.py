"""The canvas animation's mount (``ui.animation.reverse_animation``) in AppTest: what the element
is sent, that its identity is its key alone (new data reaches the same element in the browser
instead of a new one), and the errors of its own arguments. The browser side is
tests/browser/test_animation_e2e.py."""

from __future__ import annotations

import json

from streamlit.testing.v1 import AppTest


def _app():
    import numpy as np
    import streamlit as st

    from charts.animation import animation_payload
    from ui.animation import reverse_animation

    scale = st.session_state.get("scale", 1.0)
    frames = np.arange(3 * 4 * 2, dtype=np.float32).reshape(3, 4, 2) * scale  # (K, N, 2)
    payload = animation_payload(frames, ["t = 2", "t = 1", "t = 0"], np.zeros((5, 2)), trails=2)
    st.session_state["shown"] = reverse_animation(payload, key="anim", height=st.session_state.get("height", 320),
                                                  report=st.session_state.get("report", True))


def _element(at: AppTest):
    elements = at.get("bidi_component")
    assert len(elements) == 1
    return elements[0].proto


def test_the_element_gets_the_payload_and_keeps_its_key_as_identity():
    at = AppTest.from_function(_app).run(timeout=30)
    assert not at.exception
    proto = _element(at)
    data = json.loads(proto.json)
    assert (data["height"], data["report"], data["num_frames"], data["display"]["trails"]) == (320, True, 3, 2)
    assert proto.component_name == "ddpm_lab_animation" and "requestAnimationFrame" in proto.js_content
    assert at.session_state["shown"] is None  # no display choice made in the browser yet

    at.session_state["scale"] = 2.0  # new frames, and not reported
    at.session_state["report"] = False
    at.run(timeout=30)
    changed = _element(at)
    assert json.loads(changed.json)["digest"] != data["digest"] and json.loads(changed.json)["report"] is False
    assert changed.id == proto.id and proto.id.endswith("-anim")  # the same element: the browser keeps it


def test_a_bad_height_is_a_clear_error():
    at = AppTest.from_function(_app)
    at.session_state["height"] = 10
    at.run(timeout=30)
    assert "height must be None or at least 50 pixels, got 10" in at.exception[0].message
