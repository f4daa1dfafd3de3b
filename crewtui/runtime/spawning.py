"""Spawning: a request checked, its program chosen, and the new session created with its claims taken.

Everything a spawn claims (label, domain, a place in its parent's family and in the queue) is taken before the
first `await` after the checks, so two concurrent spawns can never both win a claim.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from crewtui.adapters import get_preset
from crewtui.clock import ClockLike, IdGen
from crewtui.config import AgentConfig, CrewConfig, render_command
from crewtui.errors import BadInput, NotFound
from crewtui.events import SessionSpawned
from crewtui.locations import DataDir
from crewtui.model import MAX_STEER_BYTES, DriverKind, Session, SessionState, SpawnRequest
from crewtui.runtime.bus import EventBus
from crewtui.runtime.drivers import Drivers, validate_argv
from crewtui.runtime.launcher import Launcher
from crewtui.runtime.sessions import SessionTable
from crewtui.runtime.workspaces import Workspaces
from crewtui.store import Store

# A task a preset writes on the agent's stdin is one line of at most MAX_STEER_BYTES, protocol included.
MAX_STDIN_TASK = MAX_STEER_BYTES - 4096


class Spawner:
    def __init__(
        self,
        table: SessionTable,
        launcher: Launcher,
        bus: EventBus,
        store: Store,
        clock: ClockLike,
        ids: IdGen,
        crew: CrewConfig,
        drivers: Drivers,
        data_dir: DataDir,
    ) -> None:
        self.table = table
        self.launcher = launcher
        self.bus = bus
        self.store = store
        self.clock = clock
        self.ids = ids
        self.crew = crew
        self.drivers = drivers
        self.data_dir = data_dir
        self.arm_watchdog: Callable[[Session], None] = lambda s: None  # the scheduler's, when there is one
        # Where sessions run when neither the request nor their agent says: where the runtime was started.
        self.start_dir = os.getcwd()
        self.workspaces: Workspaces | None = None  # the orchestrator's: a spawn with a git workspace

    async def spawn(self, request: SpawnRequest) -> Session:
        req = request
        if self.workspaces is not None:
            req = await self.workspaces.resolve(req)  # its repository and base checked, its domain named
        while True:
            self.table.check_spawn(req)
            found = await self.table.parent_for(req, self.crew.crew.max_spawn_depth, self.crew.crew.max_children)
            if found is not None:
                break  # else the parent came back into memory while we read the store: check the claims again
        parent, depth = found
        key = self.ids.new()
        agent = self.crew.agents.get(req.agent) if req.agent else None
        cwd = self._cwd(req, agent)
        port = free_port() if agent is not None and _wants_port(agent) else None
        driver, argv = self._program(req, key, cwd, port)
        watchdog = req.watchdog_after
        if watchdog is None and agent is not None:
            watchdog = agent.watchdog_after
        if watchdog is None:
            watchdog = self.crew.crew.watchdog_after
        now = self.clock.now()
        session = Session(
            key=key,
            label=req.label,
            state=SessionState.PENDING,
            max_attempts=req.max_attempts if req.max_attempts != 1 or agent is None else agent.max_attempts,
            agent=req.agent,
            task=req.task,
            argv=argv,
            driver=driver,
            parent=parent.key if parent else None,
            depth=depth,
            domain=req.domain,
            pool=req.pool or (agent.pool if agent else None),
            cron_run=req.cron_run,
            watchdog_after=watchdog,
            created_at=now,
            updated_at=now,
            output_dir=str(self.data_dir.session_dir(key)),
            # On a Ray node, only an agent's own `cwd` (a shared path the crew file names); else its node-local dir.
            cwd=cwd if driver == "process" or (driver == "ray" and agent is not None and agent.cwd) else None,
            preset=agent.preset if agent is not None else None,
            port=port,
            tty=req.tty if req.tty is not None else bool(agent is not None and agent.tty),
        )
        if session.tty and driver != "process" and (driver != "ray" or self.crew.backend.mode != "host"):
            raise BadInput(f'a terminal session runs on this machine or a Ray host (mode = "host"), not {driver}')
        if self.workspaces is not None:
            self.workspaces.take(session, req)
        # Claims first, before any await: a concurrent spawn now sees them.
        self.table.add(session)
        self.launcher.env_extra[key] = dict(req.env)
        self.store.put_session(session)
        self.bus.publish(
            SessionSpawned(
                session=key,
                label=session.label,
                parent=session.parent,
                domain=session.domain,
                cron_run=session.cron_run,
                attempt=session.attempt,
                snapshot=session.model_copy(deep=True),
            )
        )
        if session.watchdog_after:
            self.arm_watchdog(session)
        self.launcher.enqueue(key)
        # Wait for the launch (or for it to be queued) so the caller sees the real state.
        await self.launcher.launched(key)
        return session.model_copy(deep=True)

    def _cwd(self, req: SpawnRequest, agent: AgentConfig | None) -> str:
        """The directory a session runs in: its agent's `cwd` (relative to the crew file: where that agent's work
        is, whoever spawns it), else the request's (`ctl spawn` sends the directory it was called from), else where
        the runtime was started. It must exist now."""
        if agent is not None and agent.cwd:
            where = Path(agent.cwd).expanduser()
            if not where.is_absolute():
                base = self.crew.source.parent if self.crew.source else Path(self.start_dir)
                where = base / where
        elif req.cwd is not None:
            where = Path(req.cwd)
            if not where.is_absolute():
                raise BadInput(f"cwd must be an absolute directory, got {req.cwd!r}")
        else:
            where = Path(self.start_dir)
        if not where.is_dir():
            raise BadInput(f"cannot run in {where}: not a directory")
        return str(where)

    def _program(self, req: SpawnRequest, key: str, cwd: str, port: int | None) -> tuple[DriverKind, list[str]]:
        """Which driver runs a spawn, and its argv: an argv given as is, or a crew agent's rendered command."""
        local = self.crew.backend.kind != "ray"
        remote: DriverKind = "process" if local else "ray"
        if req.argv is not None:
            if req.agent is not None:
                raise BadInput("give either an agent (--agent) or an argv (-- ARGV...), not both")
            validate_argv(list(req.argv), cwd=Path(cwd), local=local)
            return remote, list(req.argv)
        if req.agent is None:
            raise BadInput("nothing to run: give --agent NAME (with --task) or an argv after --")
        if self.drivers.callable.has(req.agent):
            return "callable", []
        agent = self.crew.agents.get(req.agent)
        if agent is None:
            known = ", ".join(sorted(set(self.crew.agents) | set(self.drivers.callable.names()))) or "none"
            raise NotFound(f"unknown agent {req.agent!r}; known agents: {known}")
        values = {"task": req.task or "", "label": req.label, "key": key, "python": sys.executable, "port": str(port)}
        if agent.preset is not None:
            # A missing agent CLI is the session's failure at launch (it says how to install it), not a refusal.
            options = agent.options()
            options = replace(options, command=tuple(render_command(list(options.command), values)))
            preset = get_preset(agent.preset)
            size = len((req.task or "").encode("utf-8", errors="replace"))
            if preset.task_on_stdin and size > MAX_STDIN_TASK:
                # It takes the task as one line on stdin (with the protocol around it): refused now, not lost later.
                raise BadInput(f"the task is {size} bytes; {preset.name} takes it on stdin, at most {MAX_STDIN_TASK}")
            return remote, preset.argv(options, req.task)
        assert agent.command is not None  # the crew file's check: a command or a preset
        argv = render_command(agent.command, values)
        validate_argv(argv, cwd=Path(cwd), local=local)
        return remote, argv


def _wants_port(agent: AgentConfig) -> bool:
    return any("{port}" in a for a in (agent.command or [])) or any("{port}" in v for v in agent.env.values())


def free_port() -> int:
    """A TCP port free on this machine now (the kernel's pick), for a session's `{port}`."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
