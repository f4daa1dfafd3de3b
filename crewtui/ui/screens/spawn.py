"""The spawn form: label, agent, task, domain, watchdog. Nothing is spawned until the runtime accepts it.

The form checks what it can itself (label syntax, duration), then asks the runtime; any refusal (duplicate
live label, held domain, unknown agent...) is shown inline, in the runtime's own words, and the form stays.
Those words quote what was typed: they are shown as plain text (`plain`), never read as markup.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from crewtui.errors import BadInput, CrewError
from crewtui.model import Session, SpawnRequest, parse_duration, validate_label
from crewtui.ui.format import plain

log = logging.getLogger("crewtui.ui")

Submit = Callable[[SpawnRequest], Awaitable[Session]]


class SpawnScreen(ModalScreen["Session | None"]):
    """Dismisses with the spawned Session, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="spawn-cancel")]

    def __init__(self, agents: list[str], submit: Submit) -> None:
        super().__init__()
        self._agents = agents
        self._submit = submit

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="spawn-dialog"):
            yield Label("Spawn a session", classes="dialog-title")
            with Horizontal(classes="field"):
                yield Label("label", classes="field-name")
                yield Input(placeholder="blog-publisher-superada-2026-04-02", id="spawn-label", compact=True)
            yield Static("", id="spawn-label-error", classes="field-error")
            with Horizontal(classes="field"):
                yield Label("agent", classes="field-name")
                yield Select(
                    [(plain(a), a) for a in self._agents],
                    prompt="no agents in this crew" if not self._agents else "choose an agent",
                    allow_blank=not self._agents,
                    id="spawn-agent",
                    compact=True,
                )
            yield Static("", id="spawn-agent-error", classes="field-error")
            with Horizontal(classes="field"):
                yield Label("task", classes="field-name")
                yield Input(placeholder="Write the SuperAda article", id="spawn-task", compact=True)
            with Horizontal(classes="field"):
                yield Label("domain", classes="field-name")
                yield Input(
                    placeholder="optional exclusive claim, e.g. article:superada", id="spawn-domain", compact=True
                )
            with Horizontal(classes="field"):
                yield Label("watchdog", classes="field-name")
                yield Input(
                    placeholder="optional, e.g. 15m: retry if not done by then", id="spawn-watchdog", compact=True
                )
            yield Static("", id="spawn-watchdog-error", classes="field-error")
            yield Static("", id="spawn-error", classes="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Spawn", id="spawn-ok", variant="primary", compact=True)
                yield Button("Cancel", id="spawn-cancel", compact=True)

    def on_mount(self) -> None:
        for inp in self.query(Input):
            inp.cursor_blink = getattr(self.app, "cursor_blink", True)
        self.query_one("#spawn-label", Input).focus()

    def _error(self, field: str, message: str) -> None:
        widget = self.query_one(f"#spawn-{field}-error" if field != "form" else "#spawn-error", Static)
        widget.update(plain(message))
        widget.set_class(bool(message), "-shown")

    def _clear_errors(self) -> None:
        for field in ("label", "agent", "watchdog", "form"):
            self._error(field, "")

    def _request(self) -> SpawnRequest | None:
        """The request the form describes, or None after showing what is wrong with it."""
        self._clear_errors()
        ok = True
        label = self.query_one("#spawn-label", Input).value.strip()
        try:
            validate_label(label)
        except BadInput as exc:
            self._error("label", "a label is required" if not label else exc.message)
            ok = False
        agent_value = self.query_one("#spawn-agent", Select).value
        agent = agent_value if isinstance(agent_value, str) else None
        if agent is None:
            self._error("agent", "choose an agent" if self._agents else "this crew defines no agents")
            ok = False
        watchdog_text = self.query_one("#spawn-watchdog", Input).value.strip()
        watchdog: float | None = None
        if watchdog_text:
            try:
                watchdog = parse_duration(watchdog_text)
                if watchdog <= 0:
                    raise ValueError(f"the watchdog must be longer than zero, got {watchdog_text!r}")
            except ValueError as exc:
                self._error("watchdog", str(exc))
                ok = False
        if not ok:
            return None
        task = self.query_one("#spawn-task", Input).value.strip() or None
        domain = self.query_one("#spawn-domain", Input).value.strip() or None
        return SpawnRequest(label=label, agent=agent, task=task, domain=domain, watchdog_after=watchdog)

    @on(Button.Pressed, "#spawn-ok")
    @on(Input.Submitted)
    def _submit_form(self) -> None:
        request = self._request()
        if request is not None:
            self._spawn(request)

    @work(exclusive=True, group="spawn", exit_on_error=False)
    async def _spawn(self, request: SpawnRequest) -> None:
        button = self.query_one("#spawn-ok", Button)
        button.disabled = True
        try:
            session = await self._submit(request)
        except CrewError as exc:
            self._error("form", exc.message)
            return
        except Exception as exc:  # no traceback reaches a user; the log keeps it
            log.exception("spawn failed")
            self._error("form", f"spawn failed: {exc}")
            return
        finally:
            button.disabled = False
        self.dismiss(session)

    @on(Button.Pressed, "#spawn-cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
