"""Best of N side by side (`b`): the tries of one task (`crewtui ctl spawn --best-of N`), one column each.

Per try (widgets/tries.py): its state and how long it ran, tokens and cost, where its merge stands (the check's
result: merged, or check failed with the last lines of its output), and what it changed: files, insertions,
deletions, commits, its biggest files with their counts. The best one is not chosen for the user. ←→ choose a try
(the main screen's cursor follows, so its keys act on the same one), `m` merges it (the main screen's `m`: the same
runtime call, the same one-line refusals; merging one discards the others), enter (or `c`) closes the view and opens
that try's Changes, escape / `q` / `b` close it. On a terminal too narrow for a column each (80 columns and three
tries), the tries are stacked, the chosen one with its files. It reads the App's book of sessions, which the main
screen keeps current from the runtime's events, and draws again when what it shows has moved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import ScrollableContainer, Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from crewtui.model import Session
from crewtui.ui.book import SessionBook
from crewtui.ui.diffs import keys_text
from crewtui.ui.format import DIM, plain
from crewtui.ui.widgets.session_tree import RowRef
from crewtui.ui.widgets.tries import Line, TryCard, TryColumn, note_lines, try_lines, try_number

REFRESH = 0.25  # seconds between looks at the book (it is patched by events ten times a second)
MIN_COLUMN = 30  # cells a try needs to be a column; below, and on a narrow terminal, the tries are stacked
WIDE = 110  # as the main screen's: below this the terminal is narrow
CHROME = 8  # the dialog's border and padding
FILES = 6  # files listed per column (stacked: the chosen try's)
FILES_STACKED = 5
STACKED_CHROME = 13  # rows of a stacked view besides the tries' cards: dialog, title, summary, keys, card's own rows
KEYS = [("←→", "choose a try"), ("m", "merge it"), ("enter", "its changes"), ("esc", "close")]


def tries_of(book: SessionBook, group: str) -> list[Session]:
    """The tries of a best-of group that the dashboard has loaded, LABEL-1 first."""
    return sorted((s for s in book.sessions.values() if s.best_of == group), key=try_number)


def pick_group(book: SessionBook, ref: RowRef | None) -> tuple[str, str | None] | str:
    """(group, the try to start on) for the selected row: a try, or a group row whose tries are one group; else
    why not, in one line."""
    hint = "b compares the tries of a task spawned with best of N"
    if ref is None or ref.kind == "older":
        return f"select a try of a best-of group: {hint}"
    if ref.kind == "session":
        s = book.sessions.get(ref.id)
        if s is None:
            return f"select a try of a best-of group: {hint}"
        if s.best_of is None:
            return f"{s.label} is not one of a best-of group: {hint}"
        return s.best_of, s.key
    groups = {s.best_of for s in book.members(ref.id, visible_only=False)}
    if len(groups) == 1 and None not in groups:
        return str(groups.pop()), None
    return f"group {ref.id} is not one best-of group: select one of its tries ({hint})"


class TryRow(ScrollableContainer, can_focus=False):
    """The columns (or the stacked blocks); the screen's keys move between them, so it takes no focus."""


class CompareScreen(ModalScreen["str | None"]):
    """Dismisses with the key of the try whose Changes to open (enter), or None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,b", "close", "Close", id="compare-close"),
        Binding("left,up", "move(-1)", "Previous try", show=False),
        Binding("right,down", "move(1)", "Next try", show=False),
        Binding("m", "merge", "Merge", id="compare-merge"),
        Binding("enter,c", "changes", "Changes", id="compare-changes"),
    ]

    def __init__(
        self,
        book: SessionBook,
        group: str,
        now: Callable[[], float],
        *,
        merge: Callable[[Session], None],
        select: Callable[[str], object],
        start: str | None = None,
    ) -> None:
        super().__init__()
        self.book = book
        self.group = group
        self._now = now
        self._merge = merge
        self._select = select
        self.selected = start  # the key of the try chosen
        self.stacked = False
        self._keys: list[str] = []  # the tries shown, in order
        self._shown: object = None
        self._drawing = asyncio.Lock()

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="compare-dialog"):
            yield Label("", classes="dialog-title", id="compare-title")
            yield Static("", id="compare-summary")
            yield TryRow(id="compare-tries")
            yield Static(keys_text(KEYS), id="compare-keys")

    async def on_mount(self) -> None:
        await self.refresh_tries()
        self.set_interval(REFRESH, self.refresh_tries, name="compare")

    @property
    def tries(self) -> list[Session]:
        return tries_of(self.book, self.group)

    def current(self) -> Session | None:
        return self.book.sessions.get(self.selected) if self.selected is not None else None

    async def refresh_tries(self) -> None:
        """Draw the tries again when any of them (or the terminal's size, or the choice) moved; mostly nothing did."""
        async with self._drawing:  # the timer and a key may both draw: one at a time (columns are mounted here)
            if self.is_attached:
                await self._refresh_tries()

    async def _refresh_tries(self) -> None:
        tries = self.tries
        if tries and self.selected not in {s.key for s in tries}:
            self.selected = tries[0].key
        now = self._now()
        width, height = self.app.size
        stacked = width < WIDE and (width - CHROME) // max(1, len(tries)) < MIN_COLUMN
        live = int(now) if any(s.state.live for s in tries) else 0  # a running try's time moves every second
        signature = (width, height, self.selected, live, [self._signature(s) for s in tries])
        if signature == self._shown:
            return
        self._shown = signature
        self.stacked = stacked
        self.set_class(stacked, "-stacked")
        row = self.query_one("#compare-tries", TryRow)
        if not stacked:  # side by side on a short terminal: the columns scroll, the keys stay in view
            row.styles.max_height = max(8, min(32, height - 12))
        else:
            row.styles.max_height = None  # the stylesheet's: all the dialog leaves
        keys = [s.key for s in tries]
        if keys != self._keys:  # a try appeared (spawned since): build the columns again
            self._keys = keys
            await row.remove_children()
            await row.mount_all(TryColumn(k) for k in keys)
        self._draw(tries, now)
        chosen = next((c for c in row.query(TryColumn) if c.key == self.selected), None)
        if chosen is not None:
            row.scroll_to_widget(chosen, animate=False, immediate=True)

    @staticmethod
    def _signature(s: Session) -> tuple[object, ...]:
        tokens = s.tokens.total if s.tokens is not None else None
        facts = (s.state, s.started_at, s.ended_at, s.merge, s.merge_note, repr(s.changes), tokens, s.cost_usd)
        return (s.key, s.label, *facts)

    def _draw(self, tries: list[Session], now: float) -> None:
        n = len(tries)
        title = Text(f"Best of {n} · " if n else "Best of N · ")
        title.append_text(plain(self.group, "bold"))
        self.query_one("#compare-title", Label).update(title)
        self.query_one("#compare-summary", Static).update(self._summary(tries))
        # Side by side, every column keeps as many rows for its merge note as the longest has: they line up.
        notes = max((len(note_lines(s)) for s in tries), default=0)
        cards: dict[str, list[Line]] = {}
        for s in tries:
            if self.stacked:
                own = len(note_lines(s))
                # As many files as the terminal's rows leave beside the other tries' two lines each.
                files = max(2, min(FILES_STACKED, self.app.size.height - STACKED_CHROME - 2 * (n - 1) - own))
                compact = s.key != self.selected
                cards[s.key] = try_lines(s, now, files=files, notes=own, label=True, compact=compact)
            else:
                cards[s.key] = try_lines(s, now, files=FILES, notes=notes)
        height = 0 if self.stacked else max((len(c) for c in cards.values()), default=0)
        labels = {s.key: s.label for s in tries}
        for column in self.query(TryColumn):
            if column.key not in cards:
                continue
            heading = None if self.stacked else plain(labels[column.key], "bold")
            column.show(TryCard(cards[column.key], height), title=heading, selected=column.key == self.selected)

    def _summary(self, tries: list[Session]) -> Text:
        """What the group is: its task, and where it stands (one merged: the others are discarded)."""
        if not tries:
            return Text(f"no try of {self.group} is loaded any more", style=f"italic {DIM}")
        out = Text()
        task = next((s.task for s in tries if s.task), None)
        if task:
            out.append("task ", style=DIM)
            out.append_text(plain(task))
            out.append("\n")
        merged = next((s for s in tries if s.merge == "merged"), None)
        if merged is not None:
            out.append_text(plain(merged.label, "bold"))
            out.append(" was merged: the other tries are discarded (one still running, when it ends)", style=DIM)
        else:
            out.append(f"the same task in {len(tries)} worktrees: merging one discards the others", style=DIM)
        out.no_wrap = True
        out.overflow = "ellipsis"
        return out

    # ------------------------------------------------------------------------------------ keys

    async def action_move(self, step: int) -> None:
        keys = [s.key for s in self.tries]
        if not keys:
            return
        at = keys.index(self.selected) if self.selected in keys else 0
        self.selected = keys[max(0, min(len(keys) - 1, at + step))]
        self._select(self.selected)  # the main screen's cursor follows: its keys act on the same try
        await self.refresh_tries()

    def action_merge(self) -> None:
        s = self.current()
        if s is not None:
            self._merge(s)

    def action_changes(self) -> None:
        s = self.current()
        if s is not None:
            self.dismiss(s.key)

    def action_close(self) -> None:
        self.dismiss(None)
