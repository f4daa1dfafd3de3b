"""Containment: finding every process a session started, so that a kill leaves none of them running.

A session's process group is not enough: an agent can call `setsid()`, or double-fork a daemon into a session
of its own, and a signal to the group never reaches it. Two ways to do better, best first:

- **cgroup** (where the machine allows: a cgroup v2 hierarchy this user may write to): each session's shim
  moves itself into a cgroup of its own before it starts the agent, so every descendant is in it whatever it
  does with sessions and groups; a kill signals its members and then writes `cgroup.kill`.
- **environment scan** (everywhere else): every process a session starts inherits `CREWTUI_SESSION_KEY` and
  `CREWTUI_DATA_DIR`; a kill looks for live processes whose environment names both, and signals them through
  a pidfd (opened before the environment is read, so a reused pid is never hit). One scan of /proc serves every
  kill that asked for it at the time, so killing 1,000 sessions costs a few scans, not 1,000.

`ctl info` says which one a runtime uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import select
import signal
import time
from pathlib import Path

log = logging.getLogger("crewtui.containment")

CGROUP = "cgroup"
ENVIRONMENT = "process group + environment scan"
# How often a kill looks again whether the processes it signalled are gone.
_POLL = 0.05


class Containment:
    """How this runtime finds a session's processes (one instance per data dir)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.cgroup_root = _cgroup_root(data_dir)
        self.kind = CGROUP if self.cgroup_root is not None else ENVIRONMENT
        self._scanner = _Scanner()

    # ------------------------------------------------------------------------------------ cgroups

    def cgroup(self, key: str) -> Path | None:
        return None if self.cgroup_root is None else self.cgroup_root / key

    def prepare(self, key: str) -> dict[str, str]:
        """Before a launch: what the shim needs to contain the session (the env it gets)."""
        path = self.cgroup(key)
        if path is None:
            return {}
        try:
            path.mkdir(exist_ok=True)
        except OSError as exc:  # e.g. the hierarchy's limits: fall back to the scan for this session
            log.warning("session %s runs without a cgroup: %s", key, exc)
            return {}
        return {"CREWTUI_CGROUP": str(path)}

    def release(self, key: str) -> None:
        """After the end: remove the session's (empty) cgroup."""
        path = self.cgroup(key)
        if path is not None:
            with contextlib.suppress(OSError):
                path.rmdir()

    def close(self) -> None:
        """The runtime stops: remove this data dir's cgroup directory if no session is in it any more."""
        if self.cgroup_root is not None:
            with contextlib.suppress(OSError):
                self.cgroup_root.rmdir()

    # ------------------------------------------------------------------------------------ stopping

    async def stop(self, key: str, grace: float, since: float | None = None) -> int:
        """Stop every process of session `key` still alive: SIGTERM, then SIGKILL after `grace` seconds.

        Returns how many processes were found. `since` is when the caller's own kill began: a scan that
        started after it may be shared with other kills.
        """
        found = await self._members(key, since)
        if not found:
            self.release(key)
            return 0
        for fd in found:
            _send(fd, signal.SIGTERM)
        deadline = time.monotonic() + max(0.0, grace)
        while any(_alive(fd) for fd in found) and time.monotonic() < deadline:
            await asyncio.sleep(_POLL)
        path = self.cgroup(key)
        if path is not None:
            with contextlib.suppress(OSError):
                (path / "cgroup.kill").write_text("1")
        for fd in found:
            if _alive(fd):
                _send(fd, signal.SIGKILL)
        while any(_alive(fd) for fd in found):
            await asyncio.sleep(_POLL)
        for fd in found:
            os.close(fd)
        self.release(key)
        return len(found)

    def kill_now(self, key: str) -> int:
        """SIGKILL every process of session `key` at once (an orphan nobody watches: no grace to give)."""
        path = self.cgroup(key)
        if path is not None:
            with contextlib.suppress(OSError):
                (path / "cgroup.kill").write_text("1")
        count = 0
        for fd in self._scan_now(key):
            _send(fd, signal.SIGKILL)
            os.close(fd)
            count += 1
        return count

    async def _members(self, key: str, since: float | None) -> list[int]:
        """pidfds of the session's live processes."""
        path = self.cgroup(key)
        if path is not None and (path / "cgroup.procs").exists():
            return _cgroup_members(path)
        return await self._scanner.find(key, str(self.data_dir), since if since is not None else time.monotonic())

    def _scan_now(self, key: str) -> list[int]:
        path = self.cgroup(key)
        if path is not None and (path / "cgroup.procs").exists():
            return _cgroup_members(path)
        return _scan(str(self.data_dir)).get(key, [])


class _Scanner:
    """One /proc scan shared by every kill that asked while it ran (or that began before it started)."""

    def __init__(self) -> None:
        self._started = 0.0
        self._running: asyncio.Future[dict[str, list[int]]] | None = None
        self._held: dict[str, list[int]] = {}  # the last scan's pidfds, closed when a newer scan replaces it

    async def find(self, key: str, root: str, since: float) -> list[int]:
        while True:
            if self._running is not None and self._started >= since:
                result = await asyncio.shield(self._running)
                break
            if self._running is None or self._running.done():
                self._started = time.monotonic()
                self._running = running = asyncio.ensure_future(asyncio.to_thread(_scan, root))
                result = await asyncio.shield(running)
                if running is self._running:
                    for fds in self._held.values():
                        for fd in fds:
                            os.close(fd)
                    self._held = result
                break
            await asyncio.shield(self._running)  # an older scan: wait for it, then start a fresh one
        # Each caller owns its pidfds: duplicate them out of the shared result.
        return [os.dup(fd) for fd in result.get(key, []) if _alive(fd)]


# ---------------------------------------------------------------------------------------------- helpers


def _send(pidfd: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError, OSError):
        signal.pidfd_send_signal(pidfd, sig)


def _alive(pidfd: int) -> bool:
    """Still running: a pidfd polls readable once its process has exited (a zombie that nobody reaped yet, an
    orphan's parent being gone, counts as exited)."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return not poller.poll(0)


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None


def _scan(root: str) -> dict[str, list[int]]:
    """Every live process (of this user) whose environment names a session of the data dir `root`, by key,
    as pidfds opened before the environment was read (so the pid cannot have been reused meanwhile)."""
    marker = f"CREWTUI_DATA_DIR={root}".encode()
    me = os.getpid()
    found: dict[str, list[int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        fd = _pidfd(int(name))
        if fd is None:
            continue
        key = None
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                env = f.read().split(b"\0")
            if marker in env:
                for item in env:
                    if item.startswith(b"CREWTUI_SESSION_KEY="):
                        key = item.split(b"=", 1)[1].decode(errors="replace")
        except OSError:
            pass
        if key is None:
            os.close(fd)
        else:
            found.setdefault(key, []).append(fd)
    return found


def _cgroup_members(path: Path) -> list[int]:
    out: list[int] = []
    try:
        pids = [int(line) for line in (path / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return out
    for pid in pids:
        fd = _pidfd(pid)
        if fd is not None:
            out.append(fd)
    return out


def _cgroup_root(data_dir: Path) -> Path | None:
    """A cgroup v2 directory under this process's own cgroup, made for this data dir's sessions, if this user
    may make one there and move processes into it; else None."""
    mount = _cgroup2_mount()
    own = _own_cgroup()
    if mount is None or own is None:
        return None
    digest = hashlib.sha1(str(data_dir).encode()).hexdigest()[:12]
    root = Path(str(mount) + own.rstrip("/")) / f"crewtui-{digest}"
    try:
        root.mkdir(exist_ok=True)
        probe = root / "probe"
        probe.mkdir(exist_ok=True)
        ok = (probe / "cgroup.kill").exists() and os.access(probe / "cgroup.procs", os.W_OK)
        probe.rmdir()
    except OSError:
        return None
    return root if ok else None


def _cgroup2_mount() -> Path | None:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields = left.split()
        if right.split()[:1] == ["cgroup2"] and len(fields) >= 5 and fields[3] == "/":
            return Path(fields[4])
    return None


def _own_cgroup() -> str | None:
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return line[3:] or "/"
    return None
