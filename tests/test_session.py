"""The one place that uses Streamlit's private runtime (ui/session.py) fails loudly here when the
installed Streamlit is not the version it was checked on, or no longer has what it uses."""

from __future__ import annotations

import streamlit
from streamlit.runtime import Runtime
from streamlit.testing.v1 import AppTest

from ui import session


def test_streamlit_is_the_version_the_private_calls_were_checked_on():
    assert streamlit.__version__ == session.CHECKED_ON, (
        f"ui/session.py reaches into Streamlit's private runtime and was checked on {session.CHECKED_ON}; "
        f"Streamlit {streamlit.__version__} is installed: re-check session_id() and activity_probe(), then update CHECKED_ON"
    )


def _page():
    import streamlit as st
    from streamlit.runtime import Runtime

    from ui import session

    sid = session.session_id()
    probe = session.activity_probe(sid)
    st.write(f"session:{sid}")
    st.write(f"active:{probe()}")
    # AppTest's runtime is a MagicMock(spec=Runtime): an attribute the real Runtime lacks raises
    # AttributeError, and the probe must pass on what is_active_session answers, for this session.
    runtime = Runtime.instance()
    runtime.is_active_session.return_value = False
    st.write(f"closed:{probe()}")
    st.write(f"asked about:{runtime.is_active_session.call_args.args}")


def test_a_script_run_has_its_sessions_id_and_the_probe_asks_the_runtime_about_it():
    at = AppTest.from_function(_page).run()
    assert not at.exception, at.exception
    texts = [m.value for m in at.markdown]
    # AppTest 1.67 runs every session under this id (tests/pages.py: a second user needs its own owner)
    assert "session:test session id" in texts
    assert "active:True" in texts and "closed:False" in texts
    assert "asked about:('test session id',)" in texts


def test_outside_a_server_there_is_no_session_and_every_session_counts_as_watched():
    assert not Runtime.exists()  # plain Python: nothing can close a tab
    assert session.session_id() is None
    assert session.activity_probe(None)() is True
    assert session.activity_probe("some session")() is True
