#!/usr/bin/env bash
# Install the agent CLIs the end-to-end agent tests drive (tests/test_fakemodel.py), pinned, into .agents/:
# `.agents/node_modules/.bin/claude` and `.agents/node_modules/.bin/codex`.
#
# Only the npm registry is used: both packages ship their native binary as an optional dependency.
# Idempotent: does nothing when the pinned versions are already installed. Without npm it says that the
# end-to-end agent tests will be skipped and exits 0 (those tests skip themselves, saying why).
# Override the target directory with CREWTUI_TEST_AGENTS_DIR (the tests read the same variable).
set -euo pipefail
cd "$(dirname "$0")/.."

CLAUDE_VERSION=2.1.197
CODEX_VERSION=0.171.0
DIR=${CREWTUI_TEST_AGENTS_DIR:-.agents}

if ! command -v npm >/dev/null 2>&1; then
    echo "install-agents: npm is not installed; the end-to-end agent tests (claude, codex) will be skipped"
    exit 0
fi

installed_version() {  # the version of an npm package in $DIR, or nothing
    local manifest="$DIR/node_modules/$1/package.json"
    [ -f "$manifest" ] || return 0
    sed -n 's/^[[:space:]]*"version":[[:space:]]*"\([^"]*\)".*/\1/p' "$manifest" | head -n 1
}

wanted=()
[ "$(installed_version @anthropic-ai/claude-code)" = "$CLAUDE_VERSION" ] || wanted+=("@anthropic-ai/claude-code@$CLAUDE_VERSION")
[ "$(installed_version @openai/codex)" = "$CODEX_VERSION" ] || wanted+=("@openai/codex@$CODEX_VERSION")
if [ ! -x "$DIR/node_modules/.bin/claude" ] || [ ! -x "$DIR/node_modules/.bin/codex" ]; then
    wanted=("@anthropic-ai/claude-code@$CLAUDE_VERSION" "@openai/codex@$CODEX_VERSION")
fi

if [ ${#wanted[@]} -eq 0 ]; then
    echo "install-agents: claude-code $CLAUDE_VERSION and codex $CODEX_VERSION are already in $DIR; nothing to do"
    exit 0
fi

start=$(date +%s)
mkdir -p "$DIR"
# Both pins are always named: npm install --prefix rewrites $DIR/package.json, and naming only one would let
# the other drift. --save-exact keeps the pins in $DIR/package.json.
npm install --prefix "$DIR" --save-exact --no-audit --no-fund --loglevel=error --no-update-notifier \
    "@anthropic-ai/claude-code@$CLAUDE_VERSION" "@openai/codex@$CODEX_VERSION" >/dev/null
for bin in claude codex; do
    if [ ! -x "$DIR/node_modules/.bin/$bin" ]; then
        echo "install-agents: npm finished but $DIR/node_modules/.bin/$bin is missing" >&2
        exit 1
    fi
done
echo "install-agents: installed claude-code $CLAUDE_VERSION and codex $CODEX_VERSION into $DIR" \
     "in $(( $(date +%s) - start ))s"
