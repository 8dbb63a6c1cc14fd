#!/usr/bin/env bash
# Set up .venv with the test tools, install Debian's Chromium for the browser tests when it is
# missing (needs root or sudo), and run the whole test suite. Extra arguments go to pytest.
source "$(dirname "$0")/env.sh" requirements-dev.txt
if [ ! -x /usr/lib/chromium/chromium ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  echo "Installing Chromium for the browser tests (apt)..."
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null; }; then
    echo "Could not install Chromium: browser tests will skip (and fail under CI=true)." >&2
  fi
fi
exec .venv/bin/python -m pytest "$@"
