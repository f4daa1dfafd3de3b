"""Running the dashboard on a data dir: `crewtui.launch` opens the runtime, `make_app` shows it.

Embedded (nobody serves the data dir: the runtime starts in this process and event loop, and `q` may stop it)
or attached (another process serves it: the same dashboard over the socket). Either way the log goes to the
data dir's file while the dashboard owns the terminal, and a hang-up or SIGTERM leaves the sessions running.
A crash (an error nothing in the app handled) stops the runtime as cleanly as a quit, puts the trace in the log
and ends as one line naming the log, with exit code 1 (no traceback on the terminal).
Here, in the CLI, because it composes the two layers: launch never imports the UI, nor the UI the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Iterator

from rich.console import Console

from crewtui.config import CrewConfig
from crewtui.errors import CrewError
from crewtui.launch import HANGUP_SIGNALS, call_on_signals, log_to_file, open_runtime
from crewtui.locations import DataDir
from crewtui.text import clean
from crewtui.ui.app import CrewApp, make_app

log = logging.getLogger("crewtui.ui")


class DashboardCrashed(CrewError):
    """The dashboard ended on an error it did not handle: one line for the user, the trace in the log."""

    kind = "crashed"
    exit_code = 1


def crash_message(error: BaseException, dd: DataDir) -> str:
    first = next(iter(str(error).splitlines()), "")
    what = type(error).__name__ + (f": {clean(first)[:200]}" if first else "")
    return f"the dashboard crashed ({what}); the sessions run on, and the details are in {dd.log}"


@contextlib.contextmanager
def exit_on_hangup(app: CrewApp) -> Iterator[None]:
    """The terminal went away (ssh dropped) or we were asked to stop: exit cleanly, sessions keep running."""
    with call_on_signals(app.leave, HANGUP_SIGNALS):
        yield


async def _dashboard(dd: DataDir, crew: CrewConfig, *, mouse: bool) -> None:
    dd.ensure()
    log_to_file(dd)
    failure: BaseException | None = None
    async with open_runtime(dd, crew) as opened:
        app = make_app(opened.runtime, attached=opened.attached, on_quit=None if opened.attached else opened.stop)
        app.freeze_gc = True
        # Textual prints the trace of a crash on the terminal as it leaves: it goes to the log instead.
        trace = io.StringIO()
        app.error_console = Console(file=trace, width=120, color_system=None, markup=False, highlight=False)
        with exit_on_hangup(app), opened.call_when_stopped(app.end_with_runtime):
            try:
                await app.run_async(mouse=mouse)
            except Exception as exc:
                # E.g. the terminal vanished mid-write: the runtime still stops cleanly on the way out.
                log.exception("the dashboard ended with an error")
                failure = exc
        failure = failure or app.crashed
        if trace.getvalue():
            log.error("what the dashboard said as it ended:\n%s", trace.getvalue())
    if failure is not None:
        raise DashboardCrashed(crash_message(failure, dd))


def run_dashboard(dd: DataDir, crew: CrewConfig, *, mouse: bool = True) -> None:
    """Run the dashboard on a data dir: embed its runtime, or attach when another process serves it."""
    asyncio.run(_dashboard(dd, crew, mouse=mouse))
