#!/usr/bin/env bash
# Every check a change must pass, in the order that fails fastest: lint, format, types, layers, then the tests.
#
# Run from the repository root after `pip install -e '.[dev]'` into .venv (README's test command does both).
# Extra arguments go to pytest (e.g. `bash scripts/check.sh tests/test_store.py -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin

step() {
    echo "+ $*" >&2
    "$@"
}

step "$bin/ruff" check .
step "$bin/ruff" format --check .
step "$bin/mypy"
step "$bin/lint-imports"
step "$bin/python" -m pytest -q "$@"
