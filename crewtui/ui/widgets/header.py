"""The one-line header: which runtime, how many sessions in which state, how many need you (waiting on a person),
the overall rate, what the crew spent today, the filters.

The counts are of the sessions the dashboard holds (the live ones, a recent window of ended ones and what was
opened of older history); what is older and not loaded follows them ("· 998,500 older"), never mixed in.

The crew's name, the node names and the filter the user typed are foreign text: shown cleaned, never markup.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from crewtui.api import RuntimeInfo
from crewtui.formatting import clock_time, money
from crewtui.model import STATE_SYMBOLS, SessionState
from crewtui.text import clean
from crewtui.ui.book import completion_rate
from crewtui.ui.format import DIM, STATE_COLORS, STATE_ORDER, rate_text

SEP = ("  │  ", DIM)


class StatusHeader(Static):
    _shown: Text | None = None

    def show(
        self,
        *,
        info: RuntimeInfo | None,
        attached: bool,
        connected: bool,
        counts: dict[SessionState, int],
        nodes: dict[str, int] | None = None,
        marked: int,
        filters: str,
        now: float,
        older: str = "",
        waiting: int = 0,
        agents: bool = False,
        cost_today: float | None = None,
    ) -> None:
        # Most telling first: a narrow terminal cuts the end of the line.
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(" crewtui ", style="bold #282c34 on #56b6c2")
        if not connected:
            t.append(" disconnected ", style="bold #282c34 on #e06c75")
        t.append(" ")
        total = sum(counts.values())
        t.append(f"{total:,} {'loaded' if older else 'sessions'}", style="bold")
        for state in STATE_ORDER:
            n = counts.get(state, 0)
            if n:
                t.append(f" {STATE_SYMBOLS[state]}{n}", style=STATE_COLORS[state])
        if older:
            t.append(f" · {older}", style=DIM)
        if waiting or agents:
            # Sessions waiting on a person: said on its own, loud while there are any.
            t.append(*SEP)
            if waiting:
                t.append(
                    f" {STATE_SYMBOLS[SessionState.WAITING]} {waiting:,} need you ", style="bold #282c34 on #ff9e64"
                )
            else:
                t.append("0 need you", style=DIM)
        t.append(*SEP)
        t.append("done ", style=DIM)
        t.append_text(rate_text(completion_rate(counts), 0))
        if agents or cost_today is not None:
            t.append(*SEP)
            t.append("today ", style=DIM)
            t.append(money(cost_today or 0.0), style="bold #98c379")
        if nodes:
            # Live sessions per node, busiest first (the Ray backend); a long list is cut by the ellipsis.
            t.append(*SEP)
            t.append(f"{len(nodes)} node{'s' if len(nodes) != 1 else ''} ", style=DIM)
            t.append(
                " · ".join(f"{clean(name)} {n}" for name, n in sorted(nodes.items(), key=lambda kv: (-kv[1], kv[0])))
            )
        if marked:
            t.append(*SEP)
            t.append(f"● {marked} marked", style="bold #e5c07b")
        if filters:
            t.append(*SEP)
            t.append("filter ", style=DIM)
            t.append(clean(filters), style="bold #e5c07b")
        t.append(*SEP)
        if info is not None:
            t.append(clean(info.crew), style="bold")
            mode = "attached to" if attached else "embedded"
            t.append(f" · {mode} pid {info.pid}", style=DIM)
        else:
            t.append("connecting…", style=DIM)
        t.append(*SEP)
        t.append(clock_time(now), style=DIM)
        if t != self._shown:  # an update re-lays out the screen: skip it when nothing changed
            self._shown = t
            self.update(t)
