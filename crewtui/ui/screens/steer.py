"""The steer prompt: one line for the selected session, or for every marked one (a broadcast)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from crewtui.model import Session


class SteerScreen(ModalScreen["str | None"]):
    """Dismisses with the line to send, or None."""

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
            yield Label(title, classes="dialog-title")
            note = Text("One line, written to the session's stdin. ", style="#7f848e")
            if len(self._targets) > 1:
                note.append(", ".join(s.label for s in self._targets[:4]) + (" …" if len(self._targets) > 4 else ""))
            if self._skipped:
                n = self._skipped
                note.append(f"  ({n} ended session{'s' if n != 1 else ''} skipped)", style="#d19a66")
            yield Static(note, classes="dialog-text")
            with Horizontal(classes="field"):
                yield Label("message", classes="field-name")
                yield Input(placeholder="e.g. keep it under 800 words", id="steer-text", compact=True)
            yield Static("", id="steer-error", classes="field-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Send", id="steer-ok", variant="primary", compact=True)
                yield Button("Cancel", id="steer-cancel", compact=True)

    def on_mount(self) -> None:
        inp = self.query_one("#steer-text", Input)
        inp.cursor_blink = getattr(self.app, "cursor_blink", True)
        inp.focus()

    @on(Button.Pressed, "#steer-ok")
    @on(Input.Submitted, "#steer-text")
    def _send(self) -> None:
        text = self.query_one("#steer-text", Input).value
        if not text.strip():
            error = self.query_one("#steer-error", Static)
            error.update("type a message to send")
            error.add_class("-shown")
            return
        self.dismiss(text)

    @on(Button.Pressed, "#steer-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
