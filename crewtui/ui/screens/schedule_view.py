"""The base of the main screen: what it needs from the App (`Dashboard`), and its schedule panes.

`ScheduleView` loads the cron jobs with their recent runs (the meters) and the timeline every few seconds, and
soon after a cron fires or a run closes (live events fill in meanwhile); `MainView` (main_view.py) builds on it.
A runtime without a scheduler gets a short note in each pane, never an error. Job names and marks are foreign
text: shown through `plain`, marks cleaned before the timeline draws them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from textual import work
from textual.screen import Screen
from textual.widgets import Static

from crewtui.api import RuntimeAPI, RuntimeInfo
from crewtui.clock import ClockLike
from crewtui.errors import CrewError
from crewtui.events import Event
from crewtui.model import CronJobInfo, CronRun
from crewtui.text import clean
from crewtui.ui.book import SessionBook
from crewtui.ui.format import clean_marks, plain
from crewtui.ui.widgets.meters import HISTORY, CronMeters
from crewtui.ui.widgets.timeline import Timeline

log = logging.getLogger("crewtui.ui")

SCHEDULE_EVERY = 5.0  # reload crons, runs and the timeline (live events fill in meanwhile)


class Dashboard(Protocol):
    """What the main screen needs from the app it runs in (the App in app.py; a protocol, so this module
    need not import it)."""

    runtime: RuntimeAPI
    clock: ClockLike
    book: SessionBook
    info: RuntimeInfo | None
    attached: bool
    connected: bool
    cursor_blink: bool
    freeze_gc: bool
    loaded: asyncio.Event
    window: int  # the ended sessions listed at start and at each resync (crewtui/ui/older.py)

    @property
    def exiting(self) -> bool: ...

    async def call_runtime(self, name: str, *args: Any, what: str = "", quiet: bool = False, **kwargs: Any) -> Any: ...

    async def connect(self) -> None: ...

    def has_events(self) -> bool: ...

    def take_events(self) -> list[Event]: ...

    def main_screen_up(self) -> None: ...


class ScheduleView(Screen[None]):
    def __init__(self, dashboard: Dashboard) -> None:
        super().__init__()
        self.dashboard = dashboard
        self.jobs: list[CronJobInfo] = []
        self.runs: dict[str, list[CronRun]] = {}
        self._schedule_timer: Any = None

    @property
    def book(self) -> SessionBook:
        return self.dashboard.book

    @property
    def clock(self) -> ClockLike:
        return self.dashboard.clock

    @property
    def meters(self) -> CronMeters:
        return self.query_one("#meters", CronMeters)

    def _schedule_soon(self) -> None:
        if self._schedule_timer is None:
            self._schedule_timer = self.set_timer(0.5, self.reload_schedule)

    def reload_schedule(self) -> None:
        self._schedule_timer = None
        self._schedule_worker()

    @work(exclusive=True, group="schedule", exit_on_error=False)
    async def _schedule_worker(self) -> None:
        await self._load_schedule()

    async def _load_schedule(self) -> None:
        """Cron jobs with their recent runs, and the timeline; a runtime without them gets a short note."""
        if not self.dashboard.connected:
            return
        runtime = self.dashboard.runtime
        now = self.clock.now()
        note: str | None = None
        try:
            jobs = await runtime.cron_list()
            runs: dict[str, list[CronRun]] = {}
            for job in jobs:
                if job.payload == "spawn":
                    runs[job.name] = await runtime.runs(job.name, limit=HISTORY)
            self.jobs, self.runs = jobs, runs
            self.meters.set_data(jobs, runs, self.book, now)
            if not jobs:
                note = "no cron jobs in this crew ([[cron]] in the crew file, or crewtui ctl cron add)"
        except (NotImplementedError, AttributeError):
            note = "cron jobs are not available in this runtime yet"
        except CrewError as exc:
            note = exc.message
        except Exception as exc:
            log.exception("loading cron jobs failed")
            note = f"could not load the cron jobs: {exc}"
        meters_note = self.query_one("#meters-note", Static)
        meters_note.update(plain(note))
        meters_note.set_class(note is not None, "-shown")
        self.meters.display = bool(self.jobs)
        timeline = self.query_one("#timeline", Timeline)
        try:
            items = await runtime.timeline(*timeline.window(now))
            timeline.set_items(clean_marks(items), now)
            self._show_timeline_span()  # an unzoomed timeline fits its span to the marks
        except (NotImplementedError, AttributeError):
            timeline.set_note("the timeline is not available in this runtime yet")
        except CrewError as exc:
            timeline.set_note(clean(exc.message))
        except Exception as exc:
            log.exception("loading the timeline failed")
            timeline.set_note(clean(f"could not load the timeline: {exc}"))

    def _show_timeline_span(self) -> None:
        self.query_one("#timeline-pane").border_title = self.query_one("#timeline", Timeline).title
