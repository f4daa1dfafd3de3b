"""The cron/watchdog timeline: the past hour and the next, "now" in the middle, one lane per kind of mark.

Past marks (fires, closed runs with their rate, watchdogs with their outcome, retries, sweeps, kills) are
bright; future ones (next fires, armed watchdogs, run deadlines) are dim. Under the lanes, the latest marks
and the next ones are listed in words.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from crewtui.formatting import clock_time
from crewtui.model import SessionState, TimelineItem
from crewtui.ui.format import DIM, RATE_BAD, RATE_GOOD, RATE_MEDIUM, STATE_COLORS, rate_color

SPAN = 3600.0  # seconds each side of now
LANES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("cron", ("cron",)),
    ("runs", ("run",)),
    ("watch", ("watchdog",)),
    ("other", ("retry", "sweep", "kill", "system")),
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
    return "i", {"warning": RATE_MEDIUM, "error": RATE_BAD}.get(o, "#61afef"), 2


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
    """Renders marks on a two-hour axis centred on now; fed by `timeline()` and by live events."""

    DEFAULT_CSS = "Timeline { height: auto; }"

    def __init__(self, now: Callable[[], float], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._now = now
        self.items: list[TimelineItem] = []
        self.live: list[TimelineItem] = []
        self.note: str | None = "loading the schedule…"

    def set_items(self, items: list[TimelineItem], fetched_at: float) -> None:
        self.note = None
        self.items = items
        # Live marks up to the fetch are in `items` now; keep only the newer ones.
        self.live = [m for m in self.live if m.ts > fetched_at]
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
        start, end = now - SPAN, now + SPAN
        axis_w = width - LANE_W
        marks = [m for m in self.items + self.live if start <= m.ts <= end]

        def col(ts: float) -> int:
            return max(0, min(axis_w - 1, round((ts - start) / (end - start) * (axis_w - 1))))

        now_x = col(now)
        lines: list[Text] = []

        # Time labels: every 30 minutes, "now" in the middle.
        labels = [" "] * axis_w
        for k in range(-2, 3):
            t = now + k * 1800
            s = "now" if k == 0 else clock_time(t, seconds=False)
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
        ticks = {col(now + k * 900) for k in range(-4, 5)}
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
