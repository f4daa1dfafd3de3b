"""Admission, launch and finish: the queue under the crew's and the pools' limits, starting sessions through
their driver, recording how they end, rate-limit backoff, and killing.

Sessions wait as `pending` (first in, first out, with their queue position) while a cap or a pool's rate
says so; one timer wakes the queue when a rate token or a backoff frees one. A launch failure is the
session's failure, never the runtime's. Everything that must happen when a session ends (claims released,
the registry merged, the scheduler told, retention) happens in `after_end`, through its hooks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import shutil
import signal
import time as _time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from crewtui.adapters import get_preset
from crewtui.clock import ClockLike
from crewtui.config import CrewConfig
from crewtui.errors import BadInput
from crewtui.events import SessionRetried
from crewtui.locations import DataDir, SessionDir
from crewtui.model import MAX_RESULT_BYTES, Session, SessionState
from crewtui.runtime.agents import AgentLinks
from crewtui.runtime.bus import EventBus
from crewtui.runtime.drivers import Drivers, ExitInfo, LaunchSpec, SessionHandle, validate_argv
from crewtui.runtime.drivers.terminal import DEFAULT_SIZE as TTY_SIZE
from crewtui.runtime.limits import Pools, backoff_delay, is_rate_limited
from crewtui.runtime.output import OutputTailer
from crewtui.runtime.sessions import SessionTable
from crewtui.runtime.tail import read_lines_upto, read_result, tail_lines
from crewtui.runtime.workspaces import Workspaces

log = logging.getLogger("crewtui.launcher")

MAX_RATE_LIMIT_RETRIES = 8  # per attempt; past this a rate-limited session counts as failed

EndHook = Callable[[Session], None]


def _or_signal(exit_info: ExitInfo) -> str:
    """A status over 128 is what the shell reports both for an agent that exited with it and for one a signal
    killed; the shim cannot tell them apart, so neither can we: say both, never just the signal."""
    if not exit_info.signal or exit_info.signal > 64:  # no such signal (an older shim's record of `exit 255`)
        return ""
    try:
        name = signal.Signals(exit_info.signal).name
    except ValueError:
        name = f"signal {exit_info.signal}"
    return f" (or killed by {name})"


class Launcher:
    """Starts queued sessions, holds the handles of running ones, and records their ends."""

    def __init__(
        self,
        table: SessionTable,
        bus: EventBus,
        clock: ClockLike,
        crew: CrewConfig,
        data_dir: DataDir,
        drivers: Drivers,
        tailer: OutputTailer,
        rng: random.Random,
        socket_path: Path | None,
    ) -> None:
        self.table = table
        self.bus = bus
        self.clock = clock
        self.crew = crew
        self.data_dir = data_dir
        self.drivers = drivers
        self.tailer = tailer
        self.agents: AgentLinks | None = None  # the conversations of preset agents (the orchestrator's)
        self.rng = rng
        self.socket_path = socket_path
        self.kill_grace = crew.crew.kill_grace
        self.pools = Pools(crew.pools, clock)
        self.queue: deque[str] = deque()
        self.launching: dict[str, asyncio.Task[None]] = {}
        self.handles: dict[str, SessionHandle] = {}
        self.waiters: dict[str, asyncio.Task[None]] = {}
        # key -> (reason, the state to record): a kill by a watchdog that gives up records timed_out.
        self.killing: dict[str, tuple[str, SessionState]] = {}
        self.env_extra: dict[str, dict[str, str]] = {}
        self.on_end: list[EndHook] = []  # called in order when a session has ended (see after_end)
        self.on_reset: list[EndHook] = []  # called when an ended session starts a new attempt
        self.on_adopt: list[EndHook] = []  # called when a running session is held (launched or re-adopted)
        self.workspaces: Workspaces | None = None  # git worktrees of sessions with a workspace (the orchestrator's)
        # The model gateway's environment and extra arguments for a session (the orchestrator's Metering).
        # (Its env, its extra arguments, and for a session on a Ray node the route its node's gateway door needs.)
        self.gateway_launch: Callable[[Session], tuple[dict[str, str], list[str], dict[str, str] | None]] | None = None
        self.running = False
        self.store_id = ""  # written into each session dir at launch (see SessionDir.OWNER)
        self._wake_at: float | None = None
        self._wake_task: asyncio.Task[None] | None = None

    def busy(self, key: str) -> bool:
        """Whether the launcher still holds anything of this session (a handle, a launch, a kill)."""
        return key in self.handles or key in self.waiters or key in self.launching or key in self.killing

    def stop(self) -> list[asyncio.Task[None]]:
        """Stop admitting and watching; sessions keep running. Returns the tasks to await."""
        self.running = False
        if self._wake_task is not None:
            self._wake_task.cancel()
        waiters = list(self.waiters.values())
        for t in waiters:
            t.cancel()
        for handle in self.handles.values():
            handle.detach()
        return waiters

    # ------------------------------------------------------------------------------------ queue

    def enqueue(self, key: str) -> None:
        self.queue.append(key)
        self.pump()

    async def launched(self, key: str) -> None:
        """Wait for a session's launch, if one is under way (so a caller sees its real state)."""
        task = self.launching.get(key)
        if task is not None:
            await asyncio.shield(task)

    def pump(self) -> None:
        """Start queued sessions while the crew cap, their pool's cap and its rate allow (first in, first out).

        Yielded sessions do not count against the caps: they wait on their children, and counting them
        could deadlock a full crew.
        """
        if not self.running:
            return
        cap = self.crew.crew.max_concurrent
        running = len(self.launching)
        per_pool: dict[str, int] = {}
        for other in self.table.sessions.values():
            if other.state.active or other.key in self.launching:
                if other.state.active:  # a session waiting on a person keeps its slot: its agent is alive
                    running += 1
                if other.pool:
                    per_pool[other.pool] = per_pool.get(other.pool, 0) + 1
        for name, counted in self.pools.items():
            counted.running = per_pool.get(name, 0)
        now = self.clock.now()
        blocked: dict[str, str] = {}  # pool -> why its queue waits (FIFO within a pool)
        wake: float | None = None
        waiting: list[str] = []
        for key in list(self.queue):
            s = self.table.sessions.get(key)
            if s is None or s.state != SessionState.PENDING:
                self.queue.remove(key)
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
                    why = blocked[pool.name] = (
                        f"waiting for pool {pool.name} ({pool.running}/{pool.config.max_concurrent} running)"
                    )
                elif pool is not None and not pool.try_take_token():
                    why = blocked[pool.name] = f"waiting for a {pool.name} rate token ({pool.config.rate})"
                    t = now + max(pool.seconds_until_token(), 0.01)
                    wake = t if wake is None else min(wake, t)
            if why is not None:
                waiting.append(key)
                if s.reason != why and not (s.next_try_at and s.next_try_at > now):
                    s.reason = why
                continue
            self.queue.remove(key)
            s.queue_position = None
            s.next_try_at = None
            running += 1
            started_pool = self.pools.get(s.pool)
            if started_pool is not None:
                started_pool.running += 1
            self.launching[key] = asyncio.create_task(self._launch(key), name=f"launch-{key}")
        for pos, key in enumerate(waiting, start=1):
            w = self.table.sessions[key]
            if w.queue_position != pos:
                w.queue_position = pos
                self.table.store.put_session(w)
        if wake is not None:
            self._wake_at_time(wake)

    def _wake_at_time(self, when: float) -> None:
        """One timer for the queue: the earliest time a rate token or a backoff frees a waiting session."""
        if self._wake_at is not None and self._wake_at <= when and self._wake_task and not self._wake_task.done():
            return
        if self._wake_task is not None:
            self._wake_task.cancel()
        self._wake_at = when

        async def wake() -> None:
            await self.clock.sleep(when - self.clock.now())
            self._wake_at = None
            self.pump()

        self._wake_task = asyncio.create_task(wake(), name="queue-wake")

    # ------------------------------------------------------------------------------------ launch

    def _spec(self, s: Session) -> LaunchSpec:
        sd = self.data_dir.session(s.key)
        env = {
            "CREWTUI_SESSION_KEY": s.key,
            "CREWTUI_SESSION_LABEL": s.label,
            "CREWTUI_DATA_DIR": str(self.data_dir.root),
            "CREWTUI_OUTPUT_DIR": str(sd.path),
            "PYTHONUNBUFFERED": "1",
        }
        if self.socket_path is not None:
            env["CREWTUI_SOCKET"] = str(self.socket_path)
        if s.worktree is not None:
            env["CREWTUI_WORKTREE"] = s.worktree
        agent = self.crew.agents.get(s.agent) if s.agent else None
        if agent is not None and agent.preset is not None:
            env.update(get_preset(agent.preset).env(agent.options()))  # what the preset needs; the crew file wins
        if agent is not None:
            env.update({k: v.replace("{port}", str(s.port)) if s.port else v for k, v in agent.env.items()})
        env.update(self.env_extra.pop(s.key, {}))
        argv = list(s.argv)
        route = None
        if self.gateway_launch is not None:
            gateway_env, gateway_args, route = self.gateway_launch(s)
            env.update(gateway_env)  # metering is the point of the pool: the crew file's env does not bypass it
            argv += gateway_args
        return LaunchSpec(
            key=s.key,
            label=s.label,
            attempt=s.attempt,
            dir=sd,
            argv=argv,
            env=env,
            cwd=Path(s.worktree or s.cwd or sd.path),
            agent=s.agent,
            resources=agent.resources if agent else None,
            tty=TTY_SIZE if s.tty else None,
            gateway=route,
        )

    @staticmethod
    def _check_agent_cli(preset: str, spec: LaunchSpec) -> None:
        """An agent CLI that is not installed fails its session at once, saying how to install it."""
        try:
            validate_argv(spec.argv, env={**os.environ, **spec.env}, cwd=spec.cwd)
        except BadInput:
            raise BadInput(f"{spec.argv[0]} not found on PATH; install: {get_preset(preset).install}") from None

    def _mark_owner(self, spec: LaunchSpec) -> None:
        """Say in the session dir which store launched it, before anything runs there."""
        spec.dir.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        spec.dir.owner.write_text(self.store_id + "\n")

    async def _launch(self, key: str) -> None:
        s = self.table.sessions[key]
        try:
            if self.workspaces is not None:
                await self.workspaces.prepare(s)  # its worktree, made or found again, and its setup run
            spec = self._spec(s)
            if s.preset is not None and s.driver == "process":
                self._check_agent_cli(s.preset, spec)
            await asyncio.to_thread(self._mark_owner, spec)
            handle = await self.drivers.require(s.driver).start(spec)
        except Exception as exc:  # a launch failure is the session's failure, never the runtime's
            log.warning("launch of %s failed: %s", key, exc)
            self.launching.pop(key, None)
            self.table.transition(s, SessionState.FAILED, reason=f"could not start: {exc}")
            self.after_end(s)
            return
        self.launching.pop(key, None)
        if s.state != SessionState.PENDING:  # killed while launching
            await handle.terminate(self.kill_grace)
            return
        self.adopt(s, handle)
        s.started_at = self.clock.now()
        self.table.transition(s, SessionState.RUNNING, reason=None)
        if self.agents is not None:
            self.agents.open(s)

    def adopt(self, s: Session, handle: SessionHandle) -> None:
        """Hold a running session's handle: watch for its end and follow its output."""
        self.handles[s.key] = handle
        if handle.node is not None:
            s.node = handle.node
        if handle.info is not None:
            s.shim_pid = handle.info.shim_pid
            s.agent_pid = handle.info.agent_pid
            s.shim_start = handle.info.shim_start
            s.agent_start = handle.info.agent_start
        self.waiters[s.key] = asyncio.create_task(self._wait_end(s.key, handle), name=f"wait-{s.key}")
        self.tailer.follow(s.key)
        for hook in self.on_adopt:
            hook(s)

    async def _wait_end(self, key: str, handle: SessionHandle) -> None:
        try:
            exit_info = await handle.wait()
            if exit_info is None and handle.lost_reason:
                self.table.sessions[key].reason = handle.lost_reason
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("waiting on %s failed", key)
            exit_info = None
            self.table.sessions[key].reason = f"lost track of the process: {exc}"
        self.waiters.pop(key, None)
        self.handles.pop(key, None)
        await self.finish(key, exit_info)

    # ------------------------------------------------------------------------------------ finish

    async def finish(self, key: str, exit_info: ExitInfo | None) -> None:
        """Record how a session ended: done, failed, killed or lost, with its result."""
        s = self.table.sessions[key]
        if s.state.terminal:
            return
        sd = self.data_dir.session(key)
        agents = self.agents if s.preset is not None else None
        if agents is not None and s.key not in agents.links:  # it ended while no runtime was watching
            agents.open(s, replay=await asyncio.to_thread(read_lines_upto, sd.stdout, s.stdout_offset))
        self.tailer.tail(s)  # the last lines, before the end is announced
        killing = self.killing.pop(key, None)
        s.ended_at = exit_info.ended_at if exit_info and exit_info.ended_at else self.clock.now()
        if exit_info is not None:
            s.exit_code = (
                exit_info.code if exit_info.code is not None else (128 + exit_info.signal if exit_info.signal else None)
            )
        rate_limited = False
        said = agents.outcome(s) if agents is not None else None
        reason: str | None
        if killing is not None:
            reason, new = killing
        elif exit_info is None:
            new, reason = SessionState.LOST, s.reason or "the process vanished without an exit record"
        elif said is not None and (said[0] or said[2] is not None):
            # An agent with a preset says how its work went: its last turn's answer is the result, a failed turn
            # fails the session (whatever the exit code), one that ran out of rate-limit retries is rate limited.
            has_result, value, failure, rate_limited = said
            if has_result:
                s.result, s.result_bytes = value, len(json.dumps(value, default=str))
            if failure is None and exit_info.code == 0:
                new, reason = SessionState.DONE, None
            else:
                new = SessionState.FAILED
                reason = failure or f"exit code {s.exit_code}{_or_signal(exit_info)}"
                rate_limited = rate_limited and self.pools.get(s.pool) is not None
        elif exit_info.code == 0:
            new, reason = SessionState.DONE, None
            got = await asyncio.to_thread(read_result, sd)
            if got.found:
                s.result, s.result_bytes = got.value, got.size
            elif got.too_big is not None:
                # Kept or refused with a reason, never silently nothing.
                reason = (
                    f"its result ({got.too_big / (1 << 20):.1f} MiB or more) is over the "
                    f"{MAX_RESULT_BYTES >> 20} MiB limit and was not kept; the output is in {SessionDir.STDOUT}"
                )
        else:
            new, reason = SessionState.FAILED, f"exit code {s.exit_code}{_or_signal(exit_info)}"
            err_tail = await asyncio.to_thread(tail_lines, sd.stderr, 20)
            if err_tail:
                reason += f": {err_tail[-1][:200]}"
            pool = self.pools.get(s.pool)
            rate_limited = pool is not None and is_rate_limited(pool.config, s.exit_code, "\n".join(err_tail))
        if rate_limited and s.rate_limited < MAX_RATE_LIMIT_RETRIES:
            self._retry_after_rate_limit(s, reason or "rate limited")
            return
        if new == SessionState.DONE and agents is not None and (argv := agents.continuation(s)) is not None:
            self._continue(s, argv)
            return
        if self.workspaces is not None:
            await self.workspaces.ended(s, new == SessionState.DONE)  # what it left committed, its changes counted
        self.table.transition(s, new, reason=reason)
        self.after_end(s)

    def after_end(self, s: Session) -> None:
        """A session has ended: release what it held, wake whoever waits on it, and admit the next."""
        if self.agents is not None:
            self.agents.close(s.key)
        self.table.release(s)
        self.tailer.unfollow(s.key)
        self.env_extra.pop(s.key, None)  # a session killed before its launch (or run in-process) never took it
        self.table.ended[s.key].set()
        for hook in self.on_end:
            hook(s)
        self.pump()

    # ------------------------------------------------------------------------------------ retries

    def reset_for_try(self, s: Session) -> None:
        """Clear an attempt's traces so a new one starts clean (its files move to tries/N)."""
        if self.agents is not None:
            self.agents.close(s.key)  # the next attempt is a new process: a new conversation
        s.needs = None
        self._rotate_outputs(s)
        s.shim_pid = s.agent_pid = s.shim_start = s.agent_start = None
        s.node = None
        s.exit_code = None
        s.result = None
        s.ended_at = None
        s.started_at = None
        self.table.ended[s.key] = asyncio.Event()
        for hook in self.on_reset:
            hook(s)

    def _rotate_outputs(self, s: Session) -> None:
        """Move the last try's files aside so the new one starts clean (a stale exit.json would end it)."""
        sd = self.data_dir.session(s.key)
        if not sd.path.exists():
            return
        n = 1
        while (sd.tries / str(n)).exists():
            n += 1
        dest = sd.tries / str(n)
        dest.mkdir(parents=True)
        for name in sd.ATTEMPT_FILES:
            if (sd.path / name).exists():
                shutil.move(str(sd.path / name), str(dest / name))
        s.stdout_offset = s.stderr_offset = 0

    def _continue(self, s: Session, argv: list[str]) -> None:
        """A `next_turn` agent was steered while it ran: its next run continues the conversation with that."""
        self.reset_for_try(s)
        s.argv = argv
        self.table.transition(s, SessionState.PENDING, reason="continues its conversation with the steer sent")
        self.bus.publish(SessionRetried(session=s.key, label=s.label, attempt=s.attempt, cause="steer"))
        self.enqueue(s.key)

    def _retry_after_rate_limit(self, s: Session, reason: str) -> None:
        pool = self.pools.get(s.pool)
        assert pool is not None
        s.rate_limited += 1
        delay = backoff_delay(pool.config.backoff, s.rate_limited, self.rng)
        s.next_try_at = self.clock.now() + delay
        when = _time.strftime("%H:%M:%S", _time.localtime(s.next_try_at))
        self.reset_for_try(s)
        self.table.transition(
            s,
            SessionState.PENDING,
            reason=f"rate limited ({reason}); try {s.rate_limited + 1} at {when} (backoff {delay:.1f}s)",
        )
        self.bus.publish(
            SessionRetried(
                session=s.key, label=s.label, attempt=s.attempt, cause="rate_limit", next_try_at=s.next_try_at
            )
        )
        self.enqueue(s.key)

    # ------------------------------------------------------------------------------------ kill

    async def kill_keys(
        self, keys: list[str], reason: str, cascade: bool, final: SessionState = SessionState.KILLED
    ) -> None:
        """Kill sessions (and, with `cascade`, their descendants); return once every one has ended."""
        order: dict[str, str] = {}
        for k in keys:
            order.setdefault(k, reason)
            if cascade:
                for d in self.table.descendants(k):
                    order.setdefault(d, f"parent {self.table.describe(k)} was killed")
        sessions = self.table.sessions
        live = [k for k in order if k in sessions and sessions[k].state.live]
        # Held now: a session that ends during the terminations may leave memory (retention) before we wait.
        ended = [self.table.ended[k] for k in live]
        terminations = []
        for k in live:
            s = sessions[k]
            state = final if k in keys else SessionState.KILLED
            self.killing[k] = (order[k], state)
            if s.state == SessionState.PENDING and k not in self.launching:
                try:
                    self.queue.remove(k)
                except ValueError:
                    pass
                self.killing.pop(k, None)
                s.ended_at = self.clock.now()
                s.next_try_at = None
                self.table.transition(s, state, order[k])
                self.after_end(s)
                continue
            launching = self.launching.get(k)
            if launching is not None:
                terminations.append(self._kill_launching(k, launching))
                continue
            handle = self.handles.get(k)
            if handle is not None:
                terminations.append(handle.terminate(self.kill_grace))
        await asyncio.gather(*terminations, return_exceptions=True)
        await asyncio.gather(*(e.wait() for e in ended))

    async def _kill_launching(self, key: str, task: asyncio.Task[None]) -> None:
        if self.workspaces is not None:
            self.workspaces.stop_setup(key)  # a workspace setup still running: killed, not waited for
        await asyncio.shield(task)
        handle = self.handles.get(key)
        if handle is not None:
            await handle.terminate(self.kill_grace)
