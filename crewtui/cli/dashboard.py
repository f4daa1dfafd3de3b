"""Running the dashboard on a data dir: `crewtui.launch` opens the runtime, `make_app` shows it.

Embedded (nobody serves the data dir: the runtime starts in this process and event loop, and `q` may stop it)
or attached (another process serves it: the same dashboard over the socket). Either way the log goes to the
data dir's file while the dashboard owns the terminal, and a hang-up or SIGTERM leaves the sessions running.
Here, in the CLI, because it composes the two layers: launch never imports the UI, nor the UI the runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from crewtui.config import CrewConfig
from crewtui.launch import HANGUP_SIGNALS, call_on_signals, log_to_file, open_runtime
from crewtui.locations import DataDir
from crewtui.ui.app import CrewApp, make_app

log = logging.getLogger("crewtui.ui")


@contextlib.contextmanager
def exit_on_hangup(app: CrewApp) -> Iterator[None]:
    """The terminal went away (ssh dropped) or we were asked to stop: exit cleanly, sessions keep running."""
    with call_on_signals(app.leave, HANGUP_SIGNALS):
        yield


async def _dashboard(dd: DataDir, crew: CrewConfig, *, mouse: bool) -> None:
    dd.ensure()
    log_to_file(dd)
    async with open_runtime(dd, crew) as opened:
        app = make_app(opened.runtime, attached=opened.attached, on_quit=None if opened.attached else opened.stop)
        app.freeze_gc = True
        with exit_on_hangup(app), opened.call_when_stopped(app.end_with_runtime):
            try:
                await app.run_async(mouse=mouse)
            except Exception:
                if opened.attached:
                    raise
                # E.g. the terminal vanished mid-write: the embedded runtime still stops cleanly on the way out.
                log.exception("the dashboard ended with an error")


def run_dashboard(dd: DataDir, crew: CrewConfig, *, mouse: bool = True) -> None:
    """Run the dashboard on a data dir: embed its runtime, or attach when another process serves it."""
    asyncio.run(_dashboard(dd, crew, mouse=mouse))
