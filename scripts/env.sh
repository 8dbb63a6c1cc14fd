# Shared by the scripts: create .venv (Python 3.11) and install the requirements file given.
# Usage: source scripts/env.sh requirements.txt
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=$(command -v python3.11 || command -v python3)
if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
# torch is pinned to the CPU build (torch==2.13.0); pip skips what is already installed.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$1"
