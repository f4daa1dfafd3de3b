"""The gateway against hostile or broken peers: paths that spell a model call some other way, encoded characters,
clients that hang up while they wait, an upstream that breaks off mid-body or asks to be left alone forever, and
resume budgets below what was already spent."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from crewtui.clock import FakeClock
from crewtui.errors import BadInput
from crewtui.gateway.upstream import retry_after
from crewtui.runtime.metering import Metering
from crewtui.spend import UsageBy, UsageTotals
from crewtui.store import Store
from tests.fakemodel import FakeModel, Usage, slow, text
from tests.gateway.test_gateway import Sink, body, pool, post, start
from tests.gateway.test_limits import limits

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Upstream:
    """A small aiohttp upstream on 127.0.0.1 that records the raw path of every request and answers with `handler`."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.handler = handler
        self.raw: list[tuple[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.raw.append((request.method, request.raw_path))
        await request.read()
        if self.handler is not None:
            return await self.handler(request)
        return web.json_response({"model": "m", "usage": {"input_tokens": 10, "output_tokens": 2}})

    async def __aenter__(self) -> Upstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out waiting")


# -- paths -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/./messages", "/v1/x/../messages", "/v1//messages", "//v1/messages"])
async def test_a_model_call_spelled_with_dot_segments_or_double_slashes_is_still_metered(
    http: aiohttp.ClientSession, path: str
) -> None:
    """Whatever spelling reaches the upstream as /v1/messages is a model call: metered, paced and budgeted (it
    used to go through unmetered, a way around every budget)."""
    async with Upstream() as up:
        sink = Sink()
        gw = await start({"anthropic": pool(up.url)}, sink)
        try:
            base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
            async with http.post(URL(base + path, encoded=True), json=body(stream=False)) as r:
                assert r.status == 200
                await r.read()
            assert up.raw == [("POST", "/v1/messages")]
            (done,) = sink.done
            assert done.api == "anthropic" and done.usage.input == 10
        finally:
            await gw.stop()


async def test_encoded_characters_in_path_and_query_reach_upstream_as_sent(http: aiohttp.ClientSession) -> None:
    async with Upstream() as up:
        gw = await start({"anthropic": pool(up.url)}, Sink())
        try:
            base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
            tail = "/v1/files/a%2Fb%20c?after=x%26y%3Dz&q=%0D%0AX-Evil:%201"
            async with http.get(URL(base + tail, encoded=True)) as r:
                assert r.status == 200
            assert up.raw == [("GET", tail)]
        finally:
            await gw.stop()


async def test_only_a_post_is_a_model_call(http: aiohttp.ClientSession) -> None:
    async with Upstream() as up:
        sink = Sink()
        gw = await start({"anthropic": pool(up.url)}, sink)
        try:
            base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
            for method in ("OPTIONS", "GET", "HEAD"):
                async with http.request(method, f"{base}/v1/messages") as r:
                    assert r.status == 200
            assert [m for m, _ in up.raw] == ["OPTIONS", "GET", "HEAD"]
            assert sink.done == []  # not charged as requests with unknown usage
        finally:
            await gw.stop()


# -- clients that hang up while they wait -----------------------------------------------------------------------


async def test_a_client_that_hangs_up_while_in_line_never_reaches_upstream(
    fake: FakeModel, http: aiohttp.ClientSession
) -> None:
    fake.script(slow(text("one two three"), 0.3))
    gw = await start({"anthropic": pool(fake.url, max_concurrent_requests=1)}, Sink())
    try:
        base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
        first = asyncio.create_task(post(http, base, body()))
        await until(lambda: gw.info().pools[0].in_flight == 1)
        with pytest.raises(asyncio.TimeoutError):  # the agent gives up and closes its connection
            await asyncio.wait_for(post(http, base, body()), 0.3)
        await until(lambda: gw.info().pools[0].queue == 0)  # it left the line at once
        assert (await first)[0] == 200
        await asyncio.sleep(0.3)
        assert len(fake.model_requests()) == 1  # the abandoned request was never sent (nor paid for)
        info = gw.info().pools[0]
        assert info.in_flight == 0 and info.queue == 0
    finally:
        await gw.stop()


async def test_a_client_that_hangs_up_while_held_for_its_budget_is_not_sent_after_resume(
    fake: FakeModel, http: aiohttp.ClientSession
) -> None:
    config = pool(fake.url, budget_usd={"per_session": 1.0}, price={"input": 1.0})
    fake.default_reply = text("ok", usage=Usage(input=1_000_000, output=0))
    gw = await start({"anthropic": config}, Sink())
    try:
        base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
        assert (await post(http, base, body()))[0] == 200
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(post(http, base, body()), 0.3)
        await asyncio.sleep(0.2)
        gw.resume_session("s-1")
        await asyncio.sleep(0.5)
        assert len(fake.model_requests()) == 1
        assert gw.info().pools[0].in_flight == 0
        assert (await post(http, base, body()))[0] == 200  # a live request after the resume goes
    finally:
        await gw.stop()


# -- an upstream that breaks off ---------------------------------------------------------------------------------


async def _raw_upstream(reply: bytes) -> tuple[asyncio.Server, str]:
    """A server that answers every request with `reply` and then closes the connection (mid-body, if it says so)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")),
            0,
        )
        await reader.readexactly(length)
        writer.write(reply)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


_EVENT = b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":7}}}\n\n'


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
        b'{"usage": {"input_tokens": 7, "output_tokens": 1}, "content": "cut',
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(_EVENT):x}\r\n".encode()
        + _EVENT
        + b"\r\n",
    ],
    ids=["json-short-of-its-length", "sse-without-its-last-chunk"],
)
async def test_an_upstream_that_breaks_off_mid_body_breaks_the_agents_answer_too(
    http: aiohttp.ClientSession, reply: bytes
) -> None:
    """Without the gateway the agent would see a broken answer (and retry); it must not get a clean, short one."""
    server, url = await _raw_upstream(reply)
    sink = Sink()
    gw = await start({"anthropic": pool(url)}, sink)
    try:
        base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.post(f"{base}/v1/messages", json=body()) as r:
                await r.read()
        await until(lambda: bool(sink.done))
        (done,) = sink.done
        assert done.error is not None and "broke off" in done.error
        # charged as far as it went: the stream's message_start; a JSON body cut short cannot be read
        assert done.usage.input == (7 if b"event-stream" in reply else 0)
        assert gw.info().pools[0].in_flight == 0
    finally:
        await gw.stop()
        server.close()
        await server.wait_closed()


# -- absurd retry-after ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "Infinity", "1e400"])
def test_a_retry_after_that_is_no_number_of_seconds_is_ignored(value: str) -> None:
    assert retry_after({"retry-after": value}, 0.0) is None
    assert retry_after({"retry-after-ms": value}, 0.0) is None


async def test_no_pause_outlasts_an_hour() -> None:
    clock = FakeClock()
    lim = limits(clock)
    lim.pause(math.inf, "upstream said 429")
    assert lim.paused_for() <= 3600.0
    lim.pause(1e300, "upstream said 429")
    assert lim.paused_for() <= 3600.0
    waiting = asyncio.create_task(lim.admit())
    await clock.advance(3601.0)
    lim.release(await asyncio.wait_for(waiting, 1))


async def test_a_429_with_an_infinite_retry_after_does_not_freeze_the_pool(http: aiohttp.ClientSession) -> None:
    answers = [web.json_response({"error": "slow down"}, status=429, headers={"retry-after": "inf"})]

    async def handler(_: web.Request) -> web.StreamResponse:
        if answers:
            return answers.pop()
        return web.json_response({"usage": {"input_tokens": 3, "output_tokens": 1}})

    async with Upstream(handler) as up:
        gw = await start({"anthropic": pool(up.url)}, Sink())
        try:
            base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
            status, _ = await asyncio.wait_for(post(http, base, body(stream=False)), 5)
            assert status == 200
            assert len(up.raw) == 2
        finally:
            await gw.stop()


# -- resume below what was spent ---------------------------------------------------------------------------------


async def test_resuming_a_session_to_a_budget_it_already_spent_is_refused_and_changes_nothing(
    fake: FakeModel, http: aiohttp.ClientSession
) -> None:
    config = pool(fake.url, budget_usd={"per_session": 1.0}, price={"input": 1.0})
    fake.default_reply = text("ok", usage=Usage(input=1_000_000, output=0))
    gw = await start({"anthropic": config}, Sink())
    try:
        base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
        assert (await post(http, base, body()))[0] == 200
        held = gw.session_held("s-1")
        assert held is not None
        with pytest.raises(BadInput, match=r"spent \$1\.00; a budget of \$0\.50"):
            gw.resume_session("s-1", 0.5)
        assert gw.session_held("s-1") == held
        assert "resumed" in gw.resume_session("s-1", 3.0)
        assert gw.session_held("s-1") is None
    finally:
        await gw.stop()


async def test_resuming_a_pool_to_a_budget_already_spent_today_is_refused_and_changes_nothing(
    fake: FakeModel, http: aiohttp.ClientSession
) -> None:
    config = pool(fake.url, budget_usd={"per_day": 1.0}, price={"input": 1.0})
    fake.default_reply = text("ok", usage=Usage(input=1_000_000, output=0))
    gw = await start({"anthropic": config}, Sink())
    try:
        base = gw.open_session("s-1", "w", "anthropic", None)["ANTHROPIC_BASE_URL"]
        assert (await post(http, base, body()))[0] == 200
        info = gw.info().pools[0]
        assert info.held is not None
        with pytest.raises(BadInput, match=r"spent \$1\.00 today; a daily budget of \$0\.90"):
            gw.resume_pool("anthropic", 0.9)
        after = gw.info().pools[0]
        assert (after.held, after.budget_per_day) == (info.held, 1.0)
    finally:
        await gw.stop()


# -- ctl usage with an absurd --since ----------------------------------------------------------------------------


@pytest.mark.parametrize("by", ["pool", "day", "session"])
@pytest.mark.parametrize("since", [-8.6e15, -math.inf, math.inf, 1e20])
async def test_usage_since_before_the_epoch_or_after_now_is_clamped_not_a_crash(
    tmp_path: Path, by: UsageBy, since: float
) -> None:
    """`ctl usage --since 99999999999d` asks from long before 1970: every day there is, never an OverflowError."""
    store = await Store.open(tmp_path / "crewtui.db")
    try:
        store.put_usage_day("2026-04-01", "anthropic", UsageTotals(requests=3).model_dump_json())
        await store.flush()
        metering = _bare_metering(store)
        rows = await metering.usage(by, since)
        if by != "session":
            assert [r.usage.requests for r in rows] == ([3] if since < 0 else [])
        with pytest.raises(BadInput, match="--since"):
            await metering.usage(by, math.nan)
    finally:
        await store.close()


def _bare_metering(store: Store) -> Metering:
    """Metering's `usage` verb with no runtime around it (it reads the clock, the store and the live table)."""
    metering = Metering.__new__(Metering)
    metering.clock = FakeClock()
    metering.store = store
    metering.gateway = None
    metering.table = SimpleNamespace(sessions={})  # type: ignore[assignment]
    metering._dirty_days = set()
    return metering
