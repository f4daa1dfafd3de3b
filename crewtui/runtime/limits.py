"""Per-pool limits: a concurrency cap, a token-bucket start rate, and rate-limit retry policy.

A pool (`[pools.NAME]` in the crew file, e.g. one per model provider) is shared by every session that names
it. Two kinds of callers draw on its rate:

- the orchestrator's queue pump, which must never block: it calls `has_room()` then `try_take_token()`, and
  when refused asks `seconds_until_token()` so it can schedule ONE wake-up instead of polling;
- agents running `crewtui ctl acquire POOL` before each API call, which wait in `acquire()`, first come first
  served, so twenty callers in the same second queue in order instead of failing.

Both share one bucket. Waiters in `acquire()` go first: a start only takes a token when enough remain for
every waiter plus itself. Running agents asking for a permit are mid-task and blocking them is what starves
work; a start that is refused simply stays `pending` with its reason and is retried at the computed wake-up.

Why not aiolimiter (the usual kept library for this)? `aiolimiter.AsyncLimiter` reads time from the event
loop (`loop.time()`) and wakes its waiters with `loop.call_at`, while the orchestrator measures and sleeps on
its injectable `ClockLike` (a `FakeClock` in tests). A bucket on another timebase would not refill when a
test advances the fake clock, and the pump's wake-up (scheduled with `clock.sleep`) would disagree with the
bucket. It also has no public non-blocking take nor a "how long until capacity" query: both would need its
private `_level`/`_last_check`/`_leak()`. A token bucket on the injected clock is ~40 lines, so it is here.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Iterator

from crewtui.clock import Clock, ClockLike
from crewtui.config import Backoff, PoolConfig
from crewtui.errors import NotFound

# Slack, in seconds, when asking "is a token there yet?". Clock readings are epoch seconds (~1.8e9), where a
# float's resolution is ~2.4e-7 s, so a waiter that slept exactly "until the next token" can find 0.9999998
# of one. Without slack it would sleep again for less than the clock can represent, and a FakeClock would
# never move past it (an endless loop). One microsecond is a few float steps and far below any real rate.
_SLACK_S = 1e-6


class Pool:
    """One pool's live limits: how many of its sessions run, and its token bucket (if it has a rate).

    The bucket holds up to `rate.count` tokens, starts full (a burst of `count` is allowed at once, as the
    rate "N per T" promises) and refills continuously at `count / per` tokens a second.
    """

    name: str
    config: PoolConfig
    running: int  # sessions of this pool that run now; the orchestrator sets and bumps it

    def __init__(self, name: str, config: PoolConfig, clock: ClockLike | None = None) -> None:
        self.name = name
        self.config = config
        self.running = 0
        # Model calls of its sessions refused for rate and retried (reported by the agents: Claude Code's
        # api_retry, Codex's "Reconnecting... 429"), besides the sessions crewtui itself retried with backoff.
        self.rate_limit_retries = 0
        self._clock: ClockLike = clock or Clock()
        rate = config.rate
        self._capacity = float(rate.count) if rate else 0.0
        self._per_sec = rate.per_second if rate else 0.0
        self._tokens = self._capacity
        self._slack = _SLACK_S * self._per_sec  # _SLACK_S expressed in tokens
        self._stamp = self._clock.now()
        # asyncio.Lock hands itself to waiters in arrival order (and a newcomer cannot barge past queued
        # waiters), which is exactly the FIFO that `acquire()` promises; only the head of the line sleeps
        # on the clock, so one timer serves the whole queue.
        self._line = asyncio.Lock()
        self._waiting = 0

    def __repr__(self) -> str:
        return f"<Pool {self.name} running={self.running} rate={self.config.rate} waiting={self._waiting}>"

    # ---------------------------------------------------------------------------------- concurrency

    def has_room(self) -> bool:
        """Whether one more session may start under `max_concurrent` (None means no cap)."""
        cap = self.config.max_concurrent
        return cap is None or self.running < cap

    # ------------------------------------------------------------------------------------------ rate

    def _refill(self) -> None:
        now = self._clock.now()
        # The default clock is wall time, which can step backwards (NTP): never take tokens away for that,
        # and a forward jump is harmless because the bucket is capped at its capacity.
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(self._capacity, self._tokens + elapsed * self._per_sec)

    def _needed_by_start(self) -> float:
        """Tokens that must be in the bucket for a start to take one: one for each waiter ahead, plus its own."""
        return self._waiting + 1.0

    def try_take_token(self) -> bool:
        """Take a start token if one is free now, without blocking; always True for a pool without a rate.

        Refused while the tokens in the bucket are all spoken for by callers waiting in `acquire()`.
        """
        if self.config.rate is None:
            return True
        self._refill()
        if self._tokens + self._slack >= self._needed_by_start():
            self._tokens = max(0.0, self._tokens - 1.0)
            return True
        return False

    def seconds_until_token(self) -> float:
        """0 if `try_take_token()` would succeed now, else how long until it would (if no one else comes).

        Waiters in `acquire()` are counted ahead of the start, as `try_take_token()` counts them, so the
        orchestrator's single wake-up is not spent on a token a waiter takes first.
        """
        if self.config.rate is None:
            return 0.0
        self._refill()
        deficit = self._needed_by_start() - self._tokens
        return 0.0 if deficit <= self._slack else deficit / self._per_sec

    async def acquire(self) -> None:
        """Wait, first come first served, until the bucket grants a permit, and take it.

        Returns at once for a pool without a rate. Cancelling a waiter (the `ctl` client went away) leaves
        the line cleanly: the lock and the waiting count are released by the context managers below.
        """
        if self.config.rate is None:
            return
        self._waiting += 1
        try:
            async with self._line:
                while True:
                    self._refill()
                    if self._tokens + self._slack >= 1.0:
                        self._tokens = max(0.0, self._tokens - 1.0)
                        return
                    # Sleep exactly until the next token; re-check after, since a start may have taken it
                    # only if tokens were left over for us, and the clock may have moved oddly.
                    await self._clock.sleep((1.0 - self._tokens) / self._per_sec)
        finally:
            self._waiting -= 1

    def queue_depth(self) -> int:
        """Callers in `acquire()` that have not been granted their permit yet."""
        return self._waiting


class Pools:
    """The crew's pools by name, each with its own bucket, all on one clock."""

    def __init__(self, configs: dict[str, PoolConfig], clock: ClockLike | None = None) -> None:
        clock = clock or Clock()
        self._pools: dict[str, Pool] = {name: Pool(name, cfg, clock) for name, cfg in configs.items()}

    def get(self, name: str | None) -> Pool | None:
        """The pool named `name`; None for a session in no pool (and, like dict.get, for an unknown name)."""
        return None if name is None else self._pools.get(name)

    def __getitem__(self, name: str) -> Pool:
        """The pool named `name`, or NotFound naming the known pools (for `ctl acquire` with a typo)."""
        try:
            return self._pools[name]
        except KeyError:
            known = ", ".join(sorted(self._pools)) or "none (define one with [pools.NAME] in the crew file)"
            raise NotFound(f"unknown pool {name!r}; known pools: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._pools

    def __iter__(self) -> Iterator[str]:
        return iter(self._pools)

    def __len__(self) -> int:
        return len(self._pools)

    def names(self) -> list[str]:
        return list(self._pools)

    def items(self) -> list[tuple[str, Pool]]:
        return list(self._pools.items())


# ------------------------------------------------------------------------------------ retry policy


def is_rate_limited(config: PoolConfig | None, exit_code: int | None, stderr_tail: str) -> bool:
    """Whether a failed session looks rate limited: its exit code is in `retry_on_exit`, or the pool's
    `retry_on_stderr` pattern is found (case-insensitively) in the tail of its stderr.

    A session in no pool is never treated as rate limited: there is no backoff policy to retry it with.
    """
    if config is None:
        return False
    if exit_code is not None and exit_code in config.retry_on_exit:
        return True
    # The pattern was compiled when the crew was loaded, so it is valid; `re` caches the compiled form.
    pattern = config.retry_on_stderr
    return bool(pattern and stderr_tail and re.search(pattern, stderr_tail, re.IGNORECASE))


def backoff_cap(backoff: Backoff, retry_number: int) -> float:
    """The upper bound of the `retry_number`th delay: min(max, base * 2**(retry_number - 1))."""
    if retry_number < 1:
        raise ValueError(f"retry_number starts at 1, got {retry_number}")
    # Past ~1000 doublings base * 2**n overflows a float; by then the cap has long been reached anyway.
    if retry_number > 64:
        return backoff.max
    return min(backoff.max, backoff.base * 2.0 ** (retry_number - 1))


def backoff_delay(backoff: Backoff, retry_number: int, rng: random.Random) -> float:
    """Seconds to wait before the `retry_number`th retry (1, 2, ...): exponential backoff with full jitter.

    "Full jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter") draws uniformly from
    [0, cap], so many sessions rate-limited together spread their retries out instead of coming back in
    one herd; `rng` is injected so tests and replays are deterministic.
    """
    return rng.uniform(0.0, backoff_cap(backoff, retry_number))
