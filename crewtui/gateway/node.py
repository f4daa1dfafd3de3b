"""`NodeGateway`: the crew's model gateway reached from a Ray node (host mode of the Ray backend).

The gateway listens on the runtime's loopback, which another machine cannot reach. So each node's crewtui host
serves a door of its own on *that* node's 127.0.0.1, and a session of a gateway pool on the node is pointed at
it (`http://127.0.0.1:PORT/s/<token>`, the same token the runtime gave it). The door does the HTTP part here
(the request goes from the node straight to the provider, and the answer streams back through the door as it
arrives); every decision stays with the runtime's gateway, asked over the host's link (`ask`):

- `admit`: wait in the pool's line (FIFO, caps, rates, pauses, budgets: the crew's one line, shared with the
  runtime's own sessions) until the request may go; or `forbidden` (the session ended, its token revoked);
- `refused`: upstream said 429/529: the pool pauses for everyone; the reply says whether to send it again;
- `answered`: upstream's status and rate-limit headers (the pool learns its window as the stream begins);
- `done`: what the answer used (measured here, on the way through), charged in the runtime;
- `abandon`: the agent hung up while waiting: its place (or its permit, if one was on its way) is given back.

A request the runtime cannot take (it is restarting) is asked again every second until one takes it, so an agent
sees latency, never an error of crewtui's making. A token this host does not run is refused here (403).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from yarl import URL

from crewtui.errors import first_line
from crewtui.gateway import forward
from crewtui.gateway.upstream import error_body, retry_after, window_exhausted
from crewtui.gateway.usage import Api, Measured, UsageMeter, api_of, estimate_input_tokens

log = logging.getLogger("crewtui.gateway.node")

# Stands for the node's door in a Ray session's environment and arguments until its host, which knows its port,
# puts the real address in (a name under .invalid never resolves: a session started without a host fails loudly).
NODE_BASE = "http://crewtui-node-gateway.invalid"
_RETRY_S = 1.0  # how often a request the runtime could not take is asked again
_TELL_FOR_S = 60.0  # how long a report (answered, done) is tried before it is given up

# (owner, session key, op) -> the runtime's reply; raises or returns {"ok": False, ...} when it could not be asked.
Ask = Callable[[str, str, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Route:
    """A session of a gateway pool on this node: its token, whose it is, where its pool's provider is."""

    token: str
    owner: str
    key: str
    upstream: str

    def to_json(self) -> dict[str, str]:
        return {"token": self.token, "owner": self.owner, "key": self.key, "upstream": self.upstream}

    @classmethod
    def from_json(cls, data: Any) -> Route | None:
        if not isinstance(data, dict) or not all(isinstance(data.get(f), str) for f in ("token", "owner", "key")):
            return None
        upstream = data.get("upstream")
        return cls(data["token"], data["owner"], data["key"], upstream) if isinstance(upstream, str) else None


def measured_json(m: Measured) -> dict[str, Any]:
    return {
        "input": m.input,
        "output": m.output,
        "cache_read": m.cache_read,
        "cache_write": m.cache_write,
        "model": m.model,
        "known": m.known,
    }


class NodeGateway:
    """The door on one node. `await start(port)`, then `open(route)` per session of a gateway pool."""

    def __init__(self, ask: Ask) -> None:
        self._ask = ask
        self.routes: dict[str, Route] = {}  # by token
        self.port = 0
        self.forbidden = 0
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._reports: set[asyncio.Task[None]] = set()
        self._busy: dict[str, int] = {}  # by token: model requests under way and reports not yet answered
        self._stopping = False

    async def start(self, port: int = 0) -> int:
        """Listen on the node's 127.0.0.1:`port` (0: any; a taken one: another); the port."""
        self._runner, self.port, _taken = await forward.listen(self._handle, self._no_token, port)
        self._http = forward.upstream_client()
        return self.port

    async def stop(self) -> None:
        self._stopping = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for task in list(self._reports):
            task.cancel()
        if self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def url(self) -> str:
        return f"http://{forward.LOOPBACK}:{self.port}"

    def open(self, route: Route) -> None:
        self.routes[route.token] = route

    def close(self, token: str) -> None:
        self.routes.pop(token, None)

    # ------------------------------------------------------------------------------------------- HTTP

    async def _no_token(self, request: web.Request) -> web.Response:
        return self._forbid(request, None)

    def _forbid(self, request: web.Request, api: Api | None) -> web.Response:
        self.forbidden += 1
        log.warning("node gateway: refused %s: unknown or revoked session token", request.method)
        return web.json_response(error_body(api, 403, "crewtui gateway: unknown or revoked session token"), status=403)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        tail, path = forward.target(request.raw_path, token)  # as the runtime's gateway reads it (see there)
        api = api_of(path) if request.method == "POST" and tail is not None else None
        route = self.routes.get(token)
        if route is None or tail is None:
            return self._forbid(request, api)
        body = await request.read()
        url = forward.upstream_url(route.upstream, tail)
        headers = forward.upstream_headers(request.headers)
        assert self._http is not None
        if api is None:  # not a model call: through, unmetered, unpaced (as the runtime's gateway does)
            return (await forward.unmetered(self._http, request, url, headers, body))[0]
        self._hold(route.token, +1)
        try:
            return await self._model_call(request, route, api, url, headers, body)
        finally:
            self._hold(route.token, -1)

    def busy(self, token: str) -> bool:
        """Whether a request of the session is under way, or the runtime has yet to hear all it used: its host
        reports the session's end only after (so the runtime's link, which stops polling a host with no sessions,
        still takes the last report)."""
        return self._busy.get(token, 0) > 0

    def _hold(self, token: str, n: int) -> None:
        left = self._busy.get(token, 0) + n
        if left > 0:
            self._busy[token] = left
        else:
            self._busy.pop(token, None)

    async def _model_call(
        self, request: web.Request, route: Route, api: Api, url: URL, headers: dict[str, str], body: bytes
    ) -> web.StreamResponse:
        assert self._http is not None
        estimate = estimate_input_tokens(body)
        absorbed = 0
        while True:
            nonce = uuid.uuid4().hex
            if not await self._admit(route, nonce, estimate):
                return self._forbid(request, api) if not self._stopping else forward.drop(request)
            try:
                upstream = await self._http.request(
                    request.method, url, headers=headers, data=body, allow_redirects=False
                )
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                done = {"op": "done", "nonce": nonce, "api": api, "status": 0, "absorbed": absorbed}
                done.update(measured=measured_json(Measured()), error=f"upstream unreachable: {first_line(exc)}")
                self._report(route, done)
                return forward.drop(request)
            except asyncio.CancelledError:
                self._report(route, {"op": "abandon", "nonce": nonce})
                raise
            now = time.time()
            window = window_exhausted(upstream.headers, now)
            wait = retry_after(upstream.headers, now)
            if upstream.status in forward.REFUSED:
                op = {"op": "refused", "nonce": nonce, "status": upstream.status, "wait": wait, "window": window}
                op["absorbed"] = absorbed
                try:
                    again = (await self._must(route, op)).get("retry") is True
                except asyncio.CancelledError:
                    upstream.release()
                    self._report(route, {"op": "abandon", "nonce": nonce})
                    raise
                if again:
                    absorbed += 1
                    upstream.release()
                    continue
            break
        answered = {"op": "answered", "nonce": nonce, "status": upstream.status, "window": window, "wait": wait}
        first = self._report(route, answered)
        meter = UsageMeter(api, upstream.headers.get("Content-Type", ""))
        out, cut, error = None, True, None  # cut, unless the answer went through: a cancellation is the agent gone
        try:
            out, cut, error = await forward.pipe(request, upstream, meter)
        finally:
            upstream.close()
            done = {"op": "done", "nonce": nonce, "api": api, "status": upstream.status, "absorbed": absorbed}
            done.update(measured=measured_json(meter.result()), error=error, cut=cut)
            self._report(route, done, after=first)
        return out if out is not None else web.Response(status=502)

    # ------------------------------------------------------------------------------ asking the runtime

    async def _admit(self, route: Route, nonce: str, estimate: int) -> bool:
        """Wait for the runtime's gateway to let the request go; False if it refuses the token."""
        op = {"op": "admit", "token": route.token, "nonce": nonce, "estimate": estimate}
        try:
            reply = await self._must(route, op)
        except asyncio.CancelledError:  # the agent hung up while it waited: its place (or permit) goes back
            self._report(route, {"op": "abandon", "nonce": nonce})
            raise
        return reply.get("admitted") is True

    async def _must(self, route: Route, op: dict[str, Any]) -> dict[str, Any]:
        """Ask until a runtime answers (one that restarts takes it up), while the session is still here."""
        while True:
            try:
                reply = await self._ask(route.owner, route.key, op)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                reply = _not_taken(exc)
            if not _unavailable(reply) or self._stopping or route.token not in self.routes:
                return reply
            log.info("node gateway: %s of %s not taken (%s); asking again", op["op"], route.key, reply.get("error"))
            await asyncio.sleep(_RETRY_S)

    def _report(self, route: Route, op: dict[str, Any], after: asyncio.Task[None] | None = None) -> asyncio.Task[None]:
        """Tell the runtime something it must hear but nobody waits on, in order after `after`."""

        async def tell() -> None:
            if after is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(after)
            deadline = time.monotonic() + _TELL_FOR_S
            while True:
                try:
                    reply = await self._ask(route.owner, route.key, op)
                except Exception as exc:
                    reply = _not_taken(exc)
                if not _unavailable(reply) or time.monotonic() > deadline or self._stopping:
                    if reply.get("ok") is False:
                        log.warning("node gateway: %s of %s lost: %s", op["op"], route.key, reply.get("error"))
                    return
                await asyncio.sleep(_RETRY_S)

        task = asyncio.get_running_loop().create_task(tell(), name=f"node-gateway-{op['op']}")
        self._reports.add(task)
        self._hold(route.token, +1)
        task.add_done_callback(self._reports.discard)
        task.add_done_callback(lambda _t: self._hold(route.token, -1))
        return task


def _not_taken(exc: BaseException) -> dict[str, Any]:
    """The reply of a request no runtime could be asked (the host's queue failed it): worth asking again."""
    return {"ok": False, "error": {"kind": "unavailable", "message": first_line(exc)}}


def _unavailable(reply: dict[str, Any]) -> bool:
    """A reply that says no runtime took the request (it is restarting, or stopped): worth asking again."""
    error = reply.get("error")
    return reply.get("ok") is False and isinstance(error, dict) and error.get("kind") == "unavailable"


def encode(op: dict[str, Any]) -> bytes:
    return (json.dumps(op) + "\n").encode()
