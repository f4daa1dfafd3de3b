"""`RayDriver`: sessions as Ray actors on a cluster, behind the same handle contract as `ProcessDriver`.

The runtime stays the control plane (store, scheduler, watchdogs, limits, UI); Ray only places and runs the
session processes. Each session attempt is one detached actor (`ray_actor.SessionActor`) named after the
session key in the crew's Ray namespace, so it outlives the dashboard and a restarted runtime finds it by
name. Its output comes back in batches through a long-polling `read` and is appended to the session's local
`stdout.log` / `stderr.log`, so the tailer, the transcript and `find_result` work unchanged; the end is
written as a local `exit.json` (and `result.json`) before the actor is killed. Offsets are the local file
sizes, so a runtime that dies mid-batch resumes without losing or doubling a byte.

Ray is optional (`pip install 'crewtui[ray]'`) and imported only when a crew asks for it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Collection
from typing import Any

from crewtui.config import RAY_MISSING
from crewtui.errors import BadInput, Conflict, CrewError
from crewtui.locations import SessionDir
from crewtui.model import DriverKind
from crewtui.runtime.drivers.base import (
    AdoptSpec,
    ExitInfo,
    LaunchSpec,
    Orphans,
    SessionHandle,
    check_steer,
    read_exit,
    write_json_atomic,
)

log = logging.getLogger("crewtui.ray")


# One long poll returns after this long even when nothing happened (so a dead actor is noticed).
_POLL_WAIT = 2.0
# After the first new line, wait this long for more before answering: lines travel in batches.
_LINGER = 0.05
_MAX_BATCH = 1 << 20
# Between placements of an actor that died before it started (its node was dying).
_REPLACE_DELAY = 2.0
# A transiently unreachable actor (network blip, node under load) is retried this long before it is lost.
_UNAVAILABLE_GRACE = 30.0


# How long joining the cluster may take before the runtime gives up with a clear message.
_CONNECT_TIMEOUT = 60.0


def import_ray() -> Any:
    """The `ray` module, or one clear CrewError saying how to install it."""
    # Ray's C++ core logs warnings straight to fd 2, which is the dashboard's screen: only errors there.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
    try:
        import ray
    except ImportError:
        raise CrewError(RAY_MISSING) from None
    return ray


def actor_died(ray: Any, exc: BaseException) -> bool:
    """True if `exc` says the actor is gone for good (as opposed to briefly unreachable)."""
    errors = ray.exceptions
    unavailable = getattr(errors, "ActorUnavailableError", None)
    if unavailable is not None and isinstance(exc, unavailable):
        return False
    return isinstance(exc, (errors.RayActorError, getattr(errors, "ActorDiedError", errors.RayActorError)))


def node_name(info: dict[str, Any]) -> str:
    """How a node is shown: its address and the start of its Ray node id (several nodes may share a host)."""
    where = info.get("ip") or info.get("host") or "?"
    node_id = info.get("node_id")
    return f"{where}/{node_id[:6]}" if node_id else where


class RayHandle(SessionHandle):
    """A session attempt running in a Ray actor; a pump task copies its output here in batches."""

    def __init__(self, driver: RayDriver, key: str, attempt: int, sd: SessionDir, actor: Any, node: str | None) -> None:
        self.key = key
        self.info = None
        self.node = node
        self.attempt = attempt
        self.dir = sd
        self._driver = driver
        self._ray = driver.ray
        self.actor = actor
        self._pump_task: asyncio.Task[ExitInfo | None] | None = None

    def start_pump(self) -> None:
        self._pump_task = asyncio.create_task(self._pump(), name=f"ray-pump-{self.key}")

    async def _pump(self) -> ExitInfo | None:
        """Copy output until the actor reports the end; return the exit, or None if the actor was lost."""
        out_path, err_path = self.dir.stdout, self.dir.stderr
        unavailable_since: float | None = None
        loop = asyncio.get_running_loop()
        with open(out_path, "ab") as out_f, open(err_path, "ab") as err_f:
            while True:
                try:
                    batch = await self.actor.read.remote(out_f.tell(), err_f.tell(), _POLL_WAIT, _LINGER, _MAX_BATCH)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    if actor_died(self._ray, exc):
                        log.warning("session %s: its Ray actor died: %s", self.key, str(exc).splitlines()[0][:300])
                        self.lost_reason = (
                            f"its Ray actor on node {self.node} died (the node went down, or the actor was killed)"
                        )
                        return None
                    now = loop.time()
                    unavailable_since = unavailable_since or now
                    if now - unavailable_since > _UNAVAILABLE_GRACE:
                        log.warning(
                            "session %s: its Ray actor has been unreachable for %.0fs: %s",
                            self.key,
                            now - unavailable_since,
                            exc,
                        )
                        self.lost_reason = (
                            f"its Ray actor on node {self.node} could not be reached for {_UNAVAILABLE_GRACE:g}s"
                        )
                        return None
                    await asyncio.sleep(1.0)
                    continue
                unavailable_since = None
                for data, fh in ((batch["out"], out_f), (batch["err"], err_f)):
                    if data:
                        fh.write(data)
                        fh.flush()
                if batch["out"] or batch["err"]:
                    self._driver.batches += 1
                    self._driver.lines_in += batch["out"].count(b"\n") + batch["err"].count(b"\n")
                ended = batch.get("exit")
                if ended is not None:
                    await asyncio.to_thread(self._record_end, ended, batch.get("result"))
                    await self._driver.dispose(self.actor)
                    return ExitInfo(code=ended.get("code"), signal=ended.get("signal"), ended_at=ended.get("ended_at"))

    def _record_end(self, ended: dict[str, Any], result: bytes | None) -> None:
        if result is not None:
            self.dir.result.write_bytes(result)
        write_json_atomic(self.dir.exit, self.dir.exit_tmp, ended)

    def alive(self) -> bool:
        return self._pump_task is not None and not self._pump_task.done()

    async def wait(self) -> ExitInfo | None:
        assert self._pump_task is not None
        return await asyncio.shield(self._pump_task)

    async def send(self, line: str) -> None:
        data = check_steer(line)
        if not self.alive():
            raise Conflict(f"session {self.key} has ended; it cannot be steered")
        try:
            why = await self.actor.send.remote(data)
        except Exception as exc:
            raise Conflict(
                f"session {self.key} could not be steered: its Ray actor is gone ({type(exc).__name__})"
            ) from None
        if why is not None:
            raise Conflict(f"session {self.key} could not be steered: {why}")

    async def terminate(self, grace: float) -> None:
        try:
            await self.actor.terminate.remote(grace)
        except Exception as exc:
            log.info("terminate %s: %s", self.key, exc)
            self._driver.kill_actor(self.actor)
        if self._pump_task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._pump_task), timeout=grace + 10.0)
            except TimeoutError:
                self._driver.kill_actor(self.actor)

    def detach(self) -> None:
        """Stop watching (the runtime is stopping); the actor and its agent run on for the next runtime."""
        if self._pump_task is not None:
            self._pump_task.cancel()


class RayDriver:
    """Starts, re-adopts and stops session actors on the Ray cluster at `address`."""

    kind: DriverKind = "ray"
    survives_restart = True

    def __init__(
        self, address: str = "auto", namespace: str = "crewtui", owner: str = "", start_timeout: float = 60.0
    ) -> None:
        self.ray = import_ray()
        self.address = address
        self.namespace = namespace
        self.owner = owner or socket.gethostname()
        self.start_timeout = start_timeout
        self.runtime_env: dict[str, Any] | None = None  # the job's (host mode ships crewtui's code with it)
        self._actor_cls: Any = None
        # Output copied back from all actors: batches (remote calls that carried output) and lines.
        self.batches = 0
        self.lines_in = 0

    async def connect(self) -> None:
        """Join the cluster as a driver (in a worker thread: ray.init blocks for a while)."""
        ray = self.ray
        if ray.is_initialized():
            self._actor_cls = self._actor_cls or self._make_actor_class()
            return
        await self._check_reachable()
        # Not in the main thread: there ray.init would install a SIGTERM handler that exits the process,
        # taking the runtime's own clean shutdown away. Off the main thread it only says so: hush that.
        logging.getLogger("ray._private.worker").setLevel(logging.ERROR)
        try:
            await asyncio.wait_for(
                asyncio.to_thread(
                    ray.init,
                    address=self.address,
                    namespace=self.namespace,
                    runtime_env=self.runtime_env,
                    log_to_driver=False,
                    logging_level=logging.WARNING,
                    configure_logging=False,
                ),
                _CONNECT_TIMEOUT,
            )
        except TimeoutError:
            raise CrewError(
                f"cannot reach the Ray cluster at {self.address!r}: no answer within {_CONNECT_TIMEOUT:g}s"
            ) from None
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CrewError(f"cannot reach the Ray cluster at {self.address!r}: {first}") from None
        self._actor_cls = self._make_actor_class()

    async def _check_reachable(self) -> None:
        """A wrong HOST:PORT makes ray.init retry for minutes; a plain TCP connect tells at once."""
        if self.address == "auto":
            return
        host, _, port = self.address.removeprefix("ray://").rpartition(":")
        host = host.strip("[]")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5.0)
        except (OSError, TimeoutError, ValueError) as exc:
            if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
                why = "no answer within 5s"
            elif isinstance(exc, ConnectionRefusedError):
                why = "Connection refused"
            else:
                why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise CrewError(
                f"cannot reach the Ray cluster at {self.address!r}: {why} (is `ray start --head` running there?)"
            ) from None
        writer.close()

    def _make_actor_class(self) -> Any:
        from crewtui.runtime.drivers import ray_actor

        # Ship the actor's module by value: cluster nodes need Ray and the agents' programs, not crewtui.
        try:
            self.ray.cloudpickle.register_pickle_by_value(ray_actor)
        except Exception:
            pass
        return self.ray.remote(ray_actor.SessionActor)

    def disconnect(self) -> None:
        if self.ray.is_initialized():
            self.ray.shutdown()

    async def close(self) -> None:
        await asyncio.to_thread(self.disconnect)

    def actor_options(self, key: str, resources: Any | None) -> dict[str, Any]:
        opts: dict[str, Any] = {
            "name": key,
            "namespace": self.namespace,
            "lifetime": "detached",
            "max_restarts": 0,
            "max_concurrency": 8,
            # An agent mostly waits on a model; by default it takes no CPU slot (like a local process).
            "num_cpus": 0,
        }
        if resources is not None:
            opts.update(resources.ray_options())
        return opts

    async def start(self, spec: LaunchSpec) -> RayHandle:
        """Create the session's actor, wait until its agent has started, and begin copying its output."""
        if self._actor_cls is None:
            raise CrewError("the Ray backend is not connected")
        key, attempt = spec.key, spec.attempt
        sd = SessionDir(spec.dir.path.absolute())
        sd.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        for path in (sd.exit, sd.result, sd.exit_tmp, sd.pid):
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        # The actor's node-local files and the result an agent writes carry the session dir's names.
        files = {"stdout": SessionDir.STDOUT, "stderr": SessionDir.STDERR, "result": SessionDir.RESULT}
        opts = self.actor_options(key, spec.resources)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.start_timeout
        placements = 0
        while True:
            await self._free_name(key)
            try:
                actor = self._actor_cls.options(**opts).remote(
                    key, attempt, self.owner, list(spec.argv), dict(spec.env), files
                )
            except ValueError as exc:
                raise BadInput(f"Ray refused the actor for {key}: {exc}") from None
            placements += 1
            try:
                info = await asyncio.wait_for(actor.info.remote(), max(0.1, deadline - loop.time()))
                break
            except TimeoutError:
                self.kill_actor(actor)
                wanted = {
                    k: v
                    for k, v in opts.items()
                    if k in ("num_cpus", "num_gpus", "memory", "resources", "label_selector")
                }
                raise CrewError(
                    f"session {key} did not start: no Ray node took it within {self.start_timeout:g}s "
                    f"(asked for {wanted})"
                ) from None
            except Exception as exc:
                self.kill_actor(actor)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                # Placed on a node that died before Ray noticed (that takes its heartbeats, ~15 s): place it
                # again while the start timeout allows. An agent that had started there died with its actor
                # (PR_SET_PDEATHSIG) before the session was running, so two copies never run side by side.
                if actor_died(self.ray, exc) and loop.time() + _REPLACE_DELAY < deadline:
                    log.warning(
                        "session %s: its actor died before starting (placement %d): %s; placing it again",
                        key,
                        placements,
                        first,
                    )
                    await asyncio.sleep(_REPLACE_DELAY)
                    continue
                raise CrewError(
                    f"session {key} did not start on Ray after {placements} placement"
                    f"{'s' if placements != 1 else ''}: {first}"
                ) from None
        handle = RayHandle(self, key, attempt, sd, actor, node_name(info))
        handle.start_pump()
        return handle

    async def _free_name(self, key: str) -> None:
        """An earlier attempt's actor may still hold the name (it is killed once its end is recorded)."""
        for _ in range(50):
            try:
                old = self.ray.get_actor(key, namespace=self.namespace)
            except ValueError:
                return
            self.kill_actor(old)
            await asyncio.sleep(0.1)
        raise CrewError(f"session {key}: an earlier Ray actor with its name would not go away")

    async def adopt(self, spec: AdoptSpec) -> RayHandle | ExitInfo | None:
        """After a restart: the recorded end, the live actor (as a handle), or None if it is gone (lost)."""
        key, attempt = spec.key, spec.attempt
        sd = SessionDir(spec.dir.path.absolute())
        ended = read_exit(sd)
        actor = self.lookup(key)
        if ended is not None:
            if actor is not None:
                await self.dispose(actor)  # its end was recorded just before the last runtime died
            return ended
        if actor is None:
            return None
        try:
            info = await asyncio.wait_for(actor.info.remote(), 30.0)
        except Exception as exc:
            log.warning("re-adopt %s: its actor does not answer: %s", key, exc)
            return None
        if info.get("attempt") != attempt or info.get("owner") != self.owner:
            log.warning(
                "re-adopt %s: the actor by that name is attempt %s of %s, not attempt %s of ours; stopping it",
                key,
                info.get("attempt"),
                info.get("owner"),
                attempt,
            )
            if info.get("owner") == self.owner:
                self.kill_actor(actor)
            return None
        handle = RayHandle(self, key, attempt, sd, actor, node_name(info))
        handle.start_pump()
        return handle

    async def started(self, spec: AdoptSpec) -> bool:
        return self.lookup(spec.key) is not None

    def lookup(self, key: str) -> Any | None:
        try:
            return self.ray.get_actor(key, namespace=self.namespace)
        except ValueError:
            return None

    async def end_orphans(self, known: Collection[str], live: Collection[str], grace: float, owner: str) -> Orphans:
        """Kill this runtime's actors whose session is not live in the store (a spawn cut short by a crash)."""
        wanted = set(live)
        try:
            names = await asyncio.to_thread(self.ray.util.list_named_actors, False)
        except Exception as exc:
            log.warning("cannot list Ray actors: %s", exc)
            return Orphans()
        ended = []
        for name in names:
            if name in wanted:
                continue
            actor = self.lookup(name)
            if actor is None:
                continue
            try:
                info = await asyncio.wait_for(actor.info.remote(), 10.0)
            except Exception:
                continue
            if info.get("owner") == self.owner:
                await self._stop_actor(actor)
                ended.append(name)
        return Orphans(stopped=ended)

    async def _stop_actor(self, actor: Any) -> None:
        try:
            await asyncio.wait_for(actor.terminate.remote(1.0), 15.0)
        except Exception:
            pass
        await self.dispose(actor)

    async def dispose(self, actor: Any) -> None:
        """Remove an actor whose end is recorded: its node-local files, then the actor itself."""
        try:
            await asyncio.wait_for(actor.cleanup.remote(), 10.0)
        except Exception:
            pass
        self.kill_actor(actor)

    def kill_actor(self, actor: Any) -> None:
        try:
            self.ray.kill(actor, no_restart=True)
        except Exception as exc:
            log.info("ray.kill: %s", exc)
