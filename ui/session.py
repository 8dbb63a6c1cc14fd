"""The one place that reaches into Streamlit's private runtime, where no public API exists.

Checked on Streamlit 1.67.0 (``CHECKED_ON``); ``tests/test_session.py`` fails loudly when the
installed version no longer has these attributes.

- ``session_id()``: the id of the browser session running this script
  (``streamlit.runtime.scriptrunner.get_script_run_ctx().session_id``);
- ``session_is_active(id)``: whether that browser session is still connected
  (``streamlit.runtime.Runtime.instance().is_active_session``); the jobs pause themselves when
  their page is gone.
"""

from __future__ import annotations

from collections.abc import Callable

CHECKED_ON = "1.67.0"


def session_id() -> str | None:
    """This script run's session id, or None outside a Streamlit server (plain Python, AppTest
    gives one too)."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return None if ctx is None else ctx.session_id


def activity_probe(session: str | None) -> Callable[[], bool]:
    """A function telling whether ``session`` is still connected; always True where no server
    runs (AppTest, scripts), since then nothing can close the tab."""
    from streamlit.runtime import Runtime

    if session is None or not Runtime.exists():
        return lambda: True
    runtime = Runtime.instance()
    return lambda: bool(runtime.is_active_session(session))
