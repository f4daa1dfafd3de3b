"""The control socket server inside the runtime: `crewtui ctl`, agents and attached dashboards talk to it.

A Unix socket (mode 0600) in the data dir, JSON lines (see protocol.py). Every verb of `crewtui.api.VERBS` maps
to the orchestrator method of the same name, so anything a script or an agent can do goes through the same API
the dashboard uses; the table says which verbs wait for a commit before answering and which a hang-up cancels.

`serve_as` serves a request that came from a session's own control socket on a Ray node (relayed by its host,
see `crewtui.runtime.drivers.ray_relay`) *as that session*: the session is where the request arrived, never
what it says, and a session may act only on itself and its descendants (spawn under itself, yield on its own
children, steer, answer, kill or retry its own), read anything, acquire permits; crew-wide verbs (sweep, cron
changes, resume, merge, discard, kill by prefix) and the `watch` stream are refused in one line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from pathlib import Path
from typing import Any

from crewtui.api import VERBS_BY_OP, Verb
from crewtui.control import protocol
from crewtui.errors import BadInput, Conflict, CrewError, NotFound, StoreError
from crewtui.locations import DataDir
from crewtui.runtime.orchestrator import Orchestrator

log = logging.getLogger("crewtui.control")

# Verbs a session reaching the runtime through its host's relay may not use: they act on the whole crew.
_CREW_VERBS = {"sweep", "cron_add", "cron_remove", "cron_trigger", "resume", "merge", "discard"}
# Verbs that act on the session a `ref` names: only the caller itself or one of its descendants.
_REF_VERBS = {"send", "answer", "kill", "retry"}


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
            except Exception:  # the client's connection broke: nothing is left to tell it
                log.debug("closing a control connection failed", exc_info=True)

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
            op, args = protocol.parse_request(line)
        except BadInput as exc:
            writer.write(protocol.err(exc))
            await writer.drain()
            return
        await self._ready.wait()
        if op == protocol.PING:
            writer.write(protocol.ok("pong"))
            await writer.drain()
            return
        verb = VERBS_BY_OP.get(op)
        if verb is None:
            ops = ", ".join(sorted([*VERBS_BY_OP, protocol.PING]))
            writer.write(protocol.err(BadInput(f"unknown op {op!r}; ops: {ops}")))
            await writer.drain()
            return
        if verb.stream:  # watch, the only stream
            await self._watch(reader, writer)
            return
        reply = await self._run(verb, args, reader)
        if reply is not None:
            writer.write(reply)
            await writer.drain()

    async def _call(self, verb: Verb, args: dict[str, Any]) -> bytes:
        try:
            result = await getattr(self.orch, verb.method)(**protocol.decode_args(verb, args))
            if not verb.read_only:
                try:
                    await self.orch.flush()
                except StoreError as exc:
                    raise StoreError(
                        f"{verb.op} was done, but the store has not recorded it yet: {exc.message}"
                    ) from None
            reply = protocol.ok(protocol.dump_result(result))
            if len(reply) > protocol.MAX_REPLY:
                # Never one unbounded line a client cannot read: say so instead.
                raise BadInput(
                    f"{verb.op}: the reply would be {len(reply) / (1 << 20):.0f} MiB, over the "
                    f"{protocol.MAX_REPLY >> 20} MiB a reply may be; ask for less (list: --limit and --before)"
                )
            return reply
        except CrewError as exc:
            return protocol.err(exc)
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:  # e.g. an unknown pool for acquire
            return protocol.err(protocol.args_error(verb.op, exc))

    async def _run(self, verb: Verb, args: dict[str, Any], reader: asyncio.StreamReader) -> bytes | None:
        work = asyncio.ensure_future(self._call(verb, args))
        if not verb.cancel_on_hangup:
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

    # ---------------------------------------------------------------------------------- as a session

    async def serve_as(self, key: str, line: bytes) -> bytes:
        """One request from session `key`'s own control socket on a Ray node, served as that session. A verb a
        hang-up cancels is cancelled with this call (the host reports the hang-up); any other runs to the end."""
        try:
            op, args = protocol.parse_request(line)
        except BadInput as exc:
            return protocol.err(exc)
        await self._ready.wait()
        if op == protocol.PING:
            return protocol.ok("pong")
        verb = VERBS_BY_OP.get(op)
        if verb is None:
            return protocol.err(BadInput(f"unknown op {op!r}; ops: {', '.join(sorted([*VERBS_BY_OP, protocol.PING]))}"))
        try:
            args = await self._as_session(key, verb, dict(args))
        except CrewError as exc:
            return protocol.err(exc)
        work = asyncio.ensure_future(self._call(verb, args))
        return await (work if verb.cancel_on_hangup else asyncio.shield(work))

    async def _as_session(self, key: str, verb: Verb, args: dict[str, Any]) -> dict[str, Any]:
        """The request's args with the caller's identity forced in; Conflict for what the session may not do."""
        me = await self.orch.get(key)
        who = f"session {me.label} ({key})"
        if verb.stream:
            raise Conflict(f"{verb.op}: refused to {who}: streams are not relayed from Ray nodes in this version")
        if verb.op in _CREW_VERBS or (verb.op == "kill" and args.get("prefix")):
            raise Conflict(f"{verb.op}: refused to {who}: it acts on the whole crew, which only its user may do")
        if verb.op == "spawn":
            args["parent"] = await self._own(key, who, args.get("parent") or key, "spawn under")
        elif verb.op == "yield":
            if args.get("parent") not in (None, key, me.label):
                raise Conflict(f"yield: refused to {who}: a session can only yield as itself")
            args["parent"] = key
            for child in args.get("children") or []:
                await self._own(key, who, child, "yield on", children_only=True)
        elif verb.op in _REF_VERBS:
            await self._own(key, who, args.get("ref"), verb.op)
        return args

    async def _own(self, key: str, who: str, ref: Any, doing: str, children_only: bool = False) -> str:
        """The key of `ref` if it is the caller or one of its descendants (a child, with children_only)."""
        if not isinstance(ref, str):
            raise BadInput("a session key or label is required")
        target = await self.orch.get(ref)
        found, up, hops = target.key, target.parent, 0
        if found == key and not children_only:
            return found
        while up is not None and hops < 1000:
            if up == key:
                return found
            if children_only:
                break
            try:
                up, hops = (await self.orch.get(up)).parent, hops + 1
            except NotFound:
                break
        raise Conflict(f"{doing} {target.label}: refused to {who}: a session acts only on itself and its descendants")
