"""Quitting an embedding dashboard: leave the sessions running for the next start, or kill them."""

from __future__ import annotations

from typing import ClassVar, Literal

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

QuitChoice = Literal["leave", "kill"]


class QuitScreen(ModalScreen["QuitChoice | None"]):
    """Dismisses with "leave", "kill", or None (cancel)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "choose('leave')", "Leave running", id="quit-leave"),
        Binding("k", "choose('kill')", "Kill all", id="quit-kill"),
        Binding("escape,c", "cancel", "Cancel", id="quit-cancel"),
    ]

    def __init__(self, live: int) -> None:
        super().__init__()
        self._live = live

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="quit-dialog"):
            yield Label("Quit crewtui", classes="dialog-title")
            body = Text()
            body.append(f"{self._live} live sessions. ", style="bold")
            body.append(
                "Sessions run on their own: left running, the next `crewtui` on this data dir "
                "finds them again (or attach to them from another terminal)."
            )
            yield Static(body, classes="dialog-text")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Leave sessions running (l)", id="quit-leave", variant="primary", compact=True)
                yield Button("Kill all and quit (k)", id="quit-kill", variant="error", compact=True)
                yield Button("Cancel", id="quit-cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#quit-leave", Button).focus()

    @on(Button.Pressed, "#quit-leave")
    def _leave(self) -> None:
        self.dismiss("leave")

    @on(Button.Pressed, "#quit-kill")
    def _kill(self) -> None:
        self.dismiss("kill")

    @on(Button.Pressed, "#quit-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_choose(self, choice: QuitChoice) -> None:
        self.dismiss(choice)
