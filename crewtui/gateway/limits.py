"""A provider pool's live limits in the gateway: who may send a model request now, and who waits.

Every model request of a gateway pool's sessions passes `ProviderLimits.admit()` before it goes upstream and
`release()` when its response is done. A request waits, first in first out, while any of these holds:

- the pool is paused: the upstream answered 429/529 (until its `retry-after`, plus a little jitter so the
  line does not come back as one herd), or said it has no requests left in its window
  (`anthropic-ratelimit-requests-remaining: 0`, `x-ratelimit-remaining-requests: 0`) until its reset, or the
  pool spent its daily budget;
- `max_concurrent_requests` (or the lower cap learned from a 429) requests are in flight;
- a bucket (`requests`, `input_tokens`, `output_tokens`, each "N per period") has too little in it.

Token buckets are charged before the request with an estimate (input from the body's size, output nothing),
and corrected when the response's usage is known; a bucket may go below zero (the upstream served more than
guessed), and then the line waits until it has refilled. Only the head of the line is ever considered, so a
big request is not overtaken by small ones forever.

The cap learned from a 429: a request refused while `n` others are in flight says the upstream allows at most
`n` at once, so the cap drops to `n` (at least 1); a 429 whose rate-limit headers say the window is used up is
about rate, and only pauses. It creeps back up by one after a quiet stretch (20
requests in a row without a refusal and a minute since the last), up to the configured cap, so a transient
refusal does not halve the pool for good.

Time is the injected clock (crewtui.clock), so tests drive pauses and refills with a FakeClock.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from crewtui.clock import ClockLike
from crewtui.config import PoolConfig, Rate

# A learned cap is raised again only after this many successes in a row and this long since the last refusal.
_RAISE_AFTER_OK = 20
_RAISE_AFTER_S = 60.0
# Jitter added to an upstream pause: up to this share of it (and at most _JITTER_MAX_S), drawn once per pause.
_JITTER_SHARE = 0.1
_JITTER_MAX_S = 1.0
# Without a retry-after, a 429 pauses the pool base * 2**(n-1) seconds (n: refusals in a row), capped.
_PAUSE_BASE_S = 1.0
_PAUSE_MAX_S = 60.0
# No pause is longer than this, whatever the upstream says (a reset years away, a retry-after of 1e300): the
# pool asks again then, and a refusal pauses it again. Nothing else would lift such a pause but a restart.
_PAUSE_LIMIT_S = 3600.0
# The sparkline's bins: SERIES_BINS of SERIES_BIN_S seconds (ten minutes in all).
SERIES_BIN_S = 10.0
SERIES_BINS = 60


class Bucket:
    """A token bucket of `rate.count` per `rate.per` seconds that may be overdrawn (corrected after the fact), by
    at most an hour of its rate: usage an upstream reports can be absurd (a broken or hostile one), and a debt of
    years would hold the pool for good (the same hour bounds a pause)."""

    def __init__(self, rate: Rate, now: float) -> None:
        self.rate = rate
        self.capacity = float(rate.count)
        self.level = self.capacity
        self.floor = -self.rate.per_second * _PAUSE_LIMIT_S
        self._stamp = now

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self.level = min(self.capacity, self.level + elapsed * self.rate.per_second)

    def need(self, amount: float) -> float:
        """What must be in the bucket for `amount`: a request bigger than the bucket waits only for a full one."""
        return min(amount, self.capacity)

    def seconds_until(self, amount: float, now: float) -> float:
        self.refill(now)
        deficit = self.need(amount) - self.level
        return 0.0 if deficit <= 1e-9 else deficit / self.rate.per_second

    def take(self, amount: float) -> None:
        """Charge `amount` (negative: give back what an estimate took too much)."""
        self.level = min(self.capacity, max(self.floor, self.level - amount))


@dataclass
class Permit:
    """One admitted request: what it was charged, and when it went."""

    est_input: int
    admitted_at: float
    released: bool = False


@dataclass
class _Waiter:
    est_input: int
    since: float
    future: asyncio.Future[Permit]
    session: str | None


@dataclass
class Series:
    """Counts in fixed bins of time (the dashboard's sparklines): requests and tokens per SERIES_BIN_S."""

    requests: deque[int] = field(default_factory=lambda: deque([0] * SERIES_BINS, maxlen=SERIES_BINS))
    tokens: deque[int] = field(default_factory=lambda: deque([0] * SERIES_BINS, maxlen=SERIES_BINS))
    bin_start: float = 0.0

    def roll(self, now: float) -> None:
        if self.bin_start == 0.0:
            self.bin_start = now - now % SERIES_BIN_S
            return
        steps = int((now - self.bin_start) // SERIES_BIN_S)
        if steps <= 0:
            return
        for _ in range(min(steps, SERIES_BINS)):
            self.requests.append(0)
            self.tokens.append(0)
        self.bin_start += steps * SERIES_BIN_S

    def add(self, now: float, requests: int = 0, tokens: int = 0) -> None:
        self.roll(now)
        self.requests[-1] += requests
        self.tokens[-1] += tokens

    def last_minute(self, now: float, values: deque[int]) -> int:
        """The count of the last minute (its last six bins)."""
        self.roll(now)
        bins = int(60 / SERIES_BIN_S)
        return sum(list(values)[-bins:])


class ProviderLimits:
    """One gateway pool's admission line, buckets, pause and learned cap."""

    def __init__(self, name: str, config: PoolConfig, clock: ClockLike, rng: random.Random | None = None) -> None:
        self.name = name
        self.config = config
        self._clock = clock
        self._rng = rng or random.Random()
        now = clock.now()
        self.buckets: dict[str, Bucket] = {}
        for key in ("requests", "input_tokens", "output_tokens"):
            rate = getattr(config, key)
            if rate is not None:
                self.buckets[key] = Bucket(rate, now)
        self.in_flight = 0
        self.learned_cap: int | None = None
        self.paused_until = 0.0
        self.pause_reason: str | None = None
        self.held_for_budget: str | None = None  # why the pool's line is held (its daily budget), until resumed
        self._refusals_in_row = 0
        self._ok_in_row = 0
        self._last_refusal = -math.inf
        self._line: deque[_Waiter] = deque()
        self._wake: asyncio.Task[None] | None = None
        self._wake_at: float | None = None
        self.series = Series()
        self.on_line_changed: Callable[[], None] | None = None  # the gateway's: called when the line moves

    # ------------------------------------------------------------------------------------ state for views

    @property
    def cap(self) -> int | None:
        """The concurrency cap in force: the configured one, or the lower one learned from a 429."""
        caps = [c for c in (self.config.max_concurrent_requests, self.learned_cap) if c is not None]
        return min(caps) if caps else None

    def queue_length(self) -> int:
        return len(self._line)

    def oldest_wait(self) -> float:
        """Seconds the head of the line has waited (0 with nobody waiting)."""
        return self._clock.now() - self._line[0].since if self._line else 0.0

    def position(self, session: str) -> int | None:
        """1-based place of `session`'s first waiting request in the line, or None."""
        for i, w in enumerate(self._line, start=1):
            if w.session == session:
                return i
        return None

    def waiting_sessions(self) -> list[str]:
        return [w.session for w in self._line if w.session is not None]

    # ------------------------------------------------------------------------------------------ admit

    async def admit(self, est_input: int = 0, session: str | None = None) -> Permit:
        """Wait in line until the request may go; the caller must `release()` the permit when it is done."""
        loop = asyncio.get_running_loop()
        waiter = _Waiter(est_input, self._clock.now(), loop.create_future(), session)
        self._line.append(waiter)
        self._pump()
        try:
            return await waiter.future
        except asyncio.CancelledError:
            # The client went away while waiting: leave the line (or give back a permit granted meanwhile).
            if waiter in self._line:
                self._line.remove(waiter)
            elif waiter.future.done() and not waiter.future.cancelled():
                self.release(waiter.future.result())
            self._pump()
            raise

    def _blocked_for(self, est_input: int = 0) -> float | None:
        """None if a request may go now; else seconds until it might (inf: until something is released)."""
        now = self._clock.now()
        if self.held_for_budget is not None:
            return math.inf
        if now < self.paused_until:
            return self.paused_until - now
        cap = self.cap
        if cap is not None and self.in_flight >= cap:
            return math.inf
        wait = 0.0
        for key, amount in (("requests", 1.0), ("input_tokens", float(est_input))):
            bucket = self.buckets.get(key)
            if bucket is not None:
                wait = max(wait, bucket.seconds_until(amount, now))
        out = self.buckets.get("output_tokens")
        if out is not None:
            wait = max(wait, out.seconds_until(0.0, now))  # an overdrawn output bucket holds the line
        return None if wait <= 0 else wait

    def _charge(self, est_input: int) -> Permit:
        now = self._clock.now()
        if "requests" in self.buckets:
            self.buckets["requests"].take(1.0)
        if "input_tokens" in self.buckets:
            self.buckets["input_tokens"].take(float(est_input))
        self.series.add(now, requests=1)
        return Permit(est_input, now)

    def _pump(self) -> None:
        """Grant from the head of the line while it may go; else arrange one wake-up for when it might."""
        while self._line:
            head = self._line[0]
            if head.future.done():  # cancelled meanwhile
                self._line.popleft()
                continue
            wait = self._blocked_for(head.est_input)
            if wait is not None:
                if math.isfinite(wait):
                    self._wake_in(wait)
                break
            self._line.popleft()
            permit = self._charge(head.est_input)
            self.in_flight += 1
            head.future.set_result(permit)
        self._notify()

    def _notify(self) -> None:
        if self.on_line_changed is not None:
            self.on_line_changed()

    def _wake_in(self, seconds: float) -> None:
        when = self._clock.now() + seconds
        if self._wake_at is not None and self._wake_at <= when and self._wake is not None:
            return
        if self._wake is not None:
            self._wake.cancel()
        self._wake_at = when

        async def wake() -> None:
            await self._clock.sleep(seconds)
            self._wake_at = None
            self._wake = None
            self._pump()

        self._wake = asyncio.get_running_loop().create_task(wake(), name=f"gateway-wake-{self.name}")

    def kick(self) -> None:
        """Look at the line again (a budget was lifted, a session resumed)."""
        self._pump()

    # ---------------------------------------------------------------------------------------- release

    def release(self, permit: Permit, input_tokens: int | None = None, output_tokens: int | None = None) -> None:
        """The request is done: free its slot and correct the buckets with what it really used."""
        if permit.released:
            return
        permit.released = True
        self.in_flight = max(0, self.in_flight - 1)
        now = self._clock.now()
        if input_tokens is not None and "input_tokens" in self.buckets:
            self.buckets["input_tokens"].take(float(input_tokens - permit.est_input))
        if output_tokens is not None and "output_tokens" in self.buckets:
            self.buckets["output_tokens"].take(float(output_tokens))
        self.series.add(now, tokens=(input_tokens or 0) + (output_tokens or 0))
        self._pump()

    def succeeded(self) -> None:
        """An upstream answer that was not a refusal: the learned cap may creep back up."""
        self._refusals_in_row = 0
        self._ok_in_row += 1
        if (
            self.learned_cap is not None
            and self._ok_in_row >= _RAISE_AFTER_OK
            and self._clock.now() - self._last_refusal >= _RAISE_AFTER_S
        ):
            self._ok_in_row = 0
            self.learned_cap += 1
            if (
                self.config.max_concurrent_requests is not None
                and self.learned_cap >= self.config.max_concurrent_requests
            ):
                self.learned_cap = None

    def refused(self, permit: Permit, retry_after: float | None, status: int, window: bool = False) -> float:
        """The upstream refused `permit`'s request (429/529): pause the pool, and learn the cap. Returns the pause.

        `window`: the refusal said the upstream's window is used up (its rate-limit headers: nothing remaining),
        which is about rate, not about how many requests run at once, so the cap stays."""
        pause = self.note_refusal(retry_after, status, window)
        self.release(permit)
        return pause

    def note_refusal(self, retry_after: float | None, status: int, window: bool = False) -> float:
        """A refusal while its request is still counted in flight (see `refused`): learn, pause; the pause."""
        self._ok_in_row = 0
        self._refusals_in_row += 1
        self._last_refusal = self._clock.now()
        if status == 429 and not window:
            # The others still in flight were let in (refusals come back at once, answers take time): the
            # upstream allows as many as them. Each refusal of a burst lowers the cap by one more, down to that.
            cap = max(1, self.in_flight - 1)
            current = self.cap
            if current is None or cap < current:
                self.learned_cap = cap
        if retry_after is None:
            retry_after = min(_PAUSE_MAX_S, _PAUSE_BASE_S * 2.0 ** min(self._refusals_in_row - 1, 16))
        jitter = self._rng.uniform(0.0, min(_JITTER_MAX_S, retry_after * _JITTER_SHARE))
        self.pause(retry_after + jitter, f"upstream said {status}")
        return retry_after + jitter

    def pause(self, seconds: float, reason: str) -> None:
        """Hold the whole line for `seconds` (an upstream refusal or an exhausted window); never shortens one."""
        until = self._clock.now() + min(_PAUSE_LIMIT_S, max(0.0, seconds))
        if until > self.paused_until:
            self.paused_until = until
            self.pause_reason = reason
        self._pump()

    def paused_for(self) -> float:
        return max(0.0, self.paused_until - self._clock.now())
