#!/usr/bin/env bash
# Install the Debian packages the tests need and pip cannot give:
#   chromium (/usr/bin/chromium): the browser the `crewtui serve` tests drive (Playwright only drives it);
#   dtach (/usr/bin/dtach): holds the pseudo-terminal of a terminal session (`tty = true`) so it outlives the
#   runtime and can be attached to.
#
# Idempotent: does nothing when both are there. Otherwise one `apt-get update` and one
# `apt-get install -y --no-install-recommends` of what is missing, as root directly or through sudo.
set -euo pipefail

declare -A WANT=([chromium]=/usr/bin/chromium [dtach]=/usr/bin/dtach)
missing=()
for pkg in chromium dtach; do
    if [ ! -x "${WANT[$pkg]}" ]; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-debian: chromium and dtach are already installed; nothing to do"
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
else
    echo "install-debian: ${missing[*]} missing and this is not root, and there is no sudo;" \
         "install Debian's ${missing[*]} by hand" >&2
    exit 1
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-debian: no apt-get here; install ${missing[*]} by other means" >&2
    exit 1
fi

echo "install-debian: installing ${missing[*]} with apt-get${as_root:+ (via sudo)}"
start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
echo "+ ${as_root[*]:+${as_root[*]} }apt-get update"
"${as_root[@]}" apt-get update -q
echo "+ ${as_root[*]:+${as_root[*]} }apt-get install -y --no-install-recommends ${missing[*]}"
"${as_root[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
for pkg in "${missing[@]}"; do
    if [ ! -x "${WANT[$pkg]}" ]; then
        echo "install-debian: apt-get finished but ${WANT[$pkg]} is still missing" >&2
        exit 1
    fi
done
echo "install-debian: installed ${missing[*]} in $(( $(date +%s) - start ))s"
