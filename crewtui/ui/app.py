"""The dashboard app: panes, keys and the live event loop, on top of any `RuntimeAPI`.

`make_app(runtime, ...)` builds it (the CLI and the tests both call it); the CLI runs it on a data dir
(`crewtui.cli.dashboard`, with `crewtui.launch` choosing between an embedded runtime and one it attaches to).

Live and fast: one async worker reads `runtime.watch()` into a buffer; ten times a second the buffer is
applied to the dashboard's own copy of the sessions (`SessionBook`) and only the rows that changed are
repainted, inside `batch_update()`. Every runtime call goes through `_call`, which turns a `CrewError` into a
notification: no traceback reaches a user.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import re
from typing import Any, Awaitable, Callable, Iterator

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.containers import Horizontal, Vertical
from textual.driver import Driver
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Input, Static, Tab, Tabs

from crewtui.errors import CrewError
from crewtui.model import STATE_SYMBOLS, CronJobInfo, CronRun, Event, Session, SessionState
from crewtui.api import RuntimeAPI, RuntimeInfo
from crewtui.clock import Clock, ClockLike
from crewtui.ui.actions import BINDINGS
from crewtui.ui.book import RETRYABLE, Changes, SessionBook, lacks_pids
from crewtui.ui.commands import ActionsProvider
from crewtui.ui.format import DIM
from crewtui.ui.messages import RuntimeLost
from crewtui.ui.screens.confirm import ConfirmScreen
from crewtui.ui.screens.help import HelpScreen
from crewtui.ui.screens.quit import QuitChoice, QuitScreen
from crewtui.ui.screens.spawn import SpawnScreen
from crewtui.ui.screens.steer import SteerScreen
from crewtui.ui.screens.sweep import SweepScreen
from crewtui.ui.widgets.detail import SessionDetail, Transcript
from crewtui.ui.widgets.footer import CrewFooter
from crewtui.ui.widgets.header import StatusHeader
from crewtui.ui.widgets.meters import HISTORY, CronMeters
from crewtui.ui.widgets.session_tree import RowRef, SessionTree
from crewtui.ui.widgets.timeline import SPAN, Timeline

log = logging.getLogger("crewtui.ui")

TICK = 0.1  # apply buffered events at most ten times a second
SCHEDULE_EVERY = 5.0  # reload crons, runs and the timeline (live events fill in meanwhile)
RESYNC_EVERY = 60.0  # re-list sessions: repairs anything a lagging event stream dropped (rare; a full list costs)
MIN_SIZE = (60, 16)  # below this the dashboard only says how big it needs to be
WIDE_SIZE = (110, 30)  # below this, one pane at a time (tabs)
PANES = ("sessions", "detail", "schedule")
HISTORY_TAIL = 200

FAILED: Any = object()  # what `_call` returns when the call failed (and the user was told)

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
        self.layout_mode = "wide"
        self.pane = "sessions"
        self.loaded = asyncio.Event()  # set once the first listing and schedule are shown
        self.jobs: list[CronJobInfo] = []
        self.runs: dict[str, list[CronRun]] = {}
        self._pending: list[Event] = []
        self._selected: RowRef | None = None
        self._history_key: str | None = None
        self._history_ready = False
        self._select_after: str | None = None
        self._fetching: set[str] = set()
        self._pids_asked: dict[str, tuple[int, SessionState]] = {}
        self._schedule_timer: Any = None
        self._exiting = False
        self._leave_when_mounted = False
        self._main: Screen[Any] | None = None
        self._last_internal_error = float("-inf")

    # ------------------------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        yield StatusHeader(id="status")
        yield Tabs(Tab("Sessions", id="tab-sessions"), Tab("Detail", id="tab-detail"),
                   Tab("Schedule", id="tab-schedule"), id="pane-tabs")
        with Horizontal(id="body"):
            with Vertical(id="left", classes="pane"):
                yield Input(placeholder="filter labels: a regex; enter keeps it, escape clears it", id="filter",
                            compact=True)
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

    def _q(self, selector: str, expect_type: type[Any] | None = None) -> Any:
        """A widget of the main screen. `App.query_one` searches the screen on top, which is a modal while
        one is open, and events keep coming meanwhile."""
        main = self._main or self.screen
        return main.query_one(selector, expect_type) if expect_type else main.query_one(selector)

    @property
    def session_tree(self) -> SessionTree:
        return self._q("#sessions", SessionTree)

    @property
    def transcript(self) -> Transcript:
        return self._q("#transcript", Transcript)

    @property
    def meters(self) -> CronMeters:
        return self._q("#meters", CronMeters)

    def on_mount(self) -> None:
        self._main = self.screen
        self._q("#left").border_title = "Sessions"
        self._q("#right").border_title = "Detail"
        self._q("#timeline-pane").border_title = "Timeline · past hour · next hour"
        self._q("#meters-pane").border_title = "Cron jobs · completion rate"
        self._q("#filter", Input).cursor_blink = self.cursor_blink
        self._q("#detail", SessionDetail).show_nothing("loading sessions…")
        self.transcript.show_note("")
        self._apply_layout(self.size.width, self.size.height)
        self._update_header()
        self.session_tree.focus()
        self.set_interval(TICK, self._tick, name="apply-events")
        self.set_interval(1.0, self._tick_second, name="ages")
        self.set_interval(SCHEDULE_EVERY, self._reload_schedule, name="schedule")
        self.set_interval(RESYNC_EVERY, self._resync, name="resync")
        self._bootstrap()
        if self._leave_when_mounted:
            self.call_later(self.leave)

    def on_resize(self, event: events.Resize) -> None:
        self._apply_layout(event.size.width, event.size.height)

    def _apply_layout(self, width: int, height: int) -> None:
        """Wide: every pane at once. Narrow: one pane at a time behind tabs. Tiny: only a note."""
        if width < MIN_SIZE[0] or height < MIN_SIZE[1]:
            mode = "tiny"
        elif width < WIDE_SIZE[0] or height < WIDE_SIZE[1]:
            mode = "narrow"
        else:
            mode = "wide"
        changed = mode != self.layout_mode
        self.layout_mode = mode
        main = self._main or self.screen
        main.set_class(mode == "tiny", "-tiny")
        main.set_class(mode == "narrow", "-narrow")
        footer = self._q("Footer", CrewFooter)
        footer.compact = mode != "wide"
        footer.width = width
        for pane in PANES:
            main.set_class(self.pane == pane, f"-pane-{pane}")
        self._q("#too-small", Static).update(
            f"crewtui needs a terminal of at least {MIN_SIZE[0]}×{MIN_SIZE[1]};\nthis one is {width}×{height}."
        )
        if changed and mode == "narrow" and self._main is not None and self.screen is self._main:
            # The focus may sit in a pane the narrow layout hides: bring it to the pane on show.
            self.call_after_refresh(self._pane_widget(self.pane).focus)

    def _pane_widget(self, pane: str) -> Widget:
        return {"sessions": self.session_tree, "detail": self.transcript, "schedule": self.meters}[pane]

    def _show_pane(self, pane: str) -> None:
        self.pane = pane
        main = self._main or self.screen
        for p in PANES:
            main.set_class(p == pane, f"-pane-{p}")
        tabs = self._q("#pane-tabs", Tabs)
        if tabs.active != f"tab-{pane}":
            tabs.active = f"tab-{pane}"

    @on(Tabs.TabActivated, "#pane-tabs")
    def _tab_activated(self, event: Tabs.TabActivated) -> None:
        if event.tab.id:
            self._show_pane(event.tab.id.removeprefix("tab-"))

    # ------------------------------------------------------------------------------------ runtime calls

    async def _call(self, name: str, *args: Any, what: str = "", quiet: bool = False, **kwargs: Any) -> Any:
        """Call a RuntimeAPI method; on failure tell the user in one line and return FAILED."""
        try:
            return await getattr(self.runtime, name)(*args, **kwargs)
        except CrewError as exc:
            if not quiet:
                self.notify(exc.message, severity="error", timeout=8)
        except (NotImplementedError, AttributeError) as exc:
            log.info("runtime lacks %s: %s", name, exc)
            if not quiet:
                self.notify(f"{what or name} is not available in this runtime yet", severity="warning")
        except Exception as exc:  # a bug or a broken connection: one line for the user, the trace in the log
            log.exception("runtime call %s failed", name)
            if not quiet:
                self.notify(f"{what or name} failed: {exc}", severity="error", timeout=8)
        return FAILED

    @work(exclusive=True, group="bootstrap", exit_on_error=False)
    async def _bootstrap(self) -> None:
        info = await self._call("info")
        if info is not FAILED:
            self.info = info
        self._consume_events()
        sessions = await self._call("list")
        if sessions is not FAILED:
            self._apply(self.book.load(sessions))
        if not self.book.sessions:
            self._select(None)
        self._update_header()
        self._update_titles()
        await self._load_schedule()
        self.loaded.set()
        if self.freeze_gc:
            gc.freeze()

    @work(exclusive=True, group="events", exit_on_error=False)
    async def _consume_events(self) -> None:
        stream = self.runtime.watch()
        reason = "the runtime stopped"
        try:
            async for event in stream:
                self._pending.append(event)
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
        self._update_header()
        self.notify(f"lost the runtime: {message.reason}", severity="error", timeout=10)
        if self.attached:
            self._reconnect()

    @work(exclusive=True, group="reconnect", exit_on_error=False)
    async def _reconnect(self) -> None:
        """Attached: the runtime may come back (a restart); pick up again when it answers."""
        while not self._exiting:
            await asyncio.sleep(2.0)
            info = await self._call("info", quiet=True)
            if info is not FAILED:
                self.info = info
                self.connected = True
                self._consume_events()
                self._resync()
                self._reload_schedule()
                self.notify("reconnected to the runtime")
                return

    @work(exclusive=True, group="resync", exit_on_error=False)
    async def _resync(self) -> None:
        if not self.connected:
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
        """The main screen is up (not torn down at exit): the periodic refreshes have something to draw."""
        return self._main is not None and self._main.is_attached

    def _tick(self) -> None:
        if not self._pending or not self._live():
            return
        events_, self._pending = self._pending, []
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
        with self.batch_update():
            if regroup:
                tree.sync(self.book.forest())
                self._update_titles()
                if self._select_after and tree.select_key(self._select_after):
                    self._select_after = None
            if ch.rows:
                tree.refresh_rows(ch.rows)
                if ch.states:  # output alone moves no count
                    tree.refresh_groups()
                    self._update_header()
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
                self._q("#timeline", Timeline).add_marks(ch.marks)
        if ch.schedule:
            self._schedule_soon()
        if self._history_key is not None and self._history_key in ch.retried:
            self._load_history(self._history_key)  # the new attempt's output replaces the old
        new = ch.unknown - self._fetching
        if new:
            self._fetching |= new
            self._fetch_sessions(new)
        if ch.stopped and not self._exiting:
            self.notify("the runtime is stopping", severity="warning")

    def _tick_second(self) -> None:
        """Ages, the clock and relative times move even when no event comes."""
        if not self._live():
            return
        now = self.clock.now()
        with self._guard("refreshing ages"), self.batch_update():
            self.session_tree.refresh_all()
            self._update_header()
            if self._selected is not None and self._selected.kind == "session":
                self._show_detail(self._selected)
            self._q("#timeline", Timeline).refresh()
            self.meters.refresh_cells(self.book, now)

    def _update_header(self) -> None:
        filters = []
        if self.book.pattern is not None:
            filters.append(f"/{self.book.pattern.pattern}/")
        if self.book.state_filter is not None:
            filters.append(f"{STATE_SYMBOLS[self.book.state_filter]} {self.book.state_filter.value}")
        self._q("#status", StatusHeader).show(
            info=self.info, attached=self.attached, connected=self.connected, counts=self.book.counts(),
            nodes=self.book.node_counts(),
            marked=len(self.book.marked), filters=" ".join(filters), now=self.clock.now(),
        )

    def _update_titles(self) -> None:
        shown = sum(1 for node_id in self.session_tree.nodes if node_id.startswith("s:"))
        total = len(self.book.sessions)
        left = self._q("#left")
        left.border_title = f"Sessions {shown}" if shown == total else f"Sessions {shown} of {total}"

    # ------------------------------------------------------------------------------------ schedule

    def _schedule_soon(self) -> None:
        if self._schedule_timer is None:
            self._schedule_timer = self.set_timer(0.5, self._reload_schedule)

    def _reload_schedule(self) -> None:
        self._schedule_timer = None
        self._schedule_worker()

    @work(exclusive=True, group="schedule", exit_on_error=False)
    async def _schedule_worker(self) -> None:
        await self._load_schedule()

    async def _load_schedule(self) -> None:
        """Cron jobs with their recent runs, and the timeline; a runtime without them gets a short note."""
        if not self.connected:
            return
        now = self.clock.now()
        note: str | None = None
        try:
            jobs = await self.runtime.cron_list()
            runs: dict[str, list[CronRun]] = {}
            for job in jobs:
                if job.payload == "spawn":
                    runs[job.name] = await self.runtime.runs(job.name, limit=HISTORY)
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
        meters_note = self._q("#meters-note", Static)
        meters_note.update(note or "")
        meters_note.set_class(note is not None, "-shown")
        self.meters.display = bool(self.jobs)
        timeline = self._q("#timeline", Timeline)
        try:
            items = await self.runtime.timeline(now - SPAN, now + SPAN)
            timeline.set_items(items, now)
        except (NotImplementedError, AttributeError):
            timeline.set_note("the timeline is not available in this runtime yet")
        except CrewError as exc:
            timeline.set_note(exc.message)
        except Exception as exc:
            log.exception("loading the timeline failed")
            timeline.set_note(f"could not load the timeline: {exc}")

    # ------------------------------------------------------------------------------------ selection

    @on(SessionTree.RowHighlighted, "#sessions")
    def _row_highlighted(self, message: SessionTree.RowHighlighted) -> None:
        self._select(message.ref)

    def _select(self, ref: RowRef | None) -> None:
        self._selected = ref
        detail = self._q("#detail", SessionDetail)
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
            self._q("#right").border_title = f"Group {ref.id}"
        else:
            if ref.id != self._history_key or not self._history_ready:
                s = self.book.sessions.get(ref.id)
                self._q("#right").border_title = f"Session {s.label if s else ref.id}"
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
        if got is FAILED or mine is None or got.attempt != mine.attempt or (got.shim_pid is None and got.agent_pid is None):
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
        detail = self._q("#detail", SessionDetail)
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

    # ------------------------------------------------------------------------------------ actions

    def action_spawn(self) -> None:
        agents = list(self.info.agents) if self.info else []

        def spawned(session: Session | None) -> None:
            if session is None:
                return
            self.notify(f"spawned {session.label} ({session.state.value})")
            if not self.session_tree.select_key(session.key):
                self._select_after = session.key

        self.push_screen(SpawnScreen(agents, self.runtime.spawn), spawned)

    def action_steer(self) -> None:
        targets = self._targets()
        if not targets:
            self.notify("select a session to steer (or mark several with space)", severity="warning")
            return
        live = [s for s in targets if s.state.live]
        if not live:
            if len(targets) == 1:
                s = targets[0]
                self.notify(f"{s.label} has ended ({s.state.value}); it cannot be steered", severity="warning")
            else:
                self.notify(f"all {len(targets)} marked sessions have ended; none can be steered", severity="warning")
            return

        def chosen(text: str | None) -> None:
            if text:
                self._send_all([s.key for s in live], text)

        self.push_screen(SteerScreen(live, skipped=len(targets) - len(live)), chosen)

    @work(group="commands", exit_on_error=False)
    async def _send_all(self, keys: list[str], text: str) -> None:
        sent = 0
        for key in keys:
            if await self._call("send", key, text) is not FAILED:
                sent += 1
        if sent:
            label = self.book.sessions[keys[0]].label if len(keys) == 1 and keys[0] in self.book.sessions else None
            self.notify(f"steered {label}" if label else f"steered {sent} of {len(keys)} sessions")

    def action_kill(self) -> None:
        marked = self.book.marked_sessions()
        ref = self.session_tree.current
        if marked:
            live = [s for s in marked if s.state.live]
            if not live:
                self.notify("none of the marked sessions is live", severity="warning")
                return
            body = Text("\n".join(f"{s.label}  ({s.state.value})" for s in live[:30]))
            if len(live) > 30:
                body.append(f"\n… and {len(live) - 30} more", style=DIM)
            self._confirm_kill(f"Kill {len(live)} marked sessions?", body, keys=[s.key for s in live])
        elif ref is not None and ref.kind == "group":
            members = [s for s in self.book.members(ref.id, visible_only=False) if s.state.live]
            if not members:
                self.notify(f"group {ref.id} has no live session", severity="warning")
                return
            body = Text(f"{len(members)} live sessions whose label starts with {ref.id}-, and their children.\n",
                        style="bold")
            body.append("\n".join(s.label for s in members[:20]), style=DIM)
            if len(members) > 20:
                body.append(f"\n… and {len(members) - 20} more", style=DIM)
            exact = [s.key for s in members if s.label == ref.id]
            self._confirm_kill(f"Kill group {ref.id}?", body, prefix=ref.id + "-", keys=exact)
        else:
            s = self._selected_session()
            if s is None:
                self.notify("select a session or a group to kill", severity="warning")
                return
            if s.state.terminal:
                self.notify(f"{s.label} has already ended ({s.state.value})", severity="warning")
                return
            body = Text.assemble((s.label, "bold"), f"\n{s.key} · {s.state.value} · attempt {s.attempt}\n",
                                 ("SIGTERM to its process group, SIGKILL after the grace period; its children "
                                  "are killed too.", DIM))
            self._confirm_kill(f"Kill {s.label}?", body, keys=[s.key])

    def _confirm_kill(self, title: str, body: Text, *, keys: list[str], prefix: str | None = None) -> None:
        def confirmed(ok: bool | None) -> None:
            if ok:
                self._kill(keys, prefix)

        self.push_screen(ConfirmScreen(title, body, confirm="Kill", id="kill-confirm"), confirmed)

    @work(group="commands", exit_on_error=False)
    async def _kill(self, keys: list[str], prefix: str | None) -> None:
        killed = 0
        if prefix is not None:
            out = await self._call("kill", prefix=prefix)
            if out is not FAILED:
                killed += len(out)
        for key in keys:
            s = self.book.sessions.get(key)
            if s is not None and s.state.terminal:
                continue
            out = await self._call("kill", key)
            if out is not FAILED:
                killed += len(out)
        if killed:
            self.notify(f"killed {killed} session{'s' if killed != 1 else ''}")
            self.book.marked.difference_update(keys)

    def action_sweep(self) -> None:
        self._sweep()

    @work(exclusive=True, group="sweep", exit_on_error=False)
    async def _sweep(self) -> None:
        items = await self._call("sweep", dry_run=True, what="the stale sweep")
        if items is FAILED:
            return
        if not items:
            self.notify("nothing is stale: every running session wrote output recently")
            return
        if not await self.push_screen_wait(SweepScreen(items)):
            return
        swept = await self._call("sweep", what="the stale sweep")
        if swept is not FAILED:
            self.notify(f"swept {len(swept)} stale session{'s' if len(swept) != 1 else ''}")

    def action_retry(self) -> None:
        targets = self._targets()
        if not targets:
            self.notify("select a failed, lost, killed or timed-out session to retry", severity="warning")
            return
        retryable = [s for s in targets if s.state in RETRYABLE]
        if not retryable:
            s = targets[0]
            what = f"{s.label} is {s.state.value}" if len(targets) == 1 else "none of the marked sessions"
            self.notify(f"{what}; only a failed, lost, killed or timed-out session can be retried",
                        severity="warning")
            return
        self._retry([s.key for s in retryable])

    @work(group="commands", exit_on_error=False)
    async def _retry(self, keys: list[str]) -> None:
        for key in keys:
            s = await self._call("retry", key, what="retry")
            if s is not FAILED:
                self.notify(f"retrying {s.label}: attempt {s.attempt} ({s.state.value})")

    def action_trigger(self) -> None:
        job = self.meters.selected_job
        if job is None:
            self.notify("no cron job to trigger: select one in the cron jobs pane", severity="warning")
            return
        self._trigger(job)

    @work(group="commands", exit_on_error=False)
    async def _trigger(self, job: str) -> None:
        run = await self._call("cron_trigger", job, what="triggering a cron job")
        if run is FAILED:
            return
        if run is None:
            self.notify(f"fired {job}")
        else:
            refused = f", {len(run.refused)} refused" if run.refused else ""
            self.notify(f"fired {job}: run #{run.number}, {len(run.sessions)} sessions{refused}")
        self._schedule_soon()

    def action_mark(self) -> None:
        tree = self.session_tree
        ref = tree.current
        if ref is None:
            return
        if ref.kind == "session":
            changed = self.book.toggle_mark([ref.id])
            tree.action_cursor_down()  # htop: tag and move on, so a run of rows is quick to mark
        else:
            changed = self.book.toggle_mark([s.key for s in self.book.members(ref.id)])
        tree.refresh_rows(changed)
        tree.refresh_groups()
        self._update_header()

    def action_filter(self) -> None:
        if self.layout_mode == "narrow":
            self._show_pane("sessions")
        self._q("#left").add_class("-filtering")
        self._q("#filter", Input).focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        error = self._q("#filter-error", Static)
        try:
            self.book.set_pattern(event.value)
        except re.error as exc:
            error.update(f"invalid regex: {exc}")
            error.add_class("-shown")
            return
        error.update("")
        error.remove_class("-shown")
        self._regroup()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if not event.value:
            self._q("#left").remove_class("-filtering")
        self.session_tree.focus()

    def _regroup(self) -> None:
        with self.batch_update():
            self.session_tree.sync(self.book.forest())
            self._update_titles()
            self._update_header()
        if not self.session_tree.nodes:
            self._select(None)

    def action_state_filter(self, state: str) -> None:
        self.book.state_filter = None if state == "all" else SessionState(state)
        self._regroup()

    def action_clear(self) -> None:
        """Escape: the text filter first, then the state filter, then the marks."""
        filt = self._q("#filter", Input)
        if filt.value or filt.has_focus:
            filt.value = ""  # Input.Changed regroups
            self.book.set_pattern("")
            self._q("#left").remove_class("-filtering")
            self._q("#filter-error", Static).remove_class("-shown")
            self._regroup()
            self.session_tree.focus()
        elif self.book.state_filter is not None:
            self.action_state_filter("all")
        elif self.book.marked:
            changed = set(self.book.marked)
            self.book.marked.clear()
            self.session_tree.refresh_rows(changed)
            self.session_tree.refresh_groups()
            self._update_header()

    def action_open(self) -> None:
        ref = self.session_tree.current
        if ref is None:
            return
        if ref.kind == "group":
            self.session_tree.toggle_current()
            return
        if self.layout_mode == "narrow":
            self._show_pane("detail")
        self.transcript.focus()

    def action_next_pane(self) -> None:
        if self.layout_mode == "narrow":
            pane = PANES[(PANES.index(self.pane) + 1) % len(PANES)]
            self._show_pane(pane)
            self.call_after_refresh(self._pane_widget(pane).focus)
            return
        order: list[Widget] = [self.session_tree, self.transcript, self.meters]
        focused = self.focused
        idx = next((i for i, w in enumerate(order) if w is focused), -1)
        order[(idx + 1) % len(order)].focus()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

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
                    await self._call("kill", key, quiet=True)

            await asyncio.gather(*(kill_one(s.key) for s in list(self.book.sessions.values()) if s.state.live))
        self.exit()

    def leave(self) -> None:
        """Exit and leave every session running: the terminal, the browser page or its server went away, or
        we were asked to stop (SIGTERM, SIGHUP)."""
        if self._main is None:  # still starting: exiting now would pull the screen from under on_mount
            self._leave_when_mounted = True
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
) -> CrewApp:
    """The dashboard on `runtime`. `on_quit(kill_sessions)` runs before the app exits after `q`."""
    return CrewApp(runtime, clock=clock, attached=attached, on_quit=on_quit)
