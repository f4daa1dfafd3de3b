"""Yield: a parent waits for its children and is woken with all their results in one message, with no polling.

With a parent, the parent is `yielded` meanwhile. A process session yields without waiting (`wait=False`):
the results are pushed to its stdin as one JSON line when the last child ends; a `ctl yield` caller gets
them as the reply. A yield outlives a runtime restart (recovery calls `deliver` again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from crewtui.errors import BadInput, Conflict
from crewtui.events import SessionYielded, YieldDelivered
from crewtui.model import ChildResult, Session, SessionState, YieldResult
from crewtui.runtime.bus import EventBus
from crewtui.runtime.launcher import Launcher
from crewtui.runtime.sessions import SessionTable

log = logging.getLogger("crewtui.yields")


class Yields:
    """Parents waiting on children, and the delivery of the children's results."""

    def __init__(self, table: SessionTable, launcher: Launcher, bus: EventBus) -> None:
        self.table = table
        self.launcher = launcher
        self.bus = bus
        self.tasks: set[asyncio.Task[Any]] = set()

    def in_background(self, coro: Coroutine[Any, Any, Any]) -> None:
        t = asyncio.create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    def stop(self) -> list[asyncio.Task[Any]]:
        tasks = list(self.tasks)
        for t in tasks:
            t.cancel()
        return tasks

    async def yield_(
        self, children: list[str] | None = None, parent: str | None = None, wait: bool = True
    ) -> YieldResult | None:
        table = self.table
        p = await table.find(parent) if parent else None
        if p is not None and not (p.state.active or p.state == SessionState.YIELDED):
            raise Conflict(f"session {table.describe(p.key)} is {p.state.value}; only a running session can yield")
        known: dict[str, Session] = {}  # children as found, some maybe only in the store (ended long ago)
        if children:
            kids = []
            for c in children:
                kid = await table.find(c)
                known[kid.key] = kid
                kids.append(kid.key)
            if p is not None and not (p.state.active or p.state == SessionState.YIELDED):  # changed meanwhile
                raise Conflict(f"session {table.describe(p.key)} is {p.state.value}; only a running session can yield")
        elif p is not None:
            # Every child not yet handed to an earlier yield: one that finished before the parent
            # yielded still has its result delivered (a fast child must not be lost to a race).
            done = table.yielded_on.get(p.key, set())
            kids = sorted(
                (k for k in table.children.get(p.key, ()) if k not in done), key=lambda k: table.sessions[k].created_at
            )
            if not kids:
                raise BadInput(f"session {table.describe(p.key)} has no children left to yield on")
        else:
            raise BadInput("yield needs --children KEY... (or to be called from inside a session that has children)")
        if p is not None and p.key in kids:
            raise BadInput("a session cannot yield on itself")
        if p is not None:
            self._refuse_cycle(p, kids)
        if p is None:
            if not wait:
                raise BadInput("--no-wait needs a parent session to push the results to")
            return await self.deliver(None, kids, to_stdin=False, known=known)
        table.yielded_on.setdefault(p.key, set()).update(kids)
        p.yield_on = kids
        table.transition(p, SessionState.YIELDED, reason=f"waiting for {len(kids)} children")
        self.bus.publish(SessionYielded(session=p.key, label=p.label, children=kids))
        if not wait:
            self.in_background(self.deliver(p.key, kids, to_stdin=True, known=known))
            return None
        return await self.deliver(p.key, kids, to_stdin=False, known=known)

    def _refuse_cycle(self, parent: Session, kids: list[str]) -> None:
        """Two sessions yielding on each other (directly or through others) would wait forever: refuse."""
        seen: set[str] = set()
        stack = [(k, [parent.key, k]) for k in kids]
        while stack:
            key, path = stack.pop()
            if key in seen:
                continue
            seen.add(key)
            s = self.table.sessions.get(key)
            if s is None or s.state != SessionState.YIELDED:
                continue
            for waited in s.yield_on or []:
                if waited == parent.key:
                    chain = " -> ".join(self.table.describe(k) for k in [*path, waited])
                    raise BadInput(f"yield refused: it would wait forever ({chain} waits on itself)")
                stack.append((waited, [*path, waited]))

    async def deliver(
        self, parent: str | None, kids: list[str], to_stdin: bool, known: dict[str, Session] | None = None
    ) -> YieldResult:
        """Wait for the children to end; wake the parent with their results (on its stdin when `to_stdin`)."""
        table = self.table
        # Held, not looked up after the wait: a child that ended may leave memory before we read it (a child not
        # in memory now has ended long ago; `known` has its stored copy).
        held = {k: table.sessions.get(k) or (known or {})[k] for k in kids}
        p = table.sessions.get(parent) if parent else None
        try:
            await asyncio.gather(*(table.ended[k].wait() for k in kids if k in table.ended))
        finally:
            if p is not None and p.state == SessionState.YIELDED:
                p.yield_on = None
                table.transition(p, SessionState.RUNNING, reason=None)
        result = YieldResult(
            parent=parent,
            children=[
                ChildResult(
                    key=k, label=held[k].label, state=held[k].state, exit_code=held[k].exit_code, result=held[k].result
                )
                for k in kids
            ],
        )
        if parent is not None:
            self.bus.publish(YieldDelivered(session=parent, label=p.label if p else None, children=kids))
            handle = self.launcher.handles.get(parent)
            if to_stdin and handle is not None:
                try:
                    await handle.send(result.model_dump_json())
                except Exception as exc:  # the parent may have ended meanwhile
                    log.info("yield result not delivered to %s: %s", parent, exc)
        return result
