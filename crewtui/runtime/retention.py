"""Retention: ended sessions leave memory, so a runtime's memory stays flat however many sessions a crew runs.

An ended session stays in memory while something may still read it there, and at most `keep_ended` of the
most recently ended ones stay beyond that; older ones are evicted, and every reader (`get`, `list`,
`history`, `retry`, `kill`, `send`, `yield`, `wait_ended`) falls back to the store, where they are final.
Never evicted: a live session (so whatever is not in memory has ended); a session of a family (parent and
descendants) with a member still in memory that is live or needed, because a parent's yield, live-children
count and kill cascade read its children from memory (families leave together, from their root); one whose
watchdog is armed or acting or whose cron run is open (the scheduler's retries, counts and rates); one whose
last change is not yet committed (the store copy must be the final one).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from crewtui.errors import CrewError
from crewtui.model import Session
from crewtui.runtime.launcher import Launcher
from crewtui.runtime.sessions import SessionTable
from crewtui.store import Store

log = logging.getLogger("crewtui.retention")

# Ended sessions kept in memory (the most recently ended); about 7 kB each.
KEEP_ENDED = 100


class Retention:
    """Evicts the oldest-ended sessions past `keep_ended` that nothing needs; brings them back for a retry."""

    def __init__(self, table: SessionTable, launcher: Launcher, store: Store, keep_ended: int = KEEP_ENDED) -> None:
        self.table = table
        self.launcher = launcher
        self.store = store
        self.keep_ended = max(0, keep_ended)
        # Whether something else (the scheduler) still reads this session from memory.
        self.needed: Callable[[Session], bool] = lambda s: False
        self.ended_order: dict[str, None] = {}  # ended sessions in memory, oldest end first
        self.on_forget: list[Callable[[str], object]] = []  # what else holds something per session lets go
        self._floor = 0  # ended sessions left in memory by the last pass (all still needed)
        self.task: asyncio.Task[None] | None = None
        self._active = False  # no eviction before the scheduler has loaded its timers and runs

    def start(self) -> None:
        ended = sorted(
            (s for s in self.table.sessions.values() if s.state.terminal), key=lambda s: s.ended_at or s.updated_at
        )
        self.ended_order = dict.fromkeys(s.key for s in ended)
        self._active = True
        self.maybe_evict()

    def stop(self) -> asyncio.Task[None] | None:
        self._active = False
        if self.task is not None:
            self.task.cancel()
        return self.task

    def session_ended(self, s: Session) -> None:
        self.ended_order.pop(s.key, None)
        self.ended_order[s.key] = None
        self.maybe_evict()

    def session_reset(self, s: Session) -> None:
        self.ended_order.pop(s.key, None)

    def maybe_evict(self) -> None:
        """Start an eviction pass once enough ended sessions are in memory past the bound (one pass at a time)."""
        if not self._active or (self.task is not None and not self.task.done()):
            return
        if len(self.ended_order) <= max(self.keep_ended, self._floor) + max(1, self.keep_ended // 10):
            return
        self.task = asyncio.create_task(self._evict(), name="evict-ended")

    def _evictable(self, key: str) -> bool:
        s = self.table.sessions.get(key)
        if s is None or not s.state.terminal or self.launcher.busy(key):
            return False
        return not self.needed(s) and s.merge not in ("queued", "merging")  # the merge queue reads it

    async def _evict(self) -> None:
        """Evict the oldest-ended sessions past `keep_ended` (whole families, from their root) that nothing needs."""
        table = self.table
        excess = len(self.ended_order) - self.keep_ended
        families: list[tuple[str, dict[str, float]]] = []  # (root, {key: updated_at when picked})
        picked = 0
        for key in list(self.ended_order):
            if picked >= excess:
                break
            s = table.sessions.get(key)
            if s is None or (s.parent is not None and s.parent in table.sessions):
                continue  # not a root: it leaves with its family
            family = table.family(key)
            if all(self._evictable(k) for k in family):
                families.append((key, {k: table.sessions[k].updated_at for k in family}))
                picked += len(family)
        if families:
            try:
                await self.store.flush()  # readers will find them in the store: their final rows must be there
            except CrewError as exc:
                log.info("ended sessions stay in memory until the store takes writes again: %s", exc)
                # Not again at once (that would spin on a failing store): after a few more sessions end.
                self._floor = len(self.ended_order)
                self.task = None
                return
        for root, stamps in families:
            family = table.family(root)
            if set(family) != set(stamps) or not all(
                self._evictable(k) and table.sessions[k].updated_at == stamps[k] for k in family
            ):
                continue  # changed while the store was flushed (a retry, a new child): look again next time
            for k in family:
                self._forget(k)
        # If too few could go (the rest still needed), wait for as many more ends before looking again.
        self._floor = self.keep_ended + (excess - picked) if picked < excess else 0
        self.task = None
        self.maybe_evict()  # more may have ended during the flush

    def _forget(self, key: str) -> None:
        self.ended_order.pop(key, None)
        self.launcher.env_extra.pop(key, None)
        self.table.forget(key)
        for hook in self.on_forget:
            hook(key)

    async def restore(self, s: Session) -> None:
        """Bring an evicted session back into memory with its descendants (all ended, as stored): a retry needs
        them where the rest of the runtime looks (its children count, cascade and yield)."""
        family = [s]
        i = 0
        while i < len(family):
            family += await self.store.query_sessions(parent=family[i].key)
            i += 1
        if s.key in self.table.sessions:
            return  # another request brought it back while we read
        for key in self.table.bring_back(family):
            self.ended_order[key] = None
