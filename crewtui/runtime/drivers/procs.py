"""Processes as Linux shows them: /proc start times (to defeat pid reuse), process groups, pidfds, fd limits.

Used by the process driver and by whatever must tell a session's own process from a stranger that got its
pid later: a pid is trusted only while its /proc start time matches the one recorded at launch.
"""

from __future__ import annotations

import asyncio
import os
import resource
import signal
from pathlib import Path


def proc_start_time(pid: int) -> int | None:
    """Field 22 (starttime, clock ticks since boot) of /proc/PID/stat; None if there is no such process."""
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parentheses: only the last ") " ends it.
    _, sep, rest = stat.rpartition(b") ")
    if not sep:
        return None
    fields = rest.split()
    try:
        return int(fields[19])  # fields[0] is field 3
    except (IndexError, ValueError):
        return None


def pid_alive_with_start(pid: int, start: int) -> bool:
    """True if PID exists and is the same process as when `start` was recorded (defeats pid reuse)."""
    now = proc_start_time(pid)
    return now is not None and now == start


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit (a crew holds a pidfd and pipes per session).

    Returns the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if target == resource.RLIM_INFINITY:
        # An infinite hard limit cannot be the soft one: the kernel caps it at fs.nr_open.
        try:
            target = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            target = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def resolve(future: asyncio.Future[None]) -> None:
    """Complete a future that says "it happened" (a loop callback may fire more than once)."""
    if not future.done():
        future.set_result(None)


def kill_verified(pid: int, start: int, sig: int = signal.SIGKILL) -> bool:
    """Signal `pid` only if it is still the process recorded with `start` (checked through a pidfd, so the pid
    cannot be reused between the check and the signal). True if it was signalled."""
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return False
    try:
        if not pid_alive_with_start(pid, start):
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except (ProcessLookupError, PermissionError, OSError):
        return False
    finally:
        os.close(fd)


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a process group, ignoring one that is gone or not ours."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


async def pidfd_exit(pid: int) -> None:
    """Return once process `pid` has exited, without blocking the loop."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    loop.add_reader(fd, resolve, done)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def read_to_eof(fd: int, into: bytearray) -> None:
    """Read a pipe into `into` until every writer has closed it, without blocking the loop (keeps 64 KiB)."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            readable: asyncio.Future[None] = loop.create_future()
            loop.add_reader(fd, resolve, readable)
            try:
                await readable
            finally:
                loop.remove_reader(fd)
            continue
        if not chunk:
            return
        if len(into) < 65536:
            into += chunk
