"""`RayHostsDriver`: sessions on a Ray cluster in host mode (`[backend] mode = "host"`, the default).

One crewtui host per node (`ray_host.SessionHost`, a detached actor named after the node, placed there with
hard node affinity, taking no CPU) runs that node's sessions through the shim, as light as local ones. The
driver finds or creates a host on every live node (at connect, and as nodes join), and places each session:

- one that asks for resources holds a placement group of one bundle (`ray_place`): Ray picks the node, and
  that node's host runs it; the group goes when the session ends;
- one that asks for none goes to the least loaded host (fewest live sessions), among the nodes whose labels
  match those it asks for.

Per host, one pump task long-polls the host for every session's output and ends (`SessionHost.poll`) and
appends them to the session's local `stdout.log` / `stderr.log`, then writes its local `exit.json` (and
`result.json`), so the tailer, transcripts and results work as for local sessions. Offsets are the local
files' sizes, so a runtime that dies mid-batch resumes without losing or doubling a byte.

Faults: a host whose node dies takes its sessions with it (`lost`, naming the node; watchdogs retry them on
a live node); a host that dies on a live node is found again (Ray restarts it) or created again by name, and
re-adopts the shims still running there. Sessions an earlier runtime ran in actor mode are still re-adopted
(through `RayDriver`).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Collection
from pathlib import Path
from typing import Any

import crewtui
from crewtui.errors import Conflict, CrewError
from crewtui.locations import SessionDir
from crewtui.model import DriverKind
from crewtui.runtime.drivers import ray_place
from crewtui.runtime.drivers.base import (
    AdoptSpec,
    ExitInfo,
    LaunchSpec,
    Lost,
    Orphans,
    SessionHandle,
    check_steer,
    read_exit,
    write_json_atomic,
)
from crewtui.runtime.drivers.ray import RayDriver, actor_died, node_name
from crewtui.runtime.drivers.ray_host import HOST_PROTOCOL, SessionHost, host_name, owner_tag

log = logging.getLogger("crewtui.ray.hosts")

# One long poll returns after this long even when nothing happened (so a dead host is noticed).
_POLL_WAIT = 2.0
# After the first news, the host waits this long for more before answering: output travels in batches.
_LINGER = 0.05
_MAX_BATCH = 1 << 20  # per stream and session, in one reply
# A call that should answer at once (start, send, terminate): past this the host is taken to be in trouble.
_CALL_TIMEOUT = 30.0
# A host that cannot be reached while its node lives (restarting, re-adopting, overloaded) is waited for this long.
_UNREACHABLE_GRACE = 60.0
# The cluster's node list is read again at most this often when a session is placed (nodes join).
_NODES_EVERY = 10.0
# Between placements of a session whose host died before it started it (its node was dying).
_REPLACE_DELAY = 2.0
# A host's first start on a node may install crewtui's code there (Ray's runtime env): give it time.
_HOST_START_TIMEOUT = 120.0


class HostHandle(SessionHandle):
    """A session attempt run by a node's host; the host's pump delivers its output and its end here."""

    def __init__(self, link: HostLink, key: str, attempt: int, sd: SessionDir, pg: Any | None) -> None:
        self.key = key
        self.info = None
        self.node = link.node
        self.attempt = attempt
        self.dir = sd
        self.link = link
        self.pg = pg
        self.sizes = [_size(sd.stdout), _size(sd.stderr)]  # what the local copies hold: the offsets asked from
        self.done: asyncio.Future[ExitInfo | None] = asyncio.get_running_loop().create_future()

    def alive(self) -> bool:
        return not self.done.done()

    async def wait(self) -> ExitInfo | None:
        return await asyncio.shield(self.done)

    async def _ask(self, method: str, *args: Any, timeout: float = _CALL_TIMEOUT) -> Any:
        try:
            return await self.link.call(method, self.key, self.attempt, *args, timeout=timeout)
        except Exception as exc:
            raise Conflict(
                f"session {self.key}: its Ray host on node {self.node} did not answer ({_first_line(exc)})"
            ) from None

    async def send(self, line: str) -> None:
        check_steer(line)
        if not self.alive():
            raise Conflict(f"session {self.key} has ended; it cannot be steered")
        why = await self._ask("send", line)
        if why is not None:
            raise Conflict(f"session {self.key} could not be steered: {why}")

    async def close_input(self) -> None:
        if self.alive():
            await self._ask("close_input")

    async def terminate(self, grace: float) -> None:
        if not self.alive():
            return
        try:
            await self._ask("terminate", grace, timeout=grace + _CALL_TIMEOUT)
        except Conflict as exc:
            log.warning("%s", exc)
        try:
            await asyncio.wait_for(asyncio.shield(self.done), grace + 10.0)
        except TimeoutError:
            log.warning("session %s: its end did not come back from node %s after the kill", self.key, self.node)

    def detach(self) -> None:
        """Stop watching (the runtime is stopping); the session runs on under its host for the next runtime."""
        self.link.handles.pop(self.key, None)


class HostLink:
    """The runtime's side of one node's host: its actor handle, the sessions it runs for us, and the pump."""

    def __init__(self, driver: RayHostsDriver, node_id: str, node: str, actor: Any, others: int) -> None:
        self.driver = driver
        self.node_id = node_id
        self.node = node
        self.actor = actor
        self.others = others  # live sessions of other runtimes on it, when last asked
        self.labels: dict[str, str] = {}
        self.handles: dict[str, HostHandle] = {}
        self.forget: list[list[Any]] = []  # [key, attempt] of ends recorded here: the host may drop their files
        self.dead = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def load(self) -> int:
        return len(self.handles) + self.others

    async def call(self, method: str, *args: Any, timeout: float = _CALL_TIMEOUT) -> Any:
        return await asyncio.wait_for(getattr(self.actor, method).remote(self.driver.owner, *args), timeout)

    def add(self, handle: HostHandle) -> None:
        self.handles[handle.key] = handle
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._pump(), name=f"ray-host-{self.node}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _pump(self) -> None:
        """Copy output and ends until the host is gone with its node (or the runtime stops)."""
        loop = asyncio.get_running_loop()
        trouble_since: float | None = None
        while True:
            if not self.handles and not self.forget:
                self._wake.clear()
                await self._wake.wait()
                continue
            wanted = {k: [h.attempt, h.sizes[0], h.sizes[1]] for k, h in self.handles.items()}
            forget, self.forget = self.forget, []
            try:
                replies = await asyncio.wait_for(
                    self.actor.poll.remote(
                        self.driver.owner, wanted, forget, _POLL_WAIT if wanted else 0.0, _LINGER, _MAX_BATCH
                    ),
                    _POLL_WAIT + _CALL_TIMEOUT,
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.forget.extend(forget)
                trouble_since = trouble_since or loop.time()
                if not await self._recover(exc, loop.time() - trouble_since):
                    return
                continue
            trouble_since = None
            await self._deliver(replies)

    async def _deliver(self, replies: dict[str, dict[str, Any]]) -> None:
        writes: list[tuple[Path, bytes]] = []
        got = [(self.handles[k], r) for k, r in replies.items() if k in self.handles]
        for h, r in got:
            for i, (path, data) in enumerate(
                ((h.dir.stdout, r.get("out") or b""), (h.dir.stderr, r.get("err") or b""))
            ):
                if data:
                    writes.append((path, data))
                    h.sizes[i] += len(data)
                    self.driver.lines_in += data.count(b"\n")
        if writes:
            self.driver.batches += 1
            try:
                await asyncio.to_thread(_append, writes)
            except OSError as exc:  # a full disk: ask again from what the files really hold
                log.warning("node %s: output could not be written locally: %s", self.node, exc)
                for h, _ in got:
                    h.sizes = [_size(h.dir.stdout), _size(h.dir.stderr)]
                return
        for h, r in got:
            if r.get("exit") is not None:
                ended = r["exit"]
                await asyncio.to_thread(_record_end, h.dir, ended, r.get("result"))
                info = ExitInfo(code=ended.get("code"), signal=ended.get("signal"), ended_at=ended.get("ended_at"))
                await self.end(h, info)
            elif r.get("lost"):
                h.lost_reason = f"its Ray host on node {self.node} lost it: {r['lost']}"
                await self.end(h, None)

    async def end(self, h: HostHandle, info: ExitInfo | None) -> None:
        """The session's end is recorded (or it is lost): give back its resources, tell whoever waits."""
        self.handles.pop(h.key, None)
        self.forget.append([h.key, h.attempt])
        if h.pg is not None:
            await ray_place.remove(self.driver.ray, h.pg)
            h.pg = None
        if not h.done.done():
            h.done.set_result(info)

    async def _recover(self, exc: BaseException, elapsed: float) -> bool:
        """A poll failed: lose the sessions if the node is gone (or the host unreachable for too long), else
        find or start the host again (it re-adopts its shims) and go on. False when the link is over."""
        alive = await self.driver.node_alive(self.node_id)
        if alive is False:
            log.warning("node %s is gone: %d session(s) lost (%s)", self.node, len(self.handles), _first_line(exc))
            await self.lose_all(f"its Ray host on node {self.node} died with its node (the node went down)")
            return False
        if elapsed > _UNREACHABLE_GRACE:
            await self.lose_all(f"its Ray host on node {self.node} could not be reached for {elapsed:.0f}s")
            return False
        if actor_died(self.driver.ray, exc) or isinstance(exc, TimeoutError):
            log.warning("node %s: its host does not answer (%s); finding it again", self.node, _first_line(exc))
            try:
                self.actor = await self.driver.host_actor(self.node_id)
            except Exception as again:
                log.info("node %s: host not back yet: %s", self.node, _first_line(again))
        await asyncio.sleep(1.0)
        return True

    async def lose_all(self, reason: str) -> None:
        self.dead = True
        self.driver.links.pop(self.node_id, None)
        for h in list(self.handles.values()):
            h.lost_reason = reason
            await self.end(h, None)
        self.forget.clear()


class RayHostsDriver:
    """Places sessions on the hosts of a Ray cluster's nodes and follows them there."""

    kind: DriverKind = "ray"
    survives_restart = True

    def __init__(
        self, address: str = "auto", namespace: str = "crewtui", owner: str = "", start_timeout: float = 60.0
    ) -> None:
        # Joins the cluster, and runs what an earlier runtime started in actor mode.
        self.actors = RayDriver(address, namespace, owner=owner, start_timeout=start_timeout)
        # The hosts run this runtime's own crewtui code, shipped with the job (a node needs Ray and pydantic).
        pkg = Path(crewtui.__file__).parent
        self.actors.runtime_env = {"py_modules": [str(pkg)], "excludes": ["__pycache__", "*.pyc"]}
        self.ray = self.actors.ray
        self.namespace = namespace
        self.owner = self.actors.owner
        self.tag = owner_tag(self.owner)
        self.start_timeout = start_timeout
        self.links: dict[str, HostLink] = {}  # by node id
        self._host_cls: Any = None
        self._nodes: dict[str, dict[str, Any]] = {}
        self._nodes_at = -_NODES_EVERY
        self._linking: dict[str, asyncio.Task[HostLink]] = {}
        self._census: asyncio.Task[dict[str, tuple[HostLink, dict[str, Any]]]] | None = None
        # Output copied back from all hosts: batches (replies that carried output) and lines.
        self.batches = 0
        self.lines_in = 0

    # ---------------------------------------------------------------------------------- cluster

    async def connect(self) -> None:
        """Join the cluster and find or start a host on every live node."""
        await self.actors.connect()
        if self._host_cls is None:
            self._host_cls = self.ray.remote(SessionHost)
        await self.refresh_nodes(force=True)

    async def refresh_nodes(self, force: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if not force and loop.time() - self._nodes_at < _NODES_EVERY:
            return
        self._nodes_at = loop.time()
        nodes = await asyncio.to_thread(self.ray.nodes)
        self._nodes = {n["NodeID"]: n for n in nodes if n.get("Alive")}
        for node_id, link in list(self.links.items()):
            link.labels = dict(self._nodes.get(node_id, {}).get("Labels") or {})
        fresh = [node_id for node_id in self._nodes if node_id not in self.links]
        found = await asyncio.gather(*(self.link(node_id) for node_id in fresh), return_exceptions=True)
        for node_id, got in zip(fresh, found, strict=True):
            if isinstance(got, BaseException):
                log.warning("no crewtui host on node %s: %s", node_id[:6], _first_line(got))

    async def node_alive(self, node_id: str) -> bool | None:
        """Whether Ray holds the node alive (None if the cluster could not be asked)."""
        try:
            nodes = await asyncio.to_thread(self.ray.nodes)
        except Exception:
            return None
        return any(n.get("NodeID") == node_id and n.get("Alive") for n in nodes)

    async def host_actor(self, node_id: str) -> Any:
        """The node's host actor: found by name, or started there (pinned to the node, taking no CPU)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        actor = self._host_cls.options(
            name=host_name(node_id),
            namespace=self.namespace,
            lifetime="detached",
            get_if_exists=True,
            num_cpus=0,
            max_restarts=-1,  # killed or crashed on a live node: Ray starts it again there, and it re-adopts
            max_concurrency=1000,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(self.namespace, node_id)
        return actor

    async def link(self, node_id: str) -> HostLink:
        """The link to a node's host, made once (concurrent placements on a new node share the making)."""
        link = self.links.get(node_id)
        if link is not None and not link.dead:
            return link
        task = self._linking.get(node_id)
        if task is None or task.done():
            task = self._linking[node_id] = asyncio.create_task(self._make_link(node_id))
        return await asyncio.shield(task)

    async def _make_link(self, node_id: str) -> HostLink:
        actor = await self.host_actor(node_id)
        info = await asyncio.wait_for(actor.info.remote(), _HOST_START_TIMEOUT)
        if info.get("protocol") != HOST_PROTOCOL:
            raise CrewError(
                f"the crewtui host on Ray node {node_id[:6]} speaks protocol {info.get('protocol')}, this runtime "
                f"{HOST_PROTOCOL}: once its sessions have ended, remove it (ray kill {host_name(node_id)})"
            )
        where = info.get("ip") or (self._nodes.get(node_id) or {}).get("NodeManagerAddress")
        link = HostLink(self, node_id, node_name({"ip": where, "node_id": node_id}), actor, int(info.get("live", 0)))
        link.labels = dict((self._nodes.get(node_id) or {}).get("Labels") or {})
        self.links[node_id] = link
        return link

    def disconnect(self) -> None:
        self.actors.disconnect()

    async def close(self) -> None:
        await asyncio.gather(*(link.stop() for link in list(self.links.values())))
        await self.actors.close()

    # ---------------------------------------------------------------------------------- starting

    async def start(self, spec: LaunchSpec) -> HostHandle:
        """Place the attempt (a placement group if it asks for resources, else the least loaded host), have
        that node's host start it, and begin following it."""
        if self._host_cls is None:
            raise CrewError("the Ray backend is not connected")
        key, attempt = spec.key, spec.attempt
        sd = SessionDir(spec.dir.path.absolute())
        await asyncio.to_thread(_clear_local, sd)
        wanted = ray_place.bundle(spec.resources)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        placements = 0
        while True:
            placements += 1
            pg = None
            if wanted is not None and spec.resources is not None:
                name = ray_place.group_name(self.tag, key, attempt)
                old = await asyncio.to_thread(ray_place.find, self.ray, name)
                if old is not None:
                    await ray_place.remove(self.ray, old)
                pg, node_id = await ray_place.reserve(
                    self.ray, name, key, spec.resources, wanted, deadline - loop.time(), self.start_timeout
                )
                try:
                    link = await self.link(node_id)
                except Exception:
                    await ray_place.remove(self.ray, pg)
                    raise
            else:
                link = await self._least_loaded(key, ray_place.labels(spec.resources))
            cwd = str(spec.cwd) if spec.cwd is not None and Path(spec.cwd).absolute() != sd.path else None
            try:
                reply = await link.call(
                    "start",
                    key,
                    attempt,
                    list(spec.argv),
                    dict(spec.env),
                    cwd,
                    timeout=max(1.0, min(_CALL_TIMEOUT, deadline - loop.time())),
                )
            except Exception as exc:
                if pg is not None:
                    await ray_place.remove(self.ray, pg)
                # Placed on a node that died before Ray noticed (its heartbeats take ~15 s): place it again while
                # the start timeout allows. Its host never started it, so two copies never run side by side.
                if loop.time() + _REPLACE_DELAY < deadline and await self.node_alive(link.node_id) is not True:
                    log.warning(
                        "session %s: node %s is going away (placement %d); placing it again", key, link.node, placements
                    )
                    await link.lose_all(f"its Ray host on node {link.node} died with its node (the node went down)")
                    await asyncio.sleep(_REPLACE_DELAY)
                    continue
                raise CrewError(
                    f"session {key} did not start on Ray: its host on node {link.node} did not answer "
                    f"({_first_line(exc)})"
                ) from None
            if reply.get("error"):
                if pg is not None:
                    await ray_place.remove(self.ray, pg)
                raise CrewError(str(reply["error"]))
            handle = HostHandle(link, key, attempt, sd, pg)
            link.add(handle)
            return handle

    async def _least_loaded(self, key: str, selector: dict[str, str]) -> HostLink:
        await self.refresh_nodes()
        links = [ln for ln in self.links.values() if not ln.dead and ray_place.matches(ln.labels, selector)]
        if not links:
            where = f" with the labels {selector}" if selector else ""
            raise CrewError(f"session {key} did not start: no Ray node{where} has a crewtui host")
        return min(links, key=lambda ln: ln.load)

    # ---------------------------------------------------------------------------------- after a restart

    async def _hosted(self) -> dict[str, tuple[HostLink, dict[str, Any]]]:
        """What every host runs for this runtime (asked once per restart, whatever the number of sessions)."""
        if self._census is None:
            self._census = asyncio.create_task(self._take_census())
        return await asyncio.shield(self._census)

    async def _take_census(self) -> dict[str, tuple[HostLink, dict[str, Any]]]:
        links = [ln for ln in self.links.values() if not ln.dead]
        found = await asyncio.gather(
            *(ln.call("census", timeout=_HOST_START_TIMEOUT) for ln in links), return_exceptions=True
        )
        out: dict[str, tuple[HostLink, dict[str, Any]]] = {}
        for link, got in zip(links, found, strict=True):
            if isinstance(got, BaseException):
                log.warning("node %s: its host did not say what it runs: %s", link.node, _first_line(got))
                continue
            for key, entry in got.items():
                out[key] = (link, entry)
        return out

    async def adopt(self, spec: AdoptSpec) -> SessionHandle | ExitInfo | Lost | None:
        """After a restart: the recorded end, a handle on the session its host still has, or Lost."""
        sd = SessionDir(spec.dir.path.absolute())
        ended = await asyncio.to_thread(read_exit, sd)
        if ended is not None:
            return ended  # a host still holding it drops it in end_orphans
        hosted = (await self._hosted()).get(spec.key)
        if hosted is not None and hosted[1].get("attempt") == spec.attempt:
            link = hosted[0]
            pg = await asyncio.to_thread(
                ray_place.find, self.ray, ray_place.group_name(self.tag, spec.key, spec.attempt)
            )
            handle = HostHandle(link, spec.key, spec.attempt, sd, pg)
            link.add(handle)  # an end that came meanwhile arrives with the rest of its output
            return handle
        if await asyncio.to_thread(self.actors.lookup, spec.key) is not None:
            return await self.actors.adopt(spec)  # started in actor mode by an earlier runtime
        return Lost(
            "no crewtui host on a live Ray node has it (its node went down, or its host's files were removed) "
            "while no runtime was watching"
        )

    async def started(self, spec: AdoptSpec) -> bool:
        if spec.key in await self._hosted():
            return True
        return await self.actors.started(spec)

    async def end_orphans(self, known: Collection[str], live: Collection[str], grace: float, owner: str) -> Orphans:
        """Stop and drop what the hosts run for this runtime that the store does not call live (a spawn cut short
        by a crash, an end recorded just before one), and their placement groups."""
        self._census = None
        wanted = set(live)
        stray: dict[HostLink, list[str]] = {}
        for key, (link, _) in (await self._hosted()).items():
            if key not in wanted:
                stray.setdefault(link, []).append(key)
        stopped: list[str] = []
        for link, keys in stray.items():
            try:
                stopped += await link.call("discard", keys, grace, timeout=grace + _CALL_TIMEOUT * 2)
            except Exception as exc:
                log.warning("node %s: its host did not drop %d stray session(s): %s", link.node, len(keys), exc)
        self._census = None
        held = {
            ray_place.group_name(self.tag, h.key, h.attempt)
            for link in self.links.values()
            for h in link.handles.values()
            if h.pg is not None
        }
        for name in await asyncio.to_thread(ray_place.names_of, self.ray, self.tag):
            pg = None if name in held else await asyncio.to_thread(ray_place.find, self.ray, name)
            if pg is not None:
                await ray_place.remove(self.ray, pg)
        actors = await self.actors.end_orphans(known, live, grace, owner)
        return Orphans(stopped=stopped + actors.stopped, foreign=actors.foreign)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _append(writes: list[tuple[Path, bytes]]) -> None:
    for path, data in writes:
        with open(path, "ab") as fh:
            fh.write(data)


def _record_end(sd: SessionDir, ended: dict[str, Any], result: bytes | None) -> None:
    if result is not None:
        sd.result.write_bytes(result)
    write_json_atomic(sd.exit, sd.exit_tmp, ended)


def _clear_local(sd: SessionDir) -> None:
    sd.path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path in (sd.exit, sd.result, sd.exit_tmp, sd.pid):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    for path in (sd.stdout, sd.stderr):  # the local copies the host's output is appended to
        path.touch(mode=0o600)
