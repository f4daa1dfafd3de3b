"""Injectable time and ids, so the scheduler and snapshot tests are deterministic.

`Clock` is the real one; `FakeClock` only moves when a test advances it. `IdGen` makes sortable session keys
("s-" + a ULID-style 26-character Crockford base32 string) from a clock and a random source.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Protocol

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


class ClockLike(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class Clock:
    """Wall-clock time (seconds since the epoch) and real sleeping."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that moves only when `advance` is called; sleepers wake in time order."""

    def __init__(self, start: float = 1_775_116_800.0) -> None:  # 2026-04-02 08:00:00 UTC
        self._now = start
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._n = 0

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._n += 1
        self._sleepers.append((self._now + seconds, self._n, fut))
        await fut

    async def advance(self, seconds: float) -> None:
        """Move time forward, waking every sleeper whose time has come, in order."""
        target = self._now + seconds
        while True:
            due = sorted((s for s in self._sleepers if s[0] <= target), key=lambda s: (s[0], s[1]))
            if not due:
                break
            when, _n, fut = due[0]
            self._sleepers.remove(due[0])
            self._now = max(self._now, when)
            if not fut.done():
                fut.set_result(None)
            # let the woken task run before the next one
            for _ in range(5):
                await asyncio.sleep(0)
        self._now = target
        for _ in range(5):
            await asyncio.sleep(0)


class IdGen:
    """Sortable, never-reused session keys: 48 bits of milliseconds then 80 random bits."""

    def __init__(self, clock: ClockLike | None = None, rng: random.Random | None = None, prefix: str = "s-") -> None:
        self._clock = clock or Clock()
        self._rng = rng or random.SystemRandom()
        self._prefix = prefix
        self._last_ms = -1
        self._last_rand = 0

    def new(self) -> str:
        ms = int(self._clock.now() * 1000)
        if ms <= self._last_ms:
            # Same millisecond (or a clock that went back): keep monotonic by incrementing the random part.
            ms = self._last_ms
            rand = self._last_rand + 1
        else:
            rand = self._rng.getrandbits(80)
        self._last_ms, self._last_rand = ms, rand
        value = (ms << 80) | (rand & ((1 << 80) - 1))
        chars = []
        for _ in range(26):
            chars.append(_CROCKFORD[value & 31])
            value >>= 5
        return self._prefix + "".join(reversed(chars))
