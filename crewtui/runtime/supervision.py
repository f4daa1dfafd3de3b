"""Supervision: retries (a user's, a watchdog's), what a watchdog does when it fires, and the stale sweep.

A retry keeps the session's key and label and starts attempt + 1. A watchdog is a no-op for a session that
is done; otherwise it retries (killing the session first if it still runs) up to `max_attempts`, then the
session is timed out; a failed or lost session is a silent failure the watchdog surfaces and retries. A
sweep kills running sessions that wrote nothing for `stale_after`, and says why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from crewtui.clock import ClockLike
from crewtui.config import CrewConfig
from crewtui.errors import BadInput, Conflict, NotFound
from crewtui.events import SessionRetried, SweepDone, WatchdogFired
from crewtui.model import Session, SessionState, SweepItem
from crewtui.runtime.bus import EventBus
from crewtui.runtime.launcher import Launcher
from crewtui.runtime.retention import Retention
from crewtui.runtime.sessions import SessionTable
from crewtui.runtime.workspaces import Workspaces

RetryCause = Literal["watchdog", "rate_limit", "user", "lost"]
WatchdogOutcome = Literal["noop", "retried", "timed_out", "gave_up"]


class Supervisor:
    def __init__(
        self,
        table: SessionTable,
        launcher: Launcher,
        retention: Retention,
        bus: EventBus,
        clock: ClockLike,
        crew: CrewConfig,
    ) -> None:
        self.table = table
        self.launcher = launcher
        self.retention = retention
        self.bus = bus
        self.clock = clock
        self.crew = crew
        self.arm_watchdog: Callable[[Session], None] = lambda s: None  # the scheduler's, when there is one
        self.workspaces: Workspaces | None = None  # the sweep lists (and removes) worktrees of ended sessions
        # Attempts a person killed: final, whatever a watchdog was doing to them at the time (key -> attempt).
        self.final_kills: dict[str, int] = {}

    def kill_is_final(self, keys: list[str]) -> None:
        """A person kills these sessions (and their descendants): no watchdog may start them again."""
        for key in keys:
            for k in self.table.family(key):
                s = self.table.sessions.get(k)
                if s is not None and s.state.live:
                    self.final_kills[k] = s.attempt

    async def kill(self, ref: str | None, prefix: str | None, reason: str) -> list[Session]:
        """Kill one session (ref) or every live one whose label starts with prefix, with their descendants."""
        if (ref is None) == (prefix is None):
            raise BadInput("kill needs exactly one of a session key/label or --prefix")
        if ref is not None:
            s = await self.table.find(ref)  # one not in memory has ended: refused just below
            if s.state.terminal:
                raise Conflict(f"session {self.table.describe(s.key)} has already ended ({s.state.value})")
            targets = [s.key]
        else:
            if not prefix:
                raise BadInput("--prefix must not be empty (that would kill every session)")
            targets = [s.key for s in self.table.sessions.values() if s.state.live and s.label.startswith(prefix)]
            if not targets:
                raise NotFound(f"no live session has a label starting with {prefix!r}")
        killed = [self.table.sessions[k] for k in targets]  # held: once ended they may leave memory before we answer
        self.kill_is_final(targets)
        await self.launcher.kill_keys(targets, reason, cascade=True)
        return [s.model_copy(deep=True) for s in killed]

    # ------------------------------------------------------------------------------------ retry

    async def retry(self, ref: str, cause: RetryCause = "user") -> Session:
        """Start a new attempt of an ended session: same key and label, attempt + 1."""
        table = self.table
        s = await table.find(ref)
        if s.key not in table.sessions:
            # Evicted from memory (it ended a while ago): refuse what the stored copy already shows, else bring it
            # and its children back, then check again on the copy in memory (things moved while we read).
            self._check_retry(s)
            await self.retention.restore(s)
            s = table.sessions[s.key]
        self._check_retry(s)
        if cause != "user" and self.final_kills.get(s.key) == s.attempt:
            raise Conflict(f"session {table.describe(s.key)} was killed by a person; only a person may retry it")
        self.final_kills.pop(s.key, None)
        table.claim(s)
        s.attempt += 1
        s.rate_limited = 0
        s.next_try_at = None
        self.launcher.reset_for_try(s)
        table.transition(s, SessionState.PENDING, reason=f"retry: attempt {s.attempt} ({cause})")
        self.bus.publish(SessionRetried(session=s.key, label=s.label, attempt=s.attempt, cause=cause))
        if s.watchdog_after:
            self.arm_watchdog(s)
        self.launcher.enqueue(s.key)
        await self.launcher.launched(s.key)
        return s.model_copy(deep=True)

    def _check_retry(self, s: Session) -> None:
        """Raise Conflict if the session cannot have a new attempt now."""
        table = self.table
        if s.state == SessionState.DONE:
            raise Conflict(f"session {table.describe(s.key)} is done; there is nothing to retry")
        if s.state.live:
            raise Conflict(
                f"session {table.describe(s.key)} is still {s.state.value}; kill it first or let its watchdog retry it"
            )
        holder = table.labels.holder(s.label)
        if holder is not None and holder != s.key:
            raise Conflict(
                f"label {s.label!r} is now held by live session {table.describe(holder)}; cannot retry {s.key}"
            )
        if s.domain:
            dh = table.domains.holder(s.domain)
            if dh is not None and dh != s.key:
                raise Conflict(
                    f"domain {s.domain!r} is now held by live session {table.describe(dh)}; cannot retry {s.key}"
                )
        parent = table.sessions.get(s.parent) if s.parent else None
        # A parent no longer in memory has ended (live sessions are never evicted).
        if s.parent and (parent is None or parent.state.terminal):
            raise Conflict(f"its parent {table.describe(s.parent)} has ended; a child cannot be retried without it")

    # ------------------------------------------------------------------------------------ watchdog

    async def watchdog_fired(self, key: str, attempt: int) -> str:
        """A session's watchdog: a no-op if it is done; else retry it (killing it if it still runs), up to
        max_attempts; then it is timed out. Returns the outcome (also published as an event)."""
        s = self.table.sessions.get(key)
        if s is None or s.attempt != attempt:
            return "noop"  # a timer of an earlier attempt
        limit = s.max_attempts
        after = f"{s.watchdog_after:g}s" if s.watchdog_after else "its watchdog time"
        outcome: WatchdogOutcome
        if s.state == SessionState.DONE:
            outcome, reason = "noop", "done in time"
        elif s.state in (SessionState.KILLED, SessionState.TIMED_OUT):
            outcome, reason = "noop", f"already {s.state.value}"
        elif s.state == SessionState.WAITING:
            # It waits on a person, not on its work: never killed for that (as it is never stale). Look again later.
            self.arm_watchdog(s)
            outcome, reason = "noop", f"waiting on a person; looked at again in {after}"
        elif s.state.live:
            if attempt < limit:
                await self.launcher.kill_keys(
                    [key], f"watchdog: not done after {after} (attempt {attempt}/{limit})", cascade=True
                )
                if self.final_kills.get(key) == attempt:
                    # A person killed it while the watchdog's kill waited out its grace: theirs is final.
                    outcome, reason = "noop", "killed by a person while its watchdog acted; not retried"
                else:
                    await self.retry(key, cause="watchdog")
                    outcome, reason = "retried", f"not done after {after}; attempt {attempt + 1}/{limit} started"
            else:
                await self.launcher.kill_keys(
                    [key],
                    f"watchdog: not done after {after}, attempts used up ({attempt}/{limit})",
                    cascade=True,
                    final=SessionState.TIMED_OUT,
                )
                outcome, reason = "timed_out", f"not done after {after}; {attempt}/{limit} attempts used"
        else:  # failed or lost: a silent failure the watchdog surfaces and retries
            if attempt < limit:
                await self.retry(key, cause="watchdog" if s.state == SessionState.FAILED else "lost")
                outcome, reason = "retried", f"was {s.state.value}; attempt {attempt + 1}/{limit} started"
            else:
                outcome, reason = "gave_up", f"{s.state.value} after {attempt}/{limit} attempts"
        self.bus.publish(WatchdogFired(session=key, label=s.label, attempt=attempt, outcome=outcome, reason=reason))
        return outcome

    # ------------------------------------------------------------------------------------ sweep

    def stale_sessions(self) -> list[SweepItem]:
        now = self.clock.now()
        limit = self.crew.crew.stale_after
        out = []
        for s in self.table.sessions.values():
            if s.state != SessionState.RUNNING:  # yielded ones wait on children, waiting ones on a person
                continue
            since = s.last_output_at or s.started_at or s.created_at
            idle = now - since
            if idle >= limit:
                out.append(
                    SweepItem(
                        key=s.key,
                        label=s.label,
                        idle_for=idle,
                        reason=f"stale: no output for {idle:.0f}s (stale_after {limit:g}s)",
                    )
                )
        out.sort(key=lambda i: -i.idle_for)
        return out

    async def sweep(self, dry_run: bool = False, cause: Literal["user", "cron"] = "user") -> list[SweepItem]:
        """Kill sessions that wrote nothing for `stale_after`, and remove the worktrees of ended sessions whose
        work is merged (those holding work not merged are listed, kept); with dry_run, only say which and why."""
        items = self.stale_sessions()
        leftovers = await self.workspaces.leftovers() if self.workspaces is not None else []
        if dry_run:
            return items + leftovers
        for item in items:
            s = self.table.sessions.get(item.key)
            if s is not None and s.state.live:
                await self.launcher.kill_keys([item.key], item.reason, cascade=True)
        removed = []
        for item in leftovers:
            if item.action == "remove" and self.workspaces is not None and await self.workspaces.sweep_remove(item.key):
                removed.append(item.key)
            elif item.action == "remove":
                item.action, item.reason = "keep", "not removed: it changed since the preview, or git refused"
        self.bus.publish(SweepDone(killed=[i.key for i in items], removed=removed, cause=cause))
        return items + leftovers
