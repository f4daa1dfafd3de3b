"""What the gateway reads in upstream answers and writes back: hop-by-hop headers, `retry-after`, the rate-limit
headers of Anthropic and OpenAI (a window used up), error bodies in each API's shape, and local days."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime

from crewtui.gateway.usage import Api

# Headers of one connection, not of the request: never forwarded either way (content-length: the body is streamed).
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)


def retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds the upstream asks us to wait: `retry-after-ms`, `retry-after` (seconds or an HTTP date)."""
    ms = _seconds(headers.get("retry-after-ms"))
    if ms is not None:
        return ms / 1000.0
    value = headers.get("retry-after")
    if not value:
        return None
    seconds = _seconds(value)
    if seconds is not None:
        return seconds
    with contextlib.suppress(TypeError, ValueError, IndexError):
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    return None


def _seconds(text: str | None) -> float | None:
    """A number of seconds as a header gives it; None for no number at all ("inf", "nan", garbage)."""
    try:
        value = float(text) if text else math.nan
    except ValueError:
        return None
    return max(0.0, value) if math.isfinite(value) else None


def _go_duration(text: str) -> float | None:
    """OpenAI's reset durations: "1s", "6m0s", "20ms", "1h2m3.5s"."""
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isdigit() or ch == ".":
            number += ch
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else ch
        if unit not in units or not number:
            return None
        try:
            total += float(number) * units[unit]
        except ValueError:
            return None
        number = ""
        i += len(unit)
    return total if not number else None


def window_exhausted(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds until the upstream's window frees a request, when its headers say none is left (else None)."""
    for kind in ("requests", "input-tokens", "output-tokens", "tokens"):
        if headers.get(f"anthropic-ratelimit-{kind}-remaining") == "0":
            reset = headers.get(f"anthropic-ratelimit-{kind}-reset")
            with contextlib.suppress(TypeError, ValueError):
                if reset:
                    return max(0.0, datetime.fromisoformat(reset.replace("Z", "+00:00")).timestamp() - now)
        if headers.get(f"x-ratelimit-remaining-{kind}") == "0":
            reset = headers.get(f"x-ratelimit-reset-{kind}")
            if reset:
                seconds = _go_duration(reset)
                if seconds is not None:
                    return seconds
    return None


def local_day(ts: float) -> str:
    """The local calendar day of `ts` (budgets per day turn over at local midnight)."""
    return time.strftime("%Y-%m-%d", time.localtime(ts))


def next_midnight(ts: float) -> float:
    day = datetime.fromtimestamp(ts).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day).timestamp()


def error_body(api: Api | None, status: int, message: str) -> dict[str, object]:
    if api == "anthropic":
        kind = {403: "permission_error", 502: "api_error"}.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": message}}
    return {"error": {"type": "invalid_request_error" if status < 500 else "server_error", "message": message}}
