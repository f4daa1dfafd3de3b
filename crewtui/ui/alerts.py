"""The dashboard's terminal, told when the crew needs you: the bell, a desktop notification, the window title.

The runtime sends each notification of its `terminal` channel as a `NotificationSent` event (grouped and
rate-limited there, crewtui/runtime/notify.py); every dashboard that gets it, embedded or attached, rings for it
on its own terminal: the bell (BEL), and a desktop notification through the terminal, OSC 9 (`ESC ] 9 ; text
BEL`: iTerm2, kitty, WezTerm, Windows Terminal, foot) and OSC 777 (`ESC ] 777 ; notify ; title ; body BEL`:
urxvt, VTE terminals such as GNOME Terminal, Ghostty), which reach the user's desktop over ssh in the terminals
that know them and are ignored by the others. The window title carries how many sessions wait on a person
("crewtui · 3 need you"; "crewtui" at 0): Textual never sets it, so OSC 2 does, at most once a second and only
when the count changed; the title the terminal had is pushed first and popped back at exit (XTWINOPS 22/23).

What goes into a sequence is foreign text (labels, questions, reasons): escape sequences are removed and no control
character is left (a BEL or ESC inside would end the sequence early and let the rest be read as commands; a stray
one is shown as `crewtui.text.clean` shows it, BEL as ␇), `;` is taken out of OSC 777's title (it separates the
fields), and each field is capped.

Nothing is written while the dashboard is suspended (the terminal is a session's, attached with `enter`), nor in
a dashboard served in a browser (there is no terminal). `write` is the one way out, so a test can capture it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from crewtui.events import NotificationSent
from crewtui.text import clean

BEL = "\x07"
TITLE_MAX = 80  # a desktop notification's title, in characters
BODY_MAX = 240  # its body
APP = "crewtui"

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def field(text: str, cap: int, *, semicolons: bool = True) -> str:
    """`text` fit for one field of an OSC string: escape sequences removed, lines joined with " · ", no control
    character left (a stray one is shown as `clean` shows it: BEL as ␇), no `;` unless `semicolons`, at most `cap`
    characters."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [line.strip() for line in clean(text, newlines=True).split("\n")]
    out = _CONTROL.sub(" ", " · ".join(line for line in lines if line))
    if not semicolons:
        out = out.replace(";", ",")
    out = " ".join(out.split())  # tabs and runs of spaces
    return out if len(out) <= cap else out[: cap - 1].rstrip() + "…"


def osc_9(title: str, text: str) -> str:
    """OSC 9: one message. It starts with "crewtui: ", never with digits and `;` (ConEmu's 9;4 is a progress bar)."""
    body = field(f"{APP}: {title}" + (f" · {text}" if text else ""), BODY_MAX)
    return f"\x1b]9;{body}{BEL}"


def osc_777(title: str, text: str) -> str:
    """OSC 777 notify: a title (without `;`, which separates the fields) and a body."""
    return f"\x1b]777;notify;{field(f'{APP}: {title}', TITLE_MAX, semicolons=False)};{field(text, BODY_MAX)}{BEL}"


def window_title(waiting: int) -> str:
    """The terminal's title: how many sessions wait on a person."""
    return f"{APP} · {waiting:,} need you" if waiting else APP


def osc_2(title: str) -> str:
    return f"\x1b]2;{field(title, TITLE_MAX)}{BEL}"


PUSH_TITLE = "\x1b[22;0t"  # XTWINOPS: save the terminal's title (icon and window) on its stack
POP_TITLE = "\x1b[23;0t"  # and restore it


class TerminalAlerts:
    """Rings for `terminal` notifications and keeps the window title's count; writes through `write` only."""

    def __init__(self, write: Callable[[str], None], *, enabled: Callable[[], bool] = lambda: True) -> None:
        self.write = write  # the terminal (the App's driver); a test puts a list's append here
        self.enabled = enabled  # False in a served (browser) dashboard
        self.suspended = False  # the terminal is lent to an attached session
        self.rung = 0  # notifications rung for (tests, and the log)
        self._missed: NotificationSent | None = None  # the last one that came while suspended
        self._title: str | None = None  # the title written last (None: never, or to write again)
        self._pushed = False

    def notified(self, event: NotificationSent) -> None:
        """An event of the runtime's notifications: ring for those of the `terminal` channel."""
        if event.channel != "terminal" or not event.ok or not self.enabled():
            return
        if self.suspended:
            self._missed = event  # rung on return: the dashboard is where the user looks for it
            return
        self.rung += 1
        self.write(BEL + osc_9(event.title, event.text) + osc_777(event.title, event.text))

    def show_count(self, waiting: int) -> None:
        """The window title says `waiting` (called once a second: written only when it changed)."""
        if self.suspended or not self.enabled():
            return
        title = window_title(waiting)
        if title == self._title:
            return
        prefix = "" if self._pushed else PUSH_TITLE
        self._pushed = True
        self._title = title
        self.write(prefix + osc_2(title))

    def suspend(self) -> None:
        self.suspended = True

    def resume(self) -> None:
        """Back from an attached session: its program may have set the title, and a notification may have come."""
        self.suspended = False
        self._title = None
        missed, self._missed = self._missed, None
        if missed is not None:
            self.notified(missed)

    def restore_title(self) -> None:
        """At exit: the title the terminal had before."""
        if self._pushed and not self.suspended and self.enabled():
            self._pushed = False
            self.write(POP_TITLE)
