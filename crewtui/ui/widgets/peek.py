"""Peek: a live, read-only render of a terminal session's screen (`tty = true`) in the right pane.

The runtime plays the session's output onto a terminal emulator (crewtui/runtime/peek.py) and `peek` returns what
its screen shows now: lines of text, the size, the cursor. While a terminal session is selected and the pane is
on view, this widget asks twice a second (never two reads at once) and draws the screen as plain text in a box
of the screen's size, the cursor's cell highlighted; a pane smaller than the screen clips it, scrolls to keep the
cursor in view and says how much it shows ("showing 54x9 of 80x24"). An ended session's last screen is read once
and said to be ended. A failed read is said in the pane's first line, never as a toast (it would come twice a
second). Nothing is asked while no terminal session is selected or the pane is hidden.

The screen is foreign text: each line goes through `crewtui.text.clean` (the emulator has already played the
escape sequences; whatever is left is shown, never interpreted) and into a `Text`, never markup.
"""

from __future__ import annotations

import logging
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import ScrollableContainer, Vertical
from textual.geometry import Region
from textual.widgets import Static

from crewtui.api import RuntimeAPI
from crewtui.errors import CrewError
from crewtui.model import Session, TerminalScreen
from crewtui.text import clean
from crewtui.ui.format import DIM, plain

log = logging.getLogger("crewtui.ui")

POLL_EVERY = 0.5  # seconds between two reads of the selected session's screen
CURSOR_STYLE = "reverse"
LIVE_STYLE = "#98c379"
ENDED_STYLE = "#9da5b4"
ERROR_STYLE = "#e06c75"


def screen_text(screen: TerminalScreen) -> Text:
    """The screen's lines as one `Text` of `rows` lines, the cursor's cell reversed while the session lives."""
    out = Text(no_wrap=True, overflow="crop", end="")
    row, col = screen.cursor
    for y in range(screen.rows):
        if y:
            out.append("\n")
        line = clean(screen.lines[y]) if y < len(screen.lines) else ""
        if not screen.live or y != row:
            out.append(line)
            continue
        x = 0  # the cell each character starts at (a wide character takes two)
        for i, ch in enumerate(line):
            width = cell_len(ch)
            if x + width > col:
                out.append(line[:i])
                out.append(ch, style=CURSOR_STYLE)
                out.append(line[i + 1 :])
                break
            x += width
        else:
            out.append(line + " " * (col - x))
            out.append(" ", style=CURSOR_STYLE)
    return out


def shown_span(offset: int, viewport: int, size: int) -> int:
    """How many of a screen's `size` cells a viewport of `viewport` cells, scrolled to `offset`, shows (the box has
    a border cell either side of the screen)."""
    return max(0, min(offset + viewport, size + 1) - max(offset, 1))


class TerminalPeek(Vertical):
    """The selected terminal session's screen, read again twice a second while it is on view."""

    def __init__(self, runtime: RuntimeAPI, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.runtime = runtime
        self.key: str | None = None  # the session shown
        self.shown: TerminalScreen | None = None  # its screen, as read last
        self.error: str | None = None  # the last read failed: why
        self.reads = 0  # reads answered (tests)
        self._timer: Any = None
        self._reading = 0  # the read under way (its number), 0: none
        self._count = 0
        self._cursor: tuple[int, int] | None = None
        self._box_size: tuple[int, int] | None = None  # the box's, in cells: (columns, rows) of the screen

    def compose(self) -> ComposeResult:
        yield Static("", id="peek-note")
        with ScrollableContainer(id="peek-box"):
            yield Static("", id="peek-screen")

    @property
    def polling(self) -> bool:
        return self._timer is not None

    def show(self, s: Session | None) -> None:
        """Follow `s` (None, or a session that is not a terminal session: stop reading). Called on every refresh of
        the selection: cheap when nothing changed."""
        if s is None or not s.tty:
            self.key = None
            self._stop()
            return
        new = s.key != self.key
        if new:
            self.key, self.shown, self.error, self._cursor, self._reading = s.key, None, None, None, 0
            self._note(Text("reading its screen…", style=DIM))
            self.query_one("#peek-screen", Static).update("")
        # An ended session's last screen is read once; one that lives again (a retry) is read again.
        if self._timer is None and (new or s.state.live):
            self._timer = self.set_interval(POLL_EVERY, self._tick, name="peek")
            self.call_after_refresh(self._tick)  # once the pane is laid out (it may have just come into view)

    def _stop(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def on_unmount(self) -> None:
        self._stop()

    def _on_view(self) -> bool:
        # A hidden pane (the Changes view, a narrow terminal's other tab) has no region on the screen.
        return self.display and self.region.area > 0

    def _tick(self) -> None:
        if self.key is None or self._reading or not self._on_view():
            return
        self._count += 1
        self._reading = self._count
        self._read(self.key, self._count)

    @work(group="peek", exit_on_error=False)
    async def _read(self, key: str, number: int) -> None:
        error: str | None = None
        screen: TerminalScreen | None = None
        try:
            screen = await self.runtime.peek(key)
        except CrewError as exc:
            error = exc.message
        except Exception as exc:  # a broken connection: said in the pane, the trace in the log
            log.exception("peeking at %s failed", key)
            error = f"{type(exc).__name__}: {exc}"
        finally:
            if self._reading == number:
                self._reading = 0
        if key != self.key or not self.is_attached:
            return
        self.reads += 1
        if screen is None:
            self.error = error
            note = Text("could not read its screen: ", style=ERROR_STYLE)
            note.append_text(plain(error or "no answer"))
            self._note(note)
            return
        self.error = None
        self.draw(screen)
        if not screen.live:
            self._stop()  # its last screen: it will not change

    def draw(self, screen: TerminalScreen) -> None:
        """Show `screen`: the box sized to it, the cursor kept in view when it moved, the note saying how much of it
        the pane shows."""
        first = self.shown is None
        self.shown = screen
        view = self.query_one("#peek-screen", Static)
        if (screen.cols, screen.rows) != self._box_size:
            self._box_size = (screen.cols, screen.rows)
            view.styles.width = screen.cols + 2  # the border's cells either side
            view.styles.height = screen.rows + 2
        view.update(screen_text(screen))
        cursor = screen.cursor
        if screen.live and (first or cursor != self._cursor):
            self._cursor = cursor
            self.call_after_refresh(self._follow_cursor)
        self.call_after_refresh(self._say_size)
        self._say_size()

    def _follow_cursor(self) -> None:
        if self.shown is None or not self.is_attached:
            return
        cursor = self.shown.cursor
        box = self.query_one("#peek-box", ScrollableContainer)
        box.scroll_to_region(Region(cursor[1] + 1, cursor[0] + 1, 1, 1), animate=False, immediate=True)

    def on_resize(self) -> None:
        """A pane that was laid out again (the window, `]`, the first layout settling after a read came) keeps a
        live screen's cursor in view: the scroll made for the old size may hide it in the new one."""
        if self.shown is not None and self.shown.live:
            self.call_after_refresh(self._follow_cursor)
        self.call_after_refresh(self._say_size)

    def _say_size(self) -> None:
        screen = self.shown
        if screen is None or self.error is not None or not self.is_attached:
            return
        box = self.query_one("#peek-box", ScrollableContainer)
        width, height = box.scrollable_content_region.size
        cols = shown_span(round(box.scroll_x), width, screen.cols)
        rows = shown_span(round(box.scroll_y), height, screen.rows)
        size = f"{screen.cols}x{screen.rows}"
        note = Text()
        if screen.live:
            note.append("● live", style=LIVE_STYLE)
        else:
            note.append("■ ended", style=ENDED_STYLE)
            note.append(": its last screen", style=DIM)
        clipped = (cols, rows) != (screen.cols, screen.rows) and width > 0 and height > 0
        note.append(f" · showing {cols}x{rows} of {size} (scroll)" if clipped else f" · {size}", style=DIM)
        if screen.live:
            note.append(" · read-only: enter attaches, s types a line", style=DIM)
        self._note(note)

    def _note(self, text: Text) -> None:
        text.no_wrap, text.overflow = True, "ellipsis"
        self.query_one("#peek-note", Static).update(text)
