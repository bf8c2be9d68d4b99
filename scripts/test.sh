#!/usr/bin/env bash
# Sets up the environment if needed, then runs lint and the whole test suite (unit + end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
