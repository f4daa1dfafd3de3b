"""The sweep preview: which sessions are stale and why (a dry run), then confirm to kill them."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from crewtui.formatting import duration
from crewtui.model import SweepItem
from crewtui.ui.format import DIM, plain
from crewtui.ui.screens.confirm import ConfirmScreen


def sweep_table(items: list[SweepItem]) -> Table:
    table = Table(box=None, expand=True, show_edge=False, pad_edge=False, header_style=f"bold {DIM}")
    table.add_column("session", ratio=3, no_wrap=True, overflow="ellipsis")
    table.add_column("silent for", justify="right", width=10, no_wrap=True)
    table.add_column("why", ratio=4, no_wrap=True, overflow="ellipsis", style=DIM)
    for item in items:
        table.add_row(plain(item.label, "bold"), Text(duration(item.idle_for), style="#d19a66"), plain(item.reason))
    return table


class SweepScreen(ConfirmScreen):
    """Dismisses with True to kill the listed sessions."""

    def __init__(self, items: list[SweepItem]) -> None:
        n = len(items)
        super().__init__(
            f"Sweep: {n} stale session{'s' if n != 1 else ''} (no output for too long)",
            sweep_table(items),
            confirm=f"Kill {n}",
            id="sweep-screen",
        )
        self.items = items
