"""The event bus: every runtime event is numbered, written to the store's event log and handed to listeners.

Two kinds of readers: in-runtime listeners (the scheduler keeps its timeline marks from them), called
synchronously in publish order; and subscriptions (the dashboard, `ctl watch`, attached clients), each a
bounded queue that drops what a lagging client cannot take rather than hold up the runtime.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from crewtui.clock import ClockLike
from crewtui.events import Event, SessionOutput
from crewtui.store import Store

Listener = Callable[[Event], None]


class Subscription:
    """A client's view of the event stream: a bounded queue. A client that lags that far loses events
    (counted in `dropped`); clients re-list now and then to repair what they missed."""

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    def close(self) -> None:
        self._bus.unsubscribe(self)
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            pass

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        item = await self.queue.get()
        if item is None:
            raise StopAsyncIteration
        return item


class EventBus:
    """Numbers events (gapless, never reused across restarts), logs them and fans them out."""

    def __init__(self, store: Store, clock: ClockLike) -> None:
        self.store = store
        self.clock = clock
        self.seq = 0
        self._listeners: list[Listener] = []
        self._subscribers: set[Subscription] = set()

    async def load(self) -> None:
        """Continue numbering where the store's event log ends."""
        self.seq = await self.store.max_event_seq()

    def publish(self, event: Event) -> None:
        event.ts = event.ts or self.clock.now()
        if not isinstance(event, SessionOutput):
            # Output lines live in the session's log files; the event log keeps the lifecycle, gapless.
            self.seq += 1
            event.seq = self.seq
            self.store.append_event(event)
        for listener in self._listeners:
            listener(event)
        for sub in list(self._subscribers):
            sub.offer(event)

    def listen(self, listener: Listener) -> None:
        """Call `listener` with every event from now on (in the runtime, synchronously)."""
        self._listeners.append(listener)

    def unlisten(self, listener: Listener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def subscribe(self, maxsize: int = 10_000) -> Subscription:
        sub = Subscription(self, maxsize)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subscribers.discard(sub)

    def close(self) -> None:
        """End every subscription (the runtime is stopping)."""
        for sub in list(self._subscribers):
            sub.close()
