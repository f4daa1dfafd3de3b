"""`RelayPoint`: the control channel of a Ray node's sessions, on their host (host mode of the Ray backend).

The host serves one Unix socket per session it runs (mode 0600, in the session's node-local dir, or in the
user's short socket dir when that path would be too long for a socket); the session's `CREWTUI_SOCKET` points
there, so `crewtui ctl` works unchanged on any node. A request is one JSON line, as on the runtime's socket. It
is not answered here: it waits until the runtime's long poll (`SessionHost.poll`) takes it, and the runtime
serves it *as the session whose socket it came in on* (its identity is where it arrived, never what it says),
then hands the reply back with `answer`. The client's connection is held meanwhile, so a blocking verb (yield,
acquire) blocks as it does locally; a client that hangs up is reported to the runtime, which cancels it.

A request taken by a runtime that went away before answering (it stopped, or crashed, mid-request) fails in
one line (when it stops, or when the next runtime polls); one not yet taken waits for the next runtime. Each
runtime's link polls under a generation of its own: only the newest to poll takes requests, so a poll of a
runtime that is gone (still waiting out its time on the host) cannot take one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crewtui.locations import private_dir, short_socket_dir

log = logging.getLogger("crewtui.ray.relay")

SOCKET_NAME = "ctl.sock"  # short: a session dir on a node is deep, and a socket path is limited
_MAX_SOCKET_PATH = 100  # as the runtime's own socket (locations.py): ~108 bytes is the kernel's limit
_MAX_LINE = 1 << 20  # as the runtime's socket: a request is one line of at most 1 MiB


def error_reply(kind: str, message: str) -> bytes:
    """An error reply line, as the runtime's control socket writes one."""
    return (json.dumps({"ok": False, "error": {"kind": kind, "message": message}}) + "\n").encode()


@dataclass
class _Request:
    id: str
    owner: str
    key: str
    payload: bytes
    reply: asyncio.Future[bytes]
    taken_by: str | None = None  # the poll generation (one runtime's link) that took it
    kind: str = "ctl"  # "ctl": a session's control request; "gateway": its node gateway's (never the agent's)


@dataclass
class _Point:
    server: asyncio.AbstractServer
    path: Path
    requests: set[str] = field(default_factory=set)


class RelayPoint:
    """The sessions' sockets of one host, and the requests that wait for the runtime."""

    def __init__(self, wake: Callable[[str], None]) -> None:
        self._wake = wake  # tells the owner's waiting poll that there is news
        self._points: dict[str, _Point] = {}  # by session ident
        self._requests: dict[str, _Request] = {}  # by id, until answered or given up
        self._cancelled: dict[str, list[str]] = {}  # by owner: ids taken whose client hung up
        self._gens: dict[str, str | None] = {}  # by owner: the generation that takes its requests

    @staticmethod
    def socket_path(ident: str, session_dir: Path) -> Path:
        path = session_dir / SOCKET_NAME
        if len(str(path)) <= _MAX_SOCKET_PATH:
            return path
        short = short_socket_dir()
        private_dir(short, create=True)
        return short / f"ray-{hashlib.sha1(str(path).encode()).hexdigest()[:16]}.sock"

    async def serve(self, ident: str, owner: str, key: str, session_dir: Path) -> str:
        """Listen on the session's socket (again, after a host restart); its path."""
        self.close(ident)
        path = self.socket_path(ident, session_dir)
        if path.is_socket() or path.is_symlink():
            path.unlink()

        async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._client(ident, owner, key, reader, writer)

        server = await asyncio.start_unix_server(client, path=str(path), limit=_MAX_LINE)
        os.chmod(path, 0o600)  # its dir is owner-only too, so there is no window of wider access
        self._points[ident] = _Point(server, path)
        return str(path)

    def close(self, ident: str) -> None:
        point = self._points.pop(ident, None)
        if point is None:
            return
        point.server.close()
        for rid in list(point.requests):
            req = self._requests.get(rid)
            if req is not None and not req.reply.done():
                req.reply.set_result(
                    error_reply("unavailable", f"session {req.key} has ended; its control socket closed")
                )
        try:
            point.path.unlink()
        except OSError:
            pass

    def has_news(self, owner: str) -> bool:
        if self._cancelled.get(owner):
            return True
        return any(r.owner == owner and r.taken_by is None for r in self._requests.values())

    def attach(self, owner: str, gen: str) -> None:
        """A poll of generation `gen` begins: if it is new, it takes the owner's requests from now on, and what an
        earlier generation took and never answered fails in one line."""
        if self._gens.get(owner) != gen:
            self._gens[owner] = gen
            self._fail_taken(owner, gen, "the crewtui runtime restarted while serving this request; ask again")

    def leave(self, owner: str, gen: str) -> None:
        """The runtime of generation `gen` stops: it takes nothing more, and what it took fails in one line."""
        if self._gens.get(owner) == gen:
            self._gens[owner] = None
        self._fail_taken(owner, None, "the crewtui runtime stopped while serving this request; ask again")

    def _fail_taken(self, owner: str, keep: str | None, why: str) -> None:
        for req in self._requests.values():
            if req.owner == owner and req.taken_by not in (None, keep) and not req.reply.done():
                req.reply.set_result(error_reply("unavailable", why))

    def take(self, owner: str, gen: str) -> tuple[list[list[Any]], list[str]]:
        """The owner's requests not yet taken ([id, session key, line, kind]) and the ids whose client hung up;
        nothing for a generation another has superseded."""
        if self._gens.get(owner) != gen:
            return [], []
        fresh: list[list[Any]] = []
        for req in self._requests.values():
            if req.owner == owner and req.taken_by is None and not req.reply.done():
                req.taken_by = gen
                fresh.append([req.id, req.key, req.payload, req.kind])
        return fresh, self._cancelled.pop(owner, [])

    def answer(self, answers: list[list[Any]]) -> int:
        """Hand replies ([id, reply line]) to their waiting clients; how many still had one."""
        n = 0
        for rid, reply in answers:
            req = self._requests.get(rid)
            if req is not None and not req.reply.done():
                req.reply.set_result(reply if isinstance(reply, bytes) else str(reply).encode())
                n += 1
        return n

    async def ask(self, owner: str, key: str, payload: bytes) -> bytes:
        """A request of the node's gateway on behalf of session `key`, served by the runtime as the gateway's (it
        comes from here, not from a socket an agent can reach); the reply line. Cancelled, it is cancelled in the
        runtime too."""
        req = _Request(
            uuid.uuid4().hex, owner, key, payload, asyncio.get_running_loop().create_future(), kind="gateway"
        )
        self._requests[req.id] = req
        self._wake(owner)
        try:
            return await req.reply
        except asyncio.CancelledError:  # (which cancelled `reply` too, unless it had come)
            if req.taken_by is not None and (req.reply.cancelled() or not req.reply.done()):
                self._cancelled.setdefault(owner, []).append(req.id)
                self._wake(owner)
            raise
        finally:
            self._requests.pop(req.id, None)

    async def _client(
        self, ident: str, owner: str, key: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        req: _Request | None = None
        try:
            try:
                line = await reader.readline()
            except (asyncio.LimitOverrunError, ValueError):
                writer.write(error_reply("bad_input", f"request over {_MAX_LINE} bytes refused"))
                await writer.drain()
                return
            if not line:
                return
            point = self._points.get(ident)
            if point is None:
                return
            req = _Request(uuid.uuid4().hex, owner, key, line, asyncio.get_running_loop().create_future())
            self._requests[req.id] = req
            point.requests.add(req.id)
            self._wake(owner)
            hangup = asyncio.ensure_future(reader.read(1))
            done, _ = await asyncio.wait({req.reply, hangup}, return_when=asyncio.FIRST_COMPLETED)
            if req.reply in done:
                hangup.cancel()
                writer.write(req.reply.result())
                await writer.drain()
            elif req.taken_by is not None:  # the client went away mid-wait: the runtime stops serving it
                self._cancelled.setdefault(owner, []).append(req.id)
                self._wake(owner)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("a control client of session %s failed", key)
        finally:
            if req is not None:
                self._requests.pop(req.id, None)
                point = self._points.get(ident)
                if point is not None:
                    point.requests.discard(req.id)
            writer.close()
