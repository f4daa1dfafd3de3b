"""A plain HTTP client of the Anthropic Messages API, run as a crewtui session: an agent with no structured output.

It sends `--requests` streamed requests, one after another, to `$ANTHROPIC_BASE_URL/v1/messages` with the API key
`sk-<its session label>` (so the fake upstream can tell sessions apart), reads each stream to its end, and prints
one JSON line: the status of every request. It exits 1 if any was not 200 (a 429 it saw included).
With `--go-file PATH` it sends each request after the first only once PATH exists (a test's word that the
runtime it talks to is back up), so a test need not guess how long a restart takes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between requests")
    parser.add_argument("--go-file", default=None, help="send each request after the first once this file exists")
    args = parser.parse_args()
    base = os.environ["ANTHROPIC_BASE_URL"]
    key = "sk-" + os.environ["CREWTUI_SESSION_LABEL"]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy
    statuses: list[int] = []
    for i in range(args.requests):
        if i and args.pause:
            time.sleep(args.pause)
        while i and args.go_file and not os.path.exists(args.go_file):
            time.sleep(0.05)
        body = json.dumps(
            {
                "model": "fake-model",
                "max_tokens": 64,
                "stream": True,
                "messages": [{"role": "user", "content": f"request {i} of {key}"}],
            }
        ).encode()
        req = urllib.request.Request(
            f"{base}/v1/messages",
            data=body,
            headers={"x-api-key": key, "anthropic-version": "2023-06-01", "content-type": "application/json"},
        )
        try:
            with opener.open(req, timeout=120) as r:
                r.read()
                statuses.append(r.status)
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)
    print(json.dumps({"statuses": statuses}), flush=True)
    return 0 if all(s == 200 for s in statuses) else 1


if __name__ == "__main__":
    sys.exit(main())
