#!/usr/bin/env bash
# Every check a change must pass: scripts/lint.sh (lint, format, types, layers), then the tests.
#
# Run from the repository root after `pip install -e '.[dev]'` into .venv (README's test command runs the same two).
# Extra arguments go to pytest (e.g. `bash scripts/check.sh tests/test_store.py -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/lint.sh
echo "+ .venv/bin/python -m pytest -q $*" >&2
.venv/bin/python -m pytest -q "$@"
