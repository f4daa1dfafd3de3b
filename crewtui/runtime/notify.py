"""Notifications: the runtime tells people when the crew needs them, without their watching the screen.

What (`[notify] on`): a session `waiting` on a person, `failed`, `timed_out`; a cron run closing below
`run_below` (`run_below`); a `budget` reached (the gateway's SystemEvents with topic "budget"); the runtime
`fenced` (another runtime took its data dir over) or its store failing to write (`store_full`). The first two
kinds come from the bus; the store's troubles come through the store's hooks, since a store that cannot write
cannot be relied on to carry them.

How: every happening of a trigger joins its trigger's open group; a group goes out `group_for` after it opened
(20 sessions failing within a second are one message: "20 sessions failed"). Each channel lets out at most
`max_per_minute` messages in any minute; beyond that they are held and go out merged in the channel's next one.
Channels: `terminal` (the dashboards ring the bell and send OSC 9/777 for it), `desktop` (notify-send) and each
webhook (`webhook:NAME`). Every message sent, or that failed, is a `NotificationSent` on the timeline. Webhooks
and notify-send run in background tasks; neither the bus listener nor the runtime ever waits on them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from crewtui.clock import ClockLike
from crewtui.config import CrewConfig, WebhookConfig
from crewtui.events import Event, NotificationSent, RunClosed, SessionStateChanged, SystemEvent
from crewtui.model import Session, SessionState
from crewtui.runtime.bus import EventBus
from crewtui.runtime.notify_send import Notice, desktop_session, find_notify_send, notify_send, post_webhook
from crewtui.store import Store
from crewtui.text import clean

log = logging.getLogger("crewtui.notify")

LISTED = 10  # sessions named in a message's text; the rest are "+N more"
KEPT = 200  # happenings kept per group (more are counted, not listed)
DETAIL_READ = 2000  # characters of a detail (agent text, maybe megabytes) read to make its one line
EVENT_SESSIONS = 50  # session keys a NotificationSent carries
_WINDOW = 60.0  # the rate limit's window: max_per_minute
_SESSION_TRIGGERS = {
    SessionState.WAITING: "waiting",
    SessionState.FAILED: "failed",
    SessionState.TIMED_OUT: "timed_out",
}
_ORDER = ("fenced", "store_full", "waiting", "failed", "timed_out", "run_below", "budget")


@dataclass(frozen=True)
class Happening:
    """One thing worth telling: a session that failed, a run below its rate, a budget reached..."""

    trigger: str
    ts: float
    key: str | None = None
    label: str | None = None  # a session's label, or a cron run's id
    detail: str | None = None  # what it waits for, why it failed, the run's figures, the budget's text
    state: SessionState | None = None  # the state that made it (a session no longer in it is not told of)


Still = Callable[[str | None, SessionState | None], bool]


@dataclass
class Group:
    """The happenings of one trigger that go out as one message."""

    trigger: str
    items: list[Happening] = field(default_factory=list)
    extra: dict[str, SessionState | None] = field(default_factory=dict)  # sessions beyond KEPT: counted once
    more: int = 0  # happenings of no session beyond KEPT: counted, not listed

    @property
    def count(self) -> int:
        return len(self.items) + len(self.extra) + self.more

    def add(self, h: Happening) -> None:
        if h.key is not None:
            # The same session twice in one window (waiting, answered, waiting again): told once, as it is now.
            if h.key in self.extra:
                self.extra[h.key] = h.state
                return
            self.items = [i for i in self.items if i.key != h.key]
        if len(self.items) < KEPT:
            self.items.append(h)
        elif h.key is not None:
            self.extra[h.key] = h.state
        else:
            self.more += 1

    def merge(self, other: Group) -> None:
        for h in other.items:
            self.add(h)
        listed = {h.key for h in self.items}
        self.extra.update((k, st) for k, st in other.extra.items() if k not in listed)
        self.more += other.more

    def pruned(self, still: Still) -> Group:
        """A copy without the sessions that moved on (`still` says whether a session is still in its state)."""
        items = [h for h in self.items if still(h.key, h.state)]
        extra = {k: st for k, st in self.extra.items() if still(k, st)}
        return Group(self.trigger, items, extra, self.more)


def _plural(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(clean(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def needs_text(needs: dict[str, Any] | None) -> str:
    """What a waiting session asks for, in one line: "permission for Bash {"command": "rm -rf build"}", a question."""
    if not needs:
        return "waits for a person"
    if needs.get("kind") == "question":
        return "asks: " + str(needs.get("text") or "a question")[:DETAIL_READ]
    what = f"permission for {needs.get('tool') or 'a tool'}"
    if needs.get("input") is not None:
        what += " " + _json_head(needs["input"])
    return what


def _json_head(value: Any, limit: int = DETAIL_READ) -> str:
    """The JSON of `value`, or its first `limit` characters or so (a tool's input may be megabytes)."""
    chunks: list[str] = []
    size = 0
    try:
        for chunk in json.JSONEncoder(ensure_ascii=False, default=str).iterencode(value):
            chunks.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    except (TypeError, ValueError):
        return str(value)[:limit]
    return "".join(chunks)[:limit]


def _title(group: Group, run_below: float) -> str:
    n = group.count
    first = group.items[0] if group.items else None
    name = (first.label or first.key if first else None) or next(iter(group.extra), "?")
    if group.trigger == "waiting":
        return f"{name} needs you" if n == 1 else f"{n} sessions need you"
    if group.trigger == "failed":
        return f"{name} failed" if n == 1 else f"{n} sessions failed"
    if group.trigger == "timed_out":
        return f"{name} timed out" if n == 1 else f"{n} sessions timed out"
    if group.trigger == "run_below":
        below = f"below {run_below:.0%}"
        return f"cron run {name} {below}" if n == 1 else f"{n} cron runs {below}"
    if group.trigger == "budget":
        return "budget reached" if n == 1 else f"{n} budgets reached"
    if group.trigger == "fenced":
        return "runtime fenced: another runtime took the data dir over"
    return "store failing: the runtime cannot write its store"


def _lines(group: Group) -> list[str]:
    out = []
    for h in group.items[:LISTED]:
        name = h.label or h.key
        detail = _one_line(h.detail) if h.detail else ""
        out.append(f"{name}: {detail}" if name and detail else (name or detail))
    rest = group.count - min(LISTED, len(group.items))
    if rest > 0:
        out.append(f"+{rest} more")
    return out


def compose(groups: list[Group], run_below: float, crew: str, ts: float) -> Notice:
    """One message for `groups` (one group, or those a rate limit held, merged by trigger)."""
    merged: dict[str, Group] = {}
    for g in groups:
        merged.setdefault(g.trigger, Group(g.trigger)).merge(g)
    parts = sorted(merged.values(), key=lambda g: _ORDER.index(g.trigger) if g.trigger in _ORDER else 99)
    titles = [_title(g, run_below) for g in parts]
    count = sum(g.count for g in parts)
    if len(parts) == 1:
        title, text = titles[0], "\n".join(_lines(parts[0]))
    else:
        title = "; ".join(titles)
        if len(title) > 120:
            title = f"{count} happenings: " + ", ".join(f"{g.count} {g.trigger}" for g in parts)
        text = "\n\n".join(t + ":\n" + "\n".join(_lines(g)) for t, g in zip(titles, parts, strict=True))
    sessions: dict[str, str] = {}
    for g in parts:
        for h in g.items:
            if h.key is not None:
                sessions.setdefault(h.key, h.label or h.key)
    return Notice(
        trigger="+".join(g.trigger for g in parts),
        title=title,
        text=text,
        count=count,
        ts=ts,
        crew=crew,
        sessions=tuple(sessions.items()),
    )


class Gate:
    """One channel's rate limit: at most `per_minute` messages in any minute. What comes beyond is held, and goes
    out merged as the channel's next message once the window has room."""

    def __init__(
        self, clock: ClockLike, per_minute: int, send: Callable[[list[Group]], bool], spawn: Callable[..., Any]
    ) -> None:
        self.clock = clock
        self.per_minute = per_minute
        self.send = send  # False when nothing was left to send (its sessions moved on while it was held)
        self.spawn = spawn
        self.sent: deque[float] = deque()
        self.held: list[Group] = []  # one per trigger: what comes while held merges into it (memory stays bounded)
        self.waiter: asyncio.Task[None] | None = None

    def _room(self) -> bool:
        now = self.clock.now()
        while self.sent and self.sent[0] <= now - _WINDOW:
            self.sent.popleft()
        return len(self.sent) < self.per_minute

    def offer(self, groups: list[Group]) -> None:
        if not self.held and self._room():
            if self.send(groups):
                self.sent.append(self.clock.now())
            return
        for g in groups:
            into = next((h for h in self.held if h.trigger == g.trigger), None)
            if into is None:
                into = Group(g.trigger)  # its own: `g` is offered to every channel's gate
                self.held.append(into)
            into.merge(g)
        if self.waiter is None or self.waiter.done():
            self.waiter = self.spawn(self._release())

    async def _release(self) -> None:
        while self.held:
            if self._room():
                self.release_now()
                return
            await self.clock.sleep(max(0.001, self.sent[0] + _WINDOW - self.clock.now()))

    def release_now(self) -> None:
        """Send what is held as one message, whatever the window says (the runtime stops)."""
        if self.waiter is not None and self.waiter is not asyncio.current_task():
            self.waiter.cancel()
        self.waiter = None
        held, self.held = self.held, []
        if held and self.send(held):
            self.sent.append(self.clock.now())


class Notifier:
    """Turns the runtime's happenings into grouped, rate-limited notifications on every enabled channel."""

    def __init__(
        self,
        bus: EventBus,
        clock: ClockLike,
        crew: CrewConfig,
        lookup: Callable[[str], Session | None] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        backoff: float = 1.0,
        stop_grace: float = 2.0,
    ) -> None:
        self.bus = bus
        self.clock = clock
        self.config = config = crew.notify
        self.crew = crew.crew.name
        self.lookup = lookup or (lambda key: None)
        self.environ = dict(os.environ if environ is None else environ)
        self.backoff = backoff  # the first wait between a webhook's tries (then doubled)
        self.stop_grace = stop_grace  # how long a stop waits for sends under way
        self.enabled = set(config.on)
        self.desktop = config.desktop is True or (
            config.desktop == "auto" and desktop_session(self.environ) and find_notify_send(self.environ) is not None
        )
        self.webhooks: dict[str, WebhookConfig] = {f"webhook:{h.channel_name}": h for h in config.webhooks}
        channels = (["terminal"] if config.terminal else []) + (["desktop"] if self.desktop else [])
        self.gates = {ch: Gate(clock, config.max_per_minute, self._sender(ch), self._timer) for ch in channels}
        for ch in self.webhooks:
            self.gates[ch] = Gate(clock, config.max_per_minute, self._sender(ch), self._timer)
        self.groups: dict[str, Group] = {}
        self._closers: dict[str, asyncio.Task[None]] = {}
        self._timers: set[asyncio.Task[Any]] = set()  # group closers and held releases
        self._sends: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self._running = False

    # ------------------------------------------------------------------------------------ lifecycle

    def start(self, store: Store | None = None) -> None:
        """Listen to the bus, and to `store` for its troubles (keeping whoever else listens to its fencing)."""
        if not self.gates or not self.enabled:
            return  # nothing to tell, or no way to tell it
        self._running = True
        self.bus.listen(self.note)
        if store is not None:
            self._watch_store(store)

    def _watch_store(self, store: Store) -> None:
        before = store.on_fenced

        def fenced(message: str) -> None:
            try:
                self.fenced(message)
            except Exception:
                log.exception("notifications: could not tell of the fencing")
            if before is not None:
                before(message)

        store.on_fenced = fenced
        store.on_write_failed = self.store_failing

    async def stop(self) -> None:
        """Send what is grouped or held now (nobody will later), give sends under way `stop_grace`, cancel the rest."""
        if not self._running:
            return
        self._running = False
        self.bus.unlisten(self.note)
        for trigger in list(self.groups):
            self._close(trigger)
        for gate in self.gates.values():
            gate.release_now()
        for task in list(self._timers):
            task.cancel()
        sends = {t for t in self._sends if not t.done()}
        if sends:
            _, late = await asyncio.wait(sends, timeout=self.stop_grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await asyncio.gather(*self._timers, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    # ------------------------------------------------------------------------------------ happenings

    def note(self, ev: Event) -> None:
        """The bus listener: never raises (it runs inside every publish)."""
        try:
            self._note(ev)
        except Exception:
            log.exception("notifications: could not take event %s", ev.kind)

    def _note(self, ev: Event) -> None:
        if isinstance(ev, SessionStateChanged):
            trigger = _SESSION_TRIGGERS.get(ev.new)
            if trigger is None or ev.old == ev.new or trigger not in self.enabled:
                return
            detail = ev.reason
            if ev.new == SessionState.WAITING and ev.session is not None:
                s = self.lookup(ev.session)
                detail = needs_text(s.needs if s is not None else None)
            self.happen(Happening(trigger, ev.ts, ev.session, ev.label, detail, ev.new))
        elif isinstance(ev, RunClosed):
            if ev.rate is not None and ev.rate < self.config.run_below:
                figures = ", ".join(f"{k} {v}" for k, v in ev.counts.items() if v)
                detail = f"{ev.rate:.0%} done" + (f" ({figures})" if figures else "")
                self.happen(Happening("run_below", ev.ts, label=ev.run, detail=detail))
        elif isinstance(ev, SystemEvent) and ev.topic == "budget":
            self.happen(Happening("budget", ev.ts, ev.session, ev.label, ev.text))

    def fenced(self, message: str) -> None:
        """The store found another runtime's lease: told at once, since this runtime stops right after."""
        self.happen(Happening("fenced", self.clock.now(), detail=message), at_once=True)

    def store_failing(self, reason: str) -> None:
        """The store's writes fail (a full disk); the store says so once, until a write succeeds again."""
        try:
            self.happen(Happening("store_full", self.clock.now(), detail=reason))
        except Exception:
            log.exception("notifications: could not tell of the store's failure")

    def happen(self, h: Happening, at_once: bool = False) -> None:
        if not self._running or h.trigger not in self.enabled:
            return
        if h.detail:
            # One line of it is all a message tells; what an agent wrote may be megabytes, kept up to KEPT times.
            h = dataclasses.replace(h, detail=_one_line(h.detail[:DETAIL_READ]))
        group = self.groups.setdefault(h.trigger, Group(h.trigger))
        group.add(h)
        if at_once:
            self._close(h.trigger)
        elif h.trigger not in self._closers:
            self._closers[h.trigger] = self._timer(self._close_later(h.trigger, h.ts + self.config.group_for))

    async def _close_later(self, trigger: str, due: float) -> None:
        # Due from the first happening's time, not from when this task first runs.
        await self.clock.sleep(due - self.clock.now())
        self._closers.pop(trigger, None)
        self._close(trigger)

    def _close(self, trigger: str) -> None:
        closer = self._closers.pop(trigger, None)
        if closer is not None and closer is not asyncio.current_task():
            closer.cancel()
        group = self.groups.pop(trigger, None)
        if group is None:
            return
        group = group.pruned(self._still)
        if not group.count:
            return  # every session of it moved on (answered, retried) before it went out
        for gate in self.gates.values():
            gate.offer([group])

    def _still(self, key: str | None, state: SessionState | None) -> bool:
        """A session is told of only while it is still in the state that made the happening."""
        if key is None or state is None:
            return True
        s = self.lookup(key)
        return s is None or s.state == state

    # ------------------------------------------------------------------------------------ channels

    def _timer(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name="crewtui-notify-timer")
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)
        return task

    def _sender(self, channel: str) -> Callable[[list[Group]], bool]:
        def send(groups: list[Group]) -> bool:
            # Held messages waited: a session that moved on meanwhile is left out, as from any message.
            groups = [g for g in (g.pruned(self._still) for g in groups) if g.count]
            if not groups:
                return False
            notice = compose(groups, self.config.run_below, self.crew, self.clock.now())
            if channel == "terminal":
                self._record(channel, notice)  # the dashboards ring for it
                return True
            task = asyncio.get_running_loop().create_task(self._send(channel, notice), name=f"crewtui-{channel}")
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
            return True

        return send

    async def _send(self, channel: str, notice: Notice) -> None:
        error: str | None
        try:
            if channel == "desktop":
                error = await notify_send(notice, self.environ)
            else:
                if self._http is None:
                    self._http = aiohttp.ClientSession()
                error = await post_webhook(self._http, self.webhooks[channel], notice, self.clock, self.backoff)
        except asyncio.CancelledError:
            self._record(channel, notice, "not sent: the runtime stopped first")
            raise
        except Exception as exc:  # a bug: said on the timeline, never let out of the task
            log.exception("notifications: sending on %s failed", channel)
            error = f"{type(exc).__name__}: {exc}"
        self._record(channel, notice, error)

    def _record(self, channel: str, notice: Notice, error: str | None = None) -> None:
        self.bus.publish(
            NotificationSent(
                trigger=notice.trigger,
                channel=channel,
                title=notice.title,
                text=notice.text,
                sessions=[key for key, _ in notice.sessions[:EVENT_SESSIONS]],
                count=notice.count,
                ok=error is None,
                error=error,
            )
        )
