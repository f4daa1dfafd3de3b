"""Plain-string formatters for times, ages, durations and rates: one set, so `crewtui ctl` and the dashboard agree.

Strings only; the dashboard's Rich rendering (colours, bars, state symbols) is in `crewtui/ui/format.py` and
builds on these. The short duration itself lives in `crewtui.model` (next to `STATE_SYMBOLS`), where the first
users found it; it is `duration` here.
"""

from __future__ import annotations

import time

from crewtui.model import short_duration

duration = short_duration


def age(ts: float | None, now: float) -> str:
    """How long ago `ts` was, as a short duration; "-" when there is no time."""
    return "-" if ts is None else duration(now - ts)


def clock_time(ts: float, seconds: bool = True) -> str:
    """Local wall time of `ts` (tests fix TZ=UTC, so snapshots do not depend on where they run)."""
    return time.strftime("%H:%M:%S" if seconds else "%H:%M", time.localtime(ts))


def date_time(ts: float | None) -> str:
    """Local date and time of `ts`; "-" when there is none (0 counts as none: a job that never fired)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def percent(rate: float | None, missing: str = "-") -> str:
    """A completion rate as "87%"; `missing` when there is no rate yet."""
    return missing if rate is None else f"{rate:.0%}"


def relative(ts: float | None, now: float) -> str:
    """ "in 1m30s" / "2m ago": when a fire or a mark is, relative to now."""
    if ts is None:
        return "-"
    delta = ts - now
    secs = int(abs(delta))
    if secs < 60:
        body = f"{secs}s"
    elif secs < 3600:
        body = f"{secs // 60}m{secs % 60:02d}s" if secs < 600 else f"{secs // 60}m"
    else:
        body = f"{secs // 3600}h{(secs % 3600) // 60:02d}m"
    return f"in {body}" if delta >= 0 else f"{body} ago"


def fit(text: str, width: int) -> str:
    """Cut `text` to `width` cells with an ellipsis, or pad it: fixed-width columns never shift."""
    if width <= 0:
        return ""
    if len(text) > width:
        return text[: max(0, width - 1)] + "…"
    return text.ljust(width)


def money(usd: float | None) -> str:
    """Dollars as a person reads them: $0.0042, $1.27, $1,234 (— when unknown)."""
    if usd is None:
        return "—"
    if usd < 1:
        return f"${usd:.4f}"
    if usd < 1000:
        return f"${usd:.2f}"
    return f"${usd:,.0f}"


def tokens_short(n: int) -> str:
    """A token count in a few characters: 950, 12.3k, 4.1M."""
    if n < 1000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k"
    return f"{n / 1_000_000:.1f}M"


def day_start(ts: float) -> float:
    """The local midnight that began the day of `ts` (what "today" means for the crew's spend)."""
    t = time.localtime(ts)
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0, 0, 0, -1))


def money_short(usd: float | None) -> str:
    """Dollars to the cent, for sums in a narrow column: $0.18, $12.34, $1,234; <$0.01 for less (— unknown)."""
    if usd is None:
        return "—"
    if usd < 0.01:
        return "<$0.01" if usd > 0 else "$0"
    if usd < 1000:
        return f"${usd:.2f}"
    return f"${usd:,.0f}"


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, ..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
