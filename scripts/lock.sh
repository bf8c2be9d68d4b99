#!/usr/bin/env bash
# Re-resolves requirements/requirements.in into requirements/lock.txt (Python 3.10, Linux x86_64).
set -euo pipefail
cd "$(dirname "$0")/.."
VIRTUAL_ENV=.venv .venv/bin/uv pip compile requirements/requirements.in \
  --python-version 3.10 --python-platform x86_64-manylinux_2_36 -o requirements/lock.txt
