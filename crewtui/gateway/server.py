"""The model gateway: an HTTP server on 127.0.0.1 that forwards model API requests upstream for the crew.

Every session whose agent names a gateway pool gets its own base URL, `http://127.0.0.1:PORT/s/<token>`, where
`<token>` is an HMAC of its session key under a secret of the data dir: a request is attributed to its session
by the URL alone, a session cannot spend as another without its token, and a token is refused (403) once its
session ended. The runtime tells the gateway which sessions are live (`open_session` / `close_session`); the
gateway never imports the runtime and reports back through a `GatewaySink`.

A request goes through its pool's `ProviderLimits` (limits.py): it waits in line, first in first out, instead
of being refused; a 429 or 529 from upstream pauses the whole pool and the request is sent again (up to the
pool's `max_retries`) before the agent ever sees it. The response streams back as it arrives (server-sent
events chunk by chunk, never buffered whole) and its usage is measured on the way (usage.py), priced, and
charged to the session, the pool's day and the token buckets. Headers pass through both ways (the agent's own
credentials reach upstream untouched) except hop-by-hop ones; the gateway asks upstream for an uncompressed
body, so the usage it measures is readable (loopback to the agent costs nothing to leave uncompressed).

aiohttp is both the server and the client: it streams both ways, keeps upstream connections alive, and is
already a dependency of `crewtui serve`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Callable, Mapping

import aiohttp
from aiohttp import web

from crewtui.adapters.base import Price, Tokens
from crewtui.clock import Clock, ClockLike
from crewtui.config import PoolConfig
from crewtui.errors import BadInput, first_line
from crewtui.gateway import forward
from crewtui.gateway.accounts import Client, GatewaySink, PoolState, RequestDone
from crewtui.gateway.forward import LOOPBACK
from crewtui.gateway.limits import Permit, ProviderLimits
from crewtui.gateway.upstream import error_body, local_day, next_midnight, retry_after, window_exhausted
from crewtui.gateway.usage import Api, Measured, UsageMeter, api_of, estimate_input_tokens
from crewtui.spend import GatewayInfo, GatewayPoolInfo, UsageTotals

log = logging.getLogger("crewtui.gateway")

TOKEN_CHARS = 32
# How often, at most, the places of waiting sessions in the line are reported to the runtime.
_LINE_REPORT_S = 0.2


class Gateway:
    """The server, its pools and the live sessions. `await start()`, then `open_session` per session."""

    def __init__(
        self,
        pools: Mapping[str, PoolConfig],
        sink: GatewaySink,
        secret: bytes,
        *,
        clock: ClockLike | None = None,
        rng: random.Random | None = None,
        day_of: Callable[[float], str] = local_day,
    ) -> None:
        self._clock = clock or Clock()
        self._sink = sink
        self._secret = secret
        self._day_of = day_of
        now = self._clock.now()
        self.pools: dict[str, PoolState] = {}
        for name, config in pools.items():
            if config.provider is None:
                continue
            limits = ProviderLimits(name, config, self._clock, rng)
            budget = config.budget_usd
            state = PoolState(limits, day_of(now), day_cap=budget.per_day if budget else None)
            limits.on_line_changed = self._line_moved
            self.pools[name] = state
        self._clients: dict[str, Client] = {}  # by token
        self._by_key: dict[str, Client] = {}
        self._reported: dict[str, tuple[str, int]] = {}  # key -> (pool, place) last told to the sink
        self._report_task: asyncio.Task[None] | None = None
        self._midnight: asyncio.Task[None] | None = None
        self.forbidden = 0
        self._stopping = False
        self.port = 0
        self.port_changed_from: int | None = None
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    # -------------------------------------------------------------------------------------- lifecycle

    async def start(self, port: int = 0) -> int:
        """Listen on 127.0.0.1:`port` (0: any free port; a taken one: another, recorded); return the port."""
        self._runner, self.port, self.port_changed_from = await forward.listen(self._handle, self._no_token, port)
        self._http = forward.upstream_client()
        self._midnight = asyncio.create_task(self._day_turns(), name="gateway-midnight")
        return self.port

    async def stop(self) -> None:
        self._stopping = True
        for client in self._by_key.values():
            client.go.set()  # a request held for its budget leaves: its connection is dropped (the agent retries)
        for task in (self._report_task, self._midnight):
            if task is not None:
                task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    # --------------------------------------------------------------------------------------- sessions

    def token_for(self, key: str) -> str:
        return hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()[:TOKEN_CHARS]

    def serves(self, pool: str | None) -> bool:
        return pool is not None and pool in self.pools

    def open_session(
        self,
        key: str,
        label: str,
        pool: str,
        price: Price | None,
        spent_usd: float = 0.0,
        budget_usd: float | None = None,
    ) -> dict[str, str]:
        """Let `key`'s requests through (again, after a restart: `spent_usd` so far); return its environment."""
        state = self.pools[pool]
        config = state.limits.config
        if budget_usd is None and config.budget_usd is not None:
            budget_usd = config.budget_usd.per_session
        client = Client(key, label, pool, self.token_for(key), price or _price(config), budget_usd, spent_usd)
        client.go.set()
        self._clients[client.token] = client
        self._by_key[key] = client
        self._check_session_budget(client)
        return self.env_for(key)

    def env_for(self, key: str) -> dict[str, str]:
        client = self._by_key[key]
        base = self._base(client)
        if self.pools[client.pool].limits.config.provider == "openai":
            return {"OPENAI_BASE_URL": f"{base}/v1"}
        return {"ANTHROPIC_BASE_URL": base}

    def base_url(self, key: str) -> str | None:
        client = self._by_key.get(key)
        return self._base(client) if client else None

    def _base(self, client: Client) -> str:
        return f"{self.url}/s/{client.token}"

    def close_session(self, key: str) -> None:
        """The session ended: its token is refused from now on."""
        client = self._by_key.pop(key, None)
        if client is not None:
            self._clients.pop(client.token, None)
            client.held = None
            client.go.set()  # a request held for its budget leaves (and is refused: the token is gone)
        self._reported.pop(key, None)

    def session_held(self, key: str) -> str | None:
        client = self._by_key.get(key)
        return client.held if client else None

    def resume_session(self, key: str, budget_usd: float | None = None) -> str:
        """Let a session over its budget go on: to `budget_usd`, else one more per-session budget."""
        client = self._by_key[key]
        config = self.pools[client.pool].limits.config
        per = config.budget_usd.per_session if config.budget_usd else None
        if budget_usd is not None:
            if budget_usd <= client.spent_usd:  # it would be over it again at once: say so, change nothing
                raise BadInput(
                    f"resume: {client.label} already spent ${client.spent_usd:.2f}; "
                    f"a budget of ${budget_usd:.2f} would pause it again at once"
                )
            client.budget_usd = budget_usd
        elif client.budget_usd is not None:
            client.budget_usd = client.spent_usd + (per or client.budget_usd)
        was = client.held
        client.held = None
        self._check_session_budget(client, act=False)
        if client.held is None:
            client.go.set()
        cap = "no cap" if client.budget_usd is None else f"${client.budget_usd:.2f}"
        return f"{client.label}: {'resumed' if was else 'not paused'}; spent ${client.spent_usd:.2f}, budget {cap}"

    def resume_pool(self, name: str, per_day: float | None = None) -> str:
        """Lift a pool's daily hold: to `per_day`, else one more day's budget on top of today's spend."""
        state = self.pools[name]
        config = state.limits.config
        if per_day is not None:
            self._roll_day(name, state)
            if per_day <= state.today.cost_usd:
                raise BadInput(
                    f"resume: pool {name} already spent ${state.today.cost_usd:.2f} today; "
                    f"a daily budget of ${per_day:.2f} would hold it again at once"
                )
            state.day_cap = per_day
        elif state.day_cap is not None:
            base = config.budget_usd.per_day if config.budget_usd and config.budget_usd.per_day else state.day_cap
            state.day_cap = state.today.cost_usd + base
        was = state.limits.held_for_budget
        state.limits.held_for_budget = None
        self._check_pool_budget(name, state, act=False)
        state.limits.kick()
        cap = "no cap" if state.day_cap is None else f"${state.day_cap:.2f}"
        return f"pool {name}: {'resumed' if was else 'not paused'}; today ${state.today.cost_usd:.2f}, budget {cap}"

    def seed_today(self, pool: str, day: str, totals: UsageTotals) -> None:
        """What the pool already used today (from the store, after a restart), so the daily budget holds."""
        state = self.pools.get(pool)
        if state is not None and day == state.day:
            state.today = totals.model_copy(deep=True)
            self._check_pool_budget(pool, state, act=False)

    def today(self, pool: str) -> tuple[str, UsageTotals]:
        state = self.pools[pool]
        self._roll_day(pool, state)
        return state.day, state.today

    # ------------------------------------------------------------------------------------ ctl acquire

    async def acquire(self, pool: str) -> None:
        """A permit for one request of `pool` without sending it through (`ctl acquire`): same line, same buckets."""
        limits = self.pools[pool].limits
        permit = await limits.admit(0, None)
        limits.release(permit)

    # ------------------------------------------------------------------------------------------- info

    def info(self) -> GatewayInfo:
        now = self._clock.now()
        pools = []
        for name, state in self.pools.items():
            lim = state.limits
            cfg = lim.config
            self._roll_day(name, state)

            def per_min(key: str, cfg: PoolConfig = cfg) -> float | None:
                rate = getattr(cfg, key)
                return rate.per_second * 60.0 if rate is not None else None

            pools.append(
                GatewayPoolInfo(
                    name=name,
                    provider=cfg.provider or "",
                    upstream=cfg.upstream_url,
                    in_flight=lim.in_flight,
                    cap=lim.cap,
                    learned_cap=lim.learned_cap,
                    queue=lim.queue_length(),
                    oldest_wait=lim.oldest_wait(),
                    paused_for=lim.paused_for(),
                    pause_reason=lim.pause_reason if lim.paused_for() > 0 else None,
                    held=lim.held_for_budget,
                    requests_last_minute=lim.series.last_minute(now, lim.series.requests),
                    tokens_last_minute=lim.series.last_minute(now, lim.series.tokens),
                    requests_limit=per_min("requests"),
                    input_tokens_limit=per_min("input_tokens"),
                    output_tokens_limit=per_min("output_tokens"),
                    requests_series=list(lim.series.requests),
                    tokens_series=list(lim.series.tokens),
                    today=state.today.model_copy(deep=True),
                    budget_per_day=state.day_cap,
                    last_error=state.last_error,
                )
            )
        return GatewayInfo(
            url=self.url if self.port else None,
            port_changed_from=self.port_changed_from,
            forbidden=self.forbidden,
            pools=pools,
        )

    # ------------------------------------------------------------------------------------------- HTTP

    async def _no_token(self, request: web.Request) -> web.Response:
        return self._forbid(request, None)

    def _forbid(self, request: web.Request, api: Api | None) -> web.Response:
        self.forbidden += 1
        log.warning("gateway: refused %s %s: unknown or revoked session token", request.method, request.path[:12] + "…")
        return web.json_response(error_body(api, 403, "crewtui gateway: unknown or revoked session token"), status=403)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        tail, path = forward.target(request.raw_path, token)
        # Only a POST is a model call, named by the path the upstream will see (dot segments, "//" resolved).
        api = api_of(path) if request.method == "POST" and tail is not None else None
        client = self._clients.get(token)
        if client is None or tail is None:
            return self._forbid(request, api)
        state = self.pools[client.pool]
        body = await request.read()
        url = forward.upstream_url(state.limits.config.upstream_url, tail)
        headers = forward.upstream_headers(request.headers)
        assert self._http is not None
        if api is None:  # not a model call (HEAD /, count_tokens, model lists): through, unmetered, unpaced
            answer, error = await forward.unmetered(self._http, request, url, headers, body)
            state.last_error = error or state.last_error
            return answer
        absorbed = 0
        estimate = estimate_input_tokens(body)
        while True:
            permit = await self.admit(client, estimate)
            if permit is None:
                return forward.drop(request) if self._stopping else self._forbid(request, api)
            try:
                upstream = await self._http.request(
                    request.method, url, headers=headers, data=body, allow_redirects=False
                )
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                self.finish(client, permit, api, 0, Measured(), absorbed, f"upstream unreachable: {first_line(exc)}")
                return forward.drop(request)
            except asyncio.CancelledError:
                state.limits.release(permit)
                raise
            now = time.time()
            window, wait = window_exhausted(upstream.headers, now), retry_after(upstream.headers, now)
            if upstream.status in forward.REFUSED and absorbed < state.limits.config.max_retries:
                absorbed += 1
                self.refused(client, permit, upstream.status, wait, window)
                upstream.release()
                continue
            break
        self.answered(client, upstream.status, window, wait)
        meter = UsageMeter(api, upstream.headers.get("Content-Type", ""))
        out, cut, error = None, True, None  # cut, unless the answer went through: a cancellation is the agent gone
        try:
            out, cut, error = await forward.pipe(request, upstream, meter)
        finally:
            upstream.close()
            self.finish(client, permit, api, upstream.status, meter.result(), absorbed, error, cut)
        return out if out is not None else web.Response(status=502)

    # ------------------------------------------------------------------------------ admission (local and nodes')

    def client(self, token: str) -> Client | None:
        return self._clients.get(token)

    def client_of(self, key: str) -> Client | None:
        return self._by_key.get(key)

    def limits_of(self, client: Client) -> ProviderLimits:
        return self.pools[client.pool].limits

    async def admit(self, client: Client, estimate: int) -> Permit | None:
        """Wait until a request of `client` may go upstream (its budget, its pool's line); its permit, or None if
        its token was revoked meanwhile (the session ended) or the gateway stops."""
        state = self.pools[client.pool]
        while client.held is not None and not self._stopping:  # over its budget: wait for a resume (or its end)
            client.go.clear()
            await client.go.wait()
        if self._stopping or self._clients.get(client.token) is not client:
            return None
        self._roll_day(client.pool, state)
        return await state.limits.admit(estimate, client.key)

    def refused(
        self, client: Client, permit: Permit | None, status: int, wait: float | None, window: float | None
    ) -> None:
        """Upstream refused a request (429/529) that is sent again: the pool pauses and learns; its permit is given
        back (None: a permit this runtime never gave, a node's from before a restart)."""
        limits = self.limits_of(client)
        if permit is not None:
            limits.refused(permit, window if wait is None else wait, status, window is not None)
        else:
            limits.note_refusal(window if wait is None else wait, status, window is not None)

    def answered(self, client: Client, status: int, window: float | None, wait: float | None) -> None:
        """Upstream's answer begins: the pool learns from its status and rate-limit headers."""
        limits = self.limits_of(client)
        if status in forward.REFUSED:  # out of retries: the agent sees it, the pool still learns and waits
            limits.note_refusal(window if wait is None else wait, status, window is not None)
        else:
            limits.succeeded()
            if window is not None and window > 0:
                limits.pause(window, "upstream window used up")

    def finish(
        self,
        client: Client,
        permit: Permit | None,
        api: Api,
        status: int,
        measured: Measured,
        absorbed: int,
        error: str | None,
        cut: bool = False,
    ) -> None:
        """A request is over: its permit back (the buckets corrected by what it used), its usage charged."""
        state = self.pools[client.pool]
        if permit is not None:
            state.limits.release(
                permit,
                measured.input + measured.cache_write if measured.known else None,
                measured.output if measured.known else None,
            )
        if error:
            state.last_error = error
        tokens = Tokens(measured.input, measured.output, measured.cache_read, measured.cache_write)
        cost = client.price.cost(tokens) if client.price is not None and measured.known else 0.0
        self._done(
            client, state, RequestDone(client.key, client.pool, api, status, measured, cost, absorbed, error, cut)
        )

    # ------------------------------------------------------------------------------------- accounting

    def _done(self, client: Client, state: PoolState, done: RequestDone) -> None:
        self._roll_day(client.pool, state)
        state.today.add(done.totals())
        client.spent_usd += done.cost_usd
        try:
            self._sink.request_done(done)
        except Exception:  # the runtime's bookkeeping must never break the agent's request
            log.exception("gateway: the runtime failed to take a finished request")
        self._check_session_budget(client)
        self._check_pool_budget(client.pool, state)

    def _check_session_budget(self, client: Client, act: bool = True) -> None:
        if client.budget_usd is None or client.spent_usd < client.budget_usd or client.held is not None:
            return
        config = self.pools[client.pool].limits.config
        reason = f"over its budget: spent ${client.spent_usd:.2f} of ${client.budget_usd:.2f}"
        # Held either way: with "kill", no request of its goes out while the kill is on its way.
        client.held = reason
        client.go.clear()
        if act:
            self._sink.over_budget(client.key, client.pool, config.on_budget, reason)

    def _check_pool_budget(self, name: str, state: PoolState, act: bool = True) -> None:
        if state.day_cap is None or state.today.cost_usd < state.day_cap or state.limits.held_for_budget is not None:
            return
        config = state.limits.config
        reason = f"daily budget spent: ${state.today.cost_usd:.2f} of ${state.day_cap:.2f}"
        state.limits.held_for_budget = reason
        if act:
            self._sink.over_budget(None, name, config.on_budget, reason)

    def _roll_day(self, name: str, state: PoolState) -> None:
        day = self._day_of(self._clock.now())
        if day == state.day:
            return
        state.day = day
        state.today = UsageTotals()
        budget = state.limits.config.budget_usd
        state.day_cap = budget.per_day if budget else None
        if state.limits.held_for_budget is not None:
            state.limits.held_for_budget = None
            state.limits.kick()

    async def _day_turns(self) -> None:
        """At each local midnight, a pool held for its daily budget goes on."""
        while True:
            now = self._clock.now()
            await self._clock.sleep(max(1.0, next_midnight(now) - now + 1.0))
            for name, state in self.pools.items():
                self._roll_day(name, state)

    # ------------------------------------------------------------------------------- places in line

    def _line_moved(self) -> None:
        if self._report_task is None or self._report_task.done():
            self._report_task = asyncio.get_running_loop().create_task(self._report_line(), name="gateway-line")

    async def _report_line(self) -> None:
        await asyncio.sleep(_LINE_REPORT_S)
        now: dict[str, tuple[str, int]] = {}
        for name, state in self.pools.items():
            for place, key in enumerate(state.limits.waiting_sessions(), start=1):
                now.setdefault(key, (name, place))
        for key, (pool, _place) in list(self._reported.items()):
            if key not in now:
                del self._reported[key]
                self._sink.queued(key, pool, None)
        for key, (pool, place) in now.items():
            if self._reported.get(key) != (pool, place):
                self._reported[key] = (pool, place)
                self._sink.queued(key, pool, place)


def _price(config: PoolConfig) -> Price | None:
    return config.price.price() if config.price is not None else None
