#!/usr/bin/env bash
# Set up .venv with the test tools, install Debian's Chromium for the browser tests when it is
# missing (needs root or sudo), and run the whole test suite. Extra arguments go to pytest and run
# it as one process; without any, the browser tests and the rest run as two pytest processes at
# once (the browser tests mostly wait on a page, so on 2 cores the two take little more than the
# longer one alone). The browser tests' report, kept in artifacts/browser/pytest.log, follows the
# rest's; the exit status is the first failure's.
source "$(dirname "$0")/env.sh" requirements-dev.txt
if [ ! -x /usr/lib/chromium/chromium ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo -n"
  echo "Installing Chromium for the browser tests (apt)..."
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null; }; then
    echo "Could not install Chromium: browser tests will skip (and fail under CI=true)." >&2
  fi
fi
if [ $# -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
mkdir -p artifacts/browser
log=artifacts/browser/pytest.log
.venv/bin/python -m pytest -p no:cacheprovider tests/browser >"$log" 2>&1 &
browser=$!
trap 'kill -INT "$browser" 2>/dev/null || true' INT TERM  # pytest tears down its server and browser on SIGINT
status=0
.venv/bin/python -m pytest --ignore=tests/browser || status=$?
browser_status=0
wait "$browser" || browser_status=$?
echo
echo "=== the browser tests (tests/browser, $log) ==="
cat "$log"
[ "$status" -ne 0 ] || status=$browser_status
exit "$status"
