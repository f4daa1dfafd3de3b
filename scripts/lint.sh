#!/usr/bin/env bash
# The checks besides the tests, in the order that fails fastest: lint, format, types, layers.
#
# Run from the repository root after `pip install -e '.[dev]'` into .venv. README's test command runs this, then
# pytest; `scripts/check.sh` does both in one go for development.
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
