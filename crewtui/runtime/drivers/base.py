"""The driver contract: how the runtime starts, re-adopts, steers and stops a session, whatever runs it.

A driver turns a `LaunchSpec` into a `SessionHandle` (start) and, after a runtime restart, a stored attempt
back into a handle, its recorded end, or nothing (adopt). A handle is what the runtime holds while a session
runs: wait for the end, write one steer line, terminate. Every driver writes the same session dir layout
(`SessionDir`: stdout.log, stderr.log, exit.json, result.json), so tailing, results and retries never ask
which driver ran a session.

What plugs in around it: an adapter adds argv and env to the spec and parses the output the tailer reads; a
workspace sets `cwd`; a gateway pool's session gets its base URL in env; a terminal session is still the
process driver, with `LaunchSpec.tty` set (drivers/terminal.py).
"""

from __future__ import annotations

import json
import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from crewtui.errors import BadInput
from crewtui.locations import SessionDir
from crewtui.model import MAX_STEER_BYTES, DriverKind

if TYPE_CHECKING:
    from crewtui.config import AgentResources

DRIVER_KINDS: tuple[DriverKind, ...] = ("process", "callable", "ray")


@dataclass(frozen=True)
class LaunchInfo:
    """The processes of a shim-run attempt, with /proc start times so a reused pid is never taken for them."""

    shim_pid: int
    agent_pid: int  # a terminal session's: its dtach (see terminal.py)
    shim_start: int
    agent_start: int
    tty: bool = False  # a terminal session


@dataclass(frozen=True)
class ExitInfo:
    """How an attempt ended: an exit code, or the signal that ended it, and when."""

    code: int | None
    signal: int | None = None
    ended_at: float | None = None


@dataclass(frozen=True)
class Lost:
    """What a restart found of an attempt: it is gone without an exit record, and why."""

    reason: str


@dataclass
class Orphans:
    """What `end_orphans` did: the sessions it stopped, and those it left running because another store (or
    an older crewtui that did not say) launched them."""

    stopped: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LaunchSpec:
    """Everything a driver needs to start one attempt of a session."""

    key: str
    label: str
    attempt: int
    dir: SessionDir
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)  # added to the runtime's own environment
    cwd: Path | None = None  # None: the session dir
    agent: str | None = None  # the agent's name (in-process agents are looked up by it)
    resources: AgentResources | None = None  # what the session asks of a cluster node (Ray)
    tty: tuple[int, int] | None = None  # a terminal session of (rows, cols) (see drivers/terminal.py)
    # A session of a gateway pool on a Ray node: its token and its pool's upstream, for the node's gateway door.
    gateway: dict[str, str] | None = None


@dataclass(frozen=True)
class AdoptSpec:
    """What the store recorded of an attempt that was running when the last runtime stopped."""

    key: str
    attempt: int
    dir: SessionDir
    launch: LaunchInfo | None = None


class SessionHandle(ABC):
    """A running session as the runtime sees it, whatever runs it."""

    key: str
    info: LaunchInfo | None = None  # its processes, for drivers that run local ones
    node: str | None = None  # where it runs, for backends that place sessions on other machines
    lost_reason: str | None = None  # why it ended without an exit record, when the driver knows

    def detach(self) -> None:  # noqa: B027 - optional: most handles hold nothing to let go of
        """Stop watching without touching the session (the runtime is going away)."""

    @abstractmethod
    async def wait(self) -> ExitInfo | None:
        """Return when the session has ended: its exit record, or None if it ended without one."""

    @abstractmethod
    async def send(self, line: str) -> None:
        """Write one line to the session's input; Conflict if it has ended."""

    async def close_input(self) -> None:  # noqa: B027 - optional: a handle without an input has nothing to close
        """Close the session's input, so an agent that reads turns until end of input finishes and exits."""

    @abstractmethod
    async def terminate(self, grace: float) -> None:
        """Stop the session: politely, then by force after `grace` seconds; return once it is gone."""

    @abstractmethod
    def alive(self) -> bool: ...


class Driver(Protocol):
    """One way of running sessions. The runtime holds one per kind (see `drivers.Drivers`)."""

    kind: DriverKind
    # Whether a session outlives the runtime that started it (an in-process coroutine cannot).
    survives_restart: bool

    async def start(self, spec: LaunchSpec) -> SessionHandle:
        """Start an attempt; return once it runs (its pids or node known), or raise CrewError saying why not."""
        ...

    async def adopt(self, spec: AdoptSpec) -> SessionHandle | ExitInfo | Lost | None:
        """After a restart: a handle on the live attempt, its recorded end, or None (or Lost, saying why) if it
        is gone without one."""
        ...

    async def started(self, spec: AdoptSpec) -> bool:
        """Whether an attempt the store still calls pending was in fact started by the last runtime."""
        ...

    async def end_orphans(self, known: Collection[str], live: Collection[str], grace: float, owner: str) -> Orphans:
        """Stop what this driver runs for sessions this store does not account for.

        `known` is every session key the store has, `live` those of this driver's kind that are live, `owner` the
        store's identity: what another store launched (the store file was replaced) is left alone.
        """
        ...

    async def close(self) -> None:
        """Let go of the backend (sessions keep running for the next runtime)."""
        ...


# ------------------------------------------------------------------------------------------ records


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def write_json_atomic(path: Path, tmp: Path, value: Any) -> None:
    """Write a record so a reader never sees half of it: to `tmp`, then renamed over `path`."""
    tmp.write_text(json.dumps(value) + "\n")
    os.replace(tmp, path)


def _exit_from_json(value: Any) -> ExitInfo | None:
    if not isinstance(value, dict):
        return None
    code = value.get("code")
    sig = value.get("signal")
    ended = value.get("ended_at")
    return ExitInfo(
        code=code if isinstance(code, int) else None,
        signal=sig if isinstance(sig, int) else None,
        ended_at=float(ended) if isinstance(ended, (int, float)) else None,
    )


def exit_record(info: ExitInfo) -> dict[str, Any]:
    """An exit as exit.json holds it."""
    record: dict[str, Any] = {"code": info.code, "ended_at": info.ended_at}
    if info.signal is not None:
        record["signal"] = info.signal
    return record


def read_exit(sd: SessionDir) -> ExitInfo | None:
    """The exit record in a session dir, or None. A complete `exit.json.tmp` counts too: the shim writes it
    in one go and only the rename may have been cut short (by a SIGKILL of the group)."""
    info = _exit_from_json(read_json(sd.exit))
    if info is None:
        info = _exit_from_json(read_json(sd.exit_tmp))
    return info


def read_launch(sd: SessionDir) -> LaunchInfo | None:
    """The shim's `pid.json` in a session dir, or None if it is missing or incomplete."""
    value = read_json(sd.pid)
    if not isinstance(value, dict):
        return None
    try:
        fields = [value[k] for k in ("shim_pid", "agent_pid", "shim_start", "agent_start")]
    except KeyError:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in fields):
        return None
    shim_pid, agent_pid, shim_start, agent_start = fields
    return LaunchInfo(shim_pid, agent_pid, shim_start, agent_start, tty=value.get("tty") is True)


def clear_attempt_records(sd: SessionDir) -> None:
    """Remove the last attempt's records before a start (a retry reuses the dir)."""
    for path in sd.attempt_records():
        try:
            path.unlink()
        except FileNotFoundError:
            pass


# ------------------------------------------------------------------------------------------ checks


def validate_argv(
    argv: list[str], env: Mapping[str, str] | None = None, cwd: Path | None = None, *, local: bool = True
) -> None:
    """Raise BadInput unless `argv` names a program that can be run (found on env's PATH, or an executable
    file for a path, relative paths taken from `cwd`)."""
    if not argv:
        raise BadInput("empty argv: a session needs a program to run")
    if not all(isinstance(a, str) for a in argv):
        raise BadInput("argv must be a list of strings")
    if any("\0" in a for a in argv):
        raise BadInput("argv elements cannot contain NUL bytes")
    prog = argv[0]
    if not prog:
        raise BadInput("empty program name in argv")
    if not local:
        return  # it runs on another machine (Ray): only that machine can tell whether the program is there
    if "/" in prog:
        path = Path(prog)
        if not path.is_absolute():
            path = (cwd or Path.cwd()) / path
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BadInput(f"program '{prog}' not found or not executable")
        return
    path_var = (env if env is not None else os.environ).get("PATH", os.defpath)
    if shutil.which(prog, path=path_var) is None:
        raise BadInput(f"program '{prog}' not found on PATH")


def check_steer(line: str) -> bytes:
    """A steer line as the bytes written to the session (the text, at most 64 KiB, and its newline), or BadInput."""
    data = (line + "\n").encode("utf-8", errors="replace")
    if len(data) > MAX_STEER_BYTES + 1:
        raise BadInput(f"message too long: {len(data) - 1} bytes, at most {MAX_STEER_BYTES} bytes can be sent")
    return data
