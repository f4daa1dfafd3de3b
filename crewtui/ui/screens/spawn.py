"""The spawn form: label, agent, task, domain, watchdog, best of N. Nothing is spawned until the runtime accepts it.

The form checks what it can itself (label syntax, duration, the number of tries), then asks the runtime; any
refusal (duplicate live label, held domain, unknown agent, best of N for an agent without a workspace...) is shown
inline, in the runtime's own words, and the form stays. Those words quote what was typed: they are shown as plain
text (`plain`), never read as markup.

Best of N (2-10) spawns `request.tries(N)`, LABEL-1..N grouped under LABEL, one after another through the same
`submit`. A try refused half-way is said inline (which one, why, how many started); the ones started stay, escape
keeps them (the form dismisses with the first), and Spawn again starts only the ones not started yet.
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
from crewtui.ui.calls import why_failed
from crewtui.ui.format import plain

log = logging.getLogger("crewtui.ui")

MAX_ERROR = 200  # characters of an error under a field: a few lines of the dialog, never all of it

Submit = Callable[[SpawnRequest], Awaitable[Session]]


class SpawnScreen(ModalScreen["Session | None"]):
    """Dismisses with the spawned Session, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel", id="spawn-cancel")]

    def __init__(self, agents: list[str], submit: Submit) -> None:
        super().__init__()
        self._agents = agents
        self._submit = submit
        self.started: list[Session] = []  # what this form spawned (best of N: the tries started so far)

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
            with Horizontal(classes="field"):
                yield Label("best of", classes="field-name")
                yield Input(
                    placeholder="optional, 2-10: N tries (LABEL-1..N), each in its own worktree",
                    id="spawn-best-of",
                    compact=True,
                )
            yield Static("", id="spawn-best-of-error", classes="field-error")
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
        # A field's error quotes what was typed, 5,000 characters of it maybe: its start and its end are shown. The
        # form's (the runtime's words, and which tries started) may be longer, not endless.
        limit = MAX_ERROR if field != "form" else 3 * MAX_ERROR
        if len(message) > limit:
            message = message[: limit // 2] + " … " + message[-(limit // 2) :]
        widget.update(plain(message))
        widget.set_class(bool(message), "-shown")

    def _clear_errors(self) -> None:
        for field in ("label", "agent", "watchdog", "best-of", "form"):
            self._error(field, "")

    def _requests(self) -> list[SpawnRequest] | None:
        """The requests the form describes (one; N tries with best of N), or None after showing what is wrong."""
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
        task = self.query_one("#spawn-task", Input).value.strip() or None
        domain = self.query_one("#spawn-domain", Input).value.strip() or None
        tries = self._tries(domain)
        if not ok or tries is None:
            return None
        request = SpawnRequest(label=label, agent=agent, task=task, domain=domain, watchdog_after=watchdog)
        if not tries:
            return [request]
        requests = request.tries(tries)
        try:
            for r in requests:
                validate_label(r.label)
        except BadInput as exc:  # the label is near the length limit: LABEL-10 goes over it
            self._error("label", f"with best of {tries}: {exc.message}")
            return None
        return requests

    def _tries(self, domain: str | None) -> int | None:
        """The best-of field: 0 when empty (one session), N in 2..10, or None after saying what is wrong."""
        text = self.query_one("#spawn-best-of", Input).value.strip()
        if not text:
            return 0
        if not (text.isascii() and text.isdigit()) or len(text) > 4:  # "²" is a digit to Python, not to int()
            self._error("best-of", f"best of N takes a number from 2 to 10, got {text!r}")
            return None
        n = int(text)
        if not 2 <= n <= 10:
            self._error("best-of", f"best of N takes 2 to 10 tries, got {n} (empty: one session)")
            return None
        if domain is not None:
            # An exclusive claim: the first try would hold it and the runtime refuse the others.
            self._error("best-of", "best of N cannot share one domain: leave it empty (each try claims its own branch)")
            return None
        return n

    @on(Button.Pressed, "#spawn-ok")
    @on(Input.Submitted)
    def _submit_form(self) -> None:
        requests = self._requests()
        if requests is not None:
            self._spawn(requests)

    @work(exclusive=True, group="spawn", exit_on_error=False)
    async def _spawn(self, requests: list[SpawnRequest]) -> None:
        """Each request in turn; the first refusal stops the rest and is said inline. Tries this form started
        already (a Spawn again after a refusal half-way) are not started twice."""
        button = self.query_one("#spawn-ok", Button)
        button.disabled = True
        done = {s.label for s in self.started}
        try:
            for request in requests:
                if len(requests) > 1 and request.label in done:
                    continue
                try:
                    self.started.append(await self._submit(request))
                except CrewError as exc:
                    self._refused(requests, request, exc.message)
                    return
                except Exception as exc:  # no traceback reaches a user; the log keeps it
                    log.exception("spawn failed")
                    self._refused(requests, request, f"spawn failed: {why_failed(exc)}")
                    return
        finally:
            button.disabled = False
        self.dismiss(self._first(requests))

    def _first(self, requests: list[SpawnRequest]) -> Session | None:
        """What the form dismisses with: the session of its first request (best of N: the first try started)."""
        labels = [r.label for r in requests]
        mine = sorted((s for s in self.started if s.label in labels), key=lambda s: labels.index(s.label))
        return mine[0] if mine else (self.started[0] if self.started else None)

    def _refused(self, requests: list[SpawnRequest], request: SpawnRequest, why: str) -> None:
        labels = [r.label for r in requests]
        started = [s.label for s in self.started if s.label in labels]
        if len(requests) == 1 or not started:
            self._error("form", why)  # nothing of it started: the runtime's words, as for one session
            return
        self._error(
            "form",
            f"{request.label} was refused: {why} · {len(started)} of {len(requests)} tries started "
            f"({', '.join(started)}): escape keeps them, Spawn starts the rest",
        )

    @on(Button.Pressed, "#spawn-cancel")
    def action_cancel(self) -> None:
        # Tries started before a refusal stay: the dashboard selects the first of them.
        self.dismiss(self.started[0] if self.started else None)
