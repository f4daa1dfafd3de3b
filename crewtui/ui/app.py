"""The dashboard app: the runtime and its event stream, the keys, quitting and leaving.

`make_app(runtime, ...)` builds it (the CLI and the tests both call it) on any `RuntimeAPI`: an embedded
orchestrator or a `RemoteRuntime` attached over the socket (`crewtui.ui.run` picks one, through
`crewtui.launch`). What it shows is `MainScreen` (screens/main.py); the App holds what outlives any screen:
the runtime, its event stream (one async worker reads `runtime.watch()` into a buffer the main screen drains
ten times a second), the dashboard's copy of the sessions (`SessionBook`), the connection and the way out.
Every runtime call goes through `call_runtime`, which turns a failure into a notification: no traceback
reaches a user. Notifications are plain text, cleaned of terminal escapes: they name sessions and quote what
agents and users wrote. The runtime's own notifications (its `terminal` channel) ring this dashboard's terminal:
the bell and OSC 9/777; the window title carries how many sessions need you (alerts.py). A crash (an exception
nothing handled) is kept in `crashed` for the CLI to report in one line, with the trace in the log
(cli/dashboard.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from textual import events, on, work
from textual.app import App, SystemCommand
from textual.driver import Driver
from textual.notifications import SeverityLevel
from textual.screen import Screen

from crewtui.api import RuntimeAPI, RuntimeInfo
from crewtui.clock import Clock, ClockLike
from crewtui.errors import CrewError
from crewtui.events import Event, NotificationSent
from crewtui.text import clean
from crewtui.ui.actions import BINDINGS
from crewtui.ui.alerts import TerminalAlerts
from crewtui.ui.book import SessionBook
from crewtui.ui.calls import FAILED, call_runtime
from crewtui.ui.commands import ActionsProvider
from crewtui.ui.messages import RuntimeLost
from crewtui.ui.older import WINDOW
from crewtui.ui.screens.gateway import GatewayScreen
from crewtui.ui.screens.help import HelpScreen
from crewtui.ui.screens.main import MainScreen
from crewtui.ui.screens.quit import QuitChoice, QuitScreen

log = logging.getLogger("crewtui.ui")

TITLE_EVERY = 1.0  # the window title's count of sessions that need you is brought up to date this often, at most

OnQuit = Callable[[bool], Awaitable[None]]


class CrewApp(App[None]):
    CSS_PATH = "crewtui.tcss"
    TITLE = "crewtui"
    BINDINGS = BINDINGS
    COMMANDS = App.COMMANDS | {ActionsProvider}
    NOTIFICATION_TIMEOUT = 4

    def __init__(
        self,
        runtime: RuntimeAPI,
        *,
        clock: ClockLike | None = None,
        attached: bool = False,
        on_quit: OnQuit | None = None,
        window: int = WINDOW,
    ) -> None:
        super().__init__()
        self.runtime = runtime
        self.clock: ClockLike = clock or Clock()
        self.attached = attached
        self._on_quit = on_quit
        self.book = SessionBook()
        self.info: RuntimeInfo | None = None
        self.cursor_blink = True  # snapshot tests turn it off
        # The dashboard process freezes what it loaded at start out of the garbage collector's full passes:
        # with 1,000 sessions those passes took ~90 ms, long enough to feel in a key press (run_dashboard
        # sets it; tests leave it off, many apps share their process).
        self.freeze_gc = False
        self.exit_choice: QuitChoice | None = None
        self.connected = True
        # The ended sessions listed at start and at each resync, beside every live one: never the whole history
        # (older sessions are counted per group, and loaded a page at a time when asked; crewtui/ui/older.py).
        self.window = window
        self.loaded = asyncio.Event()  # set once the first listing (live + window) and schedule are shown
        # Made here rather than at compose, so a benchmark or a test can reach it before the app runs.
        self.main_screen = MainScreen(self)
        self._pending: list[Event] = []
        self._exiting = False
        self._main_up = False
        self._leave_when_up = False
        self.crashed: BaseException | None = None  # the first exception nothing handled: it ended the app
        # The bell, OSC 9/777 and the window title on this dashboard's terminal (alerts.py); none in a browser.
        self.alerts = TerminalAlerts(self.write_to_terminal, enabled=lambda: not self.is_web)

    def get_default_screen(self) -> Screen[Any]:
        return self.main_screen

    def on_mount(self) -> None:
        # Attached to a terminal session (enter), the terminal is the session's: nothing is written to it.
        self.app_suspend_signal.subscribe(self, lambda _: self.alerts.suspend(), immediate=True)
        self.app_resume_signal.subscribe(self, lambda _: self.alerts.resume(), immediate=True)
        self.set_interval(TITLE_EVERY, self._show_waiting, name="window-title")

    def on_unmount(self) -> None:
        self.alerts.restore_title()

    def _show_waiting(self) -> None:
        self.alerts.show_count(self.book.waiting())

    def write_to_terminal(self, data: str) -> None:
        """Raw bytes for the terminal, between frames (the bell, OSC sequences), as `App.bell` writes its BEL."""
        if self._driver is not None and not self.is_headless:
            self._driver.write(data)

    def main_screen_up(self) -> None:
        """The main screen has mounted (the last thing its on_mount does): a leave asked for meanwhile goes
        ahead now."""
        self._main_up = True
        if self._leave_when_up:
            self.call_later(self.leave)

    def on_resize(self, event: events.Resize) -> None:
        # The app's, not the main screen's: it comes while a modal is on top too.
        if self._main_up:
            self.main_screen.apply_layout(event.size.width, event.size.height)

    @property
    def exiting(self) -> bool:
        """Quitting or leaving: the runtime going away now is expected, not news."""
        return self._exiting

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """A toast, as plain text unless a caller asks for markup (Textual's default is markup, and a label or a
        pattern with `[/x]` in it made the app crash); escapes removed, control characters made visible."""
        super().notify(
            clean(message, newlines=True), title=clean(title), severity=severity, timeout=timeout, markup=markup
        )

    def action_help_quit(self) -> None:
        # Textual's says it with markup; ours is plain (notify above).
        self.notify("press q to quit (ctrl+c copies the selected text in a field)", title="Do you want to quit?")

    def _handle_exception(self, error: Exception) -> None:
        # Textual ends the app on an exception nothing handled; the CLI says so in one line (cli/dashboard.py).
        if self.crashed is None:
            self.crashed = error
        log.error("the dashboard crashed", exc_info=error)
        super()._handle_exception(error)

    async def call_runtime(self, name: str, *args: Any, what: str = "", quiet: bool = False, **kwargs: Any) -> Any:
        """A RuntimeAPI call; on failure the user is told in one line and FAILED returned (calls.py)."""
        return await call_runtime(self.runtime, self.notify, name, *args, what=what, quiet=quiet, **kwargs)

    # ------------------------------------------------------------------------------------ the event stream

    async def connect(self) -> None:
        """What the runtime is, then its event stream (the main screen lists the sessions after this)."""
        info = await self.call_runtime("info")
        if info is not FAILED:
            self.info = info
        self._consume_events()

    def has_events(self) -> bool:
        return bool(self._pending)

    def take_events(self) -> list[Event]:
        """The events buffered since the last call; the main screen applies them on its tick."""
        taken, self._pending = self._pending, []
        return taken

    @work(exclusive=True, group="events", exit_on_error=False)
    async def _consume_events(self) -> None:
        stream = self.runtime.watch()
        reason = "the runtime stopped"
        try:
            async for event in stream:
                self._pending.append(event)
                if isinstance(event, NotificationSent):
                    self.alerts.notified(event)  # rung at once, not on the next tick
        except CrewError as exc:
            reason = exc.message
        except Exception as exc:
            log.exception("event stream failed")
            reason = f"the event stream failed: {exc}"
        finally:
            # Unsubscribe, or the runtime keeps queueing events for a reader that is gone.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            else:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()
        self.post_message(RuntimeLost(reason))

    @on(RuntimeLost)
    def _runtime_lost(self, message: RuntimeLost) -> None:
        if self._exiting:
            return
        self.connected = False
        self.main_screen.update_header()
        self.notify(f"lost the runtime: {message.reason}", severity="error", timeout=10)
        if self.attached:
            self._reconnect()

    @work(exclusive=True, group="reconnect", exit_on_error=False)
    async def _reconnect(self) -> None:
        """Attached: the runtime may come back (a restart); pick up again when it answers."""
        while not self._exiting:
            await asyncio.sleep(2.0)
            info = await self.call_runtime("info", quiet=True)
            if info is not FAILED:
                self.info = info
                self.connected = True
                self._consume_events()
                self.main_screen.resync()
                self.main_screen.reload_schedule()
                self.notify("reconnected to the runtime")
                return

    # ------------------------------------------------------------------------------------ actions

    # The registry's actions are the App's, so keys, footer, help and palette reach them from any screen;
    # those on sessions are the main screen's.

    def action_spawn(self) -> None:
        self.main_screen.action_spawn()

    def action_steer(self) -> None:
        self.main_screen.action_steer()

    def action_approve(self) -> None:
        self.main_screen.action_approve()

    def action_deny(self) -> None:
        self.main_screen.action_deny()

    def action_kill(self) -> None:
        self.main_screen.action_kill()

    def action_sweep(self) -> None:
        self.main_screen.action_sweep()

    def action_retry(self) -> None:
        self.main_screen.action_retry()

    def action_trigger(self) -> None:
        self.main_screen.action_trigger()

    def action_mark(self) -> None:
        self.main_screen.action_mark()

    def action_filter(self) -> None:
        self.main_screen.action_filter()

    def action_state_filter(self, state: str) -> None:
        self.main_screen.action_state_filter(state)

    def action_clear(self) -> None:
        self.main_screen.action_clear()

    def action_open(self) -> None:
        self.main_screen.action_open()

    def action_next_pane(self) -> None:
        self.main_screen.action_next_pane()

    def action_zoom_in(self) -> None:
        self.main_screen.zoom_timeline(-1)

    def action_zoom_out(self) -> None:
        self.main_screen.zoom_timeline(1)

    def action_resume(self) -> None:
        self.main_screen.action_resume()

    def action_changes(self) -> None:
        self.main_screen.action_changes()

    def action_merge(self) -> None:
        self.main_screen.action_merge()

    def action_discard(self) -> None:
        self.main_screen.action_discard()

    def action_best_of(self) -> None:
        self.main_screen.action_best_of()

    def action_next_waiting(self) -> None:
        self.main_screen.action_next_waiting()

    def action_gateway(self) -> None:
        if not isinstance(self.screen, GatewayScreen):  # open already: its own g closes it
            self.push_screen(GatewayScreen(self.runtime))

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    # ------------------------------------------------------------------------------------ the way out

    async def action_quit(self) -> None:
        if self.attached:
            self._exiting = True
            self.exit()
            return
        live = sum(1 for s in self.book.sessions.values() if s.state.live)

        def chosen(choice: QuitChoice | None) -> None:
            if choice is not None:
                self._finish(choice)

        self.push_screen(QuitScreen(live), chosen)

    @work(exclusive=True, group="quit", exit_on_error=False)
    async def _finish(self, choice: QuitChoice) -> None:
        self.exit_choice = choice
        self._exiting = True
        kill = choice == "kill"
        if kill:
            self.notify("killing every live session…", timeout=30)
        if self._on_quit is not None:
            try:
                await self._on_quit(kill)
            except Exception:
                log.exception("stopping the runtime failed")
        elif kill:
            # Concurrently (each kill waits out its grace period), but not 1,000 requests at once.
            gate = asyncio.Semaphore(16)

            async def kill_one(key: str) -> None:
                async with gate:
                    await self.call_runtime("kill", key, quiet=True)

            await asyncio.gather(*(kill_one(s.key) for s in list(self.book.sessions.values()) if s.state.live))
        self.exit()

    def leave(self) -> None:
        """Exit and leave every session running: the terminal, the browser page or its server went away, or
        we were asked to stop (SIGTERM, SIGHUP)."""
        if not self._main_up:  # still starting: exiting now would pull the screen from under its on_mount
            self._leave_when_up = True
            return
        if self.exit_choice is None:
            self.exit_choice = "leave"
        self._exiting = True
        self.exit()

    def end_with_runtime(self) -> None:
        """The embedded runtime stopped on its own (another runtime took the data dir over): the dashboard ends
        with it, leaving the sessions to the new owner."""
        if not self._exiting:
            self.exit_choice = "leave"
            self._exiting = True
            self.exit()

    def get_driver_class(self) -> type[Driver]:
        # Served in a browser (textual-serve sets TEXTUAL_DRIVER to Textual's web driver): use ours, which
        # never blocks the event loop on its output pipe and ends when the server goes away (served.py).
        from textual.drivers.web_driver import WebDriver

        driver_class = super().get_driver_class()
        if driver_class is WebDriver:
            from crewtui.ui.served import ServedDriver

            return ServedDriver
        return driver_class

    def get_system_commands(self, screen: Screen[Any]) -> Iterator[SystemCommand]:
        # Textual's own "Quit" would skip the question; ours (from the registry) asks it.
        for command in super().get_system_commands(screen):
            if command.title != "Quit":
                yield command


def make_app(
    runtime: RuntimeAPI,
    *,
    clock: ClockLike | None = None,
    attached: bool = False,
    on_quit: OnQuit | None = None,
    window: int = WINDOW,
) -> CrewApp:
    """The dashboard on `runtime`. `on_quit(kill_sessions)` runs before the app exits after `q`; `window` is how
    many recent ended sessions it lists (older ones are counted, and loaded when asked)."""
    return CrewApp(runtime, clock=clock, attached=attached, on_quit=on_quit, window=window)
