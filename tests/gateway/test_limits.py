"""A gateway pool's admission line on a fake clock: first in first out under the cap, the buckets charged with an
estimate and corrected after, a pause after a refusal, the cap learned and raised again, a held line, a waiter
that leaves."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from crewtui.clock import FakeClock
from crewtui.config import PoolConfig
from crewtui.gateway.limits import Permit, ProviderLimits


def limits(clock: FakeClock, **kw: Any) -> ProviderLimits:
    return ProviderLimits("p", PoolConfig.model_validate({"provider": "anthropic", **kw}), clock, random.Random(7))


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_over_the_cap_requests_wait_and_go_first_in_first_out() -> None:
    lim = limits(FakeClock(), max_concurrent_requests=2)
    order: list[int] = []
    permits: dict[int, Permit] = {}

    async def ask(i: int) -> None:
        permits[i] = await lim.admit(0, f"s-{i}")
        order.append(i)

    tasks = [asyncio.create_task(ask(i)) for i in range(5)]
    await settle()
    assert order == [0, 1] and lim.queue_length() == 3
    assert lim.position("s-2") == 1 and lim.position("s-4") == 3
    lim.release(permits[1])
    await settle()
    assert order == [0, 1, 2]
    lim.release(permits[0])
    lim.release(permits[2])
    await settle()
    assert order == [0, 1, 2, 3, 4]
    await asyncio.gather(*tasks)


async def test_the_request_bucket_paces_starts() -> None:
    clock = FakeClock()
    lim = limits(clock, requests="2/min")
    for _ in range(2):
        lim.release(await lim.admit())
    third = asyncio.create_task(lim.admit())
    await settle()
    assert not third.done()
    await clock.advance(29.0)
    assert not third.done()
    await clock.advance(1.5)  # one token every 30 s
    await settle()
    assert third.done()


async def test_input_tokens_are_estimated_before_and_corrected_after() -> None:
    clock = FakeClock()
    lim = limits(clock, input_tokens="1200/min")  # 20 tokens a second
    permit = await lim.admit(600)
    assert lim.buckets["input_tokens"].level == pytest.approx(600)
    lim.release(permit, input_tokens=1100, output_tokens=5)  # it used more than its size said
    assert lim.buckets["input_tokens"].level == pytest.approx(100)
    nxt = asyncio.create_task(lim.admit(300))
    await settle()
    assert not nxt.done()
    await clock.advance(9.0)  # (300 - 100) / 20 = 10 s
    assert not nxt.done()
    await clock.advance(1.5)
    await settle()
    assert nxt.done()


async def test_an_overdrawn_output_bucket_holds_the_line_until_it_refills() -> None:
    clock = FakeClock()
    lim = limits(clock, output_tokens="600/min")  # 10 a second
    lim.release(await lim.admit(), input_tokens=10, output_tokens=800)  # 200 over
    waiting = asyncio.create_task(lim.admit())
    await settle()
    assert not waiting.done()
    await clock.advance(21.0)
    await settle()
    assert waiting.done()


async def test_absurd_reported_usage_holds_the_line_an_hour_at_most() -> None:
    """An upstream that reports 10^15 tokens (broken or hostile) overdraws the buckets by an hour of their rate, not
    by the 3,000 years that many tokens would take to earn back; an estimate too big is given back up to full."""
    clock = FakeClock()
    lim = limits(clock, input_tokens="60000/min", output_tokens="600/min")
    lim.release(await lim.admit(100), input_tokens=10**15, output_tokens=10**15)
    assert lim.buckets["input_tokens"].level == pytest.approx(-3_600_000)  # 1,000 a second for an hour
    assert lim.buckets["output_tokens"].level == pytest.approx(-36_000)
    waiting = asyncio.create_task(lim.admit())
    await settle()
    assert not waiting.done()
    await clock.advance(3599.0)
    await settle()
    assert not waiting.done()
    await clock.advance(2.0)
    await settle()
    assert waiting.done()
    lim.release(await waiting, input_tokens=0)
    await clock.advance(60.0)  # both full again
    big = await lim.admit(50_000)
    assert lim.buckets["input_tokens"].level == pytest.approx(10_000)
    await clock.advance(30.0)
    lim.buckets["input_tokens"].refill(clock.now())  # 40,000 now
    lim.release(big, input_tokens=0)  # estimated 50,000, used none: given back, but never past full
    assert lim.buckets["input_tokens"].level == pytest.approx(60_000)


async def test_a_429_pauses_the_pool_and_teaches_the_cap() -> None:
    clock = FakeClock()
    lim = limits(clock)  # no configured cap
    permits = [await lim.admit() for _ in range(5)]
    pause = lim.refused(permits[4], 2.0, 429)  # refused while 4 others were in flight
    assert lim.learned_cap == 4 and lim.cap == 4
    assert 2.0 <= pause <= 2.2 and lim.paused_for() == pytest.approx(pause)
    waiting = asyncio.create_task(lim.admit())
    await clock.advance(1.9)
    await settle()
    assert not waiting.done()
    lim.release(permits[0])
    await clock.advance(0.4)
    await settle()
    assert waiting.done()


async def test_a_window_refusal_pauses_without_lowering_the_cap() -> None:
    lim = limits(FakeClock(), max_concurrent_requests=8)
    permits = [await lim.admit() for _ in range(3)]
    lim.refused(permits[2], 5.0, 429, window=True)
    assert lim.learned_cap is None and lim.cap == 8 and lim.paused_for() >= 5.0


async def test_a_529_pauses_but_teaches_no_cap() -> None:
    lim = limits(FakeClock())
    permits = [await lim.admit() for _ in range(3)]
    lim.refused(permits[2], None, 529)  # no retry-after: a backoff of 1 s
    assert lim.learned_cap is None and 1.0 <= lim.paused_for() <= 1.1


async def test_the_learned_cap_creeps_back_after_a_quiet_stretch() -> None:
    clock = FakeClock()
    lim = limits(clock, max_concurrent_requests=4)
    permits = [await lim.admit() for _ in range(3)]
    lim.refused(permits[2], 0.0, 429)
    lim.release(permits[0])
    lim.release(permits[1])
    assert lim.cap == 2  # refused with 2 others in flight
    for _ in range(20):
        lim.succeeded()
    assert lim.cap == 2  # twenty in a row, but not a minute yet
    await clock.advance(61.0)
    for _ in range(20):
        lim.succeeded()
    assert lim.cap == 3
    await clock.advance(61.0)
    for _ in range(20):
        lim.succeeded()
    assert lim.cap == 4 and lim.learned_cap is None  # back at the configured cap: nothing learned is left


async def test_a_held_line_waits_until_kicked() -> None:
    lim = limits(FakeClock())
    lim.held_for_budget = "daily budget spent"
    waiting = asyncio.create_task(lim.admit())
    another = asyncio.create_task(lim.admit())  # no permit for anyone while held
    await settle()
    assert not waiting.done() and not another.done()
    lim.held_for_budget = None
    lim.kick()
    await settle()
    assert waiting.done() and another.done()


async def test_a_waiter_that_leaves_frees_its_place() -> None:
    lim = limits(FakeClock(), max_concurrent_requests=1)
    first = await lim.admit()
    gone = asyncio.create_task(lim.admit(0, "s-gone"))
    stays = asyncio.create_task(lim.admit(0, "s-stays"))
    await settle()
    assert lim.position("s-stays") == 2
    gone.cancel()
    await settle()
    assert lim.position("s-stays") == 1
    lim.release(first)
    await settle()
    assert stays.done() and lim.in_flight == 1
