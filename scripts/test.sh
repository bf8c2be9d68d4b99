#!/usr/bin/env bash
# Sets up the environment if needed, then runs lint and the whole test suite (unit + end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# The report's browser test needs Debian's chromium, which a fresh machine lacks.
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing Debian's chromium for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "warning: chromium is missing; install it (e.g. 'sudo apt-get install chromium') or the browser test fails" >&2
  fi
fi
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
