"""A runtime that serves a data dir: the lock, the orchestrator and the control socket, started together.

Both `crewtui run --headless` and the dashboard (when it embeds the runtime) use `RuntimeHost`, so the
socket is open whichever way the runtime runs and agents and `crewtui ctl` always work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crewtui.config import CrewConfig
from crewtui.control.server import ControlServer
from crewtui.locations import DataDir
from crewtui.runtime.lock import DataDirLock
from crewtui.runtime.orchestrator import Orchestrator
from crewtui.store import Store


class RuntimeHost:
    def __init__(self, data_dir: str | Path | DataDir, crew: CrewConfig | None = None, **orchestrator_kwargs: Any) -> None:
        self.data_dir = data_dir if isinstance(data_dir, DataDir) else DataDir(data_dir)
        self.crew = crew
        self._kwargs = orchestrator_kwargs
        self.lock = DataDirLock(self.data_dir.lock)
        self.orchestrator: Orchestrator | None = None
        self.server: ControlServer | None = None

    async def start(self) -> Orchestrator:
        self.data_dir.ensure()
        self.lock.acquire()
        try:
            store = await Store.open(self.data_dir.store)
            orch = Orchestrator(self.data_dir, store, self.crew, socket_path=self.data_dir.socket, **self._kwargs)
            self.server = ControlServer(orch, self.data_dir)
            await self.server.start()
            await orch.start()
        except BaseException:
            if self.server is not None:
                await self.server.stop()
            self.lock.release()
            raise
        self.orchestrator = orch
        return orch

    async def stop(self, kill_sessions: bool = False) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None
        if self.orchestrator is not None:
            await self.orchestrator.stop(kill_sessions=kill_sessions)
            self.orchestrator = None
        self.lock.release()

    async def __aenter__(self) -> Orchestrator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
