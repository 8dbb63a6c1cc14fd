"""The one place that uses Streamlit's private runtime (ui/session.py) fails loudly here when the
installed Streamlit is not the version it was checked on, or no longer has what it uses."""

from __future__ import annotations

import streamlit
from streamlit.runtime import Runtime
from streamlit.runtime.scriptrunner import get_script_run_ctx
from streamlit.testing.v1 import AppTest

from ui import session


def test_streamlit_is_the_version_the_private_calls_were_checked_on():
    assert streamlit.__version__ == session.CHECKED_ON, (
        f"ui/session.py reaches into Streamlit's private runtime and was checked on {session.CHECKED_ON}; "
        f"Streamlit {streamlit.__version__} is installed: re-check session_id() and activity_probe(), then update CHECKED_ON"
    )


def test_the_private_attributes_it_uses_exist():
    from streamlit.runtime.scriptrunner_utils.script_run_context import ScriptRunContext

    assert "session_id" in {f.name for f in __import__("dataclasses").fields(ScriptRunContext)}
    assert callable(get_script_run_ctx)
    assert callable(getattr(Runtime, "is_active_session", None))
    assert callable(getattr(Runtime, "exists", None)) and callable(getattr(Runtime, "instance", None))


def _page():
    import streamlit as st

    from ui import session

    st.write(f"session:{session.session_id()}")
    st.write(f"active:{session.activity_probe(session.session_id())()}")


def test_a_script_run_has_a_session_id_and_outside_a_server_it_counts_as_watched():
    at = AppTest.from_function(_page).run()
    assert not at.exception
    texts = [m.value for m in at.markdown]
    session_text = next(t for t in texts if t.startswith("session:"))
    assert session_text != "session:None" and len(session_text) > len("session:")
    assert "active:True" in texts  # AppTest's stand-in runtime reports every session as connected
    assert session.session_id() is None  # plain Python, no script run
