"""The control socket's wire format: one JSON object per line.

Request: {"op": "spawn", "args": {...}}. Reply: {"ok": true, "result": ...} or
{"ok": false, "error": {"kind": "conflict", "message": "..."}}. `watch` replies {"ok": true, "result":
"watching"} and then one {"event": {...}} line per event until the client hangs up.
"""

from __future__ import annotations

import json
from typing import Any

from crewtui.errors import CrewError

MAX_LINE = 1 << 20  # 1 MiB: a steer text is at most 64 KiB; anything much larger is a broken client


def encode(obj: Any) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


def ok(result: Any) -> bytes:
    return encode({"ok": True, "result": result})


def err(exc: CrewError) -> bytes:
    return encode({"ok": False, "error": {"kind": exc.kind, "message": exc.message}})
