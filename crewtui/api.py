"""The one interface between the runtime and its clients (the dashboard, `crewtui ctl`, agents).

Two implementations: the `Orchestrator` itself (in-process, when the dashboard embeds the runtime) and
`crewtui.control.client.RemoteRuntime` (over the control socket, when a client attaches). A client written
against `RuntimeAPI` works with either.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Protocol

from pydantic import BaseModel

from crewtui.model import (
    CronJobInfo,
    CronRun,
    Event,
    History,
    Session,
    SessionState,
    SpawnRequest,
    SweepItem,
    TimelineItem,
    YieldResult,
)


class RuntimeInfo(BaseModel):
    """What a client needs to know about the runtime it talks to."""

    pid: int
    data_dir: str
    crew: str
    crew_file: str | None = None
    agents: list[str]
    started_at: float
    max_concurrent: int
    backend: str = "local"  # "local", or "ray ADDRESS" when sessions run on a Ray cluster


class RuntimeAPI(Protocol):
    async def info(self) -> RuntimeInfo: ...

    async def spawn(self, request: SpawnRequest) -> Session: ...

    async def send(self, ref: str, text: str) -> Session: ...

    async def list(self, state: SessionState | None = None, prefix: str | None = None) -> list[Session]: ...

    async def get(self, ref: str) -> Session: ...

    async def history(self, ref: str, tail: int = 50) -> History: ...

    async def kill(self, ref: str | None = None, prefix: str | None = None) -> list[Session]: ...

    async def yield_(
        self, children: list[str] | None = None, parent: str | None = None, wait: bool = True
    ) -> YieldResult | None: ...

    async def registry(self) -> dict[str, Any]: ...

    def watch(self) -> AsyncIterator[Event]: ...

    # Scheduling (crons, watchdogs, sweeps, runs)

    async def retry(self, ref: str) -> Session: ...

    async def sweep(self, dry_run: bool = False) -> list[SweepItem]: ...

    async def cron_list(self) -> list[CronJobInfo]: ...

    async def cron_trigger(self, name: str) -> CronRun | None: ...

    async def runs(self, job: str | None = None, limit: int = 50) -> list[CronRun]: ...

    async def timeline(self, start: float, end: float) -> list[TimelineItem]: ...
