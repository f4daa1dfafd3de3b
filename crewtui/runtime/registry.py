"""The crew's shared registry file, written only by the runtime (the parent), never by sessions.

Sessions return results; one writer task merges them in under the session's domain (or label) and replaces
the file atomically (write, fsync, rename), so fifty sessions finishing at once never lose an entry.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("crewtui.registry")


class RegistryWriter:
    def __init__(self, path: Path, on_merged: Callable[[str], None] | None = None) -> None:
        self.path = path
        self._queue: asyncio.Queue[tuple[str, Any] | asyncio.Future[None]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._on_merged = on_merged

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="registry-writer")

    def merge(self, entry: str, value: Any) -> None:
        self._queue.put_nowait((entry, value))

    async def flush(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(fut)
        await fut

    async def stop(self) -> None:
        if self._task is None:
            return
        await self.flush()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            log.error("registry %s unreadable: %s", self.path, exc)
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    async def _run(self) -> None:
        while True:
            item = await self._queue.get()
            batch = [item]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            entries = [b for b in batch if isinstance(b, tuple)]
            if entries:
                data = await asyncio.to_thread(self.read)
                for name, value in entries:
                    data[name] = value
                try:
                    await asyncio.to_thread(self._write, data)
                except OSError as exc:
                    log.error("registry %s not written: %s", self.path, exc)
                else:
                    if self._on_merged:
                        for name, _ in entries:
                            self._on_merged(name)
            for b in batch:
                if isinstance(b, asyncio.Future) and not b.done():
                    b.set_result(None)
