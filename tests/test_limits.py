"""Pool limits: concurrency cap, token-bucket starts, FIFO acquire, rate-limit detection, backoff with jitter.

Most tests run on a FakeClock so they are exact and instant; two use the real clock (about 0.6 s in all) to
show the bucket also works against real time, with loose bounds so a slow CI machine does not flake them.
"""

from __future__ import annotations

import asyncio
import random
import time

import pytest

from crewtui.clock import Clock, FakeClock
from crewtui.config import Backoff, PoolConfig, Rate
from crewtui.errors import NotFound
from crewtui.runtime.limits import Pool, Pools, backoff_cap, backoff_delay, is_rate_limited


def pool(rate: tuple[int, float] | None = None, clock: FakeClock | Clock | None = None, **kw: object) -> Pool:
    cfg = PoolConfig(rate=Rate(count=rate[0], per=rate[1]) if rate else None, **kw)  # type: ignore[arg-type]
    return Pool("p", cfg, clock or FakeClock())


# ----------------------------------------------------------------------------------------- concurrency


def test_has_room_with_a_cap() -> None:
    p = pool(max_concurrent=2)
    assert p.has_room()
    p.running = 1
    assert p.has_room()
    p.running = 2
    assert not p.has_room()


def test_no_cap_and_no_rate_never_limit() -> None:
    p = pool()
    p.running = 10_000
    assert p.has_room()
    assert all(p.try_take_token() for _ in range(1000))
    assert p.seconds_until_token() == 0.0


# ------------------------------------------------------------------------------------------ token bucket


async def test_burst_then_refill_on_fake_clock() -> None:
    clock = FakeClock()
    p = pool((5, 0.5), clock)
    assert [p.try_take_token() for _ in range(5)] == [True] * 5
    assert not p.try_take_token()
    wait = p.seconds_until_token()
    assert wait == pytest.approx(0.1)  # 5 per 0.5 s refills one token every 0.1 s
    await clock.advance(wait / 2)
    assert not p.try_take_token()
    assert p.seconds_until_token() == pytest.approx(0.05)
    await clock.advance(0.05)
    assert p.try_take_token()
    assert not p.try_take_token()
    # A long idle refills to the burst size, no further.
    await clock.advance(3600)
    assert [p.try_take_token() for _ in range(6)] == [True] * 5 + [False]


async def test_burst_then_refill_on_real_clock() -> None:
    p = pool((5, 0.5), Clock())
    assert all(p.try_take_token() for _ in range(5))
    assert not p.try_take_token()
    wait = p.seconds_until_token()
    assert 0 < wait <= 0.11
    await asyncio.sleep(wait + 0.01)
    assert p.try_take_token()


async def test_clock_going_back_does_not_break_the_bucket() -> None:
    clock = FakeClock()
    p = pool((1, 1.0), clock)
    assert p.try_take_token()
    clock._now -= 100  # a wall clock stepped back by NTP
    assert not p.try_take_token()
    assert p.seconds_until_token() == pytest.approx(1.0)
    await clock.advance(1.0)
    assert p.try_take_token()


# --------------------------------------------------------------------------------------------- acquire


async def test_acquire_is_fifo_and_paced_on_fake_clock() -> None:
    clock = FakeClock()
    p = pool((10, 0.5), clock)
    t0 = clock.now()
    done: list[tuple[int, float]] = []

    async def caller(i: int) -> None:
        await p.acquire()
        done.append((i, clock.now() - t0))

    tasks = [asyncio.create_task(caller(i)) for i in range(20)]
    for _ in range(10):
        await asyncio.sleep(0)
    assert [i for i, _ in done] == list(range(10))  # the burst goes through at once
    assert p.queue_depth() == 10
    await clock.advance(1.0)
    await asyncio.gather(*tasks)
    assert [i for i, _ in done] == list(range(20))
    # then one every 0.05 s: the 20th at 0.5 s
    assert [round(t, 6) for _, t in done[10:]] == [round(0.05 * k, 6) for k in range(1, 11)]
    assert p.queue_depth() == 0


async def test_acquire_20_callers_real_clock() -> None:
    p = pool((10, 0.5), Clock())
    order: list[int] = []
    finished_at: list[float] = []
    t0 = time.monotonic()

    async def caller(i: int) -> None:
        await p.acquire()
        order.append(i)
        finished_at.append(time.monotonic() - t0)

    await asyncio.wait_for(asyncio.gather(*(caller(i) for i in range(20))), timeout=4)
    assert order == list(range(20))
    assert finished_at[9] < 0.2  # the burst
    assert finished_at[-1] > 0.3  # not all at once: the second ten were paced (nominally 0.5 s)


async def test_starts_queue_behind_acquire_waiters() -> None:
    clock = FakeClock()
    p = pool((1, 1.0), clock)
    assert p.try_take_token()
    waiter = asyncio.create_task(p.acquire())
    await asyncio.sleep(0)
    assert p.queue_depth() == 1
    # The next token belongs to the waiter, so a start must wait for the one after it.
    assert p.seconds_until_token() == pytest.approx(2.0)
    await clock.advance(1.0)
    await waiter
    assert not p.try_take_token()
    assert p.seconds_until_token() == pytest.approx(1.0)
    await clock.advance(1.0)
    assert p.try_take_token()


async def test_cancelled_waiter_leaves_the_line() -> None:
    clock = FakeClock()
    p = pool((1, 1.0), clock)
    await p.acquire()
    first = asyncio.create_task(p.acquire())
    second = asyncio.create_task(p.acquire())
    await asyncio.sleep(0)
    assert p.queue_depth() == 2
    first.cancel()
    await asyncio.sleep(0)
    assert p.queue_depth() == 1
    await clock.advance(1.0)
    await second
    assert first.cancelled() and p.queue_depth() == 0


async def test_acquire_without_rate_returns_at_once() -> None:
    p = pool()
    await asyncio.wait_for(asyncio.gather(*(p.acquire() for _ in range(100))), timeout=1)


# ----------------------------------------------------------------------------------------------- Pools


def test_pools_lookup() -> None:
    pools = Pools({"model-a": PoolConfig(), "model-b": PoolConfig(max_concurrent=3)})
    assert pools.names() == ["model-a", "model-b"]
    assert pools.get(None) is None
    assert pools.get("model-b") is pools["model-b"]
    assert pools["model-b"].config.max_concurrent == 3
    assert [name for name, _ in pools.items()] == ["model-a", "model-b"]
    with pytest.raises(NotFound) as err:
        pools["model-c"]
    assert str(err.value) == "unknown pool 'model-c'; known pools: model-a, model-b"


def test_no_pools_message_says_how_to_define_one() -> None:
    with pytest.raises(NotFound, match=r"unknown pool 'x'; known pools: none \(define one with \[pools.NAME\]"):
        Pools({})["x"]


# ----------------------------------------------------------------------------------- rate-limit failures


@pytest.mark.parametrize(
    ("code", "stderr", "expected"),
    [
        (75, "", True),  # the default retry_on_exit
        (1, "HTTP 429 Too Many Requests", True),
        (1, "error: Rate limit exceeded, slow down", True),
        (1, "RATE-LIMITED by upstream", True),
        (1, "Traceback: KeyError 'x'", False),
        (None, "", False),
        (2, "", False),
    ],
)
def test_is_rate_limited(code: int | None, stderr: str, expected: bool) -> None:
    cfg = PoolConfig(retry_on_stderr=r"429|rate.?limit")
    assert is_rate_limited(cfg, code, stderr) is expected


def test_is_rate_limited_custom_codes_and_no_pattern() -> None:
    cfg = PoolConfig(retry_on_exit=[3, 4])
    assert is_rate_limited(cfg, 3, "") and is_rate_limited(cfg, 4, "")
    assert not is_rate_limited(cfg, 75, "")
    assert not is_rate_limited(cfg, 1, "HTTP 429 Too Many Requests")  # no pattern configured
    assert not is_rate_limited(None, 75, "429")  # no pool, no retry policy


# ---------------------------------------------------------------------------------------------- backoff


def test_backoff_cap_doubles_then_caps() -> None:
    b = Backoff(base=2.0, max=60.0)
    assert [backoff_cap(b, n) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]
    assert backoff_cap(b, 10_000) == 60.0  # no float overflow for absurd retry numbers
    with pytest.raises(ValueError):
        backoff_cap(b, 0)


def test_backoff_delay_full_jitter_within_bounds() -> None:
    b = Backoff(base=2.0, max=60.0)
    rng = random.Random(42)
    for n in range(1, 12):
        bound = min(60.0, 2.0 * 2 ** (n - 1))
        draws = [backoff_delay(b, n, rng) for _ in range(200)]
        assert all(0.0 <= d <= bound for d in draws)
        # Full jitter uses the whole range, not just its top: both halves get drawn.
        assert min(draws) < bound / 2 < max(draws)
    assert all(0 <= backoff_delay(b, 500, rng) <= 60.0 for _ in range(100))


def test_backoff_delay_is_deterministic_with_a_seed() -> None:
    b = Backoff(base=1.0, max=10.0)
    first = [backoff_delay(b, n, random.Random(7)) for n in range(1, 6)]
    again = [backoff_delay(b, n, random.Random(7)) for n in range(1, 6)]
    assert first == again
