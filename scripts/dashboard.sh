#!/usr/bin/env bash
# Set up .venv and start the dashboard on http://localhost:8501 (extra arguments go to streamlit).
source "$(dirname "$0")/env.sh" requirements.txt
exec .venv/bin/python -m streamlit run dashboard.py "$@"
