"""How the dashboard draws states, rates, roll-ups, bars and sparklines: one place, so every pane agrees.

Pure functions returning Rich `Text`, and the colours they use; no widget code here. The plain strings they
build on (ages, times, durations, percentages) are `crewtui.formatting`'s, shared with `crewtui ctl`. Symbols
are all one cell wide in every common terminal font (no emoji presentation), so columns stay aligned.

Foreign text (what agents print, labels, reasons, names, what a user typed) reaches a widget only through
`plain(...)`: a `Text`, so it is never read as markup, cleaned of terminal escapes by `crewtui.text.clean`.
"""

from __future__ import annotations

from rich.text import Text

from crewtui.formatting import percent
from crewtui.model import STATE_SYMBOLS, SessionState, TimelineItem
from crewtui.text import clean

# One Dark-like colours: distinct on dark and light backgrounds, and failures stand out from the calm ones.
STATE_COLORS: dict[SessionState, str] = {
    SessionState.PENDING: "#e5c07b",
    SessionState.RUNNING: "#61afef",
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
