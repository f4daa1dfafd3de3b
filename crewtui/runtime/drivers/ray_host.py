"""`SessionHost`: the crewtui host, one detached Ray actor per node, running that node's sessions (host mode).

A session on a Ray node is as light as a local one: the host starts it with the same shim as `ProcessDriver`
(it *is* a `ProcessDriver`, with a node-local data dir `<tmp>/crewtui-<namespace>/<cluster>-<node>/`), so it
outlives the host, writes its output to files on the node and its end to `exit.json` there. The runtime talks to a host,
never to a session:

- `start`, `send`, `close_input`, `terminate`: one call each, acting through the session's `ProcessHandle`
  (a steer line into its stdin fifo, a kill of its whole process tree on the node);
- `poll`: one long poll per host and runtime returns every session's output past the offsets the runtime
  gives (its local copies' sizes, so nothing is lost or doubled across a runtime restart) and the ends, once
  their output is all shipped; a thousand sessions are a handful of calls, not a thousand;
- `census`: what the host runs for a runtime (a restarted runtime re-adopts from it);
- the control channel (`ray_relay.RelayPoint`): a session started with `relay` gets a socket of its own here as
  its `CREWTUI_SOCKET`; its requests ride the long poll to the runtime, which serves them as that session and
  hands the replies back with `answer`;
- the model gateway's door (`gateway.node.NodeGateway`): a session of a gateway pool started with a `gateway`
  route is pointed at a door this host serves on the node's 127.0.0.1; the door asks the runtime's gateway over
  the same poll before each model request goes out, and reports what it used.

A host that dies on a live node (killed, crashed) is started again, by Ray or by the runtime, under the same
name; it re-adopts the shims still running in its data dir (`ProcessDriver.adopt`), and a session whose shim
died meanwhile is reported lost. Sessions of several runtimes (owners) may share a host: each has a
directory of its own under the host's, and every call names its owner.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crewtui.errors import CrewError
from crewtui.gateway.node import NODE_BASE, NodeGateway, Route, encode
from crewtui.locations import DataDir, SessionDir
from crewtui.runtime.drivers.base import AdoptSpec, ExitInfo, LaunchSpec, exit_record, read_json
from crewtui.runtime.drivers.process import ProcessDriver, ProcessHandle
from crewtui.runtime.drivers.ray_relay import RelayPoint
from crewtui.runtime.watcher import OutputWatcher

log = logging.getLogger("crewtui.ray.host")

# A runtime and a host that disagree on this cannot work together (see `RayHostsDriver`).
HOST_PROTOCOL = 3  # 2: poll replies carry the sessions' control requests; 3: and the gateway door's
# How often a waiting poll looks for news (inotify marks the sessions that wrote; an end sets a flag).
_TICK = 0.05
# What one session's record says about it, beside the shim's files.
_META = "host.json"
_DOOR = "gateway.json"  # the port of the node's gateway door, kept for the next host (its agents hold the URL)
# Over crewtui's own limit (MAX_RESULT_BYTES): such a result is cut one byte past it, so the runtime says so.
_RESULT_READ = (16 << 20) + 1


def host_name(node_id: str) -> str:
    """The Ray actor name of a node's host, in the crew's namespace."""
    return f"crewtui-host-{node_id[:16]}"


def owner_tag(owner: str) -> str:
    """A short, path-safe name for a runtime (its host name and data dir)."""
    return hashlib.sha1(owner.encode()).hexdigest()[:12]


def _clean_env() -> dict[str, str]:
    """The host's environment minus what Ray set up for this worker (not the agent's business)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    if env.get("CUDA_VISIBLE_DEVICES") == "":  # Ray's "no GPU for this worker": the host's, not the session's
        del env["CUDA_VISIBLE_DEVICES"]
    return env


@dataclass
class _Hosted:
    """One session attempt on this node."""

    owner: str
    key: str
    attempt: int
    dir: SessionDir
    handle: ProcessHandle | None = None
    ended: bool = False
    exit: ExitInfo | None = None
    lost: str | None = None
    relay: bool = False  # the session's control socket is served here
    route: Route | None = None  # a session of a gateway pool: its door here

    @property
    def ident(self) -> str:
        return f"{owner_tag(self.owner)}/{self.key}"


class SessionHost:
    """A node's sessions. Wrapped with `ray.remote` by the driver; every method is async (one event loop)."""

    def __init__(self, namespace: str, node_id: str) -> None:
        self.namespace = namespace
        self.node_id = node_id
        # Named after the cluster (its GCS address) and the node: several nodes, even clusters, may share a machine.
        self.root = Path(tempfile.gettempdir()) / f"crewtui-{namespace}" / f"{_cluster_tag()}-{node_id[:16]}"
        for level in (self.root.parent, self.root):  # owner-only: it holds the sessions' output
            level.mkdir(exist_ok=True, mode=0o700)
        self.data_dir = DataDir(self.root)
        self.driver = ProcessDriver(data_dir=self.data_dir, base_env=_clean_env())
        self.sessions: dict[str, _Hosted] = {}  # by ident (owner tag / key)
        self.started_at = time.time()
        self.readopted = 0
        self._watcher: OutputWatcher | None = None
        self._sizes: dict[str, tuple[int, int]] = {}  # by ident: the sizes of stdout.log and stderr.log last seen
        self._unwatched: set[str] = set()  # sessions inotify cannot watch: looked at on every tick
        self._versions: dict[str, int] = {}  # by owner: bumped when a session starts, so a waiting poll returns
        self._pokes: dict[str, asyncio.Event] = {}  # by owner: set on such news, so the poll wakes at once
        self._loading: asyncio.Task[None] | None = None
        self._waiters: set[asyncio.Task[None]] = set()
        self.relay = RelayPoint(self._bump)
        self.door: NodeGateway | None = None
        self._door_lock = asyncio.Lock()

    def _bump(self, owner: str) -> None:
        self._versions[owner] = self._versions.get(owner, 0) + 1
        self._pokes.setdefault(owner, asyncio.Event()).set()

    # ---------------------------------------------------------------------------------- loading

    async def _ready(self) -> None:
        """Once per host life: watch for output, re-adopt what an earlier host of this node left running."""
        if self._loading is None:
            self._loading = asyncio.create_task(self._load())
        await asyncio.shield(self._loading)

    async def _load(self) -> None:
        self._watcher = OutputWatcher()
        self._watcher.start()
        found = await asyncio.to_thread(_scan, self.root)
        await asyncio.gather(*(self._readopt(rec) for rec in found))
        await self._sweep()

    async def _sweep(self) -> None:
        """Stop what the hosts of this cluster's dead nodes left on this machine: a raylet that died (OOM-killed,
        `ray stop`) took its host but not the shims, and those sessions were lost and retried elsewhere; run on,
        they would be unwatched copies forever."""
        try:
            import ray

            nodes = await asyncio.to_thread(ray.nodes)
        except Exception as exc:
            log.info("cannot list the cluster's nodes: %s", exc)
            return
        alive = {str(n.get("NodeID"))[:16] for n in nodes if n.get("Alive")}
        cluster = self.root.name.rpartition("-")[0]
        for d in sorted(self.root.parent.iterdir()):
            tag, _, node = d.name.rpartition("-")
            if d == self.root or tag != cluster or node in alive or not d.is_dir():
                continue
            left = ProcessDriver(data_dir=DataDir(d), base_env=self.driver.base_env)
            stopped = 0
            for rec in await asyncio.to_thread(_scan, d):
                found = await left.adopt(AdoptSpec(key=rec.key, attempt=rec.attempt, dir=rec.dir))
                if isinstance(found, ProcessHandle):
                    await found.terminate(2.0)
                    stopped += 1
            await left.close()
            shutil.rmtree(d, ignore_errors=True)
            log.warning("stopped %d session(s) that dead node %s left on this machine", stopped, node[:6])

    async def _readopt(self, rec: _Hosted) -> None:
        found = await self.driver.adopt(AdoptSpec(key=rec.key, attempt=rec.attempt, dir=rec.dir))
        self.sessions[rec.ident] = rec
        if isinstance(found, ProcessHandle):
            self.readopted += 1
            self._follow(rec, found)
            if rec.relay:  # the socket died with the earlier host: the same path is served again
                try:
                    await self.relay.serve(rec.ident, rec.owner, rec.key, rec.dir.path)
                except OSError as exc:
                    log.warning("session %s: its control socket could not be served again: %s", rec.key, exc)
            if rec.route is not None:  # so did its gateway door: served again on the same port
                try:
                    (await self._gateway()).open(rec.route)
                except OSError as exc:
                    log.warning("session %s: its gateway door could not be served again: %s", rec.key, exc)
        else:
            rec.ended = True
            rec.exit = found if isinstance(found, ExitInfo) else None
            if rec.exit is None:
                why = getattr(found, "reason", None) or "its shim died"
                rec.lost = f"{why} while the host on its node was down"

    def _follow(self, rec: _Hosted, handle: ProcessHandle) -> None:
        rec.handle = handle
        assert self._watcher is not None
        if not self._watcher.watch(rec.ident, rec.dir.path):
            self._unwatched.add(rec.ident)
        task = asyncio.create_task(self._wait(rec, handle), name=f"host-wait-{rec.key}")
        self._waiters.add(task)
        task.add_done_callback(self._waiters.discard)

    async def _wait(self, rec: _Hosted, handle: ProcessHandle) -> None:
        try:
            rec.exit = await handle.wait()
        except Exception as exc:  # the end must be reported whatever happened
            log.exception("waiting on %s failed", rec.key)
            rec.exit, handle.lost_reason = None, f"its host lost track of it: {exc}"
        if rec.exit is None:
            rec.lost = handle.lost_reason or "its shim died without an exit record"
        rec.ended = True
        self.relay.close(rec.ident)
        self._close_route(rec)

    def _get(self, owner: str, key: str, attempt: int) -> _Hosted | None:
        rec = self.sessions.get(f"{owner_tag(owner)}/{key}")
        return rec if rec is not None and rec.attempt == attempt else None

    # ---------------------------------------------------------------------------------- remote methods

    async def info(self) -> dict[str, Any]:
        try:
            import ray

            ip = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        except Exception:
            ip = None
        live = sum(1 for rec in self.sessions.values() if not rec.ended)
        return {
            "protocol": HOST_PROTOCOL,
            "node_id": self.node_id,
            "ip": ip,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "root": str(self.root),
            "live": live,
            "started_at": self.started_at,
            "gateway_port": self.door.port if self.door is not None else None,
        }

    async def start(
        self,
        owner: str,
        key: str,
        attempt: int,
        argv: list[str],
        env: dict[str, str],
        cwd: str | None,
        relay: bool = False,
        gateway: dict[str, str] | None = None,
        tty: list[int] | None = None,
    ) -> dict[str, Any]:
        """Start one attempt through the shim; its launch info, or {"error": why} if it did not start. With
        `relay`, the session's `CREWTUI_SOCKET` is a socket served here for it (see `ray_relay`); with `gateway`
        (its token and its pool's upstream), its model requests go through this node's gateway door; with `tty`
        ([rows, cols]), it is a terminal session under dtach on this node (see drivers/terminal.py)."""
        await self._ready()
        ident = f"{owner_tag(owner)}/{key}"
        old = self.sessions.get(ident)
        if old is not None and old.attempt == attempt and not old.ended and old.handle is not None:
            return {"agent_pid": old.handle.info.agent_pid if old.handle.info else None}  # a call made twice
        if old is not None and old.handle is not None and not old.ended:
            await old.handle.terminate(2.0)  # an earlier attempt must not run beside this one
        self._forget(ident)
        sd = SessionDir(self.root / owner_tag(owner) / key)
        route = Route(gateway["token"], owner, key, gateway["upstream"]) if gateway else None
        rec = _Hosted(owner, key, attempt, sd, relay=relay, route=route)
        try:
            if route is not None:  # the door's address in place of the stand-in the runtime wrote
                door = await self._gateway()
                door.open(route)
                env = {k: v.replace(NODE_BASE, door.url) for k, v in env.items()}
                argv = [a.replace(NODE_BASE, door.url) for a in argv]
            await asyncio.to_thread(self._prepare, rec)
            if cwd and not os.path.isdir(cwd):  # a path of the runtime's machine this node lacks: said, not ignored
                raise CrewError(f"session {key}: its cwd {cwd} is not a directory on {socket.gethostname()}")
            workdir = cwd or str(sd.path)
            # The agent's output dir is here on the node; its data dir is the host's (what containment looks for).
            env = {**env, "CREWTUI_OUTPUT_DIR": str(sd.path), "CREWTUI_DATA_DIR": str(self.data_dir.root)}
            if relay:
                env["CREWTUI_SOCKET"] = await self.relay.serve(ident, owner, key, sd.path)
            size = (int(tty[0]), int(tty[1])) if tty else None
            spec = LaunchSpec(
                key=key, label=key, attempt=attempt, dir=sd, argv=argv, env=env, cwd=Path(workdir), tty=size
            )
            handle = await self.driver.start(spec)
        except (CrewError, OSError) as exc:
            self.relay.close(ident)
            self._close_route(rec)
            shutil.rmtree(sd.path, ignore_errors=True)
            return {"error": str(exc)}
        self.sessions[ident] = rec
        self._follow(rec, handle)
        self._bump(owner)
        return {"agent_pid": handle.info.agent_pid if handle.info else None}

    @staticmethod
    def _prepare(rec: _Hosted) -> None:
        shutil.rmtree(rec.dir.path, ignore_errors=True)
        rec.dir.path.parent.mkdir(exist_ok=True, mode=0o700)
        rec.dir.path.mkdir(mode=0o700)
        meta = {"owner": rec.owner, "key": rec.key, "attempt": rec.attempt, "relay": rec.relay}
        if rec.route is not None:
            meta["gateway"] = rec.route.to_json()
        (rec.dir.path / _META).write_text(json.dumps(meta) + "\n")

    async def send(self, owner: str, key: str, attempt: int, line: str) -> str | None:
        """Write one steer line to the session's stdin fifo; None when written, else why not."""
        rec = self._get(owner, key, attempt)
        if rec is None or rec.handle is None or rec.ended:
            return "it has ended"
        try:
            await rec.handle.send(line)
        except CrewError as exc:
            return str(exc)
        return None

    async def close_input(self, owner: str, key: str, attempt: int) -> None:
        rec = self._get(owner, key, attempt)
        if rec is not None and rec.handle is not None and not rec.ended:
            await rec.handle.close_input()

    async def terminate(self, owner: str, key: str, attempt: int, grace: float) -> bool:
        """Stop the session's whole process tree on this node (SIGTERM, SIGKILL after `grace`); False if unknown."""
        await self._ready()
        rec = self._get(owner, key, attempt)
        if rec is None:
            return False
        if rec.handle is not None and not rec.ended:
            await rec.handle.terminate(grace)
        return True

    async def census(self, owner: str) -> dict[str, dict[str, Any]]:
        """This owner's sessions here: key -> attempt and whether it has ended."""
        await self._ready()
        tag = owner_tag(owner)
        return {
            rec.key: {"attempt": rec.attempt, "ended": rec.ended}
            for ident, rec in self.sessions.items()
            if ident.startswith(tag + "/")
        }

    async def discard(self, owner: str, keys: list[str], grace: float) -> list[str]:
        """Stop and remove sessions the runtime does not account for (a spawn cut short by a crash)."""
        await self._ready()
        tag, gone = owner_tag(owner), []
        for key in keys:
            rec = self.sessions.get(f"{tag}/{key}")
            if rec is None:
                continue
            if rec.handle is not None and not rec.ended:
                await rec.handle.terminate(grace)
                gone.append(key)
            self._forget(rec.ident)
        return gone

    async def poll(
        self,
        owner: str,
        wanted: dict[str, list[int]],
        forget: list[list[Any]],
        wait: float,
        linger: float,
        max_bytes: int,
        gen: str = "",
    ) -> dict[str, Any]:
        """Output past the given offsets (key -> [attempt, stdout offset, stderr offset]) of every session that
        has some, and the end of those whose output is all shipped; returns as soon as there is news (after a
        short linger that gathers more into the same reply), or after `wait` seconds.

        `forget` lists [key, attempt] whose end the runtime has recorded: their files here go. `gen` names the
        runtime's link (a new one after a restart). The reply: {"sessions": key -> output and end, "requests":
        [[id, key, line]] of the sessions' control requests, "cancel": [ids whose client hung up]}."""
        await self._ready()
        self.relay.attach(owner, gen)
        tag = owner_tag(owner)
        for key, attempt in forget:
            rec = self.sessions.get(f"{tag}/{key}")
            if rec is not None and rec.attempt == attempt and rec.ended:
                self._forget(rec.ident)
        version = self._versions.get(owner, 0)
        deadline = time.monotonic() + wait
        poke = self._pokes.setdefault(owner, asyncio.Event())
        while True:
            poke.clear()  # (before looking: what comes after the look sets it again)
            news = self._news(tag, wanted)
            asked = self.relay.has_news(owner)
            if news or asked or time.monotonic() >= deadline or self._versions.get(owner, 0) != version:
                break
            # Output is looked for every tick; a control or gateway request, or a new session, wakes it at once.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_TICK):
                    await poke.wait()
        if news and not asked and linger > 0 and not all(self._ended(tag, key) for key in news):
            await asyncio.sleep(linger)
            news = self._news(tag, wanted)
        sessions = await asyncio.to_thread(self._replies, tag, {k: wanted[k] for k in news}, max_bytes)
        requests, cancel = self.relay.take(owner, gen)
        return {"sessions": sessions, "requests": requests, "cancel": cancel}

    async def answer(self, owner: str, answers: list[list[Any]]) -> int:
        """The runtime's replies ([request id, reply line]) to its sessions' control requests."""
        return self.relay.answer(answers)

    async def leave(self, owner: str, gen: str) -> None:
        """The runtime whose link polled as `gen` stops: the requests it took fail, the next runtime takes the rest."""
        self.relay.leave(owner, gen)

    # ---------------------------------------------------------------------------------- gateway door

    async def _gateway(self) -> NodeGateway:
        """The node's gateway door, started on first use (on the port the last host of this node had)."""
        async with self._door_lock:
            if self.door is None:
                door = NodeGateway(self._ask_runtime)
                state = read_json(self.root / _DOOR)
                port = state.get("port") if isinstance(state, dict) else None
                await door.start(port if isinstance(port, int) else 0)
                (self.root / _DOOR).write_text(json.dumps({"port": door.port}) + "\n")
                self.door = door
            return self.door

    async def _ask_runtime(self, owner: str, key: str, op: dict[str, Any]) -> dict[str, Any]:
        reply = json.loads(await self.relay.ask(owner, key, encode(op)))
        return reply if isinstance(reply, dict) else {"ok": False, "error": {"message": "a reply that is not JSON"}}

    def _close_route(self, rec: _Hosted) -> None:
        if rec.route is not None and self.door is not None:
            self.door.close(rec.route.token)

    # ---------------------------------------------------------------------------------- polling

    def _refresh(self) -> None:
        """Update the sizes of the sessions inotify saw writing (and of those it cannot watch)."""
        assert self._watcher is not None
        for ident in self._watcher.take_dirty() | self._unwatched:
            rec = self.sessions.get(ident)
            if rec is not None:
                self._sizes[ident] = (_size(rec.dir.stdout), _size(rec.dir.stderr))

    def _news(self, tag: str, wanted: dict[str, list[int]]) -> list[str]:
        self._refresh()
        out = []
        for key, (attempt, out_off, err_off) in wanted.items():
            rec = self.sessions.get(f"{tag}/{key}")
            if rec is None or rec.attempt != attempt or self._over(rec):
                out.append(key)
                continue
            out_size, err_size = self._sizes.get(rec.ident, (0, 0))
            if out_size > out_off or err_size > err_off:
                out.append(key)
        return out

    def _ended(self, tag: str, key: str) -> bool:
        rec = self.sessions.get(f"{tag}/{key}")
        return rec is None or self._over(rec)

    def _over(self, rec: _Hosted) -> bool:
        """Ended, and its gateway door has told the runtime all it used (see `NodeGateway.busy`)."""
        return rec.ended and not (rec.route is not None and self.door is not None and self.door.busy(rec.route.token))

    def _replies(self, tag: str, wanted: dict[str, list[int]], max_bytes: int) -> dict[str, dict[str, Any]]:
        replies: dict[str, dict[str, Any]] = {}
        budget = max_bytes * 4  # the whole reply; each stream of a session carries at most max_bytes
        for key, (attempt, out_off, err_off) in wanted.items():
            rec = self.sessions.get(f"{tag}/{key}")
            if rec is None or rec.attempt != attempt:
                replies[key] = {"lost": "the crewtui host on its node does not know it (its files are gone)"}
                continue
            ended = self._over(rec)  # read before the files: output written before the end is then all there
            out, out_size = _slice(rec.dir.stdout, out_off, min(max_bytes, budget))
            budget -= len(out)
            err, err_size = _slice(rec.dir.stderr, err_off, max(0, min(max_bytes, budget)))
            budget -= len(err)
            reply: dict[str, Any] = {"out": out, "err": err}
            if ended and out_off + len(out) >= out_size and err_off + len(err) >= err_size:
                if rec.exit is not None:
                    reply["exit"] = exit_record(rec.exit)
                    reply["result"] = _read_head(rec.dir.result, _RESULT_READ)
                else:
                    reply["lost"] = rec.lost or "its shim died without an exit record"
            replies[key] = reply
            if budget <= 0:
                break
        return replies

    def _forget(self, ident: str) -> None:
        rec = self.sessions.pop(ident, None)
        self._sizes.pop(ident, None)
        self._unwatched.discard(ident)
        self.relay.close(ident)
        if rec is not None:
            self._close_route(rec)
        if self._watcher is not None:
            self._watcher.unwatch(ident)
        if rec is not None:
            if rec.handle is not None:
                rec.handle.detach()
            shutil.rmtree(rec.dir.path, ignore_errors=True)


def _cluster_tag() -> str:
    try:
        import ray

        address = str(ray.get_runtime_context().gcs_address)
    except Exception:
        address = "local"
    return hashlib.sha1(address.encode()).hexdigest()[:8]


def _scan(root: Path) -> list[_Hosted]:
    """The session records under a host's dir (one dir per owner, one per session in it)."""
    found = []
    for tagdir in root.iterdir() if root.is_dir() else []:
        if not tagdir.is_dir():
            continue
        for d in tagdir.iterdir():
            meta = read_json(d / _META)
            if not isinstance(meta, dict) or not isinstance(meta.get("attempt"), int):
                continue
            relay = meta.get("relay") is True
            route = Route.from_json(meta.get("gateway"))
            found.append(
                _Hosted(str(meta.get("owner")), d.name, meta["attempt"], SessionDir(d), relay=relay, route=route)
            )
    return found


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _slice(path: Path, start: int, most: int) -> tuple[bytes, int]:
    """Up to `most` bytes of a file from `start`, and the file's size."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if most <= 0 or size <= start:
                return b"", size
            fh.seek(start)
            return fh.read(min(most, size - start)), size
    except OSError:
        return b"", 0


def _read_head(path: Path, most: int) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(most)
    except OSError:
        return None
