"""How the dashboard draws states, rates, roll-ups, bars and sparklines: one place, so every pane agrees.

Pure functions returning Rich `Text`, and the colours they use; no widget code here. The plain strings they
build on (ages, times, durations, percentages) are `crewtui.formatting`'s, shared with `crewtui ctl`. Symbols
are all one cell wide in every common terminal font (no emoji presentation), so columns stay aligned.

Foreign text (what agents print, labels, reasons, names, what a user typed) reaches a widget only through
`plain(...)`: a `Text`, so it is never read as markup, cleaned of terminal escapes by `crewtui.text.clean`.
"""

from __future__ import annotations

import json
from typing import Any

from rich.text import Text

from crewtui.formatting import money, money_short, percent, tokens_short
from crewtui.model import STATE_SYMBOLS, SessionState, TimelineItem
from crewtui.spend import TokenCounts
from crewtui.text import clean

# One Dark-like colours: distinct on dark and light backgrounds, and failures stand out from the calm ones.
STATE_COLORS: dict[SessionState, str] = {
    SessionState.PENDING: "#e5c07b",
    SessionState.RUNNING: "#61afef",
    # It waits on a person: bold and a colour no other state has, so it is found at a glance.
    SessionState.WAITING: "bold #ff9e64",
    SessionState.YIELDED: "#c678dd",
    SessionState.DONE: "#98c379",
    SessionState.FAILED: "#e06c75",
    SessionState.TIMED_OUT: "#d19a66",
    SessionState.KILLED: "#9da5b4",
    SessionState.LOST: "#ff79c6",
}

# The order states are listed in (roll-ups, header, filters): live first, then the endings.
STATE_ORDER: tuple[SessionState, ...] = (
    SessionState.RUNNING,
    SessionState.WAITING,
    SessionState.PENDING,
    SessionState.YIELDED,
    SessionState.DONE,
    SessionState.FAILED,
    SessionState.TIMED_OUT,
    SessionState.KILLED,
    SessionState.LOST,
)

RATE_GOOD = "#98c379"
RATE_MEDIUM = "#e5c07b"
RATE_BAD = "#e06c75"
DIM = "#7f848e"

SPARK_CHARS = "▁▂▃▄▅▆▇█"


def plain(text: str | None, style: str = "", *, missing: str = "", newlines: bool = False) -> Text:
    """Foreign text as a `Text` to show: never markup, escapes removed and control characters made visible
    (line feeds too, unless `newlines`); `missing` when there is none."""
    return Text(clean(text, newlines=newlines) if text else missing, style=style)


def clean_marks(items: list[TimelineItem]) -> list[TimelineItem]:
    """Timeline marks with their names and outcomes cleaned (a job's name, a session's label, a system job's
    text): the timeline draws them as they come."""
    out = []
    for item in items:
        name, outcome = clean(item.name), item.outcome and clean(item.outcome)
        out.append(
            item
            if (name, outcome) == (item.name, item.outcome)
            else item.model_copy(update={"name": name, "outcome": outcome})
        )
    return out


def state_text(state: SessionState, width: int | None = None) -> Text:
    """ "▶ running", coloured; padded to `width` cells when given."""
    text = Text(f"{STATE_SYMBOLS[state]} {state.value}", style=STATE_COLORS[state])
    if width is not None:
        text.truncate(width, pad=True)
    return text


def rate_color(rate: float | None) -> str:
    if rate is None:
        return DIM
    if rate >= 0.8:
        return RATE_GOOD
    if rate >= 0.5:
        return RATE_MEDIUM
    return RATE_BAD


def rate_text(rate: float | None, width: int = 4) -> Text:
    return Text(percent(rate, missing="–").rjust(width), style=rate_color(rate))


def rollup(counts: dict[SessionState, int]) -> Text:
    """ "▶12 ✔3 ✘1": the non-zero states of a group, each in its colour."""
    out = Text()
    for state in STATE_ORDER:
        n = counts.get(state, 0)
        if n:
            if out:
                out.append(" ")
            out.append(f"{STATE_SYMBOLS[state]}{n}", style=STATE_COLORS[state])
    return out


def bar(done: int, total: int, width: int, color: str) -> Text:
    """A meter: `width` cells, the done fraction filled."""
    if total <= 0:
        return Text("░" * width, style=DIM)
    filled = max(0, min(width, round(width * done / total)))
    return Text.assemble(("█" * filled, color), ("░" * (width - filled), DIM))


def sparkline(rates: list[float | None]) -> Text:
    """One cell per run, oldest first: height and colour by completion rate; "·" for a run with no rate."""
    out = Text()
    for r in rates:
        if r is None:
            out.append("·", style=DIM)
        else:
            idx = max(0, min(len(SPARK_CHARS) - 1, round(r * (len(SPARK_CHARS) - 1))))
            out.append(SPARK_CHARS[idx], style=rate_color(r))
    return out


WAITING_COLOR = "#ff9e64"
COST_COLOR = "#98c379"
# A session whose model requests wait in the gateway: its place in line (amber), or paused over its budget until
# someone resumes it (red: it needs a person, as a waiting session does).
HOLD_COLOR = "#e5c07b"
HOLD_PAUSED_COLOR = "#e06c75"


def hold_style(hold: str) -> str:
    """The colour of a session's `gateway_hold`: paused over its budget, or queued."""
    return HOLD_PAUSED_COLOR if hold.startswith("paused") else HOLD_COLOR


def compact_json(value: Any, limit: int = 400) -> str:
    """A value as one line of compact JSON (a tool's input), cut to `limit` characters. Still foreign text: show
    it through `plain`."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def needs_summary(needs: dict[str, Any] | None) -> str:
    """What a waiting session asks, in one line: "Bash {"command":"rm -rf build"}", or the question."""
    if not needs:
        return ""
    if needs.get("kind") == "question":
        return str(needs.get("text") or "a question")
    tool = str(needs.get("tool") or "a tool")
    return f"{tool} {compact_json(needs['input'], 200)}" if needs.get("input") is not None else tool


def cost_text(usd: float | None, width: int = 0) -> Text:
    """ "$0.0042", right-aligned in `width` cells; empty when there is no cost."""
    if usd is None:
        return Text(" " * width)
    return Text(money(usd).rjust(width), style=COST_COLOR)


def usage_text(tokens: int, usd: float | None, *, short: bool = False) -> Text:
    """ "45.2k tok $1.2700": the summed tokens and cost of a group; `short` ("45.2k $1.27") for a narrow column (a
    cron run's). Empty when there are none."""
    out = Text()
    if tokens:
        out.append(tokens_short(tokens) if short else f"{tokens_short(tokens)} tok", style=DIM)
    if usd is not None:
        if out:
            out.append(" ")
        out.append(money_short(usd) if short else money(usd), style=COST_COLOR)
    return out


def tokens_detail(tokens: TokenCounts | None) -> str:
    """ "12.3k in · 1.1k out · 40.0k cache read · 2.0k cache write" (the parts that are not zero)."""
    if tokens is None:
        return "-"
    parts = [
        f"{tokens_short(n)} {what}"
        for n, what in (
            (tokens.input, "in"),
            (tokens.output, "out"),
            (tokens.cache_read, "cache read"),
            (tokens.cache_write, "cache write"),
        )
        if n
    ]
    return " · ".join(parts) or "0"
