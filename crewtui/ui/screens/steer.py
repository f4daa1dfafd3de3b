"""The steer prompt: a message for the selected session, or for every marked one (a broadcast).

A steer is one line on the session's stdin, and the runtime takes at most 64 KiB with its newline. What is
typed is one line; a paste may bring several, and each non-blank line is then sent as its own steer, in
order, which the prompt says before anything is sent. So does how it is taken: a plain session reads it on
its stdin, a preset agent mid-run or, for presets that cannot be steered while they run, on its next turn. A
line over the limit, or a NUL the runtime cannot write, is refused in the prompt, which stays open with the
text: nothing typed or pasted is lost to a refusal.
"""

from __future__ import annotations

import re
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static, TextArea

from crewtui.adapters import PRESETS
from crewtui.adapters.base import SteerMode
from crewtui.model import MAX_STEER_BYTES, Session
from crewtui.text import clean
from crewtui.ui.format import DIM, plain

# The runtime writes a steer with its newline, and refuses one whose bytes (newline included) pass 64 KiB.
MAX_LINE_BYTES = MAX_STEER_BYTES - 1
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def steer_lines(text: str) -> list[str]:
    """The steers a message makes: one per line, blank lines left out."""
    return [line for line in _LINE_BREAK.split(text) if line.strip()]


def steer_problem(lines: list[str]) -> str | None:
    """Why these steers cannot be sent, in one line, or None."""
    for n, line in enumerate(lines, start=1):
        which = f"line {n}" if len(lines) > 1 else "the message"
        size = len(line.encode("utf-8", errors="replace"))
        if size > MAX_LINE_BYTES:
            return (
                f"{which} is {size:,} bytes; a steer holds at most {MAX_LINE_BYTES:,} "
                "(64 KiB with its newline): shorten it or split it into lines"
            )
        if "\0" in line:
            return f"{which} holds a NUL character, which cannot be written to a session"
    return None


def steer_mode(s: Session) -> SteerMode | None:
    """How a steer reaches a preset session's agent ("live" or "next_turn"), None for a plain argv (stdin)."""
    preset = PRESETS.get(s.preset) if s.preset is not None else None
    return preset.steer_mode if preset is not None else None


def how_steered(targets: list[Session]) -> str:
    """What will happen to a steer, said before it is sent: a plain session reads it on stdin; a preset agent
    takes it mid-run (it joins the running turn), or only on its next turn (it cannot be steered mid-run)."""
    modes = {(s.preset, steer_mode(s)) for s in targets}
    if len(modes) > 1:
        live = sum(1 for s in targets if steer_mode(s) == "live")
        nxt = sum(1 for s in targets if steer_mode(s) == "next_turn")
        parts = [
            f"{what} by {n}"
            for n, what in (
                (live, "mid-run"),
                (nxt, "on their next turn"),
                (len(targets) - live - nxt, "on stdin"),
            )
            if n
        ]
        return "Taken " + ", ".join(parts) + "; 64 KiB a line."
    preset, mode = next(iter(modes))
    if mode == "live":
        return f"{clean(preset or '')} takes this mid-run (joins the running turn); 64 KiB a line."
    if mode == "next_turn":
        return (
            f"{clean(preset or '')} cannot be steered mid-run: this continues the conversation on its next turn; "
            "64 KiB a line."
        )
    return "Lines go to the session's stdin, 64 KiB each."


class SteerText(TextArea):
    """The message: enter sends (a steer is typed as one line); a paste keeps every line it brings."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "submit", "Send", show=False, priority=True)]

    class Submitted(Message):
        """Enter was pressed in the message."""

    def action_submit(self) -> None:
        self.post_message(self.Submitted())


class SteerScreen(ModalScreen["list[str] | None"]):
    """Dismisses with the steers to send, in order (one or more lines), or None."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="steer-cancel")]

    def __init__(self, targets: list[Session], skipped: int = 0) -> None:
        super().__init__()
        self._targets = targets
        self._skipped = skipped

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="steer-dialog"):
            if len(self._targets) == 1:
                title = f"Steer {self._targets[0].label}"
            else:
                title = f"Steer {len(self._targets)} marked sessions (broadcast)"
            yield Label(plain(title), classes="dialog-title")
            note = Text(how_steered(self._targets) + " ", style=DIM)
            if len(self._targets) > 1:
                shown = ", ".join(s.label for s in self._targets[:4]) + (" …" if len(self._targets) > 4 else "")
                note.append_text(plain(shown))
            if self._skipped:
                n = self._skipped
                note.append(f"  ({n} ended session{'s' if n != 1 else ''} skipped)", style="#d19a66")
            yield Static(note, classes="dialog-text")
            with Horizontal(classes="field", id="steer-field"):
                yield Label("message", classes="field-name")
                yield SteerText(
                    id="steer-text",
                    compact=True,
                    soft_wrap=True,
                    highlight_cursor_line=False,
                    placeholder="e.g. keep it under 800 words",
                )
            yield Static("", id="steer-info", classes="field-info")
            yield Static("", id="steer-error", classes="field-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Send", id="steer-ok", variant="primary", compact=True)
                yield Button("Cancel", id="steer-cancel", compact=True)

    def on_mount(self) -> None:
        text = self.query_one("#steer-text", SteerText)
        text.cursor_blink = getattr(self.app, "cursor_blink", True)
        text.focus()

    @property
    def text(self) -> str:
        return self.query_one("#steer-text", SteerText).text

    def _show(self, widget_id: str, message: str) -> None:
        widget = self.query_one(widget_id, Static)
        widget.update(plain(message))
        widget.set_class(bool(message), "-shown")

    @on(TextArea.Changed, "#steer-text")
    def _changed(self) -> None:
        """Say what enter would send, and what the runtime would refuse, before anything is sent."""
        lines = steer_lines(self.text)
        problem = steer_problem(lines)
        info = ""
        if problem is None and len(lines) > 1:
            info = f"{len(lines)} lines: they will be sent as {len(lines)} steers, one after the other"
            if len(self._targets) > 1:
                info += f", to each of the {len(self._targets)} sessions"
        self._show("#steer-info", info)
        self._show("#steer-error", problem or "")

    @on(Button.Pressed, "#steer-ok")
    @on(SteerText.Submitted)
    def _send(self) -> None:
        lines = steer_lines(self.text)
        problem = "type a message to send" if not lines else steer_problem(lines)
        if problem is not None:
            self._show("#steer-error", problem)
            return
        self.dismiss(lines)

    @on(Button.Pressed, "#steer-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
