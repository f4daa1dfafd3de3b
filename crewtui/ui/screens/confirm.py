"""A yes/no question as a modal (`ModalScreen[bool]`): kill, sweep. Cancel is the safe default.

The title names sessions or groups: it is shown as plain text (never markup), like the body the caller built.
"""

from __future__ import annotations

from typing import ClassVar

from rich.console import RenderableType
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from crewtui.ui.format import plain


class ConfirmScreen(ModalScreen[bool]):
    """Dismisses with True (confirmed) or False. `y` confirms, `n` / escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "confirm", "Yes", id="confirm-yes"),
        Binding("n,escape", "cancel", "No", id="confirm-no"),
    ]

    def __init__(
        self, title: str, body: RenderableType, confirm: str = "Yes", *, danger: bool = True, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self._title = title
        self._body = body
        self._confirm = confirm
        self._danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="confirm-dialog"):
            yield Label(plain(self._title), classes="dialog-title")
            with VerticalScroll(classes="dialog-body"):
                yield Static(self._body, id="confirm-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button(
                    f"{self._confirm} (y)",
                    id="confirm-ok",
                    variant="error" if self._danger else "primary",
                    compact=True,
                )
                yield Button("Cancel (n)", id="confirm-cancel", compact=True)

    def on_mount(self) -> None:
        self.query_one("#confirm-cancel", Button).focus()

    @on(Button.Pressed, "#confirm-ok")
    def action_confirm(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#confirm-cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)
