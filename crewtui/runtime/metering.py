"""The runtime's side of the model gateway: it starts the gateway, points each session of a gateway pool at it,
and folds what the gateway measures into sessions, pools and days.

- At start: the gateway listens on 127.0.0.1 (the port of the last run when it is free, so sessions re-adopted
  after a restart keep reaching it; another one, said on the timeline, when it is taken). Tokens are HMACs of
  session keys under `DATA_DIR/gateway.key` (0600), so a restarted runtime knows the tokens its sessions hold.
- At launch (and re-adoption): the session's token is let through; its environment gets `ANTHROPIC_BASE_URL`
  or `OPENAI_BASE_URL`, and a preset may add arguments (Codex's `openai_base_url`). A session on a Ray node (host
  mode) is pointed at its host's door on that node instead (gateway/node.py), which the runtime answers through
  `Doors` (gateway/door.py) over the host's link.
- Per finished request: the session's `usage` (the figure of record for its tokens and cost), the pool's day
  in the store (`usage_days`), a `session_agent` event for the dashboard.
- Budgets: a session over its budget is paused (its requests wait in the gateway; `gateway_hold` says why)
  or killed; a pool over its daily budget holds its line (or its sessions are killed), said on the timeline.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import secrets
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from crewtui.adapters import get_preset
from crewtui.clock import ClockLike
from crewtui.config import CrewConfig
from crewtui.errors import BadInput, NotFound
from crewtui.events import SystemEvent
from crewtui.formatting import day_start, ordinal
from crewtui.gateway.accounts import RequestDone
from crewtui.gateway.door import Doors
from crewtui.gateway.node import NODE_BASE
from crewtui.gateway.server import Gateway
from crewtui.gateway.upstream import local_day
from crewtui.locations import DataDir
from crewtui.model import Session, of_record
from crewtui.runtime.agents import AgentLinks
from crewtui.runtime.bus import EventBus
from crewtui.runtime.drivers import Drivers
from crewtui.runtime.launcher import Launcher
from crewtui.runtime.sessions import SessionTable
from crewtui.spend import GatewayInfo, TokenCounts, UsageBy, UsageRow, UsageTotals
from crewtui.store import Store

log = logging.getLogger("crewtui.metering")

# Sessions' usage and the pools' days are stored (and announced) at most this often: a request only marks them.
_FLUSH_S = 0.25

KillFn = Callable[[list[str], str, bool], Coroutine[Any, Any, None]]  # keys, reason, cascade


class Metering:
    """Owns the gateway of one runtime (None when no pool names a provider)."""

    def __init__(
        self,
        table: SessionTable,
        bus: EventBus,
        store: Store,
        crew: CrewConfig,
        clock: ClockLike,
        data_dir: DataDir,
        agents: AgentLinks,
        launcher: Launcher,
        drivers: Drivers,
    ) -> None:
        self.table = table
        self.bus = bus
        self.store = store
        self.crew = crew
        self.clock = clock
        self.data_dir = data_dir
        self.agents = agents
        self.drivers = drivers  # a Ray host driver is told how its nodes' gateway doors are answered
        self._kill: KillFn = launcher.kill_keys
        launcher.gateway_launch = self.launch
        launcher.on_adopt.append(self.adopted)
        launcher.on_end.append(self.ended)
        self.gateway: Gateway | None = None
        self.doors: Doors | None = None  # the Ray nodes' gateway doors, answered here (host mode)
        self._dirty_days: set[str] = set()
        self._changed: set[str] = set()
        self._flush_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return any(p.gateway for p in self.crew.pools.values())

    # ------------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if not self.enabled:
            return
        secret = await asyncio.to_thread(self._secret)
        gateway = Gateway(self.crew.pools, self, secret, clock=self.clock)
        hint = await asyncio.to_thread(self._last_port)
        port = await gateway.start(hint)
        self.gateway = gateway
        if self.drivers.ray is not None and hasattr(self.drivers.ray, "gateway_door"):  # Ray host mode
            self.doors = Doors(gateway)
            self.drivers.ray.gateway_door = self.doors.serve
        await asyncio.to_thread(self._record_port, port)
        if gateway.port_changed_from is not None:
            self.bus.publish(
                SystemEvent(
                    level="warning",
                    text=(
                        f"gateway: port {gateway.port_changed_from} was taken; listening on {port} "
                        "(sessions started before the restart cannot reach it)"
                    ),
                )
            )
        log.info("gateway listening on %s", gateway.url)
        for name in gateway.pools:
            day, _ = gateway.today(name)
            for row_day, pool, data in await self.store.load_usage_days(day):
                if row_day == day and pool == name:
                    gateway.seed_today(name, day, UsageTotals.model_validate_json(data))

    async def stop(self) -> None:
        if self.gateway is None:
            return
        self._write_days()
        self._publish_changed()
        if self._flush_task is not None:
            self._flush_task.cancel()
        await self.gateway.stop()
        self.gateway = None
        if self.drivers.ray is not None and hasattr(self.drivers.ray, "gateway_door"):
            self.drivers.ray.gateway_door = None
            self.doors = None

    def _secret(self) -> bytes:
        path = self.data_dir.gateway_key
        try:
            data = path.read_bytes()
            if len(data) >= 32:
                return data
        except FileNotFoundError:
            pass
        data = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return data

    def _last_port(self) -> int:
        try:
            return int(json.loads(self.data_dir.gateway_state.read_text())["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0

    def _record_port(self, port: int) -> None:
        tmp = self.data_dir.gateway_state.with_suffix(".tmp")
        tmp.write_text(json.dumps({"port": port}) + "\n")
        tmp.replace(self.data_dir.gateway_state)

    # -------------------------------------------------------------------------------------- sessions

    def serves(self, s: Session) -> bool:
        return self.gateway is not None and self.gateway.serves(s.pool)

    def _reaches(self, s: Session) -> bool:
        """Whether `s` goes through the gateway: a local session, or one on a Ray node whose host serves a door
        (host mode; in actor mode, a session calls its provider directly)."""
        return s.driver == "process" or (s.driver == "ray" and self.crew.backend.mode == "host")

    def launch(self, s: Session) -> tuple[dict[str, str], list[str], dict[str, str] | None]:
        """The environment and extra arguments that point a session of a gateway pool at the gateway, and for a
        session on a Ray node the route its node's door needs (its URL there stands in until the host puts its own)."""
        gateway = self.gateway
        if gateway is None or not gateway.serves(s.pool) or not self._reaches(s):
            return {}, [], None
        env = self.open(s)
        base = gateway.base_url(s.key)
        route = None
        if s.driver == "ray" and base is not None and s.pool is not None:
            env = {k: v.replace(gateway.url, NODE_BASE) for k, v in env.items()}
            base = base.replace(gateway.url, NODE_BASE)
            route = {"token": gateway.token_for(s.key), "upstream": self.crew.pools[s.pool].upstream_url}
        extra = get_preset(s.preset).gateway_args(base) if s.preset is not None and base is not None else []
        return env, extra, route

    def open(self, s: Session) -> dict[str, str]:
        """Let a session's requests through (a launch, or a session re-adopted after a restart)."""
        assert self.gateway is not None and s.pool is not None
        agent = self.crew.agents.get(s.agent) if s.agent else None
        price = agent.price.price() if agent is not None and agent.price is not None else None
        spent = s.usage.cost_usd if s.usage is not None else 0.0
        if s.usage is None:
            s.usage = UsageTotals()  # measured from now on: its figures of record are the gateway's
            of_record(s)
        return self.gateway.open_session(s.key, s.label, s.pool, price, spent)

    def adopted(self, s: Session) -> None:
        gateway = self.gateway
        if gateway is not None and gateway.serves(s.pool) and self._reaches(s) and gateway.base_url(s.key) is None:
            self.open(s)

    def ended(self, s: Session) -> None:
        if self.gateway is not None:
            self.gateway.close_session(s.key)
            if self.doors is not None:
                self.doors.session_ended(s.key)
            s.gateway_hold = None
            if s.key in self._changed:  # its figures are stored with its end; the dashboard hears them now
                self._changed.discard(s.key)
                self.agents.publish(s)

    # ------------------------------------------------------------------------------------ the sink

    def request_done(self, done: RequestDone) -> None:
        if self.gateway is not None:
            self._dirty_days.add(done.pool)
            self._schedule_flush()
        s = self.table.sessions.get(done.key)
        if s is None:
            return
        usage = s.usage or UsageTotals()
        usage.add(done.totals())
        s.usage = usage
        of_record(s)
        self._changed.add(s.key)  # stored and announced with the others of this moment (a busy crew: many a second)
        self._schedule_flush()

    def queued(self, key: str, pool: str, position: int | None) -> None:
        s = self.table.sessions.get(key)
        if s is None:
            return
        held = self.gateway.session_held(key) if self.gateway else None
        hold = f"queued for {pool} ({ordinal(position)})" if position is not None else held
        if hold != s.gateway_hold:
            s.gateway_hold = hold
            self.table.store.put_session(s)
            self.agents.publish(s)

    def over_budget(self, key: str | None, pool: str, action: Literal["pause", "kill"], reason: str) -> None:
        if key is not None:
            s = self.table.sessions.get(key)
            if s is None:
                return
            if action == "pause":
                s.gateway_hold = f"paused: {reason} (ctl resume {s.label})"
                self.table.store.put_session(s)
                self.agents.publish(s)
                self.bus.publish(SystemEvent(level="warning", topic="budget", text=f"{s.label}: paused, {reason}"))
            else:
                self.bus.publish(SystemEvent(level="warning", topic="budget", text=f"{s.label}: killed, {reason}"))
                self._spawn(self._kill([key], f"killed: {reason}", False))
            return
        text = f"pool {pool}: {reason}"
        if action == "pause":
            self.bus.publish(
                SystemEvent(
                    level="warning", topic="budget", text=f"{text}; its requests wait (ctl resume --pool {pool})"
                )
            )
        else:
            live = [s.key for s in self.table.sessions.values() if s.state.live and s.pool == pool]
            self.bus.publish(
                SystemEvent(level="warning", topic="budget", text=f"{text}; killing its {len(live)} live sessions")
            )
            self._spawn(self._kill(live, f"killed: pool {pool} {reason}", False))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="gateway-budget-kill")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---------------------------------------------------------------------------------- days in store

    def _schedule_flush(self) -> None:
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.get_running_loop().create_task(self._flush_later(), name="gateway-days")

    async def _flush_later(self) -> None:
        await asyncio.sleep(_FLUSH_S)
        self._write_days()
        self._publish_changed()

    def _publish_changed(self) -> None:
        for key in sorted(self._changed):
            s = self.table.sessions.get(key)
            if s is not None:
                self.table.store.put_session(s)
                self.agents.publish(s)
        self._changed.clear()

    def _write_days(self) -> None:
        if self.gateway is None:
            return
        for pool in sorted(self._dirty_days):
            day, totals = self.gateway.today(pool)
            self.store.put_usage_day(day, pool, totals.model_dump_json())
        self._dirty_days.clear()

    # ------------------------------------------------------------------------------------------ verbs

    def info(self) -> GatewayInfo:
        return self.gateway.info() if self.gateway is not None else GatewayInfo()

    def resume(self, ref: str | None, pool: str | None, budget: float | None) -> str:
        if (ref is None) == (pool is None):
            raise BadInput("resume: name a session (LABEL) or a pool (--pool NAME), one of them")
        if budget is not None and not (budget > 0 and math.isfinite(budget)):
            raise BadInput(f"resume: --budget must be a number of dollars above 0, got {budget}")
        s = self.table.resolve(ref) if ref is not None else None
        if self.gateway is None:
            raise BadInput("no gateway runs: no pool names a provider in the crew file")
        if pool is not None:
            if pool not in self.gateway.pools:
                known = ", ".join(sorted(self.gateway.pools))
                raise NotFound(f"unknown gateway pool {pool!r}; gateway pools: {known}")
            text = self.gateway.resume_pool(pool, budget)
        else:
            assert s is not None
            if not s.state.live or self.gateway.base_url(s.key) is None:
                raise BadInput(f"{s.label} does not go through the gateway now (state {s.state.value})")
            text = self.gateway.resume_session(s.key, budget)
            held = self.gateway.session_held(s.key)
            if s.gateway_hold != held and (s.gateway_hold or "").startswith("paused"):
                s.gateway_hold = held
                self.table.store.put_session(s)
                self.agents.publish(s)
        self.bus.publish(SystemEvent(text=f"resumed: {text}"))
        return text

    async def acquire(self, pool: str) -> bool:
        """`ctl acquire` on a gateway pool: a permit from the gateway's line (True); False: not a gateway pool."""
        if self.gateway is None or not self.gateway.serves(pool):
            return False
        await self.gateway.acquire(pool)
        return True

    # ------------------------------------------------------------------------------------------ usage

    async def usage(self, by: UsageBy, since: float | None) -> list[UsageRow]:
        """What the gateway measured since `since` (default: the start of today), grouped `by`."""
        now = self.clock.now()
        if since is None:
            since = day_start(now)
        elif math.isnan(since):
            raise BadInput("usage: --since must be a moment in time, got NaN")
        else:  # a --since longer than the epoch's age means everything (time cannot name a day before it)
            since = min(max(since, 0.0), now)
        if by in ("pool", "day"):
            self._write_days()
            rows: dict[str, UsageRow] = {}
            for day, pool, data in await self.store.load_usage_days(local_day(since)):
                name = pool if by == "pool" else day
                row = rows.setdefault(name, UsageRow(by=by, name=name))
                row.usage.add(UsageTotals.model_validate_json(data))
            if by == "pool" and self.gateway is not None:
                for pool in self.gateway.pools:
                    rows.setdefault(pool, UsageRow(by=by, name=pool))
            return [rows[k] for k in sorted(rows)]
        stored = {s.key: s for s in await self.store.metered_sessions(since)}
        for s in self.table.sessions.values():
            if s.usage is not None and s.updated_at >= since:
                stored[s.key] = s
        grouped: dict[str, UsageRow] = {}
        for s in sorted(stored.values(), key=lambda s: s.key):
            name = s.label if by == "session" else s.prefix if by == "group" else s.cron_run or "(no cron run)"
            row = grouped.setdefault(name, UsageRow(by=by, name=name))
            assert s.usage is not None
            row.usage.add(s.usage)
            if s.reported_tokens is not None or s.reported_cost_usd is not None:
                row.reported = row.reported or UsageTotals()
                row.reported.add(
                    UsageTotals(tokens=s.reported_tokens or TokenCounts(), cost_usd=s.reported_cost_usd or 0.0)
                )
        return list(grouped.values())
