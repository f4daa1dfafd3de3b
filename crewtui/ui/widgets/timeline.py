"""The cron/watchdog timeline: "now" in the middle, the same span either side, one lane per kind of mark.

Past marks (fires, closed runs with their rate, watchdogs with their outcome, retries, sweeps, kills) are
bright; future ones (next fires, armed watchdogs, run deadlines) are dim. Under the lanes, the latest marks
and the next ones are listed in words.

The span zooms (`+`/`-`) in steps from a minute to a day either side (SPANS). Until it is zoomed, it fits
itself to what there is to show (`fit_span`): a fresh crew's marks, seconds apart, get a minute either side
rather than one column of a two-hour axis, and the span widens as they age, up to an hour.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from crewtui.formatting import clock_time
from crewtui.model import SessionState, TimelineItem
from crewtui.ui.format import DIM, RATE_BAD, RATE_GOOD, RATE_MEDIUM, STATE_COLORS, rate_color

SPANS: tuple[float, ...] = (60.0, 300.0, 900.0, 3600.0, 6 * 3600.0, 86400.0)  # seconds either side of now
AUTO_SPANS = SPANS[: SPANS.index(3600.0) + 1]  # what an unzoomed timeline fits itself to: a minute to an hour
LANES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cron", ("cron",)),
    ("runs", ("run",)),
    ("watch", ("watchdog",)),
    ("other", ("retry", "sweep", "kill", "merge", "notify", "system")),
)
LANE_W = 6
ACCENT = "#56b6c2"
ORANGE = STATE_COLORS[SessionState.TIMED_OUT]


def mark_symbol(item: TimelineItem) -> tuple[str, str, int]:
    """(symbol, colour, priority): when two marks share a cell, the more alarming one is drawn."""
    if item.future:
        sym = {"cron": "◇", "run": "□", "watchdog": "○"}.get(item.kind, "·")
        return sym, DIM, 0
    o = item.outcome or ""
    if item.kind == "cron":
        return {"skipped": ("◇", RATE_MEDIUM, 3), "replaced": ("◆", ORANGE, 4)}.get(o, ("◆", RATE_GOOD, 1))
    if item.kind == "run":
        rate = None
        if o.endswith("%"):
            try:
                rate = float(o[:-1]) / 100
            except ValueError:
                rate = None
        return "■", rate_color(rate), 2 if rate is None or rate >= 0.8 else 5 if rate >= 0.5 else 6
    if item.kind == "watchdog":
        return {"retried": ("↻", RATE_MEDIUM, 4), "timed_out": ("◷", ORANGE, 5), "gave_up": ("✘", RATE_BAD, 6)}.get(
            o, ("○", RATE_GOOD, 1)
        )
    if item.kind == "kill":
        return "☠", STATE_COLORS[SessionState.KILLED] if o == "killed" else ORANGE, 4
    if item.kind == "retry":
        return "↻", RATE_MEDIUM, 3
    if item.kind == "sweep":
        return "✂", ACCENT, 3
    if item.kind == "merge":
        bad = ("⌥", RATE_BAD, 5)
        return {"merged": ("⌥", RATE_GOOD, 3), "conflict": bad, "check_failed": bad, "failed": bad}.get(
            o, ("⌥", ACCENT, 2)
        )
    if item.kind == "notify":
        return ("✉", RATE_BAD, 4) if o == "failed" else ("✉", ACCENT, 2)
    return "i", {"warning": RATE_MEDIUM, "error": RATE_BAD}.get(o, "#61afef"), 2


def span_label(span: float) -> str:
    """60 -> "1m", 900 -> "15m", 3600 -> "1h", 86400 -> "1d"."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if span >= size and span % size == 0:
            return f"{span // size:.0f}{unit}"
    return f"{span:.0f}s"


def fit_span(items: list[TimelineItem], now: float) -> float:
    """The smallest of AUTO_SPANS that shows the oldest past mark (with a little room), or, with nothing past,
    the next upcoming one; the widest of them when neither fits."""
    past = [m.ts for m in items if not m.future and m.ts <= now]
    reach = now - min(past) if past else min((m.ts - now for m in items if m.ts > now), default=None)
    if reach is None:
        return AUTO_SPANS[-1]
    return next((span for span in AUTO_SPANS if reach <= span * 0.9), AUTO_SPANS[-1])


def describe(item: TimelineItem, now: float) -> Text:
    sym, color, _ = mark_symbol(item)
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(clock_time(item.ts, seconds=True) + " ", style=DIM)
    text.append(sym + " ", style=color)
    if item.kind == "sweep":
        text.append(f"sweep by {item.name}", style=DIM)  # the name is who swept: user or cron
    else:
        text.append(f"{item.kind} ", style=DIM)
        text.append(item.name)
    if item.outcome:
        text.append(f" {item.outcome}", style=color)
    return text


class Timeline(Widget):
    """Renders marks on an axis centred on now, `span` seconds either side; fed by `timeline()` and by live
    events."""

    DEFAULT_CSS = "Timeline { height: auto; }"

    def __init__(self, now: Callable[[], float], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._now = now
        self.items: list[TimelineItem] = []
        self.live: list[TimelineItem] = []
        self.note: str | None = "loading the schedule…"
        self.span = AUTO_SPANS[-1]
        self.auto = True  # fit the span to the marks (fit_span) until the user zooms

    @property
    def title(self) -> str:
        """The pane's title: what the axis spans."""
        label = span_label(self.span)
        return f"Timeline · past {label} · next {label}"

    def window(self, now: float) -> tuple[float, float]:
        """The times to ask the runtime for: the span either side, or the widest one it may fit to."""
        half = AUTO_SPANS[-1] if self.auto else self.span
        return now - half, now + half

    def widen(self, step: int) -> bool:
        """Step +1 zooms out (the next longer span), -1 in; False, and nothing changes, past either end of
        SPANS. Either way the span is the user's from then on: it no longer fits itself to the marks."""
        i = SPANS.index(self.span) + step
        if not 0 <= i < len(SPANS):
            return False
        self.span = SPANS[i]
        self.auto = False
        self.refresh()
        return True

    def set_items(self, items: list[TimelineItem], fetched_at: float) -> None:
        self.note = None
        self.items = items
        # Live marks up to the fetch are in `items` now; keep only the newer ones.
        self.live = [m for m in self.live if m.ts > fetched_at]
        if self.auto:
            self.span = fit_span(items, fetched_at)
        self.refresh()

    def add_marks(self, marks: list[TimelineItem]) -> None:
        self.live.extend(marks)
        del self.live[:-500]
        self.refresh()

    def set_note(self, note: str) -> None:
        self.note = note
        self.refresh()

    def get_content_height(self, container, viewport, width: int) -> int:  # type: ignore[no-untyped-def]
        return 2 + len(LANES) + 4

    def render(self) -> Text:
        width = max(20, self.content_size.width)
        if self.note is not None:
            return Text(self.note, style=f"italic {DIM}")
        now = self._now()
        span = self.span
        start, end = now - span, now + span
        axis_w = width - LANE_W
        # An upcoming mark whose time has passed since the fetch is stale: it happened (and came back as a past
        # mark) or was called off; at a minute's span it would sit in "next" for seconds.
        marks = [m for m in self.items + self.live if start <= m.ts <= end and not (m.future and m.ts < now)]

        def col(ts: float) -> int:
            return max(0, min(axis_w - 1, round((ts - start) / (end - start) * (axis_w - 1))))

        now_x = col(now)
        lines: list[Text] = []

        # Time labels: at the ends and half way, "now" in the middle; with seconds below an hour's span.
        labels = [" "] * axis_w
        for k in range(-2, 3):
            t = now + k * span / 2
            s = "now" if k == 0 else clock_time(t, seconds=span < 3600)
            x = max(0, min(axis_w - len(s), col(t) - len(s) // 2))
            labels[x : x + len(s)] = list(s)
        head = Text(" " * LANE_W, no_wrap=True)
        head.append("".join(labels), style=DIM)
        head.stylize(
            Style(color=ACCENT, bold=True),
            LANE_W + max(0, min(axis_w - 3, now_x - 1)),
            LANE_W + max(0, min(axis_w - 3, now_x - 1)) + 3,
        )
        lines.append(head)

        ruler = Text(" " * LANE_W, no_wrap=True)
        ticks = {col(now + k * span / 4) for k in range(-4, 5)}
        for x in range(axis_w):
            if x == now_x:
                ruler.append("┃", style=f"bold {ACCENT}")
            else:
                ruler.append("┼" if x in ticks else "─", style=DIM)
        lines.append(ruler)

        for lane, kinds in LANES:
            cells: list[tuple[str, str, int]] = [("·" if x in ticks else " ", DIM, -1) for x in range(axis_w)]
            cells[now_x] = ("│", ACCENT, -1)
            for m in marks:
                if m.kind not in kinds:
                    continue
                sym, color, prio = mark_symbol(m)
                x = col(m.ts)
                if prio >= cells[x][2]:
                    cells[x] = (sym, color, prio)
            row = Text(lane.ljust(LANE_W), style=DIM, no_wrap=True)
            for sym, color, _ in cells:
                row.append(sym, style=color)
            lines.append(row)

        past = sorted((m for m in marks if not m.future), key=lambda m: m.ts, reverse=True)
        future = sorted((m for m in marks if m.future), key=lambda m: m.ts)
        half = (width - 1) // 2
        rows = max(1, self.size.height - len(lines) - 1) if self.size.height else 3
        title = Text(no_wrap=True)
        title.append("latest".ljust(half + 1), style=f"bold {DIM}")
        title.append("next", style=f"bold {DIM}")
        lines.append(title)
        for i in range(rows):
            row = Text(no_wrap=True, overflow="crop")
            left = describe(past[i], now) if i < len(past) else Text("" if past or i else "nothing yet", style=DIM)
            left.truncate(half, overflow="ellipsis", pad=True)
            row.append_text(left)
            row.append(" ")
            if i < len(future):
                right = describe(future[i], now)
            else:
                right = Text("" if future or i else "nothing scheduled", style=DIM)
            right.truncate(width - half - 1, overflow="ellipsis")
            row.append_text(right)
            lines.append(row)
        return Text("\n", no_wrap=True).join(lines)
