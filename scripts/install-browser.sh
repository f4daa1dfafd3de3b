#!/usr/bin/env bash
# Install the browser the `crewtui serve` tests drive: Debian's chromium at /usr/bin/chromium.
#
# Idempotent: does nothing when /usr/bin/chromium is there. Otherwise runs
# `apt-get update && apt-get install -y --no-install-recommends chromium`, as root directly or through sudo.
# Playwright (the `browser` extra) only drives it; its own browser downloads are never used.
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    echo "install-browser: $CHROMIUM is already installed; nothing to do"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "install-browser: $CHROMIUM is missing and this is not root, and there is no sudo;" \
         "install Debian's chromium package by hand (the browser tests are skipped without it)" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no apt-get here; install chromium at $CHROMIUM by other means" \
         "(the browser tests are skipped without it)" >&2
    exit 1
fi

echo "install-browser: $CHROMIUM is missing; installing Debian's chromium with apt-get${as_root:+ (via sudo)}"
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
echo "+ ${as_root[*]:+${as_root[*]} }apt-get update"
"${as_root[@]}" apt-get update -q
echo "+ ${as_root[*]:+${as_root[*]} }apt-get install -y --no-install-recommends chromium"
"${as_root[@]}" apt-get install -y -q --no-install-recommends chromium
if [ ! -x "$CHROMIUM" ]; then
    echo "install-browser: apt-get finished but $CHROMIUM is still missing" >&2
    exit 1
fi
echo "install-browser: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium) in $(( $(date +%s) - start ))s"
