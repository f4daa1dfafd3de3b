"""The control socket client: `RemoteRuntime` implements `RuntimeAPI` over the socket.

`crewtui ctl`, agents (through `crewtui ctl`) and an attached dashboard use it. One connection per call,
so a blocked `yield` never holds up other calls; `watch` keeps its connection open and streams events.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, AsyncIterator

from crewtui.control import protocol
from crewtui.errors import CrewError, RuntimeUnavailable, error_from_wire
from crewtui.locations import socket_connect_path
from crewtui.model import (
    EVENT_ADAPTER,
    CronJobInfo,
    CronRun,
    SweepItem,
    TimelineItem,
    Event,
    History,
    Session,
    SessionState,
    SpawnRequest,
    YieldResult,
)
from crewtui.api import RuntimeInfo


class RemoteRuntime:
    def __init__(self, socket_path: str | Path, data_dir: str | Path | None = None) -> None:
        self.socket_path = Path(socket_path)
        self.data_dir = Path(data_dir) if data_dir else self.socket_path.parent

    def _unavailable(self) -> RuntimeUnavailable:
        return RuntimeUnavailable(
            f"no crewtui runtime is listening in {self.data_dir} (socket {self.socket_path}); "
            f"start one with: crewtui run --headless --data-dir {self.data_dir}"
        )

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_unix_connection(
                socket_connect_path(self.socket_path), limit=protocol.MAX_LINE * 4
            )
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise self._unavailable() from None
        except PermissionError:
            raise RuntimeUnavailable(f"not allowed to use the control socket {self.socket_path} (owner only)") from None

    async def call(self, op: str, **args: Any) -> Any:
        reader, writer = await self._connect()
        try:
            writer.write(protocol.encode({"op": op, "args": args}))
            await writer.drain()
            line = await reader.readline()
        except ConnectionError:
            raise self._unavailable() from None
        finally:
            writer.close()
        if not line:
            raise RuntimeUnavailable(f"the runtime in {self.data_dir} closed the connection without answering")
        reply = json.loads(line)
        if not reply.get("ok"):
            e = reply.get("error") or {}
            raise error_from_wire(e.get("kind", "error"), e.get("message", "unknown error"))
        return reply.get("result")

    async def ping(self) -> bool:
        try:
            return await self.call("ping") == "pong"
        except CrewError:
            return False

    async def info(self) -> RuntimeInfo:
        return RuntimeInfo.model_validate(await self.call("info"))

    async def spawn(self, request: SpawnRequest) -> Session:
        return Session.model_validate(await self.call("spawn", **request.model_dump(exclude_defaults=True)))

    async def send(self, ref: str, text: str) -> Session:
        return Session.model_validate(await self.call("send", ref=ref, text=text))

    async def list(self, state: SessionState | str | None = None, prefix: str | None = None) -> list[Session]:
        st = state.value if isinstance(state, SessionState) else state
        return [Session.model_validate(s) for s in await self.call("list", state=st, prefix=prefix)]

    async def get(self, ref: str) -> Session:
        return Session.model_validate(await self.call("get", ref=ref))

    async def history(self, ref: str, tail: int = 50) -> History:
        return History.model_validate(await self.call("history", ref=ref, tail=tail))

    async def kill(self, ref: str | None = None, prefix: str | None = None) -> list[Session]:
        return [Session.model_validate(s) for s in await self.call("kill", ref=ref, prefix=prefix)]

    async def yield_(
        self, children: list[str] | None = None, parent: str | None = None, wait: bool = True
    ) -> YieldResult | None:
        out = await self.call("yield", children=children, parent=parent, wait=wait)
        return YieldResult.model_validate(out) if out is not None else None

    async def registry(self) -> dict[str, Any]:
        return await self.call("registry")

    async def events(self, since: int = 0, limit: int | None = None) -> list[Event]:
        return [EVENT_ADAPTER.validate_python(e) for e in await self.call("events", since=since, limit=limit)]

    async def retry(self, ref: str) -> Session:
        return Session.model_validate(await self.call("retry", ref=ref))

    async def sweep(self, dry_run: bool = False) -> list[SweepItem]:
        return [SweepItem.model_validate(i) for i in await self.call("sweep", dry_run=dry_run)]

    async def acquire(self, pool: str) -> dict[str, Any]:
        return await self.call("acquire", pool=pool)

    async def cron_list(self) -> list[CronJobInfo]:
        return [CronJobInfo.model_validate(j) for j in await self.call("cron_list")]

    async def cron_add(self, job: dict[str, Any], allow_past: bool = False) -> CronJobInfo:
        return CronJobInfo.model_validate(await self.call("cron_add", job=job, allow_past=allow_past))

    async def cron_remove(self, name: str) -> CronJobInfo:
        return CronJobInfo.model_validate(await self.call("cron_remove", name=name))

    async def cron_trigger(self, name: str) -> CronRun | None:
        out = await self.call("cron_trigger", name=name)
        return CronRun.model_validate(out) if out is not None else None

    async def runs(self, job: str | None = None, limit: int = 50) -> list[CronRun]:
        return [CronRun.model_validate(r) for r in await self.call("runs", job=job, limit=limit)]

    async def timeline(self, start: float, end: float) -> list[TimelineItem]:
        return [TimelineItem.model_validate(i) for i in await self.call("timeline", start=start, end=end)]

    async def watch(self) -> AsyncIterator[Event]:
        reader, writer = await self._connect()
        try:
            writer.write(protocol.encode({"op": "watch", "args": {}}))
            await writer.drain()
            first = await reader.readline()
            if not first or not json.loads(first).get("ok"):
                raise self._unavailable()
            while True:
                line = await reader.readline()
                if not line:
                    return
                yield EVENT_ADAPTER.validate_python(json.loads(line)["event"])
        finally:
            writer.close()
