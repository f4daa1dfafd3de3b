"""The orchestrator: the runtime's facade. Its public verbs (spawn, send, kill, list, yield, retry, sweep, the
cron verbs) are the in-process implementation of `RuntimeAPI`; the work is done by the parts it wires up:

- `sessions.SessionTable`: sessions in memory, claims (labels, domains), families, state transitions;
- `launcher.Launcher`: the admission queue under caps and pools, launch through a driver, finish, kill;
- `output.OutputTailer`: new output lines as events; `recovery.Recovery`: what a restart finds;
- `retention.Retention`: ended sessions leave memory; `yields.Yields`: parents woken with results;
- `supervision.Supervisor`: retries, watchdogs and the stale sweep; `bus.EventBus`: numbered events;
- `scheduler.Scheduler`: crons, watchdog timers, completion rates (it drives sessions through this facade).

All state changes happen on the event loop, and every claim (label, domain, queue slot) is taken before the
first `await` of a request, so concurrent requests can never both win the same claim.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
import random
from pathlib import Path
from typing import Any, Literal

from crewtui.api import RuntimeInfo
from crewtui.clock import Clock, ClockLike, IdGen
from crewtui.config import CrewConfig, default_crew
from crewtui.errors import BadInput, Conflict, NotFound
from crewtui.events import Event, RegistryMerged, RuntimeStarted, RuntimeStopped, SessionSteered, SystemEvent
from crewtui.locations import DataDir
from crewtui.model import (
    MAX_STEER_BYTES,
    CronJobInfo,
    CronRun,
    History,
    Session,
    SessionState,
    SpawnRequest,
    SweepItem,
    TerminalScreen,
    TimelineItem,
    YieldResult,
    listed,
)
from crewtui.runtime.agents import AgentLinks, check_answer_message
from crewtui.runtime.bus import EventBus, Subscription
from crewtui.runtime.drivers import AgentFn, CallableDriver, Drivers, ProcessDriver
from crewtui.runtime.launcher import Launcher
from crewtui.runtime.limits import Pools
from crewtui.runtime.metering import Metering
from crewtui.runtime.notify import Notifier
from crewtui.runtime.output import OutputTailer, read_history
from crewtui.runtime.peek import Peeker
from crewtui.runtime.recovery import Recovery
from crewtui.runtime.registry import RegistryWriter
from crewtui.runtime.retention import KEEP_ENDED, Retention
from crewtui.runtime.scheduler import Scheduler
from crewtui.runtime.sessions import SessionTable
from crewtui.runtime.spawning import Spawner
from crewtui.runtime.supervision import RetryCause, Supervisor
from crewtui.runtime.workspaces import Workspaces
from crewtui.runtime.yields import Yields
from crewtui.spend import GatewayInfo, UsageBy, UsageRow
from crewtui.store import Store
from crewtui.store.schema import check_in_background, needs_background_check

log = logging.getLogger("crewtui.orchestrator")


class Orchestrator:
    """Owns the sessions of one data dir. Create with `await Orchestrator.open(...)`, then `await start()`."""

    def __init__(
        self,
        data_dir: DataDir,
        store: Store,
        crew: CrewConfig | None = None,
        *,
        clock: ClockLike | None = None,
        ids: IdGen | None = None,
        process_driver: ProcessDriver | None = None,
        callables: dict[str, AgentFn] | None = None,
        tail_interval: float = 0.25,
        socket_path: Path | None = None,
        rng: random.Random | None = None,
        scheduler: bool = True,
        keep_ended: int = KEEP_ENDED,
    ) -> None:
        self.data_dir = data_dir
        self.store = store
        self.crew = crew or default_crew()
        self.clock = clock or Clock()
        self.ids = ids or IdGen(self.clock)
        self.started_at = self.clock.now()
        process = process_driver or ProcessDriver()
        process.data_dir = process.data_dir or data_dir
        self.drivers = Drivers(process, CallableDriver(callables or {}))
        self.bus = EventBus(store, self.clock)
        self.table = SessionTable(store, self.bus, self.clock)
        self.tailer = OutputTailer(self.table, self.bus, store, self.clock, data_dir, tail_interval)
        self.launcher = Launcher(
            self.table,
            self.bus,
            self.clock,
            self.crew,
            data_dir,
            self.drivers,
            self.tailer,
            rng or random.Random(),
            socket_path,
        )
        self.agents = AgentLinks(self.table, self.bus, self.crew, self.launcher.pools, self.launcher.handles.get)
        self.launcher.agents = self.tailer.agents = self.agents
        self.retention = Retention(self.table, self.launcher, store, keep_ended)
        self.yields = Yields(self.table, self.launcher, self.bus)
        self.recovery = Recovery(self.table, self.launcher, self.yields, self.drivers, self.bus, self.clock, data_dir)
        self.supervisor = Supervisor(self.table, self.launcher, self.retention, self.bus, self.clock, self.crew)
        self.spawner = Spawner(
            self.table, self.launcher, self.bus, store, self.clock, self.ids, self.crew, self.drivers, data_dir
        )
        self.metering = Metering(
            self.table, self.bus, store, self.crew, self.clock, data_dir, self.agents, self.launcher, self.drivers
        )
        self.workspaces = Workspaces(self.table, self.bus, self.crew, self.clock, data_dir)
        self.launcher.workspaces = self.spawner.workspaces = self.supervisor.workspaces = self.workspaces
        self.notifier = Notifier(self.bus, self.clock, self.crew, self.table.sessions.get)
        self.peeker = Peeker(data_dir, self.clock)
        self.scheduler: Scheduler | None = None
        self._with_scheduler = scheduler
        self._registry: RegistryWriter | None = None
        self._running = False

    # ------------------------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(cls, data_dir: DataDir | str | Path, crew: CrewConfig | None = None, **kwargs: Any) -> Orchestrator:
        dd = data_dir if isinstance(data_dir, DataDir) else DataDir(data_dir)
        dd.ensure()
        store = await Store.open(dd.store)
        return cls(dd, store, crew, **kwargs)

    async def start(self) -> None:
        """Load the store, reconcile sessions an earlier runtime left, start the background tasks."""
        self.notifier.start(self.store)  # first: what the reconciliation finds (a failed session) is told too
        await self.bus.load()
        self.launcher.store_id = await self.store.store_id()
        # Not a year of history: what the runtime works with (live sessions, their families, what the scheduler
        # reads) and the most recently ended; readers find the rest in the store.
        loaded, more = await self.store.load_startup(self.retention.keep_ended)
        self.table.load(loaded, more)
        registry = self.crew.registry_path(self.data_dir.root)
        if registry is not None:
            self._registry = RegistryWriter(registry, lambda entry: self.bus.publish(RegistryMerged(entry=entry)))
            self._registry.start()
        self.launcher.on_end.append(self._merge_result)
        if self.crew.backend.kind == "ray" or self.recovery.needs_ray():
            await self.drivers.connect_ray(self.crew.backend, self.data_dir)
        await self.metering.start()  # before any session starts or is re-adopted: they are pointed at it
        self._running = self.launcher.running = True
        found = await self.recovery.reconcile()
        self.workspaces.start()  # what was queued or merging goes back in line
        self.bus.publish(
            RuntimeStarted(
                pid=os.getpid(),
                data_dir=str(self.data_dir.root),
                readopted=found.readopted,
                recorded_exits=found.recorded,
                lost=found.lost,
            )
        )
        self.tailer.start()
        if self._with_scheduler:
            self.scheduler = sched = Scheduler(self, self.store, self.clock, self.crew)
            self.bus.listen(sched.note)
            self.launcher.on_end.append(sched.session_ended)
            self.supervisor.arm_watchdog = self.spawner.arm_watchdog = sched.arm_watchdog
            self.retention.needed = sched.needs
            await sched.start()
        self.launcher.on_end.append(self.retention.session_ended)
        self.retention.on_forget.append(lambda key: self.supervisor.final_kills.pop(key, None))
        self.launcher.on_reset.append(self.retention.session_reset)
        self.launcher.pump()
        if needs_background_check(self.store.path):
            self.yields.in_background(self._check_store())
        # Retention starts now that the scheduler knows its watchdogs and open runs (it must not evict those).
        self.retention.start()

    async def stop(self, kill_sessions: bool = False) -> None:
        """Stop the runtime. Sessions keep running (for re-adoption) unless `kill_sessions`."""
        if not self._running:
            return
        if self.scheduler is not None:
            # First, so no cron fires while sessions are being killed and starts ones that would survive.
            await self.scheduler.stop()
        if kill_sessions:
            live = [s.key for s in self.table.sessions.values() if s.state.live]
            await self.launcher.kill_keys(live, "killed at runtime stop", cascade=False)
        self._running = False
        evicting = self.retention.stop()
        tasks = [*self.launcher.stop(), *self.yields.stop(), *([evicting] if evicting else [])]
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.tailer.stop()  # records how far each live session's output was read, for the next runtime
        await self.metering.stop()
        await self.workspaces.stop()
        await self.notifier.stop()  # sends what is grouped; before the bus and the store close
        live_now = sum(1 for s in self.table.sessions.values() if s.state.live)
        self.bus.publish(RuntimeStopped(pid=os.getpid(), live_sessions=live_now))
        self.bus.close()
        self.tailer.close()
        if self._registry:
            await self._registry.stop()
        await self.drivers.close()
        await self.store.close()

    @property
    def running(self) -> bool:
        """Started and not stopped."""
        return self._running

    async def _check_store(self) -> None:
        """A store too big to check before the start is checked now; a damaged one is said on the timeline."""
        problem = await asyncio.to_thread(check_in_background, self.store.path)
        if problem is not None:
            log.error("%s", problem)
            self.bus.publish(SystemEvent(level="error", text=problem))

    def _merge_result(self, s: Session) -> None:
        """The parent owns shared writes: a done session's result goes into the crew's registry."""
        if s.state == SessionState.DONE and s.result is not None and self._registry is not None:
            self._registry.merge(s.domain or s.label, s.result)

    # ------------------------------------------------------------------------------------ queries

    @property
    def sessions(self) -> dict[str, Session]:
        """The sessions in memory (the live ones and the recently ended)."""
        return self.table.sessions

    async def info(self) -> RuntimeInfo:
        ray = self.drivers.ray
        return RuntimeInfo(
            pid=os.getpid(),
            data_dir=str(self.data_dir.root),
            crew=self.crew.crew.name,
            crew_file=str(self.crew.source) if self.crew.source else None,
            agents=sorted(set(self.crew.agents) | set(self.drivers.callable.names())),
            started_at=self.started_at,
            max_concurrent=self.crew.crew.max_concurrent,
            backend="local" if ray is None else f"ray {self.crew.backend.address} ({self.crew.backend.mode} mode)",
            containment=containment.kind if (containment := self.drivers.process.containment) else "process group",
            pools={
                name: {"running": pool.running, "rate_limit_retries": pool.rate_limit_retries}
                for name, pool in self.launcher.pools.items()
            },
        )

    def resolve(self, ref: str) -> Session:
        """A session in memory by key, or by label (the live holder first, else the newest with it)."""
        return self.table.resolve(ref)

    def describe(self, key: str) -> str:
        return self.table.describe(key)

    async def get(self, ref: str) -> Session:
        return (await self.table.find(ref)).model_copy(deep=True)

    async def list(
        self,
        state: SessionState | None = None,
        prefix: str | None = None,
        limit: int | None = None,
        before: str | None = None,
        since: float | None = None,
        ended: bool | None = None,
    ) -> builtins.list[Session]:
        if limit is not None and limit < 1:
            raise BadInput(f"limit must be at least 1, got {limit}")
        found = await self.table.listing(state, prefix, ended=ended, before=before, since=since, limit=limit)
        return [listed(s) for s in found]

    async def result(self, ref: str) -> Any:
        """A session's whole result (a listing carries a big one as a preview)."""
        return (await self.table.find(ref)).result

    async def older(self, before: str) -> dict[str, int]:
        """Ended sessions created before session `before`, counted by the top of their label's group."""
        await self.store.flush()
        return await self.store.older_counts(before)

    async def history(self, ref: str, tail: int = 50) -> History:
        s = await self.table.find(ref)
        return await read_history(s, self.data_dir.session(s.key), tail, self.store, self.agents)

    async def registry(self) -> dict[str, Any]:
        if self._registry is None:
            raise NotFound('this crew names no registry (set [crew] registry = "registry.json" in the crew file)')
        await self._registry.flush()
        return await asyncio.to_thread(self._registry.read)

    def watch(self, maxsize: int = 10_000) -> Subscription:
        return self.bus.subscribe(maxsize)

    def publish(self, event: Event) -> None:
        self.bus.publish(event)

    async def flush(self) -> None:
        """Wait until every change so far is in the store (tests and `ctl list` agreement use it)."""
        await self.store.flush()

    async def events(self, since: int = 0, limit: int | None = None) -> builtins.list[Event]:
        await self.store.flush()
        return await self.store.events(since_seq=since, limit=limit)

    async def wait_ended(self, ref: str, timeout: float | None = None) -> Session:
        """Wait until a session is terminal (for tests and embedding code; the UI uses events)."""
        s = await self.table.find(ref)
        if s.key in self.table.ended:  # else it ended long ago and was read from the store
            await asyncio.wait_for(self.table.ended[s.key].wait(), timeout)
        return s.model_copy(deep=True)

    # ------------------------------------------------------------------------------------ spawn

    async def spawn(self, request: SpawnRequest) -> Session:
        return await self.spawner.spawn(request)

    # ------------------------------------------------------------------------------------ steer, kill, yield

    async def send(self, ref: str, text: str) -> Session:
        s = await self.table.find(ref)
        if not isinstance(text, str) or not text:
            raise BadInput("steer text is empty")
        size = len(text.encode("utf-8", errors="replace"))
        if size > MAX_STEER_BYTES:
            raise BadInput(f"steer text is {size} bytes, over the 64 KiB limit")
        if any(c in text for c in "\n\r\0"):
            raise BadInput("steer text must be one line (no newline or NUL characters)")
        if s.state.terminal:
            raise Conflict(f"session {self.describe(s.key)} has ended ({s.state.value}); it cannot be steered")
        handle = self.launcher.handles.get(s.key)
        if handle is None:
            raise Conflict(
                f"session {self.describe(s.key)} is {s.state.value} and not started yet; steer it once it runs"
            )
        # An agent with a preset is steered in its own protocol (a stream-json user message, a turn/steer request).
        if not self.agents.steer(s, text):
            await handle.send(text)
        self.bus.publish(SessionSteered(session=s.key, label=s.label, text=text[:500]))
        return s.model_copy(deep=True)

    async def answer(self, ref: str, allow: bool, request: str | None = None, message: str | None = None) -> Session:
        """Answer what a waiting session asked (a permission, a question): allow or deny, with an optional message."""
        s = await self.table.find(ref)
        check_answer_message(message)
        if s.state != SessionState.WAITING:
            raise Conflict(f"session {self.describe(s.key)} is {s.state.value}, not waiting for an answer")
        self.agents.answer(s, request, allow, message)
        return s.model_copy(deep=True)

    async def kill(
        self, ref: str | None = None, prefix: str | None = None, reason: str = "killed by user"
    ) -> builtins.list[Session]:
        return await self.supervisor.kill(ref, prefix, reason)

    async def kill_keys(self, keys: builtins.list[str], reason: str, cascade: bool) -> None:
        """Kill by key, for the scheduler (overlap=replace)."""
        await self.launcher.kill_keys(keys, reason, cascade=cascade)

    async def yield_(
        self, children: builtins.list[str] | None = None, parent: str | None = None, wait: bool = True
    ) -> YieldResult | None:
        """Wait for children to end and hand back their results as one message, with no polling."""
        return await self.yields.yield_(children, parent, wait)

    # ------------------------------------------------------------------------------------ supervision

    async def retry(self, ref: str, cause: RetryCause = "user") -> Session:
        """Start a new attempt of an ended session: same key and label, attempt + 1."""
        return await self.supervisor.retry(ref, cause)

    async def watchdog_fired(self, key: str, attempt: int) -> str:
        return await self.supervisor.watchdog_fired(key, attempt)

    def stale_sessions(self) -> builtins.list[SweepItem]:
        return self.supervisor.stale_sessions()

    async def sweep(self, dry_run: bool = False, cause: Literal["user", "cron"] = "user") -> builtins.list[SweepItem]:
        """Kill sessions that wrote nothing for `stale_after`; with dry_run, only say which and why."""
        return await self.supervisor.sweep(dry_run, cause)

    async def acquire(self, pool: str) -> dict[str, Any]:
        """Block until the pool's rate limit grants a permit (for agents: `crewtui ctl acquire POOL`); a gateway
        pool's permit comes from the gateway's line and buckets, shared with its sessions' model requests."""
        p = self.launcher.pools[pool]
        t0 = self.clock.now()
        if not await self.metering.acquire(pool):
            await p.acquire()
        return {"pool": pool, "waited": round(self.clock.now() - t0, 3)}

    async def gateway(self) -> GatewayInfo:
        return self.metering.info()

    async def usage(self, by: UsageBy = "pool", since: float | None = None) -> builtins.list[UsageRow]:
        return await self.metering.usage(by, since)

    async def resume(self, ref: str | None = None, pool: str | None = None, budget: float | None = None) -> str:
        return self.metering.resume(ref, pool, budget)

    async def peek(self, ref: str) -> TerminalScreen:
        return await asyncio.to_thread(self.peeker.peek, await self.table.find(ref))

    async def diff(self, ref: str, stat: bool = False) -> str:
        return await self.workspaces.diff(await self.table.find(ref), stat)

    async def merge(self, ref: str) -> Session:
        return self.workspaces.request_merge(await self.table.find(ref)).model_copy(deep=True)

    async def discard(self, ref: str) -> Session:
        return (await self.workspaces.discard(await self.table.find(ref))).model_copy(deep=True)

    @property
    def pools(self) -> Pools:
        return self.launcher.pools

    # ------------------------------------------------------------------------------------ scheduling API

    def _need_scheduler(self) -> Scheduler:
        if self.scheduler is None:
            raise NotFound("this runtime runs without a scheduler")
        return self.scheduler

    async def cron_list(self) -> builtins.list[CronJobInfo]:
        return self._need_scheduler().job_infos()

    async def cron_trigger(self, name: str) -> CronRun | None:
        return await self._need_scheduler().trigger(name)

    async def cron_add(self, job: dict[str, Any], allow_past: bool = False) -> CronJobInfo:
        return await self._need_scheduler().add_job(job, allow_past=allow_past)

    async def cron_remove(self, name: str) -> CronJobInfo:
        return await self._need_scheduler().remove_job(name)

    async def runs(self, job: str | None = None, limit: int = 50) -> builtins.list[CronRun]:
        return await self._need_scheduler().runs(job, limit)

    async def timeline(self, start: float, end: float) -> builtins.list[TimelineItem]:
        return await self._need_scheduler().timeline(start, end)
