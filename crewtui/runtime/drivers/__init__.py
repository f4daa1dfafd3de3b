"""How sessions run: one `Driver` per kind (process, callable, ray) behind one contract (`base.py`), and the
registry the runtime picks them from by `Session.driver`.

The Ray driver is optional and connected only when a crew (or a live session) needs it.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from crewtui.errors import CrewError
from crewtui.locations import DataDir
from crewtui.model import DriverKind
from crewtui.runtime.drivers.base import (
    DRIVER_KINDS,
    AdoptSpec,
    Driver,
    ExitInfo,
    LaunchInfo,
    LaunchSpec,
    Lost,
    Orphans,
    SessionHandle,
    read_exit,
    read_launch,
    validate_argv,
)
from crewtui.runtime.drivers.callable import AgentFn, CallableContext, CallableDriver, CallableHandle
from crewtui.runtime.drivers.process import ProcessDriver, ProcessHandle
from crewtui.runtime.drivers.procs import pid_alive_with_start, proc_start_time, raise_fd_limit

if TYPE_CHECKING:
    from crewtui.config import BackendConfig
    from crewtui.runtime.drivers.ray import RayDriver
    from crewtui.runtime.drivers.ray_hosts import RayHostsDriver
    from crewtui.runtime.drivers.ray_link import Relay


class Drivers:
    """The drivers of one runtime, by kind. A kind whose backend is not connected (Ray) has no driver."""

    def __init__(self, process: ProcessDriver, callable_: CallableDriver) -> None:
        self.process = process
        self.callable = callable_
        self.ray: RayDriver | RayHostsDriver | None = None
        # How a request from a session's control socket on a Ray node is served (the control server sets it):
        # with one, host mode gives each session a socket on its node; without, the runtime's own socket.
        self.relay: Relay | None = None
        self._by_kind: dict[DriverKind, Driver] = {"process": process, "callable": callable_}

    def get(self, kind: DriverKind) -> Driver | None:
        return self._by_kind.get(kind)

    def require(self, kind: DriverKind) -> Driver:
        """The driver of `kind`, or CrewError saying why there is none."""
        driver = self._by_kind.get(kind)
        if driver is None:
            raise CrewError(unavailable(kind))
        return driver

    def all(self) -> list[Driver]:
        return list(self._by_kind.values())

    async def connect_ray(self, backend: BackendConfig, data_dir: DataDir) -> None:
        """Join the Ray cluster: a host per node runs the sessions (mode "host"), or an actor each ("actor")."""
        from crewtui.runtime.drivers.ray import RayDriver
        from crewtui.runtime.drivers.ray_hosts import RayHostsDriver

        kind = RayHostsDriver if backend.mode == "host" else RayDriver
        ray = kind(
            backend.address,
            backend.namespace,
            owner=f"{socket.gethostname()}:{data_dir.root}",
            start_timeout=backend.start_timeout,
        )
        if isinstance(ray, RayHostsDriver):
            ray.relay = self.relay
        await ray.connect()
        self.ray = ray
        self._by_kind["ray"] = ray

    async def close(self) -> None:
        for driver in self.all():
            await driver.close()


def unavailable(kind: DriverKind) -> str:
    """Why sessions of `kind` cannot be run or reached by this runtime."""
    if kind == "ray":
        return "the crew no longer uses the Ray backend"
    return f"no {kind} driver in this runtime"


__all__ = [
    "DRIVER_KINDS",
    "AdoptSpec",
    "AgentFn",
    "CallableContext",
    "CallableDriver",
    "CallableHandle",
    "Driver",
    "DriverKind",
    "Drivers",
    "ExitInfo",
    "LaunchInfo",
    "LaunchSpec",
    "Lost",
    "Orphans",
    "ProcessDriver",
    "ProcessHandle",
    "SessionHandle",
    "pid_alive_with_start",
    "proc_start_time",
    "raise_fd_limit",
    "read_exit",
    "read_launch",
    "validate_argv",
]
