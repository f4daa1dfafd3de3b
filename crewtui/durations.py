"""Durations as people write them ("90s", "15m", "1h30m") and as the dashboard shows them ("5m", "3h")."""

from __future__ import annotations

import re

_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str | int | float) -> float:
    """Parse "90s", "15m", "1h30m", "250ms" (or a bare number of seconds) into seconds.

    Raises ValueError with a message that says what was expected.
    """
    if isinstance(text, bool):
        raise ValueError(f"expected a duration like '15m', got {text!r}")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError(f"expected a duration of zero or more, got {text!r}")
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"expected a duration like '15m', got {text!r}")
    s = text.strip().lower()
    pos = 0
    total = 0.0
    for m in _DURATION_RE.finditer(s):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f"expected a duration like '90s', '15m' or '1h30m', got {text!r}")
    return total


def short_duration(seconds: float) -> str:
    """A short human duration: 42s, 5m, 3h, 2d (the coarsest unit that keeps 1-2 digits)."""
    secs = max(0, int(seconds))
    if secs < 120:
        return f"{secs}s"
    if secs < 7200:
        return f"{secs // 60}m"
    if secs < 172800:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"
