"""The orchestrator: spawns, steers, kills and yields on sessions, keeps the store in step, publishes events.

It is the in-process implementation of `RuntimeAPI`. All state changes happen on the event loop, and
every claim (label, domain, queue slot) is taken before the first `await` of a request, so concurrent
requests can never both win the same claim.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import shutil
import signal
import socket
import sys
import time as _time
from collections import deque
from pathlib import Path
from typing import Any, AsyncIterator

from crewtui.config import CrewConfig, default_crew, render_command
from crewtui.errors import BadInput, Conflict, CrewError, NotFound
from crewtui.locations import DataDir
from crewtui.model import (
    MAX_STEER_BYTES,
    CronJobInfo,
    CronRun,
    TimelineItem,
    TRANSITIONS,
    ChildResult,
    Event,
    History,
    RegistryMerged,
    RuntimeStarted,
    RuntimeStopped,
    Session,
    SessionOutput,
    SessionRetried,
    SessionSpawned,
    SessionState,
    SessionStateChanged,
    SessionSteered,
    SessionYielded,
    SpawnRequest,
    SweepDone,
    SweepItem,
    SystemEvent,
    WatchdogFired,
    YieldDelivered,
    YieldResult,
    validate_label,
)
from crewtui.api import RuntimeInfo
from crewtui.clock import Clock, ClockLike, IdGen
from crewtui.runtime.domains import ClaimTable
from crewtui.runtime.drivers import (
    AgentFn,
    CallableDriver,
    ExitInfo,
    LaunchInfo,
    ProcessDriver,
    ProcessHandle,
    SessionHandle,
    pid_alive_with_start,
    read_exit,
    read_launch,
    validate_argv,
)
from crewtui.runtime.limits import Pools, backoff_delay, is_rate_limited
from crewtui.runtime.registry import RegistryWriter
from crewtui.runtime.scheduler import Scheduler
from crewtui.runtime.watcher import OutputWatcher
from crewtui.runtime.tail import find_result, read_new, tail_lines
from crewtui.store import Store

log = logging.getLogger("crewtui.orchestrator")

OUTPUT_LINES_PER_EVENT = 20  # the UI shows a tail; more lines per tick would only cost
OFFSET_PERSIST_EVERY = 2.0
MAX_RATE_LIMIT_RETRIES = 8  # per attempt; past this a rate-limited session counts as failed  # seconds: output offsets are bookkeeping, a slightly old one only re-reads a bit
# Ended sessions kept in memory (the most recently ended); older ones are evicted once nothing still needs them
# and every reader finds them in the store. About 7 kB each: memory stays flat however many sessions a crew runs.
KEEP_ENDED = 100


class Subscription:
    """A client's view of the event stream: a bounded queue. A client that lags that far loses events
    (counted in `dropped`); clients re-list now and then to repair what they missed."""

    def __init__(self, owner: "Orchestrator", maxsize: int) -> None:
        self._owner = owner
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, event: Event) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped += 1

    def close(self) -> None:
        self._owner._subscribers.discard(self)
        try:
            self.queue.put_nowait(None)
        except asyncio.QueueFull:
            pass

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Event:
        item = await self.queue.get()
        if item is None:
            raise StopAsyncIteration
        return item


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
        self.process_driver = process_driver or ProcessDriver()
        self.callable_driver = CallableDriver(callables or {})
        # Sessions run on a Ray cluster when the crew says so; connected in start().
        self.ray_driver: Any = None
        self.tail_interval = tail_interval
        self.socket_path = socket_path
        self.kill_grace = self.crew.crew.kill_grace
        self.started_at = self.clock.now()

        self.sessions: dict[str, Session] = {}
        self._labels = ClaimTable("label")
        self._domains = ClaimTable("domain")
        self._handles: dict[str, SessionHandle] = {}
        self._waiters: dict[str, asyncio.Task[None]] = {}
        self._ended: dict[str, asyncio.Event] = {}
        self._children: dict[str, set[str]] = {}
        # key -> (reason, the state to record): a kill by a watchdog that gives up records timed_out.
        self._killing: dict[str, tuple[str, SessionState]] = {}
        self._yielded_on: dict[str, set[str]] = {}  # parent -> children already handed to a yield
        self._queue: deque[str] = deque()
        self._launching: dict[str, asyncio.Task[None]] = {}
        self._env_extra: dict[str, dict[str, str]] = {}
        self._subscribers: set[Subscription] = set()
        self._seq = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._tailer: asyncio.Task[None] | None = None
        self._dirty_offsets: set[str] = set()
        self._output = OutputWatcher()
        self._last_offset_persist = 0.0
        self._registry: RegistryWriter | None = None
        self._running = False
        self.pools = Pools(self.crew.pools, self.clock)
        self.rng = rng or random.Random()
        self.scheduler: Scheduler | None = None
        self._with_scheduler = scheduler
        self._wake_at: float | None = None
        self._wake_task: asyncio.Task[None] | None = None
        # Retention: ended sessions in memory, oldest end first; past `keep_ended` they are evicted and read
        # from the store (see `_evict_ended`).
        self.keep_ended = max(0, keep_ended)
        self._ended_order: dict[str, None] = {}
        self._evict_floor = 0  # ended sessions left in memory by the last pass (all still needed)
        self._evict_task: asyncio.Task[None] | None = None
        self._evictions = 0  # sessions evicted so far: a store read that spans a change re-reads
        self._retain = False  # no eviction before start() has loaded the scheduler's timers and runs

    # ------------------------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(cls, data_dir: DataDir | str | Path, crew: CrewConfig | None = None, **kwargs: Any) -> "Orchestrator":
        dd = data_dir if isinstance(data_dir, DataDir) else DataDir(data_dir)
        dd.ensure()
        store = await Store.open(dd.store)
        return cls(dd, store, crew, **kwargs)

    async def start(self) -> None:
        """Load the store, reconcile sessions an earlier runtime left, start the background tasks."""
        self._seq = await self.store.max_event_seq()
        for s in await self.store.load_sessions():
            self.sessions[s.key] = s
            self._ended[s.key] = asyncio.Event()
            if s.parent:
                self._children.setdefault(s.parent, set()).add(s.key)
            if s.state.terminal:
                self._ended[s.key].set()
            else:
                self._labels.claim(s.label, s.key)
                if s.domain:
                    self._domains.claim(s.domain, s.key)
        registry = self.crew.registry_path(self.data_dir.root)
        if registry is not None:
            self._registry = RegistryWriter(registry, self._registry_merged)
            self._registry.start()
        if self.crew.backend.kind == "ray" or any(
            s.driver == "ray" and not s.state.terminal for s in self.sessions.values()
        ):
            await self._connect_ray()
        self._running = True
        counts = await self._reconcile()
        self._publish(
            RuntimeStarted(
                pid=os.getpid(),
                data_dir=str(self.data_dir.root),
                readopted=counts["readopted"],
                recorded_exits=counts["recorded"],
                lost=counts["lost"],
            )
        )
        self._output.start()
        self._tailer = asyncio.create_task(self._tail_loop(), name="output-tailer")
        if self._with_scheduler:
            self.scheduler = Scheduler(self, self.store, self.clock, self.crew)
            await self.scheduler.start()
        self._pump_queue()
        # Retention starts now that the scheduler knows its watchdogs and open runs (it must not evict those).
        ended = sorted((s for s in self.sessions.values() if s.state.terminal), key=lambda s: s.ended_at or s.updated_at)
        self._ended_order = dict.fromkeys(s.key for s in ended)
        self._retain = True
        self._maybe_evict()

    async def stop(self, kill_sessions: bool = False) -> None:
        """Stop the runtime. Sessions keep running (for re-adoption) unless `kill_sessions`."""
        if not self._running:
            return
        if self.scheduler is not None:
            # First, so no cron fires while sessions are being killed and starts ones that would survive.
            await self.scheduler.stop()
        if kill_sessions:
            live = [s.key for s in self.sessions.values() if s.state.live]
            await self._kill_keys(live, "killed at runtime stop", cascade=False)
        self._running = False
        if self._wake_task is not None:
            self._wake_task.cancel()
        self._retain = False
        if self._evict_task is not None:
            self._evict_task.cancel()
        if self._tailer:
            self._tailer.cancel()
        for t in list(self._waiters.values()) + list(self._tasks):
            t.cancel()
        for handle in self._handles.values():
            handle.detach()
        await asyncio.gather(*self._waiters.values(), *self._tasks, *( [self._tailer] if self._tailer else []), return_exceptions=True)
        # Record how far each live session's output was read, so the next runtime tails from there.
        for key in list(self._dirty_offsets):
            self.store.put_session(self.sessions[key])
        self._dirty_offsets.clear()
        self._publish(
            RuntimeStopped(pid=os.getpid(), live_sessions=sum(1 for s in self.sessions.values() if s.state.live))
        )
        for sub in list(self._subscribers):
            sub.close()
        self._output.close()
        if self._registry:
            await self._registry.stop()
        if self.ray_driver is not None:
            await asyncio.to_thread(self.ray_driver.disconnect)
        await self.store.close()

    # ------------------------------------------------------------------------------------ queries

    async def info(self) -> RuntimeInfo:
        return RuntimeInfo(
            pid=os.getpid(),
            data_dir=str(self.data_dir.root),
            crew=self.crew.crew.name,
            crew_file=str(self.crew.source) if self.crew.source else None,
            agents=sorted(set(self.crew.agents) | set(self.callable_driver.names())),
            started_at=self.started_at,
            max_concurrent=self.crew.crew.max_concurrent,
            backend="local" if self.ray_driver is None else f"ray {self.crew.backend.address}",
        )

    def resolve(self, ref: str) -> Session:
        """A session by key, or by label (the live holder first, else the newest session with it)."""
        if not isinstance(ref, str) or not ref:
            raise BadInput("a session key or label is required")
        s = self.sessions.get(ref)
        if s is not None:
            return s
        holder = self._labels.holder(ref)
        if holder is not None:
            return self.sessions[holder]
        matches = [s for s in self.sessions.values() if s.label == ref]
        if matches:
            return max(matches, key=lambda s: s.created_at)
        raise NotFound(f"no session with key or label {ref!r}")

    async def _find(self, ref: str) -> Session:
        """`resolve`, including sessions evicted from memory (read from the store; they have all ended).

        The result is the in-memory session when there is one (mutating it is real), else a stored copy.
        """
        if not isinstance(ref, str) or not ref:
            raise BadInput("a session key or label is required")
        s = self.sessions.get(ref)
        if s is not None or self._labels.holder(ref) is not None or not self._evictions:
            return self.resolve(ref)
        while True:
            evictions = self._evictions
            by_key = await self.store.get_session(ref)
            by_label = [] if by_key is not None else await self.store.query_sessions(label=ref, exclude=self.sessions)
            if evictions == self._evictions:  # else a session left memory while we read: read again
                break
        if ref in self.sessions or self._labels.holder(ref) is not None:
            return self.resolve(ref)  # restored or respawned meanwhile: memory is newer
        if by_key is not None:
            return by_key
        matches = [s for s in self.sessions.values() if s.label == ref] + by_label
        if matches:
            return max(matches, key=lambda s: s.created_at)
        raise NotFound(f"no session with key or label {ref!r}")

    async def get(self, ref: str) -> Session:
        return (await self._find(ref)).model_copy(deep=True)

    async def list(self, state: SessionState | None = None, prefix: str | None = None) -> list[Session]:
        stored: list[Session] = []
        while self._evictions:
            evictions = self._evictions
            # Sessions held in memory are skipped (their copy is newer); read before looking at memory, so a
            # session evicted meanwhile is found in the store, never missed.
            stored = await self.store.query_sessions(state, prefix, exclude=self.sessions)
            if evictions == self._evictions:
                break
        out = [
            s.model_copy(deep=True)
            for s in self.sessions.values()
            if (state is None or s.state == state) and (prefix is None or s.label.startswith(prefix))
        ]
        out += [s for s in stored if s.key not in self.sessions]
        out.sort(key=lambda s: s.key)
        return out

    async def history(self, ref: str, tail: int = 50) -> History:
        s = await self._find(ref)
        if tail < 1 or tail > 100_000:
            raise BadInput(f"--tail must be between 1 and 100000, got {tail}")
        d = self.data_dir.session_dir(s.key)
        lines, err = await asyncio.to_thread(
            lambda: (tail_lines(d / "stdout.log", tail), tail_lines(d / "stderr.log", tail))
        )
        return History(key=s.key, label=s.label, state=s.state, lines=lines, stderr=err)

    async def registry(self) -> dict[str, Any]:
        if self._registry is None:
            raise NotFound("this crew names no registry (set [crew] registry = \"registry.json\" in the crew file)")
        await self._registry.flush()
        return await asyncio.to_thread(self._registry.read)

    def watch(self, maxsize: int = 10_000) -> Subscription:
        sub = Subscription(self, maxsize)
        self._subscribers.add(sub)
        return sub

    def describe(self, key: str) -> str:
        s = self.sessions.get(key)
        return f"{key} ({s.label})" if s else key

    # ------------------------------------------------------------------------------------ spawn

    async def spawn(self, request: SpawnRequest) -> Session:
        req = request
        validate_label(req.label)
        self._labels.check(req.label, self.describe)
        if req.domain is not None:
            if not req.domain or len(req.domain) > 256 or any(c in req.domain for c in "\n\r\0"):
                raise BadInput(f"invalid domain {req.domain!r}: use one line of at most 256 characters")
            self._domains.check(req.domain, self.describe)
        if req.max_attempts < 1:
            raise BadInput(f"max_attempts must be at least 1, got {req.max_attempts}")
        # `not 0 < x < inf` also refuses NaN (JSON over the socket can carry it), which would break the timer heap.
        if req.watchdog_after is not None and not 0 < req.watchdog_after < math.inf:
            raise BadInput(f"watchdog must be a positive finite duration, got {req.watchdog_after}")
        parent: Session | None = None
        depth = 0
        if req.parent:
            if req.parent in self.sessions or self._labels.holder(req.parent) is not None:
                parent = self.resolve(req.parent)
            else:
                # Not in memory: ended long ago (evicted) or unknown, so this spawn is refused below. Claims checked
                # above are stale after an await: if the parent came back meanwhile (a retry), start over.
                parent = await self._find(req.parent)
                if not parent.state.terminal:
                    return await self.spawn(request)
            if parent.state.terminal:
                raise Conflict(f"parent {self.describe(parent.key)} has ended ({parent.state.value}); it cannot have new children")
            depth = parent.depth + 1
            limit = self.crew.crew.max_spawn_depth
            if depth > limit:
                raise Conflict(
                    f"spawn refused: {req.label!r} would be at depth {depth}, over max_spawn_depth {limit} "
                    f"(parent {self.describe(parent.key)} is at depth {parent.depth})"
                )
            live_children = [k for k in self._children.get(parent.key, ()) if self.sessions[k].state.live]
            if len(live_children) >= self.crew.crew.max_children:
                raise Conflict(
                    f"spawn refused: parent {self.describe(parent.key)} already has {len(live_children)} live children "
                    f"(max_children {self.crew.crew.max_children})"
                )

        key = self.ids.new()
        driver = "process"
        agent_cfg = None
        if req.argv is not None:
            if req.agent is not None:
                raise BadInput("give either an agent (--agent) or an argv (-- ARGV...), not both")
            argv = list(req.argv)
            validate_argv(argv, local=self.crew.backend.kind != "ray")
        elif req.agent is not None:
            if self.callable_driver.has(req.agent):
                driver, argv = "callable", []
            elif req.agent in self.crew.agents:
                agent_cfg = self.crew.agents[req.agent]
                argv = render_command(
                    agent_cfg.command,
                    {"task": req.task or "", "label": req.label, "key": key, "python": sys.executable},
                )
                validate_argv(argv, local=self.crew.backend.kind != "ray")
            else:
                known = ", ".join(sorted(set(self.crew.agents) | set(self.callable_driver.names()))) or "none"
                raise NotFound(f"unknown agent {req.agent!r}; known agents: {known}")
        else:
            raise BadInput("nothing to run: give --agent NAME (with --task) or an argv after --")
        if driver == "process" and self.crew.backend.kind == "ray":
            driver = "ray"

        now = self.clock.now()
        watchdog = req.watchdog_after
        if watchdog is None and agent_cfg is not None:
            watchdog = agent_cfg.watchdog_after
        if watchdog is None:
            watchdog = self.crew.crew.watchdog_after
        session = Session(
            key=key,
            label=req.label,
            state=SessionState.PENDING,
            max_attempts=req.max_attempts if req.max_attempts != 1 or agent_cfg is None else agent_cfg.max_attempts,
            agent=req.agent,
            task=req.task,
            argv=argv,
            driver=driver,
            parent=parent.key if parent else None,
            depth=depth,
            domain=req.domain,
            pool=req.pool or (agent_cfg.pool if agent_cfg else None),
            cron_run=req.cron_run,
            watchdog_after=watchdog,
            created_at=now,
            updated_at=now,
            output_dir=str(self.data_dir.session_dir(key)),
        )
        # Claims first, before any await: a concurrent spawn now sees them.
        self.sessions[key] = session
        self._ended[key] = asyncio.Event()
        self._labels.claim(session.label, key)
        if session.domain:
            self._domains.claim(session.domain, key)
        if parent:
            self._children.setdefault(parent.key, set()).add(key)
        self._env_extra[key] = dict(req.env)
        self._queue.append(key)
        self.store.put_session(session)
        self._publish(
            SessionSpawned(session=key, label=session.label, parent=session.parent, domain=session.domain,
                           cron_run=session.cron_run, attempt=session.attempt,
                           snapshot=session.model_copy(deep=True))
        )
        if session.watchdog_after and self.scheduler is not None:
            self.scheduler.arm_watchdog(session)
        self._pump_queue()
        # Wait for the launch (or for it to be queued) so the caller sees the real state.
        await self._launched(key)
        return session.model_copy(deep=True)

    async def _launched(self, key: str) -> None:
        task = self._launching.get(key)
        if task is not None:
            await asyncio.shield(task)

    def _pump_queue(self) -> None:
        """Start queued sessions while the crew cap, their pool's cap and its rate allow (first in, first out).

        Yielded sessions do not count against the caps: they wait on their children, and counting them
        could deadlock a full crew.
        """
        if not self._running:
            return
        cap = self.crew.crew.max_concurrent
        running = len(self._launching)
        per_pool: dict[str, int] = {}
        for s in self.sessions.values():
            if s.state == SessionState.RUNNING or s.key in self._launching:
                if s.state == SessionState.RUNNING:
                    running += 1
                if s.pool:
                    per_pool[s.pool] = per_pool.get(s.pool, 0) + 1
        for name, pool in self.pools.items():
            pool.running = per_pool.get(name, 0)
        now = self.clock.now()
        blocked: dict[str, str] = {}  # pool -> why its queue waits (FIFO within a pool)
        wake: float | None = None
        waiting: list[str] = []
        for key in list(self._queue):
            s = self.sessions.get(key)  # type: ignore[assignment]
            if s is None or s.state != SessionState.PENDING:
                self._queue.remove(key)
                continue
            why: str | None = None
            if s.next_try_at is not None and s.next_try_at > now:
                why = s.reason or "waiting for its next try"
                wake = s.next_try_at if wake is None else min(wake, s.next_try_at)
            elif running >= cap:
                why = f"queued under the crew's max_concurrent {cap}"
            elif s.pool and s.pool in blocked:
                why = blocked[s.pool]
            else:
                pool = self.pools.get(s.pool)
                if pool is not None and not pool.has_room():
                    why = blocked[s.pool] = f"waiting for pool {pool.name} ({pool.running}/{pool.config.max_concurrent} running)"  # type: ignore[index]
                elif pool is not None and not pool.try_take_token():
                    why = blocked[s.pool] = f"waiting for a {pool.name} rate token ({pool.config.rate})"  # type: ignore[index]
                    t = now + max(pool.seconds_until_token(), 0.01)
                    wake = t if wake is None else min(wake, t)
            if why is not None:
                waiting.append(key)
                if s.reason != why and not (s.next_try_at and s.next_try_at > now):
                    s.reason = why
                continue
            self._queue.remove(key)
            s.queue_position = None
            s.next_try_at = None
            running += 1
            if s.pool:
                pool = self.pools.get(s.pool)
                if pool is not None:
                    pool.running += 1
            self._launching[key] = asyncio.create_task(self._launch(key), name=f"launch-{key}")
        for pos, key in enumerate(waiting, start=1):
            s = self.sessions[key]
            if s.queue_position != pos:
                s.queue_position = pos
                self.store.put_session(s)
        if wake is not None:
            self._wake_pump_at(wake)

    def _wake_pump_at(self, when: float) -> None:
        """One timer for the queue: the earliest time a rate token or a backoff frees a waiting session."""
        if self._wake_at is not None and self._wake_at <= when and self._wake_task and not self._wake_task.done():
            return
        if self._wake_task is not None:
            self._wake_task.cancel()
        self._wake_at = when

        async def wake() -> None:
            await self.clock.sleep(when - self.clock.now())
            self._wake_at = None
            self._pump_queue()

        self._wake_task = asyncio.create_task(wake(), name="queue-wake")

    async def _launch(self, key: str) -> None:
        s = self.sessions[key]
        out_dir = self.data_dir.session_dir(key)
        try:
            if s.driver == "callable":
                handle: SessionHandle = await self.callable_driver.start(key, s.label, s.agent or "", out_dir)
            else:
                env = {
                    "CREWTUI_SESSION_KEY": key,
                    "CREWTUI_SESSION_LABEL": s.label,
                    "CREWTUI_DATA_DIR": str(self.data_dir.root),
                    "CREWTUI_OUTPUT_DIR": str(out_dir),
                    "PYTHONUNBUFFERED": "1",
                }
                if self.socket_path is not None:
                    env["CREWTUI_SOCKET"] = str(self.socket_path)
                if s.agent and s.agent in self.crew.agents:
                    env.update(self.crew.agents[s.agent].env)
                env.update(self._env_extra.pop(key, {}))
                if s.driver == "ray":
                    if self.ray_driver is None:
                        raise CrewError("the crew no longer uses the Ray backend")
                    agent_cfg = self.crew.agents.get(s.agent) if s.agent else None
                    handle = await self.ray_driver.start(key, s.attempt, s.argv, out_dir, env,
                                                         resources=agent_cfg.resources if agent_cfg else None)
                else:
                    handle = await self.process_driver.start(key, s.argv, out_dir, env, cwd=out_dir)
        except Exception as exc:  # a launch failure is the session's failure, never the runtime's
            log.warning("launch of %s failed: %s", key, exc)
            self._launching.pop(key, None)
            self._transition(s, SessionState.FAILED, reason=f"could not start: {exc}")
            self._after_end(s)
            return
        self._launching.pop(key, None)
        if s.state != SessionState.PENDING:  # killed while launching
            await handle.terminate(self.kill_grace)
            return
        self._adopt_handle(s, handle)
        s.started_at = self.clock.now()
        self._transition(s, SessionState.RUNNING, reason=None)

    def _adopt_handle(self, s: Session, handle: SessionHandle) -> None:
        self._handles[s.key] = handle
        if handle.node is not None:
            s.node = handle.node
        if handle.info is not None:
            s.shim_pid = handle.info.shim_pid
            s.agent_pid = handle.info.agent_pid
            s.shim_start = handle.info.shim_start
            s.agent_start = handle.info.agent_start
        self._waiters[s.key] = asyncio.create_task(self._wait_end(s.key, handle), name=f"wait-{s.key}")
        self._output.watch(s.key, self.data_dir.session_dir(s.key))

    async def _wait_end(self, key: str, handle: SessionHandle) -> None:
        try:
            exit_info = await handle.wait()
            if exit_info is None and handle.lost_reason:
                self.sessions[key].reason = handle.lost_reason
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("waiting on %s failed", key)
            exit_info = None
            self.sessions[key].reason = f"lost track of the process: {exc}"
        self._waiters.pop(key, None)
        self._handles.pop(key, None)
        await self._finish(key, exit_info)

    async def _finish(self, key: str, exit_info: ExitInfo | None) -> None:
        """Record how a session ended: done, failed, killed or lost, with its result."""
        s = self.sessions[key]
        if s.state.terminal:
            return
        await self._tail_one(s)  # the last lines, before the end is announced
        killing = self._killing.pop(key, None)
        s.ended_at = exit_info.ended_at if exit_info and exit_info.ended_at else self.clock.now()
        if exit_info is not None:
            s.exit_code = exit_info.code if exit_info.code is not None else (128 + exit_info.signal if exit_info.signal else None)
        rate_limited = False
        if killing is not None:
            reason, new = killing
        elif exit_info is None:
            new, reason = SessionState.LOST, s.reason or "the process vanished without an exit record"
        elif exit_info.code == 0:
            new, reason = SessionState.DONE, None
            found, value = await asyncio.to_thread(find_result, self.data_dir.session_dir(key))
            if found:
                s.result = value
        else:
            sig = f" (signal {exit_info.signal})" if exit_info.signal else ""
            new, reason = SessionState.FAILED, f"exit code {s.exit_code}{sig}"
            err_tail = await asyncio.to_thread(tail_lines, self.data_dir.session_dir(key) / "stderr.log", 20)
            if err_tail:
                reason += f": {err_tail[-1][:200]}"
            pool = self.pools.get(s.pool)
            rate_limited = pool is not None and is_rate_limited(pool.config, s.exit_code, "\n".join(err_tail))
        if rate_limited and s.rate_limited < MAX_RATE_LIMIT_RETRIES:
            await self._retry_after_rate_limit(s, reason)
            return
        self._transition(s, new, reason=reason)
        self._after_end(s)

    def _after_end(self, s: Session) -> None:
        self._labels.release(s.label, s.key)
        self._domains.release(s.domain, s.key)
        self._dirty_offsets.discard(s.key)
        self._output.unwatch(s.key)
        if s.state == SessionState.DONE and s.result is not None and self._registry is not None:
            self._registry.merge(s.domain or s.label, s.result)
        self._env_extra.pop(s.key, None)  # a session killed before its launch (or run in-process) never took it
        self._ended[s.key].set()
        if self.scheduler is not None:
            self.scheduler.session_ended(s)
        self._ended_order.pop(s.key, None)
        self._ended_order[s.key] = None
        self._pump_queue()
        self._maybe_evict()

    def _registry_merged(self, entry: str) -> None:
        self._publish(RegistryMerged(entry=entry))

    def _transition(self, s: Session, new: SessionState, reason: str | None) -> None:
        old = s.state
        if new != old and new not in TRANSITIONS[old]:
            # A bug in the runtime, never user input: refuse loudly rather than corrupt the record.
            raise RuntimeError(f"illegal transition {old.value} -> {new.value} for {s.key}")
        s.state = new
        s.reason = reason
        s.updated_at = self.clock.now()
        if new != SessionState.YIELDED:
            s.yield_on = None
        self.store.put_session(s)
        self._publish(
            SessionStateChanged(session=s.key, label=s.label, old=old, new=new, reason=reason,
                                exit_code=s.exit_code, attempt=s.attempt, node=s.node)
        )

    # ------------------------------------------------------------------------------------ retries

    def _rotate_outputs(self, s: Session) -> None:
        """Move the last try's files aside so the new one starts clean (a stale exit.json would end it)."""
        d = self.data_dir.session_dir(s.key)
        if not d.exists():
            return
        n = 1
        while (d / "tries" / str(n)).exists():
            n += 1
        dest = d / "tries" / str(n)
        dest.mkdir(parents=True)
        for name in ("stdout.log", "stderr.log", "pid.json", "exit.json", "result.json"):
            if (d / name).exists():
                shutil.move(str(d / name), str(dest / name))
        s.stdout_offset = s.stderr_offset = 0

    def _reset_for_try(self, s: Session) -> None:
        self._rotate_outputs(s)
        s.shim_pid = s.agent_pid = s.shim_start = s.agent_start = None
        s.node = None
        s.exit_code = None
        s.result = None
        s.ended_at = None
        s.started_at = None
        self._ended[s.key] = asyncio.Event()
        self._ended_order.pop(s.key, None)

    async def _retry_after_rate_limit(self, s: Session, reason: str) -> None:
        pool = self.pools.get(s.pool)
        assert pool is not None
        s.rate_limited += 1
        delay = backoff_delay(pool.config.backoff, s.rate_limited, self.rng)
        s.next_try_at = self.clock.now() + delay
        when = _time.strftime("%H:%M:%S", _time.localtime(s.next_try_at))
        self._reset_for_try(s)
        self._transition(
            s, SessionState.PENDING,
            reason=f"rate limited ({reason}); try {s.rate_limited + 1} at {when} (backoff {delay:.1f}s)",
        )
        self._publish(SessionRetried(session=s.key, label=s.label, attempt=s.attempt, cause="rate_limit",
                                     next_try_at=s.next_try_at))
        self._queue.append(s.key)
        self._pump_queue()

    async def retry(self, ref: str, cause: str = "user") -> Session:
        """Start a new attempt of an ended session: same key and label, attempt + 1."""
        s = await self._find(ref)
        if s.key not in self.sessions:
            # Evicted from memory (it ended a while ago): refuse what the stored copy already shows, else bring it
            # and its children back, then check again on the copy in memory (things moved while we read).
            self._check_retry(s)
            await self._restore(s)
            s = self.sessions[s.key]
        self._check_retry(s)
        self._labels.claim(s.label, s.key)
        if s.domain:
            self._domains.claim(s.domain, s.key)
        s.attempt += 1
        s.rate_limited = 0
        s.next_try_at = None
        self._reset_for_try(s)
        self._transition(s, SessionState.PENDING, reason=f"retry: attempt {s.attempt} ({cause})")
        self._publish(SessionRetried(session=s.key, label=s.label, attempt=s.attempt, cause=cause))  # type: ignore[arg-type]
        if s.watchdog_after and self.scheduler is not None:
            self.scheduler.arm_watchdog(s)
        self._queue.append(s.key)
        self._pump_queue()
        await self._launched(s.key)
        return s.model_copy(deep=True)

    def _check_retry(self, s: Session) -> None:
        """Raise Conflict if the session cannot have a new attempt now."""
        if s.state == SessionState.DONE:
            raise Conflict(f"session {self.describe(s.key)} is done; there is nothing to retry")
        if s.state.live:
            raise Conflict(f"session {self.describe(s.key)} is still {s.state.value}; kill it first or let its watchdog retry it")
        holder = self._labels.holder(s.label)
        if holder is not None and holder != s.key:
            raise Conflict(f"label {s.label!r} is now held by live session {self.describe(holder)}; cannot retry {s.key}")
        if s.domain:
            dh = self._domains.holder(s.domain)
            if dh is not None and dh != s.key:
                raise Conflict(f"domain {s.domain!r} is now held by live session {self.describe(dh)}; cannot retry {s.key}")
        parent = self.sessions.get(s.parent) if s.parent else None
        # A parent no longer in memory has ended (live sessions are never evicted).
        if s.parent and (parent is None or parent.state.terminal):
            raise Conflict(f"its parent {self.describe(s.parent)} has ended; a child cannot be retried without it")

    async def watchdog_fired(self, key: str, attempt: int) -> str:
        """A session's watchdog: a no-op if it is done; else retry it (killing it if it still runs), up to
        max_attempts; then it is timed out. Returns the outcome (also published as an event)."""
        s = self.sessions.get(key)
        if s is None or s.attempt != attempt:
            return "noop"  # a timer of an earlier attempt
        limit = s.max_attempts
        after = f"{s.watchdog_after:g}s" if s.watchdog_after else "its watchdog time"
        if s.state == SessionState.DONE:
            outcome, reason = "noop", "done in time"
        elif s.state in (SessionState.KILLED, SessionState.TIMED_OUT):
            outcome, reason = "noop", f"already {s.state.value}"
        elif s.state.live:
            if attempt < limit:
                await self._kill_keys([key], f"watchdog: not done after {after} (attempt {attempt}/{limit})", cascade=True)
                await self.retry(key, cause="watchdog")
                outcome, reason = "retried", f"not done after {after}; attempt {attempt + 1}/{limit} started"
            else:
                await self._kill_keys([key], f"watchdog: not done after {after}, attempts used up ({attempt}/{limit})",
                                      cascade=True, final=SessionState.TIMED_OUT)
                outcome, reason = "timed_out", f"not done after {after}; {attempt}/{limit} attempts used"
        else:  # failed or lost: a silent failure the watchdog surfaces and retries
            if attempt < limit:
                await self.retry(key, cause="watchdog" if s.state == SessionState.FAILED else "lost")
                outcome, reason = "retried", f"was {s.state.value}; attempt {attempt + 1}/{limit} started"
            else:
                outcome, reason = "gave_up", f"{s.state.value} after {attempt}/{limit} attempts"
        self._publish(WatchdogFired(session=key, label=s.label, attempt=attempt, outcome=outcome, reason=reason))  # type: ignore[arg-type]
        return outcome

    # ------------------------------------------------------------------------------------ sweep

    def stale_sessions(self) -> list[SweepItem]:
        now = self.clock.now()
        limit = self.crew.crew.stale_after
        out = []
        for s in self.sessions.values():
            if s.state != SessionState.RUNNING:  # yielded sessions wait on children: quiet is expected
                continue
            since = s.last_output_at or s.started_at or s.created_at
            idle = now - since
            if idle >= limit:
                out.append(SweepItem(key=s.key, label=s.label, idle_for=idle,
                                     reason=f"stale: no output for {idle:.0f}s (stale_after {limit:g}s)"))
        out.sort(key=lambda i: -i.idle_for)
        return out

    async def sweep(self, dry_run: bool = False, cause: str = "user") -> list[SweepItem]:
        """Kill sessions that wrote nothing for `stale_after`; with dry_run, only say which and why."""
        items = self.stale_sessions()
        if dry_run:
            return items
        for item in items:
            s = self.sessions.get(item.key)
            if s is not None and s.state.live:
                await self._kill_keys([item.key], item.reason, cascade=True)
        self._publish(SweepDone(killed=[i.key for i in items], cause=cause))  # type: ignore[arg-type]
        return items

    async def acquire(self, pool: str) -> dict[str, Any]:
        """Block until the pool's rate limit grants a permit (for agents: `crewtui ctl acquire POOL`)."""
        p = self.pools[pool]
        t0 = self.clock.now()
        await p.acquire()
        return {"pool": pool, "waited": round(self.clock.now() - t0, 3)}

    # ------------------------------------------------------------------------------------ scheduling API

    def _need_scheduler(self) -> Scheduler:
        if self.scheduler is None:
            raise NotFound("this runtime runs without a scheduler")
        return self.scheduler

    async def cron_list(self) -> list[CronJobInfo]:
        return self._need_scheduler().job_infos()

    async def cron_trigger(self, name: str) -> CronRun | None:
        return await self._need_scheduler().trigger(name)

    async def cron_add(self, job: dict[str, Any], allow_past: bool = False) -> CronJobInfo:
        return await self._need_scheduler().add_job(job, allow_past=allow_past)

    async def cron_remove(self, name: str) -> CronJobInfo:
        return await self._need_scheduler().remove_job(name)

    async def runs(self, job: str | None = None, limit: int = 50) -> list[CronRun]:
        return await self._need_scheduler().runs(job, limit)

    async def timeline(self, start: float, end: float) -> list[TimelineItem]:
        return await self._need_scheduler().timeline(start, end)

    # ------------------------------------------------------------------------------------ steer

    async def send(self, ref: str, text: str) -> Session:
        s = await self._find(ref)
        if not isinstance(text, str) or not text:
            raise BadInput("steer text is empty")
        size = len(text.encode("utf-8", errors="replace"))
        if size > MAX_STEER_BYTES:
            raise BadInput(f"steer text is {size} bytes, over the 64 KiB limit")
        if any(c in text for c in "\n\r\0"):
            raise BadInput("steer text must be one line (no newline or NUL characters)")
        if s.state.terminal:
            raise Conflict(f"session {self.describe(s.key)} has ended ({s.state.value}); it cannot be steered")
        handle = self._handles.get(s.key)
        if handle is None:
            raise Conflict(f"session {self.describe(s.key)} is {s.state.value} and not started yet; steer it once it runs")
        await handle.send(text)
        self._publish(SessionSteered(session=s.key, label=s.label, text=text[:500]))
        return s.model_copy(deep=True)

    # ------------------------------------------------------------------------------------ kill

    def _descendants(self, key: str) -> list[str]:
        out: list[str] = []
        stack = list(self._children.get(key, ()))
        while stack:
            k = stack.pop()
            out.append(k)
            stack.extend(self._children.get(k, ()))
        return out

    async def kill(self, ref: str | None = None, prefix: str | None = None, reason: str = "killed by user") -> list[Session]:
        if (ref is None) == (prefix is None):
            raise BadInput("kill needs exactly one of a session key/label or --prefix")
        if ref is not None:
            s = await self._find(ref)  # one not in memory has ended: refused just below
            if s.state.terminal:
                raise Conflict(f"session {self.describe(s.key)} has already ended ({s.state.value})")
            targets = [s.key]
        else:
            if not prefix:
                raise BadInput("--prefix must not be empty (that would kill every session)")
            targets = [s.key for s in self.sessions.values() if s.state.live and s.label.startswith(prefix)]
            if not targets:
                raise NotFound(f"no live session has a label starting with {prefix!r}")
        killed = [self.sessions[k] for k in targets]  # held: once ended they may leave memory before we answer
        await self._kill_keys(targets, reason, cascade=True)
        return [s.model_copy(deep=True) for s in killed]

    async def _kill_keys(
        self, keys: list[str], reason: str, cascade: bool, final: SessionState = SessionState.KILLED
    ) -> None:
        order: dict[str, str] = {}
        for k in keys:
            order.setdefault(k, reason)
            if cascade:
                for d in self._descendants(k):
                    order.setdefault(d, f"parent {self.describe(k)} was killed")
        live = [k for k in order if k in self.sessions and self.sessions[k].state.live]
        terminations = []
        for k in live:
            s = self.sessions[k]
            state = final if k in keys else SessionState.KILLED
            self._killing[k] = (order[k], state)
            if s.state == SessionState.PENDING and k not in self._launching:
                try:
                    self._queue.remove(k)
                except ValueError:
                    pass
                self._killing.pop(k, None)
                s.ended_at = self.clock.now()
                s.next_try_at = None
                self._transition(s, state, order[k])
                self._after_end(s)
                continue
            launching = self._launching.get(k)
            if launching is not None:
                terminations.append(self._kill_launching(k, launching))
                continue
            handle = self._handles.get(k)
            if handle is not None:
                terminations.append(handle.terminate(self.kill_grace))
        await asyncio.gather(*terminations, return_exceptions=True)
        await asyncio.gather(*(self._ended[k].wait() for k in live))

    async def _kill_launching(self, key: str, task: asyncio.Task[None]) -> None:
        await asyncio.shield(task)
        handle = self._handles.get(key)
        if handle is not None:
            await handle.terminate(self.kill_grace)

    # ------------------------------------------------------------------------------------ yield

    async def yield_(
        self, children: list[str] | None = None, parent: str | None = None, wait: bool = True
    ) -> YieldResult | None:
        """Wait for children to end and hand back their results as one message, with no polling.

        With a parent, the parent is `yielded` meanwhile. `wait=False` returns at once and pushes the result
        to the parent's stdin as one JSON line when the last child ends (how a process session yields).
        """
        p = await self._find(parent) if parent else None
        if p is not None and p.state not in (SessionState.RUNNING, SessionState.YIELDED):
            raise Conflict(f"session {self.describe(p.key)} is {p.state.value}; only a running session can yield")
        known: dict[str, Session] = {}  # children as found, some maybe only in the store (ended long ago)
        if children:
            kids = []
            for c in children:
                kid = await self._find(c)
                known[kid.key] = kid
                kids.append(kid.key)
            if p is not None and p.state not in (SessionState.RUNNING, SessionState.YIELDED):  # changed meanwhile
                raise Conflict(f"session {self.describe(p.key)} is {p.state.value}; only a running session can yield")
        elif p is not None:
            # Every child not yet handed to an earlier yield: one that finished before the parent
            # yielded still has its result delivered (a fast child must not be lost to a race).
            done = self._yielded_on.get(p.key, set())
            kids = sorted((k for k in self._children.get(p.key, ()) if k not in done),
                          key=lambda k: self.sessions[k].created_at)
            if not kids:
                raise BadInput(f"session {self.describe(p.key)} has no children left to yield on")
        else:
            raise BadInput("yield needs --children KEY... (or to be called from inside a session that has children)")
        if p is not None and p.key in kids:
            raise BadInput("a session cannot yield on itself")
        if not wait and p is None:
            raise BadInput("--no-wait needs a parent session to push the results to")
        if p is not None:
            self._yielded_on.setdefault(p.key, set()).update(kids)
            p.yield_on = kids
            self._transition(p, SessionState.YIELDED, reason=f"waiting for {len(kids)} children")
            self._publish(SessionYielded(session=p.key, label=p.label, children=kids))
        if not wait:
            self._spawn_task(self._deliver_yield(p.key, kids, to_stdin=True, known=known))  # type: ignore[union-attr]
            return None
        return await self._deliver_yield(p.key if p else None, kids, to_stdin=False, known=known)

    def _spawn_task(self, coro: Any) -> None:
        t = asyncio.create_task(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _deliver_yield(
        self, parent: str | None, kids: list[str], to_stdin: bool, known: dict[str, Session] | None = None
    ) -> YieldResult:
        # Held, not looked up after the wait: a child that ended may leave memory before we read it (a child not
        # in memory now has ended long ago; `known` has its stored copy).
        held = {k: self.sessions.get(k) or (known or {})[k] for k in kids}
        p = self.sessions.get(parent) if parent else None
        try:
            await asyncio.gather(*(self._ended[k].wait() for k in kids if k in self._ended))
        finally:
            if p is not None and p.state == SessionState.YIELDED:
                p.yield_on = None
                self._transition(p, SessionState.RUNNING, reason=None)
        result = YieldResult(
            parent=parent,
            children=[
                ChildResult(key=k, label=held[k].label, state=held[k].state,
                            exit_code=held[k].exit_code, result=held[k].result)
                for k in kids
            ],
        )
        if parent is not None:
            self._publish(YieldDelivered(session=parent, label=p.label if p else None, children=kids))
            handle = self._handles.get(parent)
            if to_stdin and handle is not None:
                try:
                    await handle.send(result.model_dump_json())
                except Exception as exc:  # the parent may have ended meanwhile
                    log.info("yield result not delivered to %s: %s", parent, exc)
        return result

    # ------------------------------------------------------------------------------------ output

    async def _tail_loop(self) -> None:
        while True:
            await asyncio.sleep(self.tail_interval)
            try:
                # Only sessions inotify saw writing, plus any it could not watch (polled).
                keys = self._output.take_dirty()
                keys.update(k for k in self._handles if not self._output.watched(k))
                for key in keys:
                    s = self.sessions.get(key)
                    if s is not None and s.state in (SessionState.RUNNING, SessionState.YIELDED) and key in self._handles:
                        await self._tail_one(s)
                now = self.clock.now()
                if self._dirty_offsets and now - self._last_offset_persist >= OFFSET_PERSIST_EVERY:
                    for key in self._dirty_offsets:
                        self.store.put_session(self.sessions[key])
                    self._dirty_offsets.clear()
                    self._last_offset_persist = now
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("output tailing failed")

    async def _tail_one(self, s: Session) -> None:
        d = self.data_dir.session_dir(s.key)
        for stream in ("stdout", "stderr"):
            offset = s.stdout_offset if stream == "stdout" else s.stderr_offset
            lines, new_offset, nbytes = read_new(d / f"{stream}.log", offset)
            if nbytes == 0:
                continue
            if stream == "stdout":
                s.stdout_offset = new_offset
            else:
                s.stderr_offset = new_offset
            if lines:
                s.last_output_at = self.clock.now()
                s.last_line = lines[-1][:500]
                self._publish(SessionOutput(session=s.key, label=s.label, stream=stream,
                                            lines=lines[-OUTPUT_LINES_PER_EVENT:], nbytes=nbytes))
            self._dirty_offsets.add(s.key)

    # ------------------------------------------------------------------------------------ restart

    async def _reconcile(self) -> dict[str, int]:
        """Sessions an earlier runtime left: re-adopt the living, record the ended, mark the vanished lost."""
        counts = {"readopted": 0, "recorded": 0, "lost": 0}
        pending = sorted(
            (s for s in self.sessions.values() if s.state == SessionState.PENDING), key=lambda s: s.created_at
        )
        for s in self.sessions.values():
            if s.state not in (SessionState.RUNNING, SessionState.YIELDED):
                continue
            if s.driver == "ray":
                await self._reconcile_ray(s, counts)
                continue
            if s.driver != "process":
                # An in-process coroutine cannot outlive its runtime.
                self._transition(s, SessionState.LOST, "in-process session ended with its runtime")
                s.ended_at = self.clock.now()
                self._after_end(s)
                counts["lost"] += 1
                continue
            info = None
            if s.shim_pid and s.agent_pid and s.shim_start is not None and s.agent_start is not None:
                info = LaunchInfo(s.shim_pid, s.agent_pid, s.shim_start, s.agent_start)
            await self._reconcile_process(s, info, counts)
        for s in pending:
            out_dir = self.data_dir.session_dir(s.key)
            # A launch leaves pid.json (or exit.json); a pending session with one was started by a runtime that
            # died before recording it as running. Adopt it: starting it again would run the task twice.
            if s.driver == "process" and await asyncio.to_thread(_launch_evidence, out_dir):
                s.started_at = s.started_at or self.clock.now()
                self._transition(s, SessionState.RUNNING, reason="started just before the last runtime stopped")
                await self._reconcile_process(s, None, counts)
            elif s.driver == "ray" and self.ray_driver is not None and self.ray_driver.has_actor(s.key):
                s.started_at = s.started_at or self.clock.now()
                self._transition(s, SessionState.RUNNING, reason="started just before the last runtime stopped")
                await self._reconcile_ray(s, counts)
            else:
                self._queue.append(s.key)
        await self._end_orphans()
        if self.ray_driver is not None:
            live = {s.key for s in self.sessions.values() if s.driver == "ray" and s.state.live}
            for key in await self.ray_driver.end_orphans(live):
                log.warning("stopped Ray actor %s: its spawn was never recorded", key)
        return counts

    async def _connect_ray(self) -> None:
        from crewtui.runtime.ray_driver import RayDriver

        backend = self.crew.backend
        self.ray_driver = RayDriver(
            backend.address, backend.namespace,
            owner=f"{socket.gethostname()}:{self.data_dir.root}", start_timeout=backend.start_timeout,
        )
        await self.ray_driver.connect()

    async def _reconcile_ray(self, s: Session, counts: dict[str, int]) -> None:
        """A Ray session an earlier runtime left: its recorded end, its live actor, or lost (node or actor gone)."""
        if self.ray_driver is None:
            await self._settle_reconciled(s, None, counts, "its Ray actor cannot be reached: the crew no longer uses the Ray backend")
            return
        found = await self.ray_driver.adopt(s.key, s.attempt, self.data_dir.session_dir(s.key))
        await self._settle_reconciled(
            s, found, counts, "its Ray actor is gone (its node died, or it was killed) while no runtime was watching"
        )

    async def _reconcile_process(self, s: Session, info: LaunchInfo | None, counts: dict[str, int]) -> None:
        out_dir = self.data_dir.session_dir(s.key)
        found = await asyncio.to_thread(self.process_driver.adopt, s.key, out_dir, info)
        await self._settle_reconciled(s, found, counts, "its process vanished while no runtime was watching")

    async def _settle_reconciled(self, s: Session, found: SessionHandle | ExitInfo | None, counts: dict[str, int],
                                 lost_reason: str) -> None:
        """Act on what a restart found of a session: its recorded end, a live handle, or nothing (lost)."""
        if isinstance(found, ExitInfo):
            counts["recorded"] += 1
            await self._finish(s.key, found)
        elif found is None:
            counts["lost"] += 1
            s.reason = lost_reason
            await self._finish(s.key, None)
        else:
            counts["readopted"] += 1
            self._adopt_handle(s, found)
            if s.state == SessionState.YIELDED and s.yield_on:
                # The yield outlived the runtime: deliver the children's results when they end.
                self._spawn_task(self._deliver_yield(s.key, list(s.yield_on), to_stdin=True))

    async def _end_orphans(self) -> None:
        """Stop processes of spawns the store never recorded (the last runtime died while starting them).

        Nobody was told about such a session (the control socket answers a spawn only once it is stored), so
        no one can see, steer or stop it: left alone it would run unwatched forever. Only processes whose
        pid *and* start time match their pid.json are signalled, so a reused pid is never hit.
        """
        orphans = await asyncio.to_thread(_unrecorded_launches, self.data_dir.sessions_root, set(self.sessions))
        if not orphans:
            return
        handles = [ProcessHandle(key, self.data_dir.session_dir(key), info) for key, info in orphans]
        await asyncio.gather(*(h.terminate(self.kill_grace) for h in handles), return_exceptions=True)
        for _, info in orphans:
            # An agent whose shim is already gone is not in a group we can trust: signal just it.
            if pid_alive_with_start(info.agent_pid, info.agent_start):
                try:
                    os.kill(info.agent_pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        keys = ", ".join(key for key, _ in orphans)
        log.warning("stopped %d process(es) of spawns that were never recorded: %s", len(orphans), keys)
        self._publish(SystemEvent(level="warning", text=f"stopped {len(orphans)} unrecorded session process(es) "
                                                        f"left by a runtime that died while starting them: {keys}"))

    # ------------------------------------------------------------------------------------ retention
    #
    # An ended session stays in memory while something may still read it there, and at most `keep_ended` of the
    # most recently ended ones stay beyond that; older ones are evicted, and every reader (`get`, `list`, `history`,
    # `retry`, `kill`, `send`, `yield`, `wait_ended`) falls back to the store, where they are final. Never evicted:
    # a live session (so whatever is not in memory has ended); a session of a family (parent and descendants)
    # with a member still in memory that is live or needed, because a parent's yield, live-children count and
    # kill cascade read its children from memory (families leave together, from their root); one whose watchdog is
    # armed or acting or whose cron run is open (the scheduler's retries, counts and rates); one whose last change
    # is not yet committed (the store copy must be the final one).

    def _maybe_evict(self) -> None:
        """Start an eviction pass once enough ended sessions are in memory past the bound (one pass at a time)."""
        if not self._retain or (self._evict_task is not None and not self._evict_task.done()):
            return
        if len(self._ended_order) <= max(self.keep_ended, self._evict_floor) + max(1, self.keep_ended // 10):
            return
        self._evict_task = asyncio.create_task(self._evict_ended(), name="evict-ended")
        self._tasks.add(self._evict_task)
        self._evict_task.add_done_callback(self._tasks.discard)

    def _evictable(self, key: str) -> bool:
        s = self.sessions.get(key)
        if s is None or not s.state.terminal:
            return False
        if key in self._handles or key in self._waiters or key in self._launching or key in self._killing:
            return False
        return self.scheduler is None or not self.scheduler.needs(s)

    def _family(self, root: str) -> list[str]:
        return [root, *self._descendants(root)]

    async def _evict_ended(self) -> None:
        """Evict the oldest-ended sessions past `keep_ended` (whole families, from their root) that nothing needs."""
        excess = len(self._ended_order) - self.keep_ended
        families: list[tuple[str, dict[str, float]]] = []  # (root, {key: updated_at when picked})
        picked = 0
        for key in list(self._ended_order):
            if picked >= excess:
                break
            s = self.sessions.get(key)
            if s is None or (s.parent is not None and s.parent in self.sessions):
                continue  # not a root: it leaves with its family
            family = self._family(key)
            if all(self._evictable(k) for k in family):
                families.append((key, {k: self.sessions[k].updated_at for k in family}))
                picked += len(family)
        if families:
            try:
                await self.store.flush()  # readers will find them in the store: their final rows must be there
            except CrewError as exc:
                log.info("ended sessions stay in memory until the store takes writes again: %s", exc)
                # Not again at once (that would spin on a failing store): after a few more sessions end.
                self._evict_floor = len(self._ended_order)
                self._evict_task = None
                return
        for root, stamps in families:
            family = self._family(root)
            if set(family) != set(stamps) or not all(
                self._evictable(k) and self.sessions[k].updated_at == stamps[k] for k in family
            ):
                continue  # changed while the store was flushed (a retry, a new child): look again next time
            for k in family:
                self._forget(k)
        # If too few could go (the rest still needed), wait for as many more ends before looking again.
        self._evict_floor = self.keep_ended + (excess - picked) if picked < excess else 0
        self._evict_task = None
        self._maybe_evict()  # more may have ended during the flush

    def _forget(self, key: str) -> None:
        s = self.sessions.pop(key)
        self._ended.pop(key, None)
        self._ended_order.pop(key, None)
        self._children.pop(key, None)
        self._yielded_on.pop(key, None)
        self._env_extra.pop(key, None)
        siblings = self._children.get(s.parent) if s.parent else None
        if siblings is not None:
            siblings.discard(key)
            if not siblings:
                del self._children[s.parent]  # type: ignore[arg-type]
        self._evictions += 1

    async def _restore(self, s: Session) -> None:
        """Bring an evicted session back into memory with its descendants (all ended, as stored): a retry needs
        them where the rest of the runtime looks (its children count, cascade and yield)."""
        family = [s]
        i = 0
        while i < len(family):
            family += await self.store.query_sessions(parent=family[i].key)
            i += 1
        if s.key in self.sessions:
            return  # another request brought it back while we read
        for m in family:
            if m.key in self.sessions:
                continue
            self.sessions[m.key] = m
            self._ended[m.key] = ended = asyncio.Event()
            ended.set()
            self._ended_order[m.key] = None
            if m.parent is not None and m.parent in self.sessions:
                self._children.setdefault(m.parent, set()).add(m.key)
                # Children of an attempt that ended count as handed over: a retried parent's bare yield waits
                # for its new children only.
                self._yielded_on.setdefault(m.parent, set()).add(m.key)

    # ------------------------------------------------------------------------------------ events

    def _publish(self, event: Event) -> None:
        event.ts = event.ts or self.clock.now()
        if not isinstance(event, SessionOutput):
            # Output lines live in the session's log files; the event log keeps the lifecycle, gapless.
            self._seq += 1
            event.seq = self._seq
            self.store.append_event(event)
        if self.scheduler is not None:
            self.scheduler.note(event)
        for sub in list(self._subscribers):
            sub.offer(event)

    async def flush(self) -> None:
        """Wait until every change so far is in the store (tests and `ctl list` agreement use it)."""
        await self.store.flush()

    async def events(self, since: int = 0, limit: int | None = None) -> list[Event]:
        await self.store.flush()
        return await self.store.events(since_seq=since, limit=limit)

    async def wait_ended(self, ref: str, timeout: float | None = None) -> Session:
        """Wait until a session is terminal (for tests and embedding code; the UI uses events)."""
        s = await self._find(ref)
        if s.key in self._ended:  # else it ended long ago and was read from the store
            await asyncio.wait_for(self._ended[s.key].wait(), timeout)
        return s.model_copy(deep=True)


def _launch_evidence(out_dir: Path) -> bool:
    """Whether a shim started in this session dir for the current attempt (earlier tries are moved to tries/)."""
    return read_launch(out_dir) is not None or read_exit(out_dir) is not None


def _unrecorded_launches(sessions_root: Path, known: set[str]) -> list[tuple[str, LaunchInfo]]:
    """Session dirs the store does not know whose shim or agent still runs (same pid and start time)."""
    try:
        names = os.listdir(sessions_root)
    except OSError:
        return []
    out = []
    for name in names:
        if name in known:
            continue
        info = read_launch(sessions_root / name)
        if info is None:
            continue
        if pid_alive_with_start(info.shim_pid, info.shim_start) or pid_alive_with_start(info.agent_pid, info.agent_start):
            out.append((name, info))
    return out
