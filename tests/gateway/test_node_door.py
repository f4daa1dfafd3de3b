"""A Ray node's gateway door (`NodeGateway`) wired to the runtime's gateway (`Doors`) in-process, as a host's link
wires them over Ray: real HTTP through the door to the fake model server on 127.0.0.1, with the pacing and the
charging done by the runtime's gateway. tests/test_ray_hosts.py runs the same through a real Ray cluster.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from crewtui.gateway.door import Doors
from crewtui.gateway.node import NodeGateway, Route, encode
from crewtui.gateway.server import Gateway
from tests.fakemodel import FakeModel, Usage, error, slow, text
from tests.gateway.test_gateway import KEY, Sink, body, pool, post

OWNER = "runtime-1"


class Wire:
    """The host's link in-process: every op of the door is served by the runtime's gateway (unless `down`)."""

    def __init__(self, gateway: Gateway) -> None:
        self.doors = Doors(gateway)
        self.ops: list[str] = []
        self.down = False

    async def ask(self, owner: str, key: str, op: dict[str, Any]) -> dict[str, Any]:
        self.ops.append(op["op"])
        if self.down:  # the runtime is restarting: what the relay answers meanwhile
            return {"ok": False, "error": {"kind": "unavailable", "message": "the crewtui runtime restarted"}}
        reply: dict[str, Any] = json.loads(await self.doors.serve(key, encode(op)))
        return reply


async def pair(fake: FakeModel, **pool_kw: Any) -> tuple[Gateway, NodeGateway, Wire, Sink]:
    sink = Sink()
    gw = Gateway({"anthropic": pool(fake.url, **pool_kw)}, sink, b"s" * 32)
    await gw.start()
    wire = Wire(gw)
    door = NodeGateway(wire.ask)
    await door.start()
    return gw, door, wire, sink


def on_node(gw: Gateway, door: NodeGateway, key: str, label: str) -> str:
    """Open `key` in the runtime's gateway and route it through the node's door; its base URL on the node."""
    env = gw.open_session(key, label, "anthropic", None)
    door.open(Route(gw.token_for(key), OWNER, key, gw.pools["anthropic"].limits.config.upstream_url))
    return env["ANTHROPIC_BASE_URL"].replace(gw.url, door.url)


async def stop(gw: Gateway, door: NodeGateway) -> None:
    await door.stop()
    await gw.stop()


async def until(check: Any, what: str, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_request_through_a_nodes_door_is_paced_and_charged_by_the_runtimes_gateway(
    fake: FakeModel, http: aiohttp.ClientSession
) -> None:
    fake.script(text("from the node", usage=Usage(input=30, output=7, cache_read=5)))
    gw, door, wire, sink = await pair(fake, price={"input": 1.0, "output": 2.0})
    try:
        status, raw = await post(http, on_node(gw, door, "s-1", "w-1"), body())
        assert status == 200 and raw.count(b"text_delta") >= 2 and b"message_stop" in raw  # streamed through
        (req,) = fake.model_requests()
        assert req.headers["x-api-key"] == KEY  # the agent's own credentials, untouched
        await until(lambda: len(sink.done) == 1, "the usage charged in the runtime")
        (done,) = sink.done
        assert (done.key, done.status, done.usage.input, done.usage.output, done.usage.cache_read) == (
            "s-1",
            200,
            30,
            7,
            5,
        )
        assert done.cost_usd == pytest.approx((30 * 1.0 + 7 * 2.0) / 1e6)
        assert wire.ops == ["admit", "answered", "done"]
        assert gw.today("anthropic")[1].requests == 1
        assert wire.doors.held == 0 and gw.info().pools[0].in_flight == 0
    finally:
        await stop(gw, door)


async def test_the_nodes_and_the_runtimes_sessions_share_one_line(fake: FakeModel, http: aiohttp.ClientSession) -> None:
    fake.script(*[slow(text(f"r{i}"), 0.05) for i in range(6)])
    gw, door, _wire, sink = await pair(fake, max_concurrent_requests=1)
    try:
        local = [gw.open_session(f"l-{i}", f"l-{i}", "anthropic", None)["ANTHROPIC_BASE_URL"] for i in range(3)]
        remote = [on_node(gw, door, f"n-{i}", f"n-{i}") for i in range(3)]
        results = await asyncio.gather(*(post(http, base, body()) for base in local + remote))
        assert [s for s, _ in results] == [200] * 6
        assert fake.max_in_flight == 1  # one cap for the crew, wherever its sessions run
        await until(lambda: len(sink.done) == 6, "six charged")
        assert sorted(d.key for d in sink.done) == ["l-0", "l-1", "l-2", "n-0", "n-1", "n-2"]
    finally:
        await stop(gw, door)


async def test_a_429_seen_on_a_node_pauses_the_pool_and_is_retried_unseen(
    fake: FakeModel, http: aiohttp.ClientSession
) -> None:
    fake.script(error(429, retry_after=0.3), text("after the pause", usage=Usage(input=5, output=2)))
    gw, door, wire, sink = await pair(fake)
    try:
        status, raw = await post(http, on_node(gw, door, "s-1", "w"), body(stream=False))
        assert status == 200 and b"after the pause" in raw
        await until(lambda: len(sink.done) == 1, "charged")
        assert sink.done[0].absorbed == 1 and gw.today("anthropic")[1].absorbed == 1
        assert wire.ops[:3] == ["admit", "refused", "admit"]
        assert len(fake.model_requests()) == 2
    finally:
        await stop(gw, door)


async def test_past_max_retries_the_refusal_reaches_the_agent_and_is_counted_passed(
    fake: FakeModel, http: aiohttp.ClientSession
) -> None:
    fake.script(error(429, retry_after=0), error(429, retry_after=0))
    gw, door, _wire, sink = await pair(fake, max_retries=1)
    try:
        status, raw = await post(http, on_node(gw, door, "s-1", "w"), body())
        assert status == 429 and b"rate_limit_error" in raw
        await until(lambda: len(sink.done) == 1, "charged")
        assert gw.today("anthropic")[1].passed == 1 and gw.info().pools[0].in_flight == 0
    finally:
        await stop(gw, door)


async def test_unknown_and_revoked_tokens_are_refused_with_403(fake: FakeModel, http: aiohttp.ClientSession) -> None:
    gw, door, wire, _sink = await pair(fake)
    try:
        base = on_node(gw, door, "s-1", "w")
        status, _ = await post(http, f"{door.url}/s/{'0' * 32}", body())
        assert status == 403 and wire.ops == []  # refused on the node: the runtime is not even asked
        gw.close_session("s-1")  # ended in the runtime; its host has not closed the route yet
        status, raw = await post(http, base, body())
        assert status == 403 and b"unknown or revoked session token" in raw
        assert fake.model_requests() == []
        # A door cannot spend as another session: the token must be the named session's.
        gw.open_session("s-2", "w2", "anthropic", None)
        reply = await wire.doors.serve("s-1", encode({"op": "admit", "token": gw.token_for("s-2"), "nonce": "x"}))
        assert json.loads(reply)["admitted"] is False
    finally:
        await stop(gw, door)


async def test_a_session_on_a_node_over_its_budget_is_paused_then_resumed(
    fake: FakeModel, http: aiohttp.ClientSession
) -> None:
    fake.script(text("one", usage=Usage(input=1_000_000)), text("two", usage=Usage(input=10)))
    gw, door, _wire, sink = await pair(fake, price={"input": 1.0}, budget_usd={"per_session": 1.0})
    try:
        base = on_node(gw, door, "s-1", "spender")
        assert (await post(http, base, body()))[0] == 200
        await until(lambda: gw.session_held("s-1") is not None, "the session held for its budget")
        second = asyncio.ensure_future(post(http, base, body(stream=False)))
        await asyncio.sleep(0.5)
        assert not second.done() and len(fake.model_requests()) == 1  # it waits in the runtime's gateway
        assert sink.budget and sink.budget[0][0] == "s-1"
        assert "resumed" in gw.resume_session("s-1")
        status, raw = await asyncio.wait_for(second, 10)
        assert status == 200 and b"two" in raw
    finally:
        await stop(gw, door)


async def test_an_agent_that_hangs_up_in_line_gives_its_place_back(
    fake: FakeModel, http: aiohttp.ClientSession
) -> None:
    fake.script(slow(text("long", usage=Usage(input=1)), 0.5), text("next", usage=Usage(input=1)))
    gw, door, wire, _sink = await pair(fake, max_concurrent_requests=1)
    try:
        base = on_node(gw, door, "s-1", "w")
        first = asyncio.ensure_future(post(http, base, body()))
        await until(lambda: fake.max_in_flight == 1, "the first request upstream")
        waiting = asyncio.ensure_future(post(http, base, body()))
        await until(lambda: wire.ops.count("admit") == 2, "the second in line")
        waiting.cancel()  # the agent gives up while it waits
        await until(lambda: "abandon" in wire.ops, "the door to give its place back")
        assert (await first)[0] == 200
        status, raw = await asyncio.wait_for(post(http, base, body(stream=False)), 10)  # the line moved on: no leak
        assert status == 200 and b"next" in raw
        await until(lambda: wire.doors.held == 0 and gw.info().pools[0].in_flight == 0, "every permit back")
    finally:
        await stop(gw, door)


async def test_a_runtime_that_cannot_answer_for_a_while_only_delays_the_request(
    fake: FakeModel, http: aiohttp.ClientSession
) -> None:
    fake.script(text("late but fine", usage=Usage(input=3, output=1)))
    gw, door, wire, sink = await pair(fake)
    try:
        base = on_node(gw, door, "s-1", "w")
        wire.down = True
        sent = asyncio.ensure_future(post(http, base, body(stream=False)))
        await asyncio.sleep(1.5)
        assert not sent.done() and fake.model_requests() == []
        wire.down = False
        status, raw = await asyncio.wait_for(sent, 10)
        assert status == 200 and b"late but fine" in raw
        await until(lambda: len(sink.done) == 1, "charged once the runtime answers")
    finally:
        await stop(gw, door)


async def test_permits_of_a_session_whose_node_died_mid_request_go_back_at_its_end(fake: FakeModel) -> None:
    gw, door, wire, _sink = await pair(fake, max_concurrent_requests=1)
    try:
        on_node(gw, door, "s-1", "w")
        admit = {"op": "admit", "token": gw.token_for("s-1"), "nonce": "n-1", "estimate": 10}
        assert json.loads(await wire.doors.serve("s-1", encode(admit)))["admitted"] is True
        assert gw.info().pools[0].in_flight == 1  # its node dies now: no done will ever come
        assert wire.doors.session_ended("s-1") == 1
        assert gw.info().pools[0].in_flight == 0 and wire.doors.held == 0  # the pool is not a slot short for good
    finally:
        await stop(gw, door)
