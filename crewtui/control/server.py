"""The control socket server inside the runtime: `crewtui ctl`, agents and attached dashboards talk to it.

A Unix socket (mode 0600) in the data dir, JSON lines (see protocol.py). Every verb maps to one method of the
orchestrator, so anything a script or an agent can do goes through the same API the dashboard uses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from pathlib import Path
from typing import Any, Awaitable, Callable

from pydantic import ValidationError

from crewtui.control import protocol
from crewtui.errors import BadInput, CrewError, StoreError
from crewtui.locations import DataDir
from crewtui.model import SessionState, SpawnRequest
from crewtui.runtime.orchestrator import Orchestrator

log = logging.getLogger("crewtui.control")

# Ops a disconnecting client cancels (they only wait); every other op runs to completion regardless.
CANCEL_ON_HANGUP = {"yield", "acquire"}
# Ops that change nothing in the store. Every other op is answered only once its changes are committed, so a
# client that was told "spawned" or "killed" is never contradicted by a runtime that is kill -9ed a moment later.
READ_ONLY_OPS = {"ping", "info", "list", "get", "history", "registry", "events", "runs", "timeline", "cron_list",
                 "acquire"}


def _dump(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if isinstance(obj, list):
        return [_dump(o) for o in obj]
    return obj


def _args_error(op: str, exc: Exception) -> BadInput:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or op
        return BadInput(f"{op}: {where}: {first.get('msg', 'invalid value')}")
    return BadInput(f"{op}: bad arguments ({exc})")


class ControlServer:
    def __init__(self, orchestrator: Orchestrator, data_dir: DataDir) -> None:
        self.orch = orchestrator
        self.data_dir = data_dir
        self.bind_path: Path = data_dir.socket_bind_path()
        self._server: asyncio.AbstractServer | None = None
        self._clients: set[asyncio.Task[Any]] = set()
        # Requests wait until the orchestrator has loaded the store and reconciled its sessions: served earlier,
        # a spawn would see no labels and take event numbers the store already holds.
        self._ready = asyncio.Event()
        self._bound: tuple[int, int] | None = None  # (st_dev, st_ino) of the socket file this server made
        self._ops: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "ping": self._ping,
            "info": lambda a: self.orch.info(),
            "spawn": self._spawn,
            "send": lambda a: self.orch.send(a["ref"], a["text"]),
            "list": self._list,
            "get": lambda a: self.orch.get(a["ref"]),
            "history": lambda a: self.orch.history(a["ref"], int(a.get("tail", 50))),
            "kill": lambda a: self.orch.kill(a.get("ref"), a.get("prefix")),
            "yield": lambda a: self.orch.yield_(a.get("children"), a.get("parent"), bool(a.get("wait", True))),
            "registry": lambda a: self.orch.registry(),
            "events": lambda a: self.orch.events(int(a.get("since", 0)), a.get("limit")),
            "retry": lambda a: self.orch.retry(a["ref"]),
            "sweep": lambda a: self.orch.sweep(bool(a.get("dry_run", False))),
            "acquire": lambda a: self.orch.acquire(a["pool"]),
            "cron_list": lambda a: self.orch.cron_list(),
            "cron_add": lambda a: self.orch.cron_add(a["job"], bool(a.get("allow_past", False))),
            "cron_remove": lambda a: self.orch.cron_remove(a["name"]),
            "cron_trigger": lambda a: self.orch.cron_trigger(a["name"]),
            "runs": lambda a: self.orch.runs(a.get("job"), int(a.get("limit", 50))),
            "timeline": lambda a: self.orch.timeline(float(a["start"]), float(a["end"])),
        }

    @property
    def socket_path(self) -> Path:
        """The path clients use: the data dir's control.sock (a symlink when the real one had to be short)."""
        return self.data_dir.socket

    async def start(self) -> None:
        for p in {self.bind_path, self.data_dir.socket}:
            # We hold the data dir lock, so a socket file left here is a dead runtime's: replace it.
            if p.is_symlink() or p.exists():
                p.unlink()
        old = os.umask(0o177)  # the socket is created owner-only, with no window of wider access
        try:
            # A crew of hundreds of agents can call at once; with asyncio's default backlog of 100 a burst of
            # connects beyond it fails at once with EAGAIN. The kernel caps this at net.core.somaxconn.
            self._server = await asyncio.start_unix_server(
                self._serve_client, path=str(self.bind_path), limit=protocol.MAX_LINE, backlog=socket.SOMAXCONN
            )
        finally:
            os.umask(old)
        os.chmod(self.bind_path, 0o600)
        st = os.stat(self.bind_path)
        self._bound = (st.st_dev, st.st_ino)
        if self.bind_path != self.data_dir.socket:
            os.symlink(self.bind_path, self.data_dir.socket)

    def set_ready(self) -> None:
        """Start answering requests (the orchestrator has started)."""
        self._ready.set()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._clients):
                t.cancel()
            await asyncio.gather(*self._clients, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None
        if not self._owns_socket():
            # Another runtime took the data dir over and bound its own socket here: leave it alone.
            return
        for p in {self.bind_path, self.data_dir.socket}:
            try:
                p.unlink()
            except FileNotFoundError:
                pass

    def _owns_socket(self) -> bool:
        try:
            st = os.stat(self.bind_path)
        except OSError:
            return True  # nothing there, or a dangling symlink of ours: unlinking is harmless
        return self._bound is None or (st.st_dev, st.st_ino) == self._bound

    async def _ping(self, args: dict[str, Any]) -> str:
        return "pong"

    async def _spawn(self, args: dict[str, Any]) -> Any:
        try:
            req = SpawnRequest.model_validate(args)
        except ValidationError as exc:
            raise _args_error("spawn", exc) from None
        return await self.orch.spawn(req)

    async def _list(self, args: dict[str, Any]) -> Any:
        state = args.get("state")
        try:
            st = SessionState(state) if state else None
        except ValueError:
            raise BadInput(
                f"unknown state {state!r}; states: {', '.join(s.value for s in SessionState)}"
            ) from None
        return await self.orch.list(st, args.get("prefix"))

    async def _serve_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("control client failed")
        finally:
            if task is not None:
                self._clients.discard(task)
            writer.close()
            try:
                await writer.wait_closed()
            except Exception:
                pass

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
        except (asyncio.LimitOverrunError, ValueError):
            writer.write(protocol.err(BadInput(f"request over {protocol.MAX_LINE} bytes refused")))
            await writer.drain()
            return
        if not line:
            return
        try:
            msg = json.loads(line)
            op = msg["op"]
            args = msg.get("args") or {}
            if not isinstance(op, str) or not isinstance(args, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError):  # RecursionError: absurdly nested JSON
            writer.write(protocol.err(BadInput('malformed request: expected one JSON line {"op": ..., "args": {...}}')))
            await writer.drain()
            return
        await self._ready.wait()
        if op == "watch":
            await self._watch(reader, writer)
            return
        handler = self._ops.get(op)
        if handler is None:
            writer.write(protocol.err(BadInput(f"unknown op {op!r}; ops: {', '.join(sorted([*self._ops, 'watch']))}")))
            await writer.drain()
            return
        reply = await self._run(op, handler, args, reader)
        if reply is not None:
            writer.write(reply)
            await writer.drain()

    async def _run(
        self,
        op: str,
        handler: Callable[[dict[str, Any]], Awaitable[Any]],
        args: dict[str, Any],
        reader: asyncio.StreamReader,
    ) -> bytes | None:
        async def call() -> bytes:
            try:
                result = await handler(args)
                if op not in READ_ONLY_OPS:
                    try:
                        await self.orch.flush()
                    except StoreError as exc:
                        raise StoreError(f"{op} was done, but the store has not recorded it yet: {exc.message}") from None
                return protocol.ok(_dump(result))
            except CrewError as exc:
                return protocol.err(exc)
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:  # e.g. int(1e309) for --tail
                return protocol.err(_args_error(op, exc))

        work = asyncio.ensure_future(call())
        if op not in CANCEL_ON_HANGUP:
            return await asyncio.shield(work)
        hangup = asyncio.ensure_future(reader.read(1))
        done, _ = await asyncio.wait({work, hangup}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            hangup.cancel()
            return work.result()
        work.cancel()  # the client went away mid-wait: stop waiting on its behalf
        try:
            await work
        except asyncio.CancelledError:
            pass
        return None

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sub = self.orch.watch()
        try:
            writer.write(protocol.ok("watching"))
            await writer.drain()
            hangup = asyncio.ensure_future(reader.read(1))
            while True:
                nxt = asyncio.ensure_future(sub.queue.get())
                done, _ = await asyncio.wait({nxt, hangup}, return_when=asyncio.FIRST_COMPLETED)
                if hangup in done:
                    nxt.cancel()
                    return
                event = nxt.result()
                if event is None:  # the runtime closed the subscription: it is stopping
                    hangup.cancel()
                    return
                writer.write(protocol.encode({"event": event.model_dump(mode="json")}))
                await writer.drain()
        finally:
            sub.close()
