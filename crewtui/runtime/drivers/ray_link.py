"""The runtime's side of one crewtui host (host mode of the Ray backend): `HostLink` and its `HostHandle`s.

A `HostLink` holds the host actor of one node and the sessions it runs for this runtime; its pump long-polls
the host (`SessionHost.poll`) for every session's output and ends, appends the output to the sessions' local
`stdout.log` / `stderr.log` and writes their local `exit.json` (and `result.json`), so the tailer, transcripts
and results work as for local sessions. Offsets are the local files' sizes, so a runtime that dies mid-batch
resumes without losing or doubling a byte. A failed poll asks whether the node lives: if not, the sessions are
lost with the node named; if so, the host is found (or started) again, and it re-adopts its shims.

The same poll brings the sessions' control requests (`crewtui ctl` on the node, through the host's socket for
the session, see `ray_relay`): each is served by the driver's `relay` (the control server, as that session) in
a task of its own, so a blocking yield holds up nothing, and the replies go back in one `answer` call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from crewtui.errors import Conflict, first_line
from crewtui.locations import SessionDir
from crewtui.runtime.drivers import ray_place
from crewtui.runtime.drivers.base import ExitInfo, SessionHandle, check_steer, write_json_atomic
from crewtui.runtime.drivers.ray import actor_died
from crewtui.runtime.drivers.ray_relay import error_reply

log = logging.getLogger("crewtui.ray.hosts")

# One long poll returns after this long even when nothing happened (so a dead host is noticed).
_POLL_WAIT = 2.0
# After the first news, the host waits this long for more before answering: output travels in batches.
_LINGER = 0.05
_MAX_BATCH = 1 << 20  # per stream and session, in one reply
# A call that should answer at once (start, send, terminate): past this the host is taken to be in trouble.
CALL_TIMEOUT = 30.0
# A host that cannot be reached while its node lives (restarting, re-adopting, overloaded) is waited for this long.
_UNREACHABLE_GRACE = 60.0

# On stopping, how long the host is given to hear it (a dead one must not hold the stop up).
_LEAVE_TIMEOUT = 3.0
# Serves one control request of a session on a node, as that session: (session key, request line) -> reply line.
Relay = Callable[[str, bytes], Awaitable[bytes]]


class Hosts(Protocol):
    """What a link needs of its driver (`RayHostsDriver`)."""

    ray: Any
    owner: str
    links: dict[str, HostLink]
    batches: int
    lines_in: int
    relay: Relay | None
    gateway_door: Relay | None

    async def node_alive(self, node_id: str) -> bool | None: ...

    async def host_actor(self, node_id: str) -> Any: ...


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
        self.sizes = [size(sd.stdout), size(sd.stderr)]  # what the local copies hold: the offsets asked from
        self.done: asyncio.Future[ExitInfo | None] = asyncio.get_running_loop().create_future()

    def alive(self) -> bool:
        return not self.done.done()

    async def wait(self) -> ExitInfo | None:
        return await asyncio.shield(self.done)

    async def _ask(self, method: str, *args: Any, timeout: float = CALL_TIMEOUT) -> Any:
        try:
            return await self.link.call(method, self.key, self.attempt, *args, timeout=timeout)
        except Exception as exc:
            raise Conflict(
                f"session {self.key}: its Ray host on node {self.node} did not answer ({first_line(exc)})"
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
            try:
                await self._ask("close_input")
            except Conflict as exc:
                log.warning("%s", exc)

    async def terminate(self, grace: float) -> None:
        if not self.alive():
            return
        try:
            await self._ask("terminate", grace, timeout=grace + CALL_TIMEOUT)
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

    def __init__(self, driver: Hosts, node_id: str, node: str, actor: Any, others: int) -> None:
        self.driver = driver
        self.node_id = node_id
        self.node = node
        self.actor = actor
        self.others = others  # live sessions of other runtimes on it, when last asked
        self.labels: dict[str, str] = {}
        self.handles: dict[str, HostHandle] = {}
        self.forget: list[list[Any]] = []  # [key, attempt] of ends recorded here: the host may drop their files
        self.dead = False
        self._closed = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.gen = uuid.uuid4().hex  # this link's polls: a host fails what an earlier runtime took and never answered
        self.serving: dict[str, asyncio.Task[None]] = {}  # control requests being served, by id
        self._answers: list[list[Any]] = []
        self._answering: asyncio.Task[None] | None = None

    @property
    def load(self) -> int:
        return len(self.handles) + self.others

    async def call(self, method: str, *args: Any, timeout: float = CALL_TIMEOUT) -> Any:
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation that meets the answer.
        async with asyncio.timeout(timeout):
            return await getattr(self.actor, method).remote(self.driver.owner, *args)

    def add(self, handle: HostHandle) -> None:
        self.handles[handle.key] = handle
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._pump(), name=f"ray-host-{self.node}")

    async def stop(self) -> None:
        self._closed = True
        self._wake.set()
        polled = self._task is not None
        tasks = [t for t in (self._task, *self.serving.values()) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._answering is not None:  # replies already made still go out
            try:
                async with asyncio.timeout(_LEAVE_TIMEOUT):
                    await self._answering
            except Exception:  # a host that does not answer: the requests fail when the next runtime polls
                self._answering.cancel()
        if self.driver.relay is not None and polled and not self.dead:
            try:  # requests that arrive from now on wait for the next runtime; those we were serving fail
                await self.call("leave", self.gen, timeout=_LEAVE_TIMEOUT)
            except Exception as exc:
                log.info("node %s: its host was not told this runtime stops: %s", self.node, first_line(exc))

    async def _pump(self) -> None:
        """Copy output and ends until the host is gone with its node (or the runtime stops)."""
        loop = asyncio.get_running_loop()
        trouble_since: float | None = None
        while not self._closed:
            if not self.handles and not self.forget:
                self._wake.clear()
                await self._wake.wait()
                continue
            wanted = {k: [h.attempt, h.sizes[0], h.sizes[1]] for k, h in self.handles.items()}
            forget, self.forget = self.forget, []
            try:
                replies = await self.call(
                    "poll",
                    wanted,
                    forget,
                    _POLL_WAIT if wanted else 0.0,
                    _LINGER,
                    _MAX_BATCH,
                    self.gen,
                    timeout=_POLL_WAIT + CALL_TIMEOUT,
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
            self._serve(replies.get("requests") or [], replies.get("cancel") or [])
            await self._deliver(replies.get("sessions") or {})

    # ---------------------------------------------------------------------------------- control requests

    def _serve(self, requests: list[list[Any]], cancel: list[str]) -> None:
        for rid in cancel:  # the client hung up: stop waiting on its behalf (as the local server does)
            task = self.serving.pop(rid, None)
            if task is not None:
                task.cancel()
        for rid, key, line, *kind in requests:
            task = asyncio.create_task(self._one(rid, key, line, kind[0] if kind else "ctl"), name=f"ray-ctl-{key}")
            self.serving[rid] = task

    async def _one(self, rid: str, key: str, line: bytes, kind: str) -> None:
        serve = self.driver.gateway_door if kind == "gateway" else self.driver.relay
        try:
            if serve is None and kind == "gateway":  # (the door refuses the request: as a closed port would)
                reply = error_reply("not_found", "this crewtui runtime has no model gateway")
            elif serve is None:
                reply = error_reply(
                    "unavailable", "this crewtui runtime serves no control socket: sessions on Ray nodes cannot use it"
                )
            else:
                reply = await serve(key, line)
        except asyncio.CancelledError:
            return
        except Exception as exc:
            log.exception("a control request of session %s failed", key)
            reply = error_reply("unavailable", f"the request failed in the runtime: {first_line(exc)}")
        finally:
            self.serving.pop(rid, None)
        self._answers.append([rid, reply])
        if self._answering is None or self._answering.done():
            self._answering = asyncio.create_task(self._send_answers(), name=f"ray-answer-{self.node}")

    async def _send_answers(self) -> None:
        await asyncio.sleep(0)  # replies ready in the same turn go in the same call
        while self._answers:
            batch, self._answers = self._answers, []
            try:
                await self.call("answer", batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # its clients were on a host that died: nobody waits for these replies
                log.warning("node %s: %d control reply(ies) not delivered: %s", self.node, len(batch), first_line(exc))

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
                    h.sizes = [size(h.dir.stdout), size(h.dir.stderr)]
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
            log.warning("node %s is gone: %d session(s) lost (%s)", self.node, len(self.handles), first_line(exc))
            await self.lose_all(f"its Ray host on node {self.node} died with its node (the node went down)")
            return False
        if elapsed > _UNREACHABLE_GRACE:
            await self.lose_all(f"its Ray host on node {self.node} could not be reached for {elapsed:.0f}s")
            return False
        if actor_died(self.driver.ray, exc) or isinstance(exc, TimeoutError):
            log.warning("node %s: its host does not answer (%s); finding it again", self.node, first_line(exc))
            try:
                self.actor = await self.driver.host_actor(self.node_id)
            except Exception as again:
                log.info("node %s: host not back yet: %s", self.node, first_line(again))
        await asyncio.sleep(1.0)
        return True

    async def lose_all(self, reason: str) -> None:
        self.dead = True
        self.driver.links.pop(self.node_id, None)
        for h in list(self.handles.values()):
            h.lost_reason = reason
            await self.end(h, None)
        self.forget.clear()


def size(path: Path) -> int:
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
