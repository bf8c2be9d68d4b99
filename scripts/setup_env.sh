#!/usr/bin/env bash
# Creates .venv (Python 3.10, with pip: TFX needs it) and installs the locked stack + this package.
# Idempotent: a second run only checks that everything is installed (a few seconds).
set -euo pipefail
cd "$(dirname "$0")/.."

find_python() {
  # .python-version (3.10.13) selects pyenv's interpreter for plain `python` inside the repo.
  for candidate in python python3.10 /root/.pyenv/versions/3.10.13/bin/python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' 2>/dev/null; then
      echo "$candidate"; return 0
    fi
  done
  echo "error: Python 3.10 not found (TFX 1.16 needs 3.10); install it, e.g. 'pyenv install 3.10.13'" >&2
  return 1
}

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
  PY=$(find_python)
  echo "creating .venv with $("$PY" --version)"
  rm -rf .venv
  "$PY" -m venv .venv
fi
# pip's resolver gives up on TFX; uv installs the lock file exactly. uv lives inside the venv
# because a uv installed for another Python is hidden by .python-version.
.venv/bin/python -m pip install -q --disable-pip-version-check "uv==0.13.9"
# --compile-bytecode writes the .pyc files of all of site-packages (about 30 s once). Without
# them, and with PYTHONDONTWRITEBYTECODE set (as on these machines), every process compiles
# the TF/TFX/Beam sources again: importing the stack took 26.7 s instead of 9.8 s.
VIRTUAL_ENV=.venv .venv/bin/uv pip install -q --compile-bytecode -r requirements/lock.txt
VIRTUAL_ENV=.venv .venv/bin/uv pip install -q --no-deps -e .
echo "environment ready: .venv ($(.venv/bin/python --version))"
