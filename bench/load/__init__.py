"""Load benchmark: many users on one Streamlit server (``python -m bench.load``).

- ``client.py``: a lightweight user. It speaks Streamlit's websocket protocol (protobuf
  ``BackMsg`` / ``ForwardMsg``) like the browser's frontend does, reruns ``run_every`` fragments
  on the server's ``auto_rerun`` messages, and reads the training progress text ('step N') from
  the deltas. No rendering, so the machine's CPU goes to the server.
- ``procstat.py``: RSS and CPU time per process from /proc (psutil when installed).
- ``browser.py``: one real Chromium page (Playwright) timing a display-only change and the
  opening of a finished run's link.
- ``__main__.py``: the benchmark: a real server, N = 1, 2, 4, 8 users each on its own long run,
  health latency, RSS / CPU per process, steps per second per job, a markdown table and JSON.
"""
