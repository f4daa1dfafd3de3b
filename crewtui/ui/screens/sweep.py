"""The sweep preview: which sessions are stale and which worktrees of ended sessions go, or stay because they hold
work not merged, and why (a dry run); then confirm to kill and remove."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from crewtui.formatting import duration
from crewtui.model import SweepItem
from crewtui.ui.format import DIM, plain
from crewtui.ui.screens.confirm import ConfirmScreen

ACTIONS = {"kill": ("kill", "#e06c75"), "remove": ("remove worktree", "#d19a66"), "keep": ("keep worktree", DIM)}


def sweep_counts(items: list[SweepItem]) -> tuple[int, int, int]:
    """(stale sessions to kill, worktrees to remove, worktrees kept)."""
    return tuple(sum(1 for i in items if i.action == a) for a in ("kill", "remove", "keep"))  # type: ignore[return-value]


def _n(count: int, what: str) -> str:
    return f"{count} {what}{'s' if count != 1 else ''}"


def sweep_title(items: list[SweepItem]) -> str:
    kill, remove, keep = sweep_counts(items)
    parts = [f"{_n(kill, 'stale session')} (no output for too long)"] if kill else []
    parts += [f"{_n(remove, 'worktree')} to remove (ended; their work merged, or none)"] if remove else []
    parts += [f"{_n(keep, 'worktree')} kept (work not merged)"] if keep else []
    return "Sweep: " + "; ".join(parts)


def sweep_table(items: list[SweepItem]) -> Table:
    table = Table(box=None, expand=True, show_edge=False, pad_edge=False, header_style=f"bold {DIM}")
    widest = max((len(i.label) for i in items), default=7)
    table.add_column("session", width=min(max(widest, 7), 32), no_wrap=True, overflow="ellipsis")
    table.add_column("idle", justify="right", width=5, no_wrap=True)
    table.add_column("does", width=15, no_wrap=True)
    table.add_column("why", ratio=1, style=DIM)  # wrapped: what to do about a kept worktree is at its end
    for item in items:
        words, colour = ACTIONS[item.action]
        table.add_row(
            plain(item.label, "bold"),
            Text(duration(item.idle_for), style="#d19a66"),
            Text(words, style=colour),
            plain(item.reason),
        )
    return table


class SweepScreen(ConfirmScreen):
    """Dismisses with True to kill the stale sessions and remove the merged worktrees listed."""

    def __init__(self, items: list[SweepItem]) -> None:
        kill, remove, _ = sweep_counts(items)
        does = [f"kill {kill}"] if kill else []
        does += [f"remove {remove}"] if remove else []
        super().__init__(
            sweep_title(items), sweep_table(items), confirm=" and ".join(does).capitalize(), id="sweep-screen"
        )
        self.items = items
