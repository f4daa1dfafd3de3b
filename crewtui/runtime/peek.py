"""Peek: a live, read-only render of a terminal session's screen, so fifty interactive agents can be watched
without attaching to one.

pyte (a terminal emulator library) plays the session's output (its transcript file, raw, as script(1) wrote
it) onto a screen of the session's size. A screen is kept only while someone looks (a peek unused for a minute
is dropped) and fed incrementally from where it stopped; a backlog too long to play (an agent that drew for
hours) is skipped to its last BACKLOG bytes, which redraw any screen an agent keeps up to date many times over.

Sequences pyte does not know are cut before it sees them (it would print them as text): device control and
application program strings (ESC P / ESC _ ... ST), CSI with `<` `=` markers (the kitty keyboard protocol Claude
Code asks for) and colon sub-parameters. RE2 finds them: it cannot run away on what an agent writes.
"""

from __future__ import annotations

import fcntl
import struct
import termios
from dataclasses import dataclass, field
from pathlib import Path

import pyte
import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

from crewtui.clock import ClockLike
from crewtui.errors import BadInput
from crewtui.locations import DataDir, SessionDir
from crewtui.model import Session, TerminalScreen
from crewtui.runtime.drivers.terminal import DEFAULT_SIZE

BACKLOG = 256 << 10  # bytes played at most when a peek starts, or falls that far behind
READ_MAX = 1 << 20  # bytes read per look
IDLE_DROP = 60.0  # seconds a screen nobody peeked at is kept

_JUNK = re2.compile(rb"\x1b[P_^X][\s\S]*?(?:\x1b\\|\x07)|\x1b\[[<=][0-?]*[ -/]*[@-~]|\x1b\[[0-9;?>]*:[0-?]*[ -/]*[@-~]")
# An escape sequence cut by the end of what was read: kept for the next look.
_OPEN = re2.compile(rb"\x1b(?:[P_^X][\s\S]*|\[[0-?]*[ -/]*)?$")
_HEADER = b"Script started on "


def terminal_size(session_dir: Path) -> tuple[int, int]:
    """(rows, cols) of the session's terminal now (an attacher's window sets it), or the size it started with."""
    try:
        pts = SessionDir(session_dir).pts.read_text().strip()
        with open(pts, "rb", buffering=0) as f:
            rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(f.fileno(), termios.TIOCGWINSZ, b"\0" * 8))
    except (OSError, ValueError, struct.error):
        return DEFAULT_SIZE
    return (rows, cols) if rows and cols else DEFAULT_SIZE


@dataclass
class _Screen:
    path: Path
    rows: int
    cols: int
    offset: int = 0
    carry: bytes = b""
    used: float = 0.0
    screen: pyte.Screen = field(init=False)
    stream: pyte.ByteStream = field(init=False)

    def __post_init__(self) -> None:
        self.screen = pyte.Screen(self.cols, self.rows)
        self.stream = pyte.ByteStream(self.screen)

    def update(self) -> None:
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, 2)
                if size < self.offset:  # a new attempt started the file again
                    self._restart(0)
                if size - self.offset > BACKLOG + READ_MAX:
                    self._restart(size - BACKLOG)
                f.seek(self.offset)
                data = f.read(READ_MAX)
        except FileNotFoundError:
            return
        first = self.offset == 0
        self.offset += len(data)
        if first and data.startswith(_HEADER):
            data = data.split(b"\n", 1)[1] if b"\n" in data else b""
        data = _JUNK.sub(b"", self.carry + data)
        m = _OPEN.search(data)
        if m is not None and len(data) - m.start() < 4096:
            self.carry, data = data[m.start() :], data[: m.start()]
        else:
            self.carry = b""
        self.stream.feed(data)

    def _restart(self, offset: int) -> None:
        self.offset, self.carry = offset, b""
        self.screen.reset()

    def resize(self, rows: int, cols: int) -> None:
        """A new size (someone attached with another window): played again from the backlog on a screen of that
        size (pyte's own resize drops the top lines, where a line program's first lines are)."""
        if (rows, cols) != (self.rows, self.cols):
            self.rows, self.cols = rows, cols
            self.screen = pyte.Screen(cols, rows)
            self.stream = pyte.ByteStream(self.screen)
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            self.offset, self.carry = (0 if size <= BACKLOG else size - BACKLOG), b""


class Peeker:
    """The screens being peeked at, one per terminal session."""

    def __init__(self, data_dir: DataDir, clock: ClockLike) -> None:
        self.data_dir = data_dir
        self.clock = clock
        self._screens: dict[str, _Screen] = {}

    def peek(self, s: Session) -> TerminalScreen:
        if not s.tty:
            raise BadInput(f"{s.label} is not a terminal session (spawn it with --tty, or an agent with tty = true)")
        now = self.clock.now()
        for key in [k for k, v in self._screens.items() if now - v.used > IDLE_DROP]:
            del self._screens[key]
        sd = self.data_dir.session(s.key)
        rows, cols = terminal_size(sd.path) if s.state.live else DEFAULT_SIZE
        view = self._screens.get(s.key)
        if view is None:
            view = self._screens[s.key] = _Screen(sd.stdout, rows, cols)
        view.used = now
        view.resize(rows, cols)
        view.update()
        return TerminalScreen(
            key=s.key,
            label=s.label,
            rows=view.rows,
            cols=view.cols,
            lines=[line.rstrip() for line in view.screen.display],
            cursor=(view.screen.cursor.y, view.screen.cursor.x),
            live=s.state.live,
        )
