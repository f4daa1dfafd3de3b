"""The answer prompt: deny what waiting sessions ask, with an optional one-line message, or answer a question.

`AnswerScreen` is a `ModalScreen[str | None]`: it dismisses with the message ("" for none; a question's answer
is required) or None when cancelled. It says what is answered before anything is sent: the session, or how many
marked ones, and what each asks. What the sessions ask and what is typed are foreign text, shown through `plain`.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from crewtui.model import Session
from crewtui.ui.format import DIM, WAITING_COLOR, needs_summary, plain

SHOWN = 12  # sessions listed by name in the prompt; the rest are counted


def asks_list(sessions: list[Session], shown: int = SHOWN) -> Text:
    """One line per session: its label and what it asks ("Bash {"command":"rm -rf build"}", or the question)."""
    out = Text()
    for s in sessions[:shown]:
        if out:
            out.append("\n")
        out.append_text(plain(s.label, "bold"))
        out.append("  ")
        out.append_text(plain(needs_summary(s.needs) or "waits for you", WAITING_COLOR))
        more = (s.needs or {}).get("more")
        if more:
            out.append(f"  (+{more} more pending)", style=DIM)
    if len(sessions) > shown:
        out.append(f"\n… and {len(sessions) - shown} more", style=DIM)
    return out


class AnswerScreen(ModalScreen["str | None"]):
    """`deny`: a message is optional. `answer`: a question's answer, required."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="answer-cancel")]

    def __init__(self, targets: list[Session], mode: Literal["deny", "answer"], note: str = "") -> None:
        super().__init__(id=f"{mode}-prompt")
        self._targets = targets
        self._mode = mode
        self._note = note

    def compose(self) -> ComposeResult:
        n = len(self._targets)
        if self._mode == "answer":
            title = f"Answer {self._targets[0].label}"
        elif n == 1:
            title = f"Deny what {self._targets[0].label} asks?"
        else:
            title = f"Deny what {n} waiting sessions ask?"
        with Vertical(classes="dialog", id="answer-dialog"):
            yield Label(plain(title), classes="dialog-title")
            with VerticalScroll(classes="dialog-body", id="answer-body"):
                yield Static(asks_list(self._targets), id="answer-asks")
            words = (
                "Your answer goes to the agent as one line."
                if self._mode == "answer"
                else "The agent is told no, and why if you say: one line, optional."
            )
            note = Text(words, style=DIM)
            if self._note:
                note.append(f"  {self._note}", style="#d19a66")
            yield Static(note, classes="dialog-text")
            with Horizontal(classes="field", id="answer-field"):
                yield Label("answer" if self._mode == "answer" else "message", classes="field-name")
                yield Input(
                    id="answer-text",
                    compact=True,
                    placeholder="e.g. main" if self._mode == "answer" else "e.g. not in production; use a dry run",
                )
            yield Static("", id="answer-error", classes="field-error")
            with Horizontal(classes="dialog-buttons"):
                ok = "Answer" if self._mode == "answer" else ("Deny" if n == 1 else f"Deny {n}")
                yield Button(
                    f"{ok} (enter)",
                    id="answer-ok",
                    variant="primary" if self._mode == "answer" else "error",
                    compact=True,
                )
                yield Button("Cancel (escape)", id="answer-cancel", compact=True)

    def on_mount(self) -> None:
        field = self.query_one("#answer-text", Input)
        field.cursor_blink = getattr(self.app, "cursor_blink", True)
        field.focus()

    @on(Button.Pressed, "#answer-ok")
    @on(Input.Submitted, "#answer-text")
    def _send(self) -> None:
        text = self.query_one("#answer-text", Input).value.strip()
        if self._mode == "answer" and not text:
            error = self.query_one("#answer-error", Static)
            error.update(plain("type the answer to send (escape cancels)"))
            error.add_class("-shown")
            return
        self.dismiss(text)

    @on(Button.Pressed, "#answer-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
