"""Peek: a live, read-only render of a terminal session's screen, so fifty interactive agents can be watched
without attaching to one.

pyte (a terminal emulator library) plays the session's output (its transcript file, raw, as script(1) wrote
it) onto a screen of the session's size. A screen is kept only while someone looks (a peek unused for a minute
is dropped) and fed incrementally from where it stopped; a backlog too long to play (an agent that drew for
hours) is skipped to its last BACKLOG bytes, which redraw any screen an agent keeps up to date many times over.

Sequences pyte does not know are cut before it sees them (it would print them as text): device control and
application program strings (ESC P / ESC _ ... ST), CSI with `<` `=` markers (the kitty keyboard protocol Claude
Code asks for) and colon sub-parameters. RE2 finds them: it cannot run away on what an agent writes. Such a
string longer than a look (a sixel image written in pieces) is cut piece by piece: only its opener is kept until
its end comes. A sequence pyte knows but cannot play (`ESC [ ? 6 n`, `ESC [ 1 ; 2 ; 3 D`: its handlers raise) is
skipped and the rest played; a wide character's half left alone is drawn as a space; DECALN (ESC # 8: the
screen filled with E, 0.1 s of work for 3 bytes) is cut. A look plays for PLAY_BUDGET at most, the next looks
play the rest. Queries are never answered (nothing is written to the agent). One look at a time: two dashboards
peeking at once take turns (the emulator is not thread-safe).
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
import termios
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyte
import pyte.screens
import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

from crewtui.clock import ClockLike
from crewtui.errors import BadInput
from crewtui.locations import DataDir, SessionDir
from crewtui.model import Session, TerminalScreen
from crewtui.runtime.drivers.terminal import DEFAULT_SIZE

BACKLOG = 256 << 10  # bytes played at most when a peek starts, or falls that far behind
READ_MAX = 1 << 20  # bytes read per look
IDLE_DROP = 60.0  # seconds a screen nobody peeked at is kept
PLAY_BUDGET = 0.2  # seconds of playing per look: what is left is played by the next looks
ENDED_BUDGET = 5.0  # the same, for an ended session's last screen
_SLICE = 256  # bytes played between two looks at the clock (the costliest sequence takes 7 ms at MAX_SIZE)
MAX_SIZE = (200, 600)  # rows, cols played at most (a 4K screen in a small font): anyone can size a terminal 65535x65535

_JUNK = re2.compile(
    rb"\x1b#8|\x1b[P_^X][\s\S]*?(?:\x1b\\|\x07)|\x1b\[[<=][0-?]*[ -/]*[@-~]|\x1b\[[0-9;?>]*:[0-?]*[ -/]*[@-~]"
)
# An escape sequence cut by the end of what was read: kept for the next look.
_OPEN = re2.compile(rb"\x1b(?:[P_^X][\s\S]*|\[[0-?]*[ -/]*|#)?$")
_HEADER = b"Script started on "
_CARRY_MAX = 4096  # bytes of an open sequence kept for the next look


class _Stream(pyte.ByteStream):
    """pyte's stream, skipping what its handlers cannot play (pyte has already reset its parser then)."""

    def _send_to_parser(self, data: str) -> bool | None:
        try:
            return super()._send_to_parser(data)
        except Exception:  # a malformed sequence (CSI ? 6 n, CSI 1;2;3 D): dropped, as a terminal drops it
            return False


def terminal_size(session_dir: Path) -> tuple[int, int]:
    """(rows, cols) of the session's terminal now (an attacher's window sets it), or the size it started with; at
    most MAX_SIZE (a screen beyond it is played and shown in its top left part)."""
    try:
        pts = SessionDir(session_dir).pts.read_text().strip()
        # Never blocking (the file names what the agent may have put there: a FIFO would hang every peek), never
        # taking the terminal as the runtime's own, and a terminal only.
        fd = os.open(pts, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            if not stat.S_ISCHR(os.fstat(fd).st_mode):
                return DEFAULT_SIZE
            rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
        finally:
            os.close(fd)
    except (OSError, ValueError, struct.error):
        return DEFAULT_SIZE
    return (min(rows, MAX_SIZE[0]), min(cols, MAX_SIZE[1])) if rows and cols else DEFAULT_SIZE


def display(screen: pyte.Screen) -> list[str]:
    """The screen's lines, as pyte's `display` draws them but for a wide character's right half left alone (`中`,
    then CSI P deletes its left half): a space, where pyte's own raises IndexError on every look after it."""
    lines = []
    for y in range(screen.lines):
        row = screen.buffer[y]
        cells: list[str] = []
        wide = False
        for x in range(screen.columns):
            if wide:  # the right half of the character before
                wide = False
                continue
            char = row[x].data or " "
            wide = pyte.screens.wcwidth(char[0]) == 2
            cells.append(char)
        lines.append("".join(cells).rstrip())
    return lines


@dataclass
class _Screen:
    path: Path
    rows: int
    cols: int
    offset: int = 0
    carry: bytes = b""
    pending: bytes = b""  # read but not played yet (the last look ran out of time)
    used: float = 0.0
    screen: pyte.Screen = field(init=False)
    stream: pyte.ByteStream = field(init=False)

    def __post_init__(self) -> None:
        self.screen = pyte.Screen(self.cols, self.rows)
        self.stream = _Stream(self.screen)

    def update(self, budget: float = PLAY_BUDGET) -> None:
        """Play what came since the last look, for `budget` seconds at most: a few bytes can cost the emulator much
        (ESC [ 2 J erases every cell: 60,000 of them in 240 kB took it 16 s at 40x120, 7 minutes at 200x600)."""
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline:
            if not self.pending:
                self.pending, got = self._read()
                if not got:
                    return
            data, i = self.pending, 0
            while i < len(data) and time.monotonic() < deadline:
                self.stream.feed(data[i : i + _SLICE])
                i += _SLICE
            self.pending = data[i:]

    def _read(self) -> tuple[bytes, int]:
        """What came since the last read, cleaned for the emulator, and how many bytes of the file that was."""
        try:
            # A regular file only, opened without blocking: the agent can put a FIFO in its place.
            with open(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
                if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                    return b"", 0
                size = f.seek(0, 2)
                if size < self.offset:  # a new attempt started the file again
                    self._restart(0)
                if size - self.offset > BACKLOG + READ_MAX:
                    self._restart(size - BACKLOG)
                f.seek(self.offset)
                data = f.read(READ_MAX)
        except OSError:  # not there (yet), or not readable
            return b"", 0
        first, got = self.offset == 0, len(data)
        self.offset += got
        if first and data.startswith(_HEADER):
            data = data.split(b"\n", 1)[1] if b"\n" in data else b""
        data = _JUNK.sub(b"", self.carry + data)
        m = _OPEN.search(data)
        if m is None:
            self.carry = b""
        elif len(data) - m.start() < _CARRY_MAX:
            self.carry, data = data[m.start() :], data[: m.start()]
        elif data[m.start() + 1 : m.start() + 2] in (b"P", b"_", b"^", b"X"):
            # A string too long to keep (a sixel image in pieces): its opener only (and an ESC that may start its
            # ST), so what comes before its end is dropped too.
            self.carry = data[m.start() : m.start() + 2] + (b"\x1b" if data.endswith(b"\x1b") else b"")
            data = data[: m.start()]
        else:
            self.carry = b""
        return bytes(data), got

    def _restart(self, offset: int) -> None:
        self.offset, self.carry, self.pending = offset, b"", b""
        self.screen.reset()
        self.stream = _Stream(self.screen)  # no sequence or character half read from before

    def resize(self, rows: int, cols: int) -> None:
        """A new size (someone attached with another window): played again from the backlog on a screen of that
        size (pyte's own resize drops the top lines, where a line program's first lines are)."""
        if (rows, cols) != (self.rows, self.cols):
            self.rows, self.cols = rows, cols
            self.screen = pyte.Screen(cols, rows)
            self.stream = _Stream(self.screen)
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            self.offset, self.carry, self.pending = (0 if size <= BACKLOG else size - BACKLOG), b"", b""


class Peeker:
    """The screens being peeked at, one per terminal session."""

    def __init__(self, data_dir: DataDir, clock: ClockLike) -> None:
        self.data_dir = data_dir
        self.clock = clock
        self._screens: dict[str, _Screen] = {}
        self._lock = threading.Lock()  # peeks run in threads (the runtime's to_thread): one at a time

    def peek(self, s: Session) -> TerminalScreen:
        with self._lock:
            return self._peek(s)

    def _peek(self, s: Session) -> TerminalScreen:
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
        # An ended session's last screen is read once (the dashboard stops asking): played to its end, within reason.
        view.update(PLAY_BUDGET if s.state.live else ENDED_BUDGET)
        return TerminalScreen(
            key=s.key,
            label=s.label,
            rows=view.rows,
            cols=view.cols,
            lines=display(view.screen),
            cursor=(view.screen.cursor.y, view.screen.cursor.x),
            live=s.state.live,
        )
