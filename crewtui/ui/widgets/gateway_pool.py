"""One model-gateway pool in the gateway view: its rates against its limits with sparklines of the last ten
minutes, its line (in flight, cap, queue), its pause or hold, today's use and spend against the budget.

`PoolBlock.show(pool)` redraws only what changed (the view refreshes every second). Pool names, upstream URLs,
pause reasons, holds and errors come from the runtime and from upstream servers: foreign text, shown through
`plain`, never as markup.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from crewtui.formatting import duration, money, tokens_short
from crewtui.spend import GatewayPoolInfo
from crewtui.ui.format import COST_COLOR, DIM, RATE_BAD, RATE_GOOD, RATE_MEDIUM, bar, plain

NAME_W = 8  # the facts' names, right-aligned, as in the detail pane
BAR_W = 10
PAUSED_STYLE = "bold #e06c75"
HELD_STYLE = "bold #d19a66"
BIN_SECONDS = 10  # the series are one bin per 10 s, oldest first


def share_color(share: float | None) -> str:
    """How close to a limit: green, amber from 70%, red from 90% (the reverse of a completion rate)."""
    if share is None:
        return DIM
    if share >= 0.9:
        return RATE_BAD
    if share >= 0.7:
        return RATE_MEDIUM
    return RATE_GOOD


def _per_min(n: float) -> str:
    """A limit per minute in a few characters: 50, 400k, 1.5M (round thousands without a decimal)."""
    if n >= 1000 and n % 1000 == 0 and n < 1_000_000:
        return f"{int(n) // 1000}k"
    return tokens_short(int(n)) if n >= 1000 else f"{n:g}"


def facts(rows: Sequence[tuple[str, Text]]) -> Table:
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(style=DIM, justify="right", no_wrap=True, width=NAME_W)
    grid.add_column(ratio=1, overflow="ellipsis", no_wrap=True)
    for name, value in rows:
        grid.add_row(name, value)
    return grid


def requests_rows(p: GatewayPoolInfo) -> list[tuple[str, Text]]:
    """ "42/min of 50 · 84%", and the busiest 10 s of the series."""
    rate = Text(f"{p.requests_last_minute:,}/min", style="bold")
    if p.requests_limit is None:
        rate.append(" · no limit", style=DIM)
    else:
        share = p.requests_last_minute / p.requests_limit if p.requests_limit > 0 else None
        rate.append(f" of {_per_min(p.requests_limit)}", style="")
        if share is not None:
            rate.append(f" · {share:.0%}", style=share_color(share))
    return [("requests", rate), ("", _peak(p.requests_series, "requests"))]


def tokens_rows(p: GatewayPoolInfo) -> list[tuple[str, Text]]:
    """ "182.4k/min · limits 400.0k in, 80.0k out", and the busiest 10 s of the series."""
    rate = Text(f"{tokens_short(p.tokens_last_minute)}/min", style="bold")
    limits = [
        f"{_per_min(n)} {what}"
        for n, what in ((p.input_tokens_limit, "in"), (p.output_tokens_limit, "out"))
        if n is not None
    ]
    rate.append(f" · limits {', '.join(limits)}" if limits else " · no limit", style=DIM)
    return [("tokens", rate), ("", _peak(p.tokens_series, "tokens"))]


def _peak(series: Sequence[int], what: str) -> Text:
    if not series or not any(series):
        return Text(f"none in the last {len(series) * BIN_SECONDS // 60 or 10} min", style=DIM)
    minutes = len(series) * BIN_SECONDS // 60
    peak = max(series)
    shown = tokens_short(peak) if what == "tokens" else f"{peak:,}"
    return Text(f"peak {shown} in {BIN_SECONDS} s · last {minutes} min →", style=DIM)


def line_text(p: GatewayPoolInfo) -> Text:
    """ "in flight 4 of 4 (learned from a 429) · queue 3 · oldest waits 12s"."""
    out = Text(f"in flight {p.in_flight}")
    if p.cap is None:
        out.append(" · no cap", style=DIM)
    else:
        out.append(f" of {p.cap}")
        if p.learned_cap is not None and p.learned_cap == p.cap:
            out.append(" (learned from a 429)", style=RATE_MEDIUM)
    out.append(" · ", style=DIM)
    if p.queue:
        out.append(f"queue {p.queue:,}", style=f"bold {RATE_MEDIUM}")
        out.append(f" · oldest waits {duration(p.oldest_wait)}")
    else:
        out.append("queue empty", style=DIM)
    return out


def today_text(p: GatewayPoolInfo) -> Text:
    """ "1,204 requests · 2.1M tokens · 429s 17 absorbed, 2 passed · 0 errors · 1 unknown"."""
    t = p.today
    out = Text(f"{t.requests:,} requests · {tokens_short(t.tokens.total)} tokens")
    out.append(" · 429s ", style=DIM)
    out.append(f"{t.absorbed:,} absorbed", style=RATE_GOOD if t.absorbed else "")
    out.append(", ", style=DIM)
    out.append(f"{t.passed:,} passed", style=RATE_BAD if t.passed else "")
    out.append(" · ", style=DIM)
    out.append(f"{t.errors:,} error{'' if t.errors == 1 else 's'}", style=RATE_BAD if t.errors else "")
    out.append(" · ", style=DIM)
    out.append(f"{t.unknown:,} unknown", style=RATE_MEDIUM if t.unknown else "")
    return out


def spend_text(p: GatewayPoolInfo) -> Text:
    """ "$8.42 of $10.00 a day ████████░░ 84%", or "$8.42 · no budget"."""
    cost = p.today.cost_usd
    out = Text(money(cost), style=f"bold {COST_COLOR}")
    if p.budget_per_day is None:
        out.append(" · no budget", style=DIM)
        return out
    out.append(f" of {money(p.budget_per_day)} a day  ")
    share = cost / p.budget_per_day if p.budget_per_day > 0 else 1.0
    color = share_color(share)
    out.append_text(bar(min(1000, round(share * 1000)), 1000, BAR_W, color))
    out.append(f" {share:.0%}", style=color)
    return out


def state_rows(p: GatewayPoolInfo) -> list[tuple[str, Text]]:
    """The line, its pause and hold, today's use and spend, the last error."""
    rows: list[tuple[str, Text]] = [("line", line_text(p))]
    if p.paused_for > 0:
        paused = Text(f"{duration(p.paused_for)} more", style=PAUSED_STYLE)
        if p.pause_reason:
            paused.append(": ")
            paused.append_text(plain(p.pause_reason))
        rows.append(("paused", paused))
    if p.held:
        held = plain(p.held, HELD_STYLE)
        held.append_text(plain(f" · crewtui ctl resume --pool {p.name}", DIM))
        rows.append(("held", held))
    rows.append(("today", today_text(p)))
    rows.append(("spend", spend_text(p)))
    if p.last_error:
        rows.append(("error", plain(p.last_error, RATE_BAD)))
    return rows


def head_text(p: GatewayPoolInfo) -> Text:
    out = plain(p.provider, "bold")
    out.append(" → ", style=DIM)
    out.append_text(plain(p.upstream))
    return out


class PoolBlock(Vertical):
    """One pool: a bordered block titled with its name."""

    def __init__(self, pool: GatewayPoolInfo, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="gateway-pool")
        self.pool = pool
        self._shown: dict[str, object] = {}

    def compose(self) -> ComposeResult:
        yield Static("", classes="gateway-head")
        with Horizontal(classes="gateway-rate"):
            yield Static("", classes="gateway-rate-text -requests")
            yield Sparkline([], classes="-requests")
        with Horizontal(classes="gateway-rate"):
            yield Static("", classes="gateway-rate-text -tokens")
            yield Sparkline([], classes="-tokens")
        yield Static("", classes="gateway-facts")

    def on_mount(self) -> None:
        self.show(self.pool)

    def _changed(self, what: str, value: object) -> bool:
        """Whether a part shows something else now: an update re-lays out the dialog, so only those are redrawn."""
        if self._shown.get(what) == value:
            return False
        self._shown[what] = value
        return True

    def show(self, p: GatewayPoolInfo) -> None:
        self.pool = p
        self.border_title = plain(p.name, "bold")
        head = head_text(p)
        if self._changed("head", str(head)):
            self.query_one(".gateway-head", Static).update(head)
        for what, rows, series in (
            ("requests", requests_rows(p), p.requests_series),
            ("tokens", tokens_rows(p), p.tokens_series),
        ):
            if self._changed(what, tuple(str(v) for _, v in rows)):
                self.query_one(f".gateway-rate-text.-{what}", Static).update(facts(rows))
            if self._changed(f"{what}-series", list(series)):
                self.query_one(f"Sparkline.-{what}", Sparkline).data = list(series)
        rows = state_rows(p)
        if self._changed("facts", tuple(str(v) for _, v in rows)):
            self.query_one(".gateway-facts", Static).update(facts(rows))
