"""A runtime that serves a data dir: the lock, the orchestrator and the control socket, started together.

Both `crewtui run --headless` and the dashboard (when it embeds the runtime) use `RuntimeHost`, so the
socket is open whichever way the runtime runs and agents and `crewtui ctl` always work.

The lock keeps a second runtime out; the store's writer lease (fencing) covers the case the lock cannot: a
runtime whose lock was lost (its lock file deleted, another runtime started) finds the newer lease at its next
write, and the host then stops it, leaving the sessions to the new owner.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from crewtui.config import CrewConfig
from crewtui.control.server import ControlServer
from crewtui.locations import DataDir, make_private
from crewtui.runtime.lock import DataDirLock
from crewtui.runtime.orchestrator import Orchestrator
from crewtui.store import Store

log = logging.getLogger("crewtui.host")


class RuntimeHost:
    def __init__(
        self, data_dir: str | Path | DataDir, crew: CrewConfig | None = None, **orchestrator_kwargs: Any
    ) -> None:
        self.data_dir = data_dir if isinstance(data_dir, DataDir) else DataDir(data_dir)
        self.crew = crew
        self._kwargs = orchestrator_kwargs
        self.lock = DataDirLock(self.data_dir.lock)
        self.orchestrator: Orchestrator | None = None
        self.server: ControlServer | None = None
        self.fenced: str | None = None  # set when another runtime took the data dir over
        self.stopped = asyncio.Event()
        self._stopping: asyncio.Task[None] | None = None

    async def start(self) -> Orchestrator:
        # Every file the runtime writes (store, log, registry, session records) is owner-only from here on.
        make_private()
        self.data_dir.ensure()
        self.lock.acquire()
        store: Store | None = None
        try:
            store = await Store.open(self.data_dir.store)
            await store.take_lease()
            store.on_fenced = self._on_fenced
            orch = Orchestrator(self.data_dir, store, self.crew, socket_path=self.data_dir.socket, **self._kwargs)
            self.server = ControlServer(orch, self.data_dir)
            # Sessions on Ray nodes (host mode) reach the runtime through their host's socket, served as themselves.
            orch.drivers.relay = self.server.serve_as
            await self.server.start()
            await orch.start()
            self.server.set_ready()
        except BaseException:
            if self.server is not None:
                await self.server.stop()
            if store is not None:
                try:
                    await store.close()
                except Exception:
                    pass
            self.lock.release()
            raise
        self.orchestrator = orch
        return orch

    def _on_fenced(self, message: str) -> None:
        if self.fenced is not None:
            return
        self.fenced = message
        log.error("%s; stopping this runtime and leaving its sessions to the new one", message)
        asyncio.get_running_loop().create_task(self.stop(kill_sessions=False))

    async def stop(self, kill_sessions: bool = False) -> None:
        # One stop at a time: a fenced store stops the host from inside the runtime while the CLI may ask too.
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(kill_sessions))
        await asyncio.shield(self._stopping)

    async def _stop(self, kill_sessions: bool) -> None:
        try:
            if self.server is not None:
                await self.server.stop()
                self.server = None
            if self.orchestrator is not None:
                # A fenced runtime kills nothing: the sessions are the new owner's now.
                await self.orchestrator.stop(kill_sessions=kill_sessions and self.fenced is None)
                self.orchestrator = None
        finally:
            self.lock.release()
            self.stopped.set()

    async def __aenter__(self) -> Orchestrator:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
