"""What the main screen shows and how it stays current: `MainView`, the base of `MainScreen` (main.py).

Header, sessions, detail and transcript, timeline and cron meters, footer. It shows the App's copy of the
sessions (`app.book`) and keeps it current: the App's worker buffers the runtime's events, and ten times a
second the buffer is applied and only the rows that changed are repainted, inside `batch_update()`. The
layout follows the terminal (wide; narrow, one pane at a time behind tabs; tiny, only a note), the schedule
panes reload every few seconds, and the selection drives the detail pane and the transcript. The actions on
sessions are `MainScreen`'s. What the runtime sends is foreign text: titles and notes show it through `plain`,
timeline marks are cleaned before the timeline draws them, and notifications are plain text.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Iterator
from typing import Any, Protocol

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Input, Static, Tab, Tabs

from crewtui.api import RuntimeAPI, RuntimeInfo
from crewtui.clock import ClockLike
from crewtui.errors import CrewError
from crewtui.model import STATE_SYMBOLS, CronJobInfo, CronRun, Event, Session, SessionState
from crewtui.text import clean
from crewtui.ui.book import Changes, SessionBook, lacks_pids
from crewtui.ui.calls import FAILED
from crewtui.ui.format import clean_marks, plain
from crewtui.ui.widgets.detail import SessionDetail, Transcript
from crewtui.ui.widgets.footer import CrewFooter
from crewtui.ui.widgets.header import StatusHeader
from crewtui.ui.widgets.meters import HISTORY, CronMeters
from crewtui.ui.widgets.session_tree import RowRef, SessionTree
from crewtui.ui.widgets.timeline import Timeline

log = logging.getLogger("crewtui.ui")

TICK = 0.1  # apply buffered events at most ten times a second
SCHEDULE_EVERY = 5.0  # reload crons, runs and the timeline (live events fill in meanwhile)
RESYNC_EVERY = 60.0  # re-list sessions: repairs anything a lagging event stream dropped (rare; a full list costs)
MIN_SIZE = (60, 16)  # below this the dashboard only says how big it needs to be
WIDE_SIZE = (110, 30)  # below this, one pane at a time (tabs)
PANES = ("sessions", "detail", "schedule")
HISTORY_TAIL = 200


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

    @property
    def exiting(self) -> bool: ...

    async def call_runtime(self, name: str, *args: Any, what: str = "", quiet: bool = False, **kwargs: Any) -> Any: ...

    async def connect(self) -> None: ...

    def has_events(self) -> bool: ...

    def take_events(self) -> list[Event]: ...

    def main_screen_up(self) -> None: ...


class MainView(Screen[None]):
    def __init__(self, dashboard: Dashboard) -> None:
        super().__init__()
        self.dashboard = dashboard
        self.layout_mode = "wide"
        self.pane = "sessions"
        self.jobs: list[CronJobInfo] = []
        self.runs: dict[str, list[CronRun]] = {}
        self._selected: RowRef | None = None
        self._history_key: str | None = None
        self._history_ready = False
        self._select_after: str | None = None
        self._fetching: set[str] = set()
        self._pids_asked: dict[str, tuple[int, SessionState]] = {}
        self._schedule_timer: Any = None
        self._last_internal_error = float("-inf")

    # ------------------------------------------------------------------------------------ the app's state

    @property
    def book(self) -> SessionBook:
        return self.dashboard.book

    @property
    def clock(self) -> ClockLike:
        return self.dashboard.clock

    @property
    def info(self) -> RuntimeInfo | None:
        return self.dashboard.info

    async def _call(self, name: str, *args: Any, what: str = "", quiet: bool = False, **kwargs: Any) -> Any:
        return await self.dashboard.call_runtime(name, *args, what=what, quiet=quiet, **kwargs)

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = False,
    ) -> None:
        """As the App's: plain text unless asked (Textual's widgets read a message as markup by default), since
        our messages name sessions and quote what the user typed."""
        self.app.notify(message, title=title, severity=severity, timeout=timeout, markup=markup)

    # ------------------------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="status")
        yield Tabs(
            Tab("Sessions", id="tab-sessions"),
            Tab("Detail", id="tab-detail"),
            Tab("Schedule", id="tab-schedule"),
            id="pane-tabs",
        )
        with Horizontal(id="body"):
            with Vertical(id="left", classes="pane"):
                yield Input(
                    placeholder="filter labels: a regex; enter keeps it, escape clears it", id="filter", compact=True
                )
                yield Static("", id="filter-error")
                yield SessionTree(self.book, self.clock, id="sessions")
            with Vertical(id="right", classes="pane"):
                yield SessionDetail(id="detail")
                yield Transcript(id="transcript")
        with Horizontal(id="bottom"):
            with Vertical(id="timeline-pane", classes="pane"):
                yield Timeline(self.clock.now, id="timeline")
            with Vertical(id="meters-pane", classes="pane"):
                yield Static("", id="meters-note")
                yield CronMeters(id="meters")
        yield Static("", id="too-small")
        yield CrewFooter()

    @property
    def session_tree(self) -> SessionTree:
        return self.query_one("#sessions", SessionTree)

    @property
    def transcript(self) -> Transcript:
        return self.query_one("#transcript", Transcript)

    @property
    def meters(self) -> CronMeters:
        return self.query_one("#meters", CronMeters)

    def on_mount(self) -> None:
        self.query_one("#left").border_title = "Sessions"
        self.query_one("#right").border_title = "Detail"
        self._show_timeline_span()
        self.query_one("#meters-pane").border_title = "Cron jobs · completion rate"
        self.query_one("#filter", Input).cursor_blink = self.dashboard.cursor_blink
        self.query_one("#detail", SessionDetail).show_nothing("loading sessions…")
        self.transcript.show_note("")
        self.apply_layout(self.app.size.width, self.app.size.height)
        self.update_header()
        self.session_tree.focus()
        # Timers of a screen keep running while a modal is on top: events are applied meanwhile.
        self.set_interval(TICK, self._tick, name="apply-events")
        self.set_interval(1.0, self._tick_second, name="ages")
        self.set_interval(SCHEDULE_EVERY, self.reload_schedule, name="schedule")
        self.set_interval(RESYNC_EVERY, self.resync, name="resync")
        self._bootstrap()
        self.dashboard.main_screen_up()

    def apply_layout(self, width: int, height: int) -> None:
        """Wide: every pane at once. Narrow: one pane at a time behind tabs. Tiny: only a note."""
        if width < MIN_SIZE[0] or height < MIN_SIZE[1]:
            mode = "tiny"
        elif width < WIDE_SIZE[0] or height < WIDE_SIZE[1]:
            mode = "narrow"
        else:
            mode = "wide"
        changed = mode != self.layout_mode
        self.layout_mode = mode
        self.set_class(mode == "tiny", "-tiny")
        self.set_class(mode == "narrow", "-narrow")
        footer = self.query_one("Footer", CrewFooter)
        footer.compact = mode != "wide"
        footer.width = width
        for pane in PANES:
            self.set_class(self.pane == pane, f"-pane-{pane}")
        self.query_one("#too-small", Static).update(
            Text(f"crewtui needs a terminal of at least {MIN_SIZE[0]}×{MIN_SIZE[1]};\nthis one is {width}×{height}.")
        )
        if changed and mode == "narrow" and self.app.screen is self:
            # The focus may sit in a pane the narrow layout hides: bring it to the pane on show.
            self.call_after_refresh(self._pane_widget(self.pane).focus)

    def _pane_widget(self, pane: str) -> Widget:
        return {"sessions": self.session_tree, "detail": self.transcript, "schedule": self.meters}[pane]

    def _show_pane(self, pane: str) -> None:
        self.pane = pane
        for p in PANES:
            self.set_class(p == pane, f"-pane-{p}")
        tabs = self.query_one("#pane-tabs", Tabs)
        if tabs.active != f"tab-{pane}":
            tabs.active = f"tab-{pane}"

    @on(Tabs.TabActivated, "#pane-tabs")
    def _tab_activated(self, event: Tabs.TabActivated) -> None:
        if event.tab.id:
            self._show_pane(event.tab.id.removeprefix("tab-"))

    # ------------------------------------------------------------------------------------ loading

    @work(exclusive=True, group="bootstrap", exit_on_error=False)
    async def _bootstrap(self) -> None:
        await self.dashboard.connect()  # the event stream first: nothing happens unseen between it and the listing
        sessions = await self._call("list")
        if sessions is not FAILED:
            self._apply(self.book.load(sessions))
        if not self.book.sessions:
            self._select(None)
        self.update_header()
        self._update_titles()
        await self._load_schedule()
        self.dashboard.loaded.set()
        if self.dashboard.freeze_gc:
            gc.freeze()

    @work(exclusive=True, group="resync", exit_on_error=False)
    async def resync(self) -> None:
        if not self.dashboard.connected:
            return
        sessions = await self._call("list", quiet=True)
        if sessions is not FAILED:
            self._apply(self.book.load(sessions))

    @work(group="fetch", exit_on_error=False)
    async def _fetch_sessions(self, keys: set[str]) -> None:
        """Sessions an event named before we listed them: get them one by one."""
        found = []
        for key in keys:
            s = await self._call("get", key, quiet=True)
            if s is not FAILED:
                found.append(s)
        self._fetching.difference_update(keys)
        if found:
            self._apply(self.book.load(found))

    # ------------------------------------------------------------------------------------ applying events

    @contextlib.contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        """A bug in a periodic refresh must not take the dashboard (and an embedded runtime) down with a
        traceback: log it, say it once in a while, and keep going."""
        try:
            yield
        except Exception:
            log.exception("%s failed", what)
            now = self.clock.now()
            if now - self._last_internal_error > 10:
                self._last_internal_error = now
                self.notify(f"internal error while {what}; details are in the log", severity="error")

    def _live(self) -> bool:
        """The screen is up (not torn down at exit): the periodic refreshes have something to draw."""
        return self.is_attached

    def _tick(self) -> None:
        if not self.dashboard.has_events() or not self._live():
            return
        events_ = self.dashboard.take_events()
        with self._guard("applying events"):
            self._apply(self.book.apply(events_))

    def flush_events(self) -> None:
        """Apply what is buffered now (tests and screenshots; the timer does it otherwise)."""
        self._tick()

    def _apply(self, ch: Changes) -> None:
        if not ch and not ch.steered and not ch.unknown:
            return
        tree = self.session_tree
        sel = self._selected
        # Under a state filter, a state change moves a session in or out of view.
        regroup = ch.structure or (ch.states and self.book.state_filter is not None)
        with self.app.batch_update():
            if regroup:
                tree.sync(self.book.forest())
                self._update_titles()
                if self._select_after and tree.select_key(self._select_after):
                    self._select_after = None
            if ch.rows:
                tree.refresh_rows(ch.rows)
                if ch.states:  # output alone moves no count
                    tree.refresh_groups()
                    self.update_header()
                    self.meters.refresh_cells(self.book, self.clock.now())
                if sel is not None and (sel.kind == "group" or sel.id in ch.rows):
                    self._show_detail(sel)
                    if sel.kind == "session" and ch.states:
                        self._want_pids(sel.id)  # e.g. it started running: now it has processes
            transcript = self.transcript
            if self._history_ready and transcript.key is not None:
                for stream, lines in ch.output.get(transcript.key, ()):
                    transcript.append(stream, lines)
                for text in ch.steered.get(transcript.key, ()):
                    transcript.append_steer(text)
            if ch.marks:
                self.query_one("#timeline", Timeline).add_marks(clean_marks(ch.marks))
        if ch.schedule:
            self._schedule_soon()
        if self._history_key is not None and self._history_key in ch.retried:
            self._load_history(self._history_key)  # the new attempt's output replaces the old
        new = ch.unknown - self._fetching
        if new:
            self._fetching |= new
            self._fetch_sessions(new)
        if ch.stopped and not self.dashboard.exiting:
            self.notify("the runtime is stopping", severity="warning")

    def _tick_second(self) -> None:
        """Ages, the clock and relative times move even when no event comes."""
        if not self._live():
            return
        now = self.clock.now()
        with self._guard("refreshing ages"), self.app.batch_update():
            self.session_tree.refresh_all()
            self.update_header()
            if self._selected is not None and self._selected.kind == "session":
                self._show_detail(self._selected)
            self.query_one("#timeline", Timeline).refresh()
            self.meters.refresh_cells(self.book, now)

    def update_header(self) -> None:
        filters = []
        if self.book.pattern is not None:
            filters.append(f"/{self.book.pattern.pattern}/")
        if self.book.state_filter is not None:
            filters.append(f"{STATE_SYMBOLS[self.book.state_filter]} {self.book.state_filter.value}")
        app = self.dashboard
        self.query_one("#status", StatusHeader).show(
            info=app.info,
            attached=app.attached,
            connected=app.connected,
            counts=self.book.counts(),
            nodes=self.book.node_counts(),
            marked=len(self.book.marked),
            filters=" ".join(filters),
            now=self.clock.now(),
        )

    def _update_titles(self) -> None:
        shown = sum(1 for node_id in self.session_tree.nodes if node_id.startswith("s:"))
        total = len(self.book.sessions)
        left = self.query_one("#left")
        left.border_title = f"Sessions {shown}" if shown == total else f"Sessions {shown} of {total}"

    # ------------------------------------------------------------------------------------ schedule

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

    def zoom_timeline(self, step: int) -> None:
        """`-` (+1) and `+` (-1): the timeline's next longer or shorter span; a longer one is fetched at once."""
        timeline = self.query_one("#timeline", Timeline)
        if not timeline.widen(step):
            limit = "widest: a day" if step > 0 else "narrowest: a minute"
            self.notify(f"the timeline is at its {limit} either side of now")
            return
        self._show_timeline_span()
        if self.layout_mode == "narrow":
            self._show_pane("schedule")
        if step > 0:
            self.reload_schedule()

    def _show_timeline_span(self) -> None:
        self.query_one("#timeline-pane").border_title = self.query_one("#timeline", Timeline).title

    # ------------------------------------------------------------------------------------ selection

    @on(SessionTree.RowHighlighted, "#sessions")
    def _row_highlighted(self, message: SessionTree.RowHighlighted) -> None:
        self._select(message.ref)

    def _select(self, ref: RowRef | None) -> None:
        self._selected = ref
        detail = self.query_one("#detail", SessionDetail)
        if ref is None:
            self._history_key = None
            if self.book.sessions:
                detail.show_nothing("no session matches the filter (escape clears it)")
            else:
                detail.show_nothing("no sessions yet: press n to spawn one")
            self.transcript.show_note("")
            return
        self._show_detail(ref)
        if ref.kind == "group":
            self._history_key = None
            self.transcript.show_note("a group: select one of its sessions to see its transcript")
            self.query_one("#right").border_title = plain(f"Group {ref.id}")
        else:
            if ref.id != self._history_key or not self._history_ready:
                s = self.book.sessions.get(ref.id)
                self.query_one("#right").border_title = plain(f"Session {s.label if s else ref.id}")
                self._load_history(ref.id)
            self._want_pids(ref.id)

    def _want_pids(self, key: str) -> None:
        """The shown session's pids, when this copy lacks them: a spawn or state event does not carry them, so
        a session that started after the last listing has none here. Asked once per attempt and state."""
        s = self.book.sessions.get(key)
        if s is None or not lacks_pids(s):
            return
        asked = (s.attempt, s.state)
        if self._pids_asked.get(key) == asked:
            return
        self._pids_asked[key] = asked
        self._fetch_pids(key)

    @work(exclusive=True, group="pids", exit_on_error=False)
    async def _fetch_pids(self, key: str) -> None:
        try:
            got = await self._call("get", key, quiet=True)
        except asyncio.CancelledError:  # the cursor moved on: ask again when it comes back
            self._pids_asked.pop(key, None)
            raise
        mine = self.book.sessions.get(key)
        if got is FAILED or mine is None or got.attempt != mine.attempt:
            return
        if got.shim_pid is None and got.agent_pid is None:
            return
        if not self._live():
            return
        # Only the process fields: the state, output and the rest may have moved on since the runtime answered,
        # and the event stream keeps those current.
        mine.shim_pid, mine.agent_pid = got.shim_pid, got.agent_pid
        mine.shim_start, mine.agent_start = got.shim_start, got.agent_start
        if mine.started_at is None:
            mine.started_at = got.started_at
        self._apply(Changes(rows={key}))

    def _show_detail(self, ref: RowRef) -> None:
        detail = self.query_one("#detail", SessionDetail)
        if ref.kind == "group":
            detail.show_group(ref.id, self.session_tree.group_counts(ref.id))
            return
        s = self.book.sessions.get(ref.id)
        if s is not None:
            detail.show_session(s, self.clock.now())

    @work(exclusive=True, group="history", exit_on_error=False)
    async def _load_history(self, key: str) -> None:
        # Live lines that arrive while the tail loads are already in the files it reads; they are not added.
        self._history_key = key
        self._history_ready = False
        self.transcript.show_note("loading the transcript…")
        history = await self._call("history", key, tail=HISTORY_TAIL, quiet=True)
        if self._history_key != key:
            return
        if history is FAILED:
            self.transcript.show_note("the transcript could not be read")
            return
        self.transcript.show_history(history)
        self._history_ready = True

    def _selected_session(self) -> Session | None:
        ref = self.session_tree.current
        if ref is None or ref.kind != "session":
            return None
        return self.book.sessions.get(ref.id)

    def _targets(self) -> list[Session]:
        """The marked sessions if any, else the selected one."""
        marked = self.book.marked_sessions()
        if marked:
            return marked
        s = self._selected_session()
        return [s] if s is not None else []
