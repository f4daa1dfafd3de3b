"""The gateway on its own (no runtime): real HTTP through it to the fake model server on 127.0.0.1.

Forwarding with the agent's headers, streaming as it arrives, usage measured per session, a 429 absorbed, a
session over its budget paused and resumed, and the faults: an unknown token, upstream unreachable, a client
that hangs up mid-stream, garbage from upstream, the port taken.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any, Literal

import aiohttp
import pytest
from aiohttp import web

from crewtui.config import PoolConfig
from crewtui.gateway.accounts import RequestDone
from crewtui.gateway.server import Gateway
from tests.fakemodel import FakeModel, Limit, Usage, error, slow, text

KEY = "sk-ant-test-one"


class Sink:
    def __init__(self) -> None:
        self.done: list[RequestDone] = []
        self.places: list[tuple[str, str, int | None]] = []
        self.budget: list[tuple[str | None, str, str, str]] = []

    def request_done(self, done: RequestDone) -> None:
        self.done.append(done)

    def queued(self, key: str, pool: str, position: int | None) -> None:
        self.places.append((key, pool, position))

    def over_budget(self, key: str | None, pool: str, action: Literal["pause", "kill"], reason: str) -> None:
        self.budget.append((key, pool, action, reason))


def pool(upstream: str, **kw: Any) -> PoolConfig:
    return PoolConfig.model_validate({"provider": "anthropic", "upstream": upstream, **kw})


async def start(pools: dict[str, PoolConfig], sink: Sink, port: int = 0) -> Gateway:
    gw = Gateway(pools, sink, b"s" * 32)
    await gw.start(port)
    return gw


def body(stream: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "model": "fake-model",
        "max_tokens": 100,
        "stream": stream,
        "messages": [{"role": "user", "content": "hi"}],
        **extra,
    }


async def post(http: aiohttp.ClientSession, base: str, payload: dict[str, Any], key: str = KEY) -> tuple[int, bytes]:
    async with http.post(
        f"{base}/v1/messages?beta=true",
        json=payload,
        headers={"x-api-key": key, "anthropic-version": "2023-06-01"},
    ) as r:
        return r.status, await r.read()


async def test_a_streamed_request_is_forwarded_with_the_agents_headers_and_metered(
    fake: FakeModel, http: aiohttp.ClientSession
) -> None:
    fake.script(text("hello there", usage=Usage(input=120, output=9, cache_read=30, cache_write=4)))
    sink = Sink()
    gw = await start({"anthropic": pool(fake.url)}, sink)
    try:
        env = gw.open_session("s-1", "writer-1", "anthropic", None)
        base = env["ANTHROPIC_BASE_URL"]
        assert base.startswith(f"http://127.0.0.1:{gw.port}/s/")
        status, raw = await post(http, base, body())
        assert status == 200
        assert b"text_delta" in raw and b"message_stop" in raw
        req = fake.model_requests()[-1]
        assert req.headers["x-api-key"] == KEY  # the agent's own credentials reach upstream
        assert req.headers["anthropic-version"] == "2023-06-01"
        assert req.query == {"beta": "true"}
        assert req.path == "/v1/messages"
        (done,) = sink.done
        assert (done.key, done.status, done.absorbed) == ("s-1", 200, 0)
        u = done.usage
        assert (u.input, u.output, u.cache_read, u.cache_write, u.known) == (120, 9, 30, 4, True)
        _day, today = gw.today("anthropic")
        assert today.requests == 1 and today.tokens.input == 120
    finally:
        await gw.stop()


async def test_streamed_chunks_reach_the_agent_as_they_arrive(fake: FakeModel, http: aiohttp.ClientSession) -> None:
    fake.script(slow(text("one two three four five six"), 0.3))
    gw = await start({"anthropic": pool(fake.url)}, Sink())
    try:
        base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
        arrivals: list[float] = []
        t0 = time.monotonic()
        async with http.post(f"{base}/v1/messages", json=body(), headers={"x-api-key": KEY}) as r:
            async for _chunk in r.content.iter_any():
                arrivals.append(time.monotonic() - t0)
        # The fake waits 0.3 s between events: a buffering proxy would deliver everything at the end at once.
        assert arrivals[0] < 0.25
        assert arrivals[-1] - arrivals[0] > 0.5
    finally:
        await gw.stop()


async def test_an_unknown_or_revoked_token_is_refused_with_403(fake: FakeModel, http: aiohttp.ClientSession) -> None:
    gw = await start({"anthropic": pool(fake.url)}, Sink())
    try:
        base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
        status, raw = await post(http, f"http://127.0.0.1:{gw.port}/s/{'0' * 32}", body())
        assert status == 403 and b"unknown or revoked session token" in raw
        status, _ = await post(http, f"http://127.0.0.1:{gw.port}", body())  # no token at all
        assert status == 403
        gw.close_session("s-1")
        status, _ = await post(http, base, body())
        assert status == 403
        assert gw.forbidden == 3
        assert fake.model_requests() == []  # nothing reached upstream
    finally:
        await gw.stop()


async def test_a_429_pauses_the_pool_and_is_retried_unseen_by_the_agent(
    fake: FakeModel, http: aiohttp.ClientSession
) -> None:
    fake.script(error(429, retry_after=0.3), text("after the pause", usage=Usage(input=5, output=2)))
    sink = Sink()
    gw = await start({"anthropic": pool(fake.url)}, sink)
    try:
        base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
        t0 = time.monotonic()
        status, raw = await post(http, base, body())
        assert status == 200 and b"text_delta" in raw
        assert time.monotonic() - t0 >= 0.3  # it waited out the retry-after
        (done,) = sink.done
        assert done.absorbed == 1
        assert gw.today("anthropic")[1].absorbed == 1
        assert len(fake.model_requests()) == 2
    finally:
        await gw.stop()


async def test_refusals_past_max_retries_reach_the_agent(fake: FakeModel, http: aiohttp.ClientSession) -> None:
    fake.script(error(429, retry_after=0), error(429, retry_after=0))
    gw = await start({"anthropic": pool(fake.url, max_retries=1)}, Sink())
    try:
        base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
        status, raw = await post(http, base, body())
        assert status == 429 and b"rate_limit_error" in raw
        assert gw.today("anthropic")[1].passed == 1
    finally:
        await gw.stop()


async def test_requests_over_the_concurrency_cap_wait_in_line_first_in_first_out(
    fake: FakeModel, http: aiohttp.ClientSession
) -> None:
    fake.script(*[slow(text(f"r{i}"), 0.1) for i in range(6)])
    sink = Sink()
    gw = await start({"anthropic": pool(fake.url, max_concurrent_requests=2)}, sink)
    try:
        bases = [gw.open_session(f"s-{i}", f"w-{i}", "anthropic", None)["ANTHROPIC_BASE_URL"] for i in range(6)]
        results = await asyncio.gather(*(post(http, b, body()) for b in bases))
        assert [s for s, _ in results] == [200] * 6
        assert fake.max_in_flight == 2
        assert any(place is not None and place >= 2 for _, _, place in sink.places)  # "queued (2nd)" was said
        assert sink.places[-1][2] is None or all(p is None for k, _, p in sink.places if k == sink.places[-1][0])
    finally:
        await gw.stop()


async def test_a_session_over_its_budget_is_paused_then_resumed(fake: FakeModel, http: aiohttp.ClientSession) -> None:
    # $1 per million input tokens: 1,000,000 input tokens cost exactly $1.
    config = pool(fake.url, budget_usd={"per_session": 1.0}, price={"input": 1.0})
    fake.script(
        text("big", usage=Usage(input=1_000_000, output=0)), text("after resume", usage=Usage(input=1, output=1))
    )
    sink = Sink()
    gw = await start({"anthropic": config}, sink)
    try:
        base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
        status, _ = await post(http, base, body())
        assert status == 200
        assert sink.budget == [("s-1", "anthropic", "pause", "over its budget: spent $1.00 of $1.00")]
        assert gw.session_held("s-1") is not None
        second = asyncio.create_task(post(http, base, body()))
        await asyncio.sleep(0.3)
        assert not second.done()  # its next request waits in the gateway
        assert len(fake.model_requests()) == 1
        said = gw.resume_session("s-1")
        assert "resumed" in said and "budget $2.00" in said
        status, raw = await asyncio.wait_for(second, 5)
        assert status == 200 and b"message_stop" in raw
    finally:
        await gw.stop()


async def test_upstream_unreachable_drops_the_connection_and_the_pool_shows_it(http: aiohttp.ClientSession) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound, never listening: connections are refused
        sink = Sink()
        gw = await start({"anthropic": pool(f"http://127.0.0.1:{dead}")}, sink)
        try:
            base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
            with pytest.raises(aiohttp.ClientError):  # as without the gateway: no HTTP answer at all
                await post(http, base, body())
            (done,) = sink.done
            assert done.status == 0 and done.error is not None and "unreachable" in done.error
            info = gw.info().pools[0]
            assert info.last_error is not None and "unreachable" in info.last_error
            assert info.today.errors == 1 and info.in_flight == 0
        finally:
            await gw.stop()


async def test_a_client_that_hangs_up_mid_stream_cancels_upstream_and_is_charged_so_far(
    fake: FakeModel, http: aiohttp.ClientSession
) -> None:
    fake.script(slow(text("a long answer in many parts", usage=Usage(input=50, output=40)), 0.4))
    sink = Sink()
    gw = await start({"anthropic": pool(fake.url)}, sink)
    try:
        base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
        async with http.post(f"{base}/v1/messages", json=body(), headers={"x-api-key": KEY}) as r:
            await r.content.readany()  # the first chunk (message_start), then hang up
        for _ in range(50):
            if sink.done and fake.served:
                break
            await asyncio.sleep(0.1)
        (done,) = sink.done
        assert done.cut
        assert done.usage.known and done.usage.input == 50  # message_start's input was charged
        assert done.usage.output < 40
        assert fake.served[-1].completed is False  # the upstream request was cancelled too
        assert gw.info().pools[0].in_flight == 0
    finally:
        await gw.stop()


async def test_garbage_from_upstream_passes_through_unchanged_and_counts_as_unknown(
    http: aiohttp.ClientSession,
) -> None:
    junk = b"\x00\xffnot json at all{{{\n"

    async def garbage(_: web.Request) -> web.Response:
        return web.Response(body=junk, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/messages", garbage)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    sink = Sink()
    gw = await start({"anthropic": pool(f"http://127.0.0.1:{port}")}, sink)
    try:
        base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
        status, raw = await post(http, base, body(stream=False))
        assert (status, raw) == (200, junk)
        assert sink.done[0].usage.known is False
        assert gw.today("anthropic")[1].unknown == 1
    finally:
        await gw.stop()
        await runner.cleanup()


async def test_a_taken_port_gives_another_and_says_so(fake: FakeModel) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        gw = await start({"anthropic": pool(fake.url)}, Sink(), port=taken)
        try:
            assert gw.port != taken and gw.port_changed_from == taken
            assert gw.info().port_changed_from == taken
        finally:
            await gw.stop()


async def test_it_listens_on_loopback_only(fake: FakeModel) -> None:
    gw = await start({"anthropic": pool(fake.url)}, Sink())
    try:
        assert gw.url == f"http://127.0.0.1:{gw.port}"
        addrs = [a for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET) if a[4][0] != "127.0.0.1"]
        for a in addrs[:1]:
            with socket.socket() as c, pytest.raises(OSError):
                c.settimeout(1)
                c.connect((a[4][0], gw.port))
    finally:
        await gw.stop()


def test_the_openai_env_points_at_v1() -> None:
    async def run() -> dict[str, str]:
        gw = Gateway({"openai": PoolConfig.model_validate({"provider": "openai"})}, Sink(), b"k" * 32)
        await gw.start()
        try:
            return gw.open_session("s-1", "w", "openai", None)
        finally:
            await gw.stop()

    env = asyncio.run(run())
    assert list(env) == ["OPENAI_BASE_URL"] and env["OPENAI_BASE_URL"].endswith("/v1")
    assert json.dumps(env).count("/s/") == 1


async def test_the_concurrency_cap_is_learned_from_429s_without_rate_headers(http: aiohttp.ClientSession) -> None:
    with FakeModel(limit=Limit(concurrent=2)) as fake:
        fake.script(*[slow(text(f"r{i}"), 0.15) for i in range(8)])
        gw = await start({"anthropic": pool(fake.url, max_concurrent_requests=6)}, Sink())
        try:
            bases = [gw.open_session(f"s-{i}", f"w-{i}", "anthropic", None)["ANTHROPIC_BASE_URL"] for i in range(8)]
            results = await asyncio.gather(*(post(http, b, body()) for b in bases))
            assert [s for s, _ in results] == [200] * 8
            info = gw.info().pools[0]
            assert info.learned_cap == 2 and info.cap == 2
            # Only the first burst was refused (6 sent at once, 2 let in): after that it kept to 2.
            assert len(fake.refused) == 4 and info.today.absorbed == 4
            assert fake.max_in_flight == 2
        finally:
            await gw.stop()


async def test_ctl_acquire_draws_on_the_same_request_bucket(fake: FakeModel, http: aiohttp.ClientSession) -> None:
    gw = await start({"anthropic": pool(fake.url, requests="2/s")}, Sink())
    try:
        base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
        t0 = time.monotonic()
        await gw.acquire("anthropic")
        await gw.acquire("anthropic")  # the bucket (2, refilling 2 a second) is empty now
        assert time.monotonic() - t0 < 0.2
        status, _ = await post(http, base, body())  # a model request waits for the next token
        assert status == 200
        assert time.monotonic() - t0 >= 0.4
        assert gw.info().pools[0].requests_limit == 120.0
    finally:
        await gw.stop()


async def test_a_pool_over_its_daily_budget_holds_its_line_until_resumed_or_the_next_day(
    fake: FakeModel, http: aiohttp.ClientSession
) -> None:
    config = pool(fake.url, budget_usd={"per_day": 1.0}, price={"input": 1.0})
    fake.default_reply = text("ok", usage=Usage(input=1_000_000, output=0))  # $1 a request
    days = ["2026-11-30"]
    sink = Sink()
    gw = Gateway({"anthropic": config}, sink, b"s" * 32, day_of=lambda _ts: days[0])
    await gw.start()
    try:
        a = gw.open_session("s-a", "a", "anthropic", None)["ANTHROPIC_BASE_URL"]
        b = gw.open_session("s-b", "b", "anthropic", None)["ANTHROPIC_BASE_URL"]
        assert (await post(http, a, body()))[0] == 200
        assert sink.budget == [(None, "anthropic", "pause", "daily budget spent: $1.00 of $1.00")]
        held = asyncio.create_task(post(http, b, body()))  # another session of the pool: held too
        await asyncio.sleep(0.3)
        assert not held.done() and gw.info().pools[0].held is not None
        assert "resumed" in gw.resume_pool("anthropic")  # one more day's budget: $2 today
        assert (await asyncio.wait_for(held, 5))[0] == 200
        assert gw.info().pools[0].held is not None  # $2 spent of $2: held again
        third = asyncio.create_task(post(http, a, body()))
        await asyncio.sleep(0.3)
        assert not third.done()
        days[0] = "2026-12-01"  # a new day: the line goes on, today's figures start again
        assert gw.info().pools[0].held is None  # the day turns at midnight (or when anyone looks)
        assert (await asyncio.wait_for(third, 5))[0] == 200
        _day, today = gw.today("anthropic")
        assert _day == "2026-12-01" and today.requests == 1
    finally:
        await gw.stop()


async def test_a_session_that_ends_while_held_is_refused(fake: FakeModel, http: aiohttp.ClientSession) -> None:
    config = pool(fake.url, budget_usd={"per_session": 0.5}, price={"input": 1.0})
    fake.default_reply = text("ok", usage=Usage(input=1_000_000, output=0))
    gw = await start({"anthropic": config}, Sink())
    try:
        base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
        assert (await post(http, base, body()))[0] == 200
        held = asyncio.create_task(post(http, base, body()))
        await asyncio.sleep(0.2)
        gw.close_session("s-1")
        assert (await asyncio.wait_for(held, 5))[0] == 403
    finally:
        await gw.stop()


async def test_chat_completions_are_metered_too(http: aiohttp.ClientSession) -> None:
    """An OpenAI upstream (a small aiohttp app here: the fake model server speaks Responses, not Chat): the
    streamed chat answer's last chunk carries the usage (`stream_options.include_usage`); cached tokens are counted
    inside prompt_tokens and come out as cache reads."""
    chunks = [
        {"id": "c1", "model": "gpt-test", "choices": [{"delta": {"content": "hel"}}], "usage": None},
        {"id": "c1", "model": "gpt-test", "choices": [{"delta": {"content": "lo"}}], "usage": None},
        {
            "id": "c1",
            "model": "gpt-test",
            "choices": [],
            "usage": {"prompt_tokens": 90, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 40}},
        },
    ]

    async def chat(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for c in chunks:
            await resp.write(f"data: {json.dumps(c)}\n\n".encode())
        await resp.write(b"data: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    upstream = f"http://127.0.0.1:{runner.addresses[0][1]}"
    sink = Sink()
    gw = await start({"openai": PoolConfig.model_validate({"provider": "openai", "upstream": upstream})}, sink)
    try:
        base = gw.open_session("s-1", "w", "openai", None)["OPENAI_BASE_URL"]
        payload = {"model": "gpt-test", "stream": True, "stream_options": {"include_usage": True}, "messages": []}
        async with http.post(f"{base}/chat/completions", json=payload, headers={"authorization": "Bearer k"}) as r:
            raw = await r.read()
        assert r.status == 200 and raw.endswith(b"data: [DONE]\n\n")
        u = sink.done[0].usage
        assert (u.input, u.cache_read, u.output, u.model, u.known) == (50, 40, 7, "gpt-test", True)
    finally:
        await gw.stop()
        await runner.cleanup()
