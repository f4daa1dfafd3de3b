"""`RayHostsDriver`: sessions on a Ray cluster in host mode (`[backend] mode = "host"`, the default).

One crewtui host per node (`ray_host.SessionHost`, a detached actor named after the node, placed there with
hard node affinity, taking no CPU) runs that node's sessions through the shim, as light as local ones. The
driver finds or creates a host on every live node (at connect, and as nodes join), and places each session:

- one that asks for resources holds a placement group of one bundle (`ray_place`): Ray picks the node, and
  that node's host runs it; the group goes when the session ends;
- one that asks for none goes to the least loaded host (fewest live sessions), among the nodes whose labels
  match those it asks for.

Per host, one link (`ray_link.HostLink`) long-polls the host for every session's output and ends and copies
them into the sessions' local dirs, so the tailer, transcripts and results work as for local sessions.

Control channel: with a `relay` (the runtime's control server, set before `connect`), every session's
`CREWTUI_SOCKET` is a socket its host serves on its node (`ray_relay`); its requests ride the link's long poll
and are served by the relay as that session. Without one, sessions get the runtime's own socket, as before.

Faults: a host whose node dies takes its sessions with it (`lost`, naming the node; watchdogs retry them on
a live node); a host that dies on a live node is found again (Ray restarts it) or created again by name, and
re-adopts the shims still running there. Sessions an earlier runtime ran in actor mode are still re-adopted
(through `RayDriver`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from pathlib import Path
from typing import Any

import crewtui
from crewtui.errors import CrewError, first_line
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
    read_exit,
)
from crewtui.runtime.drivers.ray import RayDriver, node_name
from crewtui.runtime.drivers.ray_host import HOST_PROTOCOL, SessionHost, host_name, owner_tag
from crewtui.runtime.drivers.ray_link import CALL_TIMEOUT, HostHandle, HostLink, Relay

log = logging.getLogger("crewtui.ray.hosts")

# The cluster's node list is read again at most this often when a session is placed (nodes join).
_NODES_EVERY = 10.0
# Between placements of a session whose host died before it started it (its node was dying).
_REPLACE_DELAY = 2.0
# A host's first start on a node may install crewtui's code there (Ray's runtime env): give it time.
_HOST_START_TIMEOUT = 120.0
# How long a runtime's start waits for the hosts it is finding or starting (a dying node's never answers).
_SETTLE = 30.0


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
        self.relay: Relay | None = None
        # How a request of a node's gateway door is served (the runtime's Metering sets it when it has a gateway).
        self.gateway_door: Relay | None = None

    # ---------------------------------------------------------------------------------- cluster

    async def connect(self) -> None:
        """Join the cluster and find or start a host on every live node (waiting a little for them)."""
        await self.actors.connect()
        if self._host_cls is None:
            self._host_cls = self.ray.remote(SessionHost)
        await self.refresh_nodes(force=True)
        await self.settle(_SETTLE)

    async def refresh_nodes(self, force: bool = False) -> None:
        """Read the cluster's live nodes (at most every few seconds) and start finding a host on each new one."""
        loop = asyncio.get_running_loop()
        if not force and loop.time() - self._nodes_at < _NODES_EVERY:
            return
        self._nodes_at = loop.time()
        nodes = await asyncio.to_thread(self.ray.nodes)
        self._nodes = {n["NodeID"]: n for n in nodes if n.get("Alive")}
        for node_id in self._nodes:
            link = self.links.get(node_id)
            if link is None or link.dead:
                self._linking_task(node_id)
            else:
                link.labels = dict(self._nodes[node_id].get("Labels") or {})

    async def settle(self, timeout: float) -> None:
        """Wait, at most `timeout` seconds, for the hosts being found or started (a dying node's never answers)."""
        pending = [t for t in self._linking.values() if not t.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    async def node_alive(self, node_id: str) -> bool | None:
        """Whether the node lives (None if the cluster could not be asked). Ray calls a node dead after ~15 s of
        missed heartbeats; a node whose raylet refuses connections is dead already (its workers, the host among
        them, die with their raylet)."""
        try:
            nodes = await asyncio.to_thread(self.ray.nodes)
        except Exception:
            return None
        node = next((n for n in nodes if n.get("NodeID") == node_id), None)
        if node is None or not node.get("Alive"):
            return False
        address, port = node.get("NodeManagerAddress"), node.get("NodeManagerPort")
        if address and port:
            try:
                async with asyncio.timeout(2.0):
                    _, writer = await asyncio.open_connection(address, int(port))
                writer.close()
            except ConnectionRefusedError:
                return False
            except (OSError, TimeoutError, ValueError):
                pass  # unreachable is not dead (a slow network): Ray's heartbeats decide
        return True

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
        return await asyncio.shield(self._linking_task(node_id))

    def _linking_task(self, node_id: str) -> asyncio.Task[HostLink]:
        task = self._linking.get(node_id)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._linking[node_id] = asyncio.create_task(self._make_link(node_id), name=f"ray-host-{node_id}")
            task.add_done_callback(_said_why)
        return task

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
        log.info("node %s: its host (pid %s) runs %d session(s)", link.node, info.get("pid"), link.others)
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
        env = dict(spec.env)
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
                log.info("session %s: Ray placed its resources on node %s", key, node_id[:6])
                try:
                    link = await self.link(node_id)
                    if wanted.get("GPU"):
                        env["CUDA_VISIBLE_DEVICES"] = await ray_place.gpu_ids(
                            self.ray, pg, key, wanted["GPU"], deadline - loop.time()
                        )
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
                    env,
                    cwd,
                    self.relay is not None,
                    spec.gateway,
                    list(spec.tty) if spec.tty else None,
                    timeout=max(1.0, min(CALL_TIMEOUT, deadline - loop.time())),
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
                # The host may have started it just before it died: the one that comes back must not run it.
                try:
                    await link.call("discard", [key], 1.0, timeout=CALL_TIMEOUT)
                except Exception as again:
                    log.warning("session %s: its host on node %s could not drop it: %s", key, link.node, again)
                raise CrewError(
                    f"session {key} did not start on Ray: its host on node {link.node} did not answer "
                    f"({first_line(exc)})"
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
        if not links:  # hosts still starting (a first node, one that just joined): wait for them
            await self.settle(self.start_timeout)
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
        await self.settle(_SETTLE)
        links = [ln for ln in self.links.values() if not ln.dead]
        found = await asyncio.gather(
            *(ln.call("census", timeout=_HOST_START_TIMEOUT) for ln in links), return_exceptions=True
        )
        out: dict[str, tuple[HostLink, dict[str, Any]]] = {}
        for link, got in zip(links, found, strict=True):
            if isinstance(got, BaseException):
                log.warning("node %s: its host did not say what it runs: %s", link.node, first_line(got))
                continue
            for key, entry in got.items():
                out[key] = (link, entry)
            # The host counted ours among its live sessions: the handles count them from now on.
            link.others = max(0, link.others - sum(1 for entry in got.values() if not entry.get("ended")))
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
                stopped += await link.call("discard", keys, grace, timeout=grace + CALL_TIMEOUT * 2)
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


def _said_why(task: asyncio.Task[HostLink]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("no crewtui host on Ray node %s: %s", task.get_name().rpartition("-")[2][:6], first_line(exc))


def _clear_local(sd: SessionDir) -> None:
    sd.path.mkdir(parents=True, exist_ok=True, mode=0o700)
    for path in (sd.exit, sd.result, sd.exit_tmp, sd.pid):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    for path in (sd.stdout, sd.stderr):  # the local copies the host's output is appended to
        path.touch(mode=0o600)
