"""`CallableDriver`: a session is an async Python function run as a task in the runtime (tests, embedding).

It writes the same session dir as a process (stdout.log through `CallableContext.output`, exit.json and
result.json at the end), so history, results and retries work unchanged. It cannot outlive its runtime.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
import traceback
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any

from crewtui.errors import BadInput, Conflict
from crewtui.locations import SessionDir
from crewtui.model import DriverKind
from crewtui.runtime.drivers.base import (
    AdoptSpec,
    ExitInfo,
    LaunchSpec,
    Orphans,
    SessionHandle,
    check_steer,
    exit_record,
    write_json_atomic,
)

AgentFn = Callable[["CallableContext"], Awaitable[Any]]


class CallableContext:
    """What an in-process agent gets: its identity, an output sink and its steer messages."""

    def __init__(self, key: str, label: str, sd: SessionDir) -> None:
        self.key = key
        self.label = label
        self.dir = sd
        self.out_dir: Path = sd.path
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    def output(self, line: str) -> None:
        """Append a line to stdout.log, so history and tailing work as for a process."""
        with open(self.dir.stdout, "a", encoding="utf-8", errors="replace") as f:
            f.write(line + "\n")

    async def next_message(self) -> str:
        """The next steer line sent to this session."""
        return await self.queue.get()


class CallableHandle(SessionHandle):
    """An in-process session: a coroutine run as a task. Its end is also written to exit.json."""

    def __init__(self, key: str, fn: AgentFn, ctx: CallableContext) -> None:
        self.key = key
        self.info = None
        self.ctx = ctx
        self._exit: ExitInfo | None = None
        self._task = asyncio.get_running_loop().create_task(self._run(fn), name=f"session-{key}")

    async def _run(self, fn: AgentFn) -> None:
        sd = self.ctx.dir
        try:
            value = await fn(self.ctx)
            sd.result.write_text(json.dumps(value, default=str))
            self._exit = ExitInfo(code=0, ended_at=time.time())
        except asyncio.CancelledError:
            self._exit = ExitInfo(code=None, signal=signal.SIGTERM.value, ended_at=time.time())
            self._record()
            raise
        except Exception as exc:
            with open(sd.stderr, "a", encoding="utf-8", errors="replace") as f:
                f.write("".join(traceback.format_exception(exc)))
            self._exit = ExitInfo(code=1, ended_at=time.time())
        self._record()

    def _record(self) -> None:
        if self._exit is None:
            return
        try:
            write_json_atomic(self.ctx.dir.exit, self.ctx.dir.exit_tmp, exit_record(self._exit))
        except OSError:
            pass

    def alive(self) -> bool:
        return not self._task.done()

    async def wait(self) -> ExitInfo | None:
        # asyncio.wait, not await: a cancelled waiter must not cancel the session.
        await asyncio.wait({self._task})
        return self._exit

    async def send(self, line: str) -> None:
        check_steer(line)
        if not self.alive():
            raise Conflict(f"session {self.key} has ended; cannot send to it")
        self.ctx.queue.put_nowait(line)

    async def terminate(self, grace: float) -> None:
        if not self.alive():
            return
        self._task.cancel()
        await asyncio.wait({self._task}, timeout=max(0.0, grace))
        if not self._task.done():
            # It swallowed the cancellation; ask again and wait, since a coroutine cannot be forced.
            self._task.cancel()
            await asyncio.wait({self._task})


class CallableDriver:
    """Runs named async functions as sessions (tests, embedding)."""

    kind: DriverKind = "callable"
    survives_restart = False

    def __init__(self, functions: dict[str, AgentFn]) -> None:
        self.functions = dict(functions)

    def has(self, name: str) -> bool:
        return name in self.functions

    def names(self) -> list[str]:
        return sorted(self.functions)

    async def start(self, spec: LaunchSpec) -> CallableHandle:
        name = spec.agent or ""
        fn = self.functions.get(name)
        if fn is None:
            known = ", ".join(sorted(self.functions)) or "none"
            raise BadInput(f"unknown callable agent '{name}' (known: {known})")
        sd = SessionDir(spec.dir.path.absolute())
        sd.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in (sd.exit, sd.result):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        # Truncate like the shim does, so each attempt's output starts empty.
        for log in (sd.stdout, sd.stderr):
            log.write_bytes(b"")
        return CallableHandle(spec.key, fn, CallableContext(spec.key, spec.label, sd))

    async def adopt(self, spec: AdoptSpec) -> SessionHandle | ExitInfo | None:
        return None  # a coroutine ended with the runtime that ran it

    async def started(self, spec: AdoptSpec) -> bool:
        return False

    async def end_orphans(self, known: Collection[str], live: Collection[str], grace: float, owner: str) -> Orphans:
        return Orphans()

    async def close(self) -> None:
        """Nothing to let go of."""
