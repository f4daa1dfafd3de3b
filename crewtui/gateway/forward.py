"""What the crew's gateway (server.py) and a Ray node's door to it (node.py) share: the upstream client, the
headers both ways, and how an answer is passed on as it arrives or a connection dropped."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

import aiohttp
from aiohttp import web
from multidict import CIMultiDictProxy
from yarl import URL

from crewtui.errors import first_line
from crewtui.gateway.upstream import HOP_BY_HOP
from crewtui.gateway.usage import UsageMeter

log = logging.getLogger("crewtui.gateway")

LOOPBACK = "127.0.0.1"
MAX_BODY = 256 * 1024 * 1024  # a model request with images and a long context is large; aiohttp's default is 1 MiB
REFUSED = (429, 529)  # rate limited, overloaded: the pool pauses and the gateway tries again


async def listen(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
    no_token: Callable[[web.Request], Awaitable[web.StreamResponse]],
    port: int,
) -> tuple[web.AppRunner, int, int | None]:
    """Serve /s/<token>/... with `handle` (anything else with `no_token`) on 127.0.0.1:`port` (0: any free port; a
    taken one: another); (the runner, the port, the port asked for if it was taken)."""
    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_route("*", "/s/{token}/{tail:.*}", handle)
    app.router.add_route("*", "/{tail:.*}", no_token)
    # handler_cancellation: an agent that hangs up while its request waits (in line, or held for its budget)
    # takes it out of the line; it is never sent upstream, nor paid for, after the agent gave up on it. On stop,
    # requests still streaming get a moment to end; then their connections are closed.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=2.0, handler_cancellation=True)
    await runner.setup()
    taken = None
    try:
        await web.TCPSite(runner, LOOPBACK, port).start()
    except OSError as exc:
        if port == 0:
            await runner.cleanup()
            raise
        log.warning("gateway: port %d is taken (%s); listening on another", port, exc.strerror or exc)
        await web.TCPSite(runner, LOOPBACK, 0).start()
        taken = port
    return runner, int(runner.addresses[0][1]), taken


def upstream_client() -> aiohttp.ClientSession:
    """The client that talks to the providers: connections kept alive, bodies passed as they are."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=900),
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )


def target(raw: str, token: str) -> tuple[str | None, str]:
    """What follows /s/<token> in the raw request target, to send upstream as the agent encoded it (with its raw
    query), with "." and ".." segments and empty ones resolved; and that path decoded, which names the API. None:
    the raw path does not spell the token the route matched."""
    raw_path, sep, query = raw.partition("?")
    segments = raw_path.split("/")
    if len(segments) < 3 or unquote(segments[2]) != token:
        return None, ""
    kept: list[str] = []
    for segment in segments[3:]:
        name = unquote(segment)
        if name == "..":
            if kept:
                kept.pop()
        elif name not in ("", "."):
            kept.append(segment)
    slash = "/" if kept and segments[-1] == "" else ""
    tail = "/".join(kept) + slash
    return tail + sep + query, "/" + "/".join(unquote(s) for s in kept) + slash


def upstream_url(upstream: str, tail: str) -> URL:
    return URL(f"{upstream}/{tail}", encoded=True)  # as the agent encoded it: %2F stays %2F


def upstream_headers(headers: CIMultiDictProxy[str]) -> dict[str, str]:
    """The agent's headers for upstream (its own credentials untouched) minus hop-by-hop ones, asking for an
    uncompressed body so that the usage in it can be read."""
    drop = HOP_BY_HOP | {"accept-encoding"}
    out = {k: v for k, v in headers.items() if k.lower() not in drop}
    out["Accept-Encoding"] = "identity"
    return out


async def prepare(request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
    """Start the agent's answer with upstream's status and headers (minus hop-by-hop ones)."""
    out = web.StreamResponse(status=upstream.status, reason=upstream.reason)
    for k, v in upstream.headers.items():
        if k.lower() not in HOP_BY_HOP:
            out.headers.add(k, v)
    await out.prepare(request)
    return out


async def pipe(
    request: web.Request, upstream: aiohttp.ClientResponse, meter: UsageMeter | None = None
) -> tuple[web.StreamResponse | None, bool, str | None]:
    """Pass upstream's answer on as it arrives, metered on the way: (the answer, whether the agent hung up, why
    upstream broke off). An answer upstream broke off breaks the agent's too, as it would without a gateway (never
    a clean short one)."""
    out: web.StreamResponse | None = None
    try:
        out = await prepare(request, upstream)
        async for chunk in upstream.content.iter_any():
            if meter is not None:
                meter.feed(chunk)
            await out.write(chunk)
        await out.write_eof()
    except (ConnectionError, aiohttp.ClientConnectionResetError):
        return out, True, None  # the agent hung up: stop reading upstream (closing it cancels that request)
    except aiohttp.ClientError as exc:
        drop(request)
        return out, False, f"upstream broke off: {first_line(exc)}"
    return out, False, None


async def unmetered(
    http: aiohttp.ClientSession, request: web.Request, url: URL, headers: dict[str, str], body: bytes
) -> tuple[web.StreamResponse, str | None]:
    """Send a request that is no model call (HEAD /, count_tokens, model lists) through, unpaced; (the answer,
    why upstream could not be reached or broke off)."""
    try:
        upstream = await http.request(request.method, url, headers=headers, data=body, allow_redirects=False)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        return drop(request), f"upstream unreachable: {first_line(exc)}"
    async with upstream:
        out, _cut, error = await pipe(request, upstream)
    return out if out is not None else web.Response(status=502), error


def drop(request: web.Request) -> web.Response:
    """Close the agent's connection without an answer: what it would see if upstream could not be reached."""
    if request.transport is not None:
        request.transport.abort()
    return web.Response(status=502)
