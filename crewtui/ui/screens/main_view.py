"""What the main screen shows and how it stays current: `MainView`, the base of `MainScreen` (main.py).

Header, sessions, detail and transcript, timeline and cron meters, footer. It shows the App's copy of the
sessions (`app.book`) and keeps it current: the App's worker buffers the runtime's events, and ten times a
second the buffer is applied and only the rows that changed are repainted, inside `batch_update()`. The copy
holds the live sessions and a window of recent ended ones, listed at start and at each resync; older history
is counted after the first paint and loaded a page at a time when its row is opened (crewtui/ui/older.py). The
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
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.notifications import SeverityLevel
from textual.widget import Widget
from textual.widgets import Input, Static, Tab, Tabs

from crewtui.api import RuntimeInfo
from crewtui.model import STATE_SYMBOLS, Session, SessionState
from crewtui.ui.book import Changes, lacks_pids
from crewtui.ui.calls import FAILED
from crewtui.ui.format import clean_marks, plain
from crewtui.ui.older import PAGE, fetch_page, fetch_window
from crewtui.ui.screens.schedule_view import SCHEDULE_EVERY, Dashboard, ScheduleView
from crewtui.ui.widgets.changes import ChangesPane
from crewtui.ui.widgets.detail import SessionDetail, Transcript
from crewtui.ui.widgets.footer import CrewFooter
from crewtui.ui.widgets.header import StatusHeader
from crewtui.ui.widgets.meters import CronMeters
from crewtui.ui.widgets.peek import TerminalPeek
from crewtui.ui.widgets.session_tree import RowRef, SessionTree
from crewtui.ui.widgets.timeline import Timeline

log = logging.getLogger("crewtui.ui")

TICK = 0.1  # apply buffered events at most ten times a second
RESYNC_EVERY = 60.0  # re-list live sessions and the window: repairs anything a lagging event stream dropped
MIN_SIZE = (60, 16)  # below this the dashboard only says how big it needs to be
WIDE_SIZE = (110, 30)  # below this, one pane at a time (tabs)
PANES = ("sessions", "detail", "schedule")
HISTORY_TAIL = 200
TURNS_EVERY = 0.5  # a preset session's conversation is read again at most this often while it talks


class MainView(ScheduleView):
    def __init__(self, dashboard: Dashboard) -> None:
        super().__init__(dashboard)
        self.layout_mode = "wide"
        self.pane = "sessions"
        self._selected: RowRef | None = None
        self._history_key: str | None = None
        self._history_ready = False
        self._select_after: str | None = None
        self._fetching: set[str] = set()
        self._turns_timer: Any = None
        self._pids_asked: dict[str, tuple[int, SessionState]] = {}
        self._last_internal_error = float("-inf")
        self.changes_shown = False  # the right pane shows the selected session's Changes (c), not its detail
        self._right_title = "Detail"
        self.older_counted = asyncio.Event()  # set once older history is counted (or there is none, or it failed)

    # ------------------------------------------------------------------------------------ the app's state

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
                yield TerminalPeek(self.dashboard.runtime, id="peek")  # a terminal session's screen, not its transcript
                yield ChangesPane(self.dashboard.runtime, id="changes")
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
    def changes_pane(self) -> ChangesPane:
        return self.query_one("#changes", ChangesPane)

    def on_mount(self) -> None:
        self.query_one("#left").border_title = "Sessions"
        self.title_right("Detail")
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
        detail = self.changes_pane.focus_target() if self.changes_shown else self.transcript
        return {"sessions": self.session_tree, "detail": detail, "schedule": self.meters}[pane]

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
        count = await self._list_window(quiet=False)
        if not self.book.sessions:
            self._select(None)
        self.update_header()
        self._update_titles()
        await self._load_schedule()
        self.dashboard.loaded.set()
        if self.dashboard.freeze_gc:
            gc.freeze()
        if count:  # after the first paint: on a year of history, counting it is the runtime's slowest read
            self.call_after_refresh(self._count_older)

    @work(exclusive=True, group="resync", exit_on_error=False)
    async def resync(self) -> None:
        if not self.dashboard.connected:
            return
        if await self._list_window(quiet=True):
            self._count_older()

    async def _list_window(self, *, quiet: bool) -> bool:
        """The live sessions and the most recent ended ones, never the whole history. True when what is older
        should be counted: there is some, not counted yet (or the book moved under it since)."""
        live, ended = await fetch_window(self._call, self.dashboard.window, quiet=quiet)
        if ended is not None:
            self.book.older.window_listed(ended, self.dashboard.window)
        if live is not None or ended is not None:
            self._apply(self.book.load([*(live or ()), *(ended or ())]))
        older = self.book.older
        if older.horizon is None and ended is not None:
            self.older_counted.set()  # nothing older than what is loaded
        return older.horizon is not None and older.needs_count(self.book.sessions)

    @work(exclusive=True, group="older-count", exit_on_error=False)
    async def _count_older(self) -> None:
        older = self.book.older
        if older.horizon is None:
            return
        # Said once: a resync asks again, quietly.
        counts = await self._call("older", older.horizon, what="counting older sessions", quiet=older.asked)
        older.asked = True
        if not self._live():
            return
        if counts is not FAILED:
            older.set_counts(counts, self.book.sessions)
        self._regroup_older()
        self.older_counted.set()

    def _regroup_older(self) -> None:
        """Older rows came, went or changed: regroup (they are rows of the tree) and retitle."""
        with self.app.batch_update():
            self.session_tree.sync(self.book.forest())
            self._update_titles()
            self.update_header()
        if self._selected is not None and self._selected.kind != "session":
            self._show_detail(self._selected)  # a group's detail says what is older too

    def load_older(self, prefix: str) -> None:
        """Open a group's older row: its next page of older ended sessions."""
        older = self.book.older
        if older.horizon is None or prefix not in older.left or prefix in older.loading:
            return
        older.loading.add(prefix)
        self.session_tree.refresh_older()
        self._load_older(prefix, older.cursor_of(prefix))

    @work(group="older-page", exit_on_error=False)
    async def _load_older(self, prefix: str, before: str) -> None:
        older = self.book.older
        try:
            page = await fetch_page(self._call, prefix, before)
        finally:
            older.loading.discard(prefix)
        if not self._live():
            return
        if page is None:
            self.session_tree.refresh_older()
            return
        # Only what the book lacks: its copy of a session it holds is as new as the events made it.
        added = [s for s in page.sessions if s.key not in self.book.sessions]
        older.paged(prefix, added, page)
        tree = self.session_tree
        on_row = tree.current is not None and tree.current.node_id == "o:" + prefix
        ch = self.book.load(added)
        ch.structure = True  # the older row moves below the new rows, or goes
        self._apply(ch)
        self._update_titles()
        self.update_header()
        row = tree.nodes.get("o:" + prefix)
        if row is not None:
            tree.refresh_older()
            if on_row:
                tree.call_after_refresh(tree.move_cursor, row)  # in view again: enter loads the next page
        elif on_row:
            # All loaded, the row gone: the cursor goes to the newest of the page (else the group).
            if not (added and tree.select_key(added[-1].key)):
                tree.select_row("g:" + prefix)
        if self._selected is not None and self._selected.kind != "session":
            self._show_detail(self._selected)  # a group's detail says what is older too

    @work(group="fetch", exit_on_error=False)
    async def _fetch_sessions(self, keys: set[str]) -> None:
        """Sessions an event named before we listed them, or that ended in a workspace: get them one by one."""
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
                if ch.states or ch.usage:  # output alone moves no count nor sum
                    tree.refresh_groups()
                    self.update_header()
                    self.meters.refresh_cells(self.book, self.clock.now())
                if sel is not None and (sel.kind == "group" or sel.id in ch.rows):
                    self._show_detail(sel)
                    if sel.kind == "session" and ch.states:
                        self._want_pids(sel.id)  # e.g. it started running: now it has processes
            transcript = self.transcript
            if self._history_ready and transcript.key is not None:
                key = transcript.key
                if transcript.turns:
                    # Its agent's lines are JSON: the conversation is read again from them, at most twice a second.
                    if key in ch.output or key in ch.agent or key in ch.answered or key in ch.steered:
                        self._turns_soon(key)
                else:
                    for stream, lines in ch.output.get(key, ()):
                        transcript.append(stream, lines)
                    for text in ch.steered.get(key, ()):
                        transcript.append_steer(text)
            if ch.marks:
                self.query_one("#timeline", Timeline).add_marks(clean_marks(ch.marks))
        if ch.schedule:
            self._schedule_soon()
        if self._history_key is not None and self._history_key in ch.retried:
            self._load_history(self._history_key)  # the new attempt's output replaces the old
        new = (ch.unknown | ch.refetch) - self._fetching
        if new:
            self._fetching |= new
            self._fetch_sessions(new)
        if ch.stopped and not self.dashboard.exiting:
            self.notify("the runtime is stopping", severity="warning")

    def _turns_soon(self, key: str) -> None:
        if self._turns_timer is None:
            self._turns_timer = self.set_timer(TURNS_EVERY, lambda: self._reload_turns(key))

    def _reload_turns(self, key: str) -> None:
        self._turns_timer = None
        if self._history_key == key and self._history_ready:
            self._load_history(key, quietly=True)

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
        older = self.book.older
        now = self.clock.now()
        self.query_one("#status", StatusHeader).show(
            info=app.info,
            attached=app.attached,
            connected=app.connected,
            counts=self.book.counts(),
            nodes=self.book.node_counts(),
            marked=len(self.book.marked),
            filters=" ".join(filters),
            older=older.summary,
            now=now,
            waiting=self.book.waiting(),
            agents=self.book.has_agents(),
            cost_today=self.book.cost_today(now),
        )

    def _update_titles(self) -> None:
        """ "Sessions 50", "Sessions 12 of 50" under a filter; with older history not loaded, "Sessions 1,500
        loaded · 998,500 older" (or "12 of 1,500 loaded · …"): what the pane shows is not all there is."""
        shown = sum(1 for node_id in self.session_tree.nodes if node_id.startswith("s:"))
        total = len(self.book.sessions)
        title = f"Sessions {shown:,}" if shown == total else f"Sessions {shown:,} of {total:,}"
        summary = self.book.older.summary
        self.query_one("#left").border_title = f"{title} loaded · {summary}" if summary else title

    # ------------------------------------------------------------------------------------ schedule

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

    # ------------------------------------------------------------------------------------ selection

    @on(SessionTree.RowHighlighted, "#sessions")
    def _row_highlighted(self, message: SessionTree.RowHighlighted) -> None:
        self._select(message.ref)

    def _select(self, ref: RowRef | None) -> None:
        self._selected = ref
        detail = self.query_one("#detail", SessionDetail)
        if ref is None:
            self._history_key = None
            if self.book.sessions or self.book.older.left:
                detail.show_nothing("no session matches the filter (escape clears it)")
            else:
                detail.show_nothing("no sessions yet: press n to spawn one")
            self.transcript.show_note("")
            self.show_changes_of(None)
            return
        self._show_detail(ref)
        if ref.kind == "group":
            self._history_key = None
            self.transcript.show_note("a group: select one of its sessions to see its transcript")
            self.title_right(f"Group {ref.id}")
        elif ref.kind == "older":
            self._history_key = None
            self.transcript.show_note(f"older ended sessions of {ref.id}: enter loads them, {PAGE} at a time")
            self.title_right(f"Group {ref.id} · older")
        else:
            if ref.id != self._history_key or not self._history_ready:
                s = self.book.sessions.get(ref.id)
                self.title_right(f"Session {s.label if s else ref.id}")
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

    def title_right(self, title: str | None = None) -> None:
        """The right pane's title: what it shows, and whether as its Changes."""
        self._right_title = title or self._right_title
        more = " · changes (c: detail)" if self.changes_shown else ""
        self.query_one("#right").border_title = plain(self._right_title + more)

    def show_changes_of(self, ref: RowRef | None) -> None:
        """The Changes view follows the selection while it is shown."""
        if not self.changes_shown:
            return
        s = self.book.sessions.get(ref.id) if ref is not None and ref.kind == "session" else None
        if s is None:
            self.changes_pane.show_note("select a session to see what its branch changed")
        else:
            self.changes_pane.show_session(s)

    def _show_detail(self, ref: RowRef) -> None:
        self.show_changes_of(ref)
        detail = self.query_one("#detail", SessionDetail)
        if ref.kind == "group":
            detail.show_group(ref.id, self.session_tree.group_counts(ref.id), self.book.older.left.get(ref.id, 0))
            return
        if ref.kind == "older":
            older = self.book.older
            edge = self.book.sessions.get(older.horizon or "")
            left, loading = older.left.get(ref.id, 0), ref.id in older.loading
            detail.show_older(ref.id, left, loading, edge.created_at if edge else None, PAGE)
            return
        s = self.book.sessions.get(ref.id)
        if s is not None:
            detail.show_session(s, self.clock.now())

    @work(exclusive=True, group="history", exit_on_error=False)
    async def _load_history(self, key: str, quietly: bool = False) -> None:
        """The transcript's tail (`quietly`: read again, the old one stays until the new one is there). Live lines
        that arrive while the tail loads are already in the files it reads; they are not added."""
        self._history_key = key
        if not quietly:
            self._history_ready = False
            self.transcript.show_note("loading the transcript…")
        history = await self._call("history", key, tail=HISTORY_TAIL, quiet=True)
        if self._history_key != key:
            return
        if history is FAILED:
            if not quietly:
                self.transcript.show_note("the transcript could not be read")
            return
        self.transcript.show_history(history, self.book.answers.get(key, ()))
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
