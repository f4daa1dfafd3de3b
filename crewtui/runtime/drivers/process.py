"""`ProcessDriver`: a session is a local argv (never a shell string) run through the shim, outliving the runtime.

The shim (`shim.sh`, see docs/architecture.md, "Drivers") is not our child: its end is watched
through a pidfd registered with the event loop (no thread and no polling per session), and a restarted
runtime re-adopts it with `adopt`, trusting a pid only when its /proc start time matches the one recorded
at launch.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from crewtui.errors import BadInput, Conflict, CrewError
from crewtui.locations import DataDir, SessionDir, shim_path, user_umask
from crewtui.model import DriverKind
from crewtui.runtime.drivers import terminal
from crewtui.runtime.drivers.base import (
    AdoptSpec,
    ExitInfo,
    LaunchInfo,
    LaunchSpec,
    Lost,
    Orphans,
    SessionHandle,
    check_steer,
    clear_attempt_records,
    read_exit,
    read_launch,
    validate_argv,
)
from crewtui.runtime.drivers.containment import Containment
from crewtui.runtime.drivers.procs import (
    kill_group,
    kill_verified,
    pid_alive_with_start,
    pidfd_exit,
    raise_fd_limit,
    read_to_eof,
    resolve,
)

log = logging.getLogger("crewtui.drivers.process")

# The shim only forks, writes pid.json and closes a pipe; seconds of silence mean the machine is in trouble.
_START_TIMEOUT = 5.0
# A session that leaves its stdin unread for this long while a steer line waits is not listening.
_SEND_TIMEOUT = 30.0
# While a line waits for room in a session's input pipe, how often to look again.
_ROOM_POLL = 0.05
# What an orphaned agent (its shim died) gets between SIGTERM and SIGKILL.
_ORPHAN_GRACE = 2.0


class ProcessHandle(SessionHandle):
    """A shim-run process session, watched through a pidfd on the shim.

    Build one with `ProcessDriver.start` or `ProcessDriver.adopt`. It may be built off the loop (adopt runs
    fine in a worker thread): the pidfd joins the event loop the first time the handle is awaited.
    """

    def __init__(self, key: str, sd: SessionDir, info: LaunchInfo, containment: Containment | None = None) -> None:
        self.key = key
        self.info = info
        self.dir = sd
        # Finds what the session started beyond its process group (see containment.py); None: the group only.
        self.containment = containment
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ended = asyncio.Event()
        self._exit: ExitInfo | None = None
        self._exit_read = False
        self._send_lock = asyncio.Lock()
        self._pidfd: int | None = None
        self._pgid: int | None = None
        self.send_timeout = _SEND_TIMEOUT
        self.tty = info.tty  # a terminal session: typed into through dtach, its agent stopped under it
        try:
            pidfd = os.pidfd_open(info.shim_pid)
        except (ProcessLookupError, ValueError, OverflowError):
            self._ended.set()
            return
        # pidfd first, then the start time: if they agree the pidfd is pinned to our shim, with no window
        # in which the pid could be recycled between the check and the watch.
        try:
            if not pid_alive_with_start(info.shim_pid, info.shim_start):
                raise ProcessLookupError
            self._pgid = os.getpgid(info.shim_pid)
        except ProcessLookupError:
            os.close(pidfd)
            self._ended.set()
            return
        self._pidfd = pidfd

    def watch(self) -> asyncio.AbstractEventLoop:
        """Join the running loop (once) so the shim's exit wakes us."""
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            if self._pidfd is not None:
                loop.add_reader(self._pidfd, self._on_shim_exit)
        return loop

    def _on_shim_exit(self) -> None:
        self._release_pidfd(reap=True)
        self._ended.set()

    def _release_pidfd(self, reap: bool) -> None:
        fd, self._pidfd = self._pidfd, None
        if fd is None:
            return
        if self._loop is not None:
            self._loop.remove_reader(fd)
        if reap:
            # If the runtime is a child subreaper the orphaned shim is our zombie: reap exactly it.
            try:
                os.waitid(os.P_PIDFD, fd, os.WEXITED | os.WNOHANG)
            except (ChildProcessError, OSError):
                pass
        os.close(fd)

    def detach(self) -> None:
        """Stop watching the shim without touching the session (the runtime is going away)."""
        self._release_pidfd(reap=False)

    def alive(self) -> bool:
        if self._ended.is_set():
            return False
        if self._loop is None and self._pidfd is not None:
            # Not watched by a loop yet: ask the pidfd directly (it polls readable once the shim exited).
            poller = select.poll()
            poller.register(self._pidfd, select.POLLIN)
            if poller.poll(0):
                self._on_shim_exit()
                return False
        return self._pidfd is not None

    async def wait(self) -> ExitInfo | None:
        self.watch()
        await self._ended.wait()
        if not self._exit_read:
            self._exit = read_exit(self.dir)
            if self._exit is None:
                # The shim renames exit.json before it exits, so one more look only covers slow filesystems.
                await asyncio.sleep(0.02)
                self._exit = read_exit(self.dir)
            self._exit_read = True
            if self._exit is None:
                await self._stop_orphans()
            elif self.containment is not None:
                self.containment.release(self.key)  # empty now, unless the agent left a daemon behind
            if self.tty:  # its dtach killed by hand: what ran under it must not run on unwatched
                await asyncio.to_thread(terminal.stop_cut_chain, self.dir)
        return self._exit

    async def _stop_orphans(self) -> None:
        """The shim ended without an exit record (killed): whatever it ran must not run on unwatched, or a retry
        would run the task twice. Its agent (same pid and start time) and everything else of the session go."""
        info = self.info
        agent_alive = info is not None and pid_alive_with_start(info.agent_pid, info.agent_start)
        if self.containment is not None:
            await self.containment.stop(self.key, _ORPHAN_GRACE)
        if info is not None and agent_alive:
            if info.tty:
                terminal.signal_agent(info.agent_pid, info.agent_start, signal.SIGKILL)
            kill_verified(info.agent_pid, info.agent_start)
            self.lost_reason = f"its shim died; its agent (pid {info.agent_pid}) was still running and was stopped"

    async def send(self, line: str) -> None:
        data = check_steer(line)
        self.watch()
        if not self.alive():
            raise Conflict(f"session {self.key} has ended; cannot send to it")
        async with self._send_lock:
            if self.tty:  # typed into its terminal, Enter as a carriage return
                await asyncio.to_thread(terminal.push, self.dir, terminal.typed(data))
                return
            try:
                fd = os.open(self.dir.stdin_fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                # ENXIO: no reader any more, i.e. the shim and the agent are gone.
                raise Conflict(f"session {self.key} cannot take input: {exc.strerror}") from None
            try:
                await self._write_all(fd, data)
            finally:
                os.close(fd)

    async def close_input(self) -> None:
        """Ask the shim to close its end of stdin.fifo (SIGUSR1 to the shim alone): once the runtime holds no
        writer either, the agent reads end of input after the lines already written."""
        self.watch()
        info = self.info
        if info is None or not self.alive():
            return
        async with self._send_lock:  # after a steer being written
            try:
                os.kill(info.shim_pid, signal.SIGUSR1)
            except ProcessLookupError:
                pass

    async def _write_all(self, fd: int, data: bytes) -> None:
        """Write one steer line whole, or nothing of it.

        A line written in parts could be cut off by a timeout, and the next steer would then be glued onto its
        first part. So the line is written in one `write` once the pipe has room for all of it: the runtime is
        the pipe's only writer (under the send lock), so that room can only grow until we write.
        """
        loop = self.watch()
        need = len(data)
        _make_room_for(fd, need, self.key)
        deadline = loop.time() + self.send_timeout
        while True:
            if _pipe_free(fd) >= need:
                try:
                    os.write(fd, data)
                except BrokenPipeError:
                    raise Conflict(f"session {self.key} has ended; cannot send to it") from None
                return
            remaining = deadline - loop.time()
            if remaining <= 0 or not self.alive():
                raise Conflict(
                    f"session {self.key} is not reading its input; the message was not sent (none of it was written)"
                )
            # The pipe is too full: wait for the agent to read (or the session to end, which wakes us too). A pipe
            # says it is writable as soon as a page is free, which may be less than the line: look again shortly.
            writable: asyncio.Future[None] = loop.create_future()
            loop.add_writer(fd, resolve, writable)
            ended: asyncio.Future[Any] = asyncio.ensure_future(self._ended.wait())
            try:
                await asyncio.wait(
                    {writable, ended}, timeout=min(remaining, _ROOM_POLL), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                loop.remove_writer(fd)
                ended.cancel()
            if writable.done():
                await asyncio.sleep(min(_ROOM_POLL, max(0.0, deadline - loop.time())))

    def _signal_group(self, sig: int) -> bool:
        """Signal the session's process group; False if it is empty. Never our own group. A terminal session's
        agent runs in groups of its own under dtach (see terminal.py): they are signalled too."""
        if self.tty and self.info is not None:
            terminal.signal_agent(self.info.agent_pid, self.info.agent_start, sig)
        pgid = self._pgid
        if pgid is None or pgid <= 1 or pgid == os.getpgrp():
            return False
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return False
        return True

    def _group_alive(self) -> bool:
        # Zombies count (kill(2) reaches them) until whoever adopted them reaps them.
        return self._signal_group(0)

    async def terminate(self, grace: float) -> None:
        """SIGTERM the session's process group, SIGKILL the group after `grace` seconds if the shim is
        still there; return once the shim is gone.

        A SIGKILLed shim leaves no exit.json, so wait() then returns None. If the shim ends in time but the
        group still has members (a grandchild cleaning up, or ignoring SIGTERM), they get SIGKILL when the
        grace period is over, without holding up the caller.
        """
        loop = self.watch()
        if not self.alive():
            return
        grace = max(0.0, grace)
        began = time.monotonic()
        self._signal_group(signal.SIGTERM)
        deadline = loop.time() + grace
        try:
            await asyncio.wait_for(self._ended.wait(), timeout=grace)
        except TimeoutError:
            self._signal_group(signal.SIGKILL)
            await self._ended.wait()
        else:
            if self._group_alive():
                # A timer, not a task: nothing to cancel or await if the loop stops first.
                loop.call_at(deadline, self._signal_group, signal.SIGKILL)
        if self.containment is not None:
            # What left the group (setsid, a daemon) gets the rest of the grace period, then SIGKILL.
            await self.containment.stop(self.key, max(0.0, deadline - loop.time()), since=began)


def _pipe_free(fd: int) -> int:
    """Bytes a pipe can take now: its capacity minus what waits unread in it."""
    capacity = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    unread = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
    return int(capacity) - int(unread)


def _make_room_for(fd: int, need: int, key: str) -> None:
    """Grow the pipe so one line of `need` bytes fits at all (a new pipe holds 64 KiB; a steer may be 64 KiB + 1)."""
    if fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) >= need:
        return
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, need)
    except OSError as exc:  # over the user's pipe quota or fs.pipe-max-size
        raise Conflict(
            f"session {key}: a message of {need} bytes cannot be sent whole: its input pipe cannot grow "
            f"({exc.strerror or exc})"
        ) from None


class ProcessDriver:
    """Runs an argv (never a shell string) through the shim, in a new session and process group."""

    kind: DriverKind = "process"
    survives_restart = True

    def __init__(
        self, shim: Path | None = None, data_dir: DataDir | None = None, base_env: Mapping[str, str] | None = None
    ) -> None:
        self.shim = (shim or shim_path()).absolute()
        self.data_dir = data_dir  # where orphans are looked for (see end_orphans)
        # The environment sessions start from (None: this process's); a Ray host leaves out Ray's own variables.
        self.base_env = base_env
        self._containment: Containment | None = None
        raise_fd_limit()

    @property
    def containment(self) -> Containment | None:
        """How this runtime finds a session's processes (known once the data dir is)."""
        if self._containment is None and self.data_dir is not None:
            self._containment = Containment(self.data_dir.root)
        return self._containment

    async def start(self, spec: LaunchSpec) -> ProcessHandle:
        """Start the spec's argv as its session, writing to its session dir; return once pid.json exists."""
        # The shim keeps its own files owner-only and gives the agent the user's umask back.
        base = os.environ if self.base_env is None else self.base_env
        full_env = {**base, **spec.env, "CREWTUI_AGENT_UMASK": f"{user_umask():04o}"}
        if self.containment is not None:
            full_env.update(self.containment.prepare(spec.key))
        sd = SessionDir(spec.dir.path.absolute())
        cwd = spec.cwd
        # The session dir itself is a fine cwd: it is created below.
        if cwd is not None and Path(cwd).absolute() != sd.path and not Path(cwd).is_dir():
            raise BadInput(f"working directory {cwd} does not exist")
        validate_argv(spec.argv, full_env, cwd)
        if spec.tty is not None:
            terminal.dtach()  # one line when it is missing
            full_env.update(terminal.shim_env(spec.argv, spec.tty))
            if "TERM" not in spec.env:  # what the agent draws for: the terminal people attach with is an xterm
                full_env["TERM"] = "xterm-256color"
        sd.path.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A retry reuses the dir: the previous attempt's records must not be mistaken for this one's.
        clear_attempt_records(sd)
        os.mkfifo(sd.stdin_fifo, 0o600)

        # The shim closes this pipe once pid.json is written, which wakes us without polling; what it
        # printed before that explains a failed start.
        rfd, wfd = os.pipe()
        try:
            outer = subprocess.Popen(
                ["/bin/sh", str(self.shim), str(sd.path), "--", *spec.argv],
                stdin=subprocess.DEVNULL,
                stdout=wfd,
                stderr=wfd,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            os.close(rfd)
            raise CrewError(f"cannot start session {spec.key}: {exc.strerror or exc}") from None
        finally:
            os.close(wfd)
        early = bytearray()
        timed_out = False
        try:
            try:
                await asyncio.wait_for(read_to_eof(rfd, early), _START_TIMEOUT)
            except TimeoutError:
                timed_out = True
                self._abandon(outer, rfd, early, sd)
            # Every holder of the pipe has closed it, the outer sh included, so it has exited or is exiting.
            if outer.poll() is None:
                await pidfd_exit(outer.pid)
        except BaseException:
            # Cancelled while starting: a session nobody will watch must not run.
            self._abandon(outer, rfd, early, sd)
            raise
        finally:
            os.close(rfd)
            if outer.poll() is None:
                outer.wait()

        info = None if timed_out else read_launch(sd)
        if info is None:
            said = early.decode("utf-8", errors="replace").splitlines()
            why = " ".join(ln.strip() for ln in said if ln.strip() and not ln.startswith("shim-pid "))
            missing = (
                f"no {SessionDir.PID} within {_START_TIMEOUT:g}s"
                if timed_out
                else f"its shim wrote no usable {SessionDir.PID}"
            )
            raise CrewError(f"session {spec.key} did not start: {why or missing}")
        handle = ProcessHandle(spec.key, sd, info, self.containment)
        handle.watch()
        return handle

    @staticmethod
    def _abandon(outer: subprocess.Popen[bytes], rfd: int, early: bytearray, sd: SessionDir) -> None:
        """Kill a start we give up on (timeout, cancellation), wherever it got to.

        The supervisor leaves the outer sh's group (setsid) before it announces its pid, so it is found
        from its announcement or pid.json; a short blocking drain of the start-up pipe (it is rare, and the
        shim needs milliseconds) lets it get that far. While the pipe is open the announcing supervisor is
        alive, and until the outer sh is reaped its pid is not reused: the groups killed are ours.
        """
        kill_group(outer.pid)
        poller = select.poll()
        poller.register(rfd, select.POLLIN)
        deadline = time.monotonic() + 1.0
        while _announced_shim_pid(early) is None and time.monotonic() < deadline:
            if not poller.poll(max(1, int((deadline - time.monotonic()) * 1000))):
                break
            try:
                chunk = os.read(rfd, 65536)
            except BlockingIOError:
                continue
            if not chunk:
                break
            early += chunk
        launched = read_launch(sd)
        for pgid in {_announced_shim_pid(early), launched.shim_pid if launched else None}:
            if pgid is not None:
                kill_group(pgid)

    async def adopt(self, spec: AdoptSpec) -> ProcessHandle | ExitInfo | Lost | None:
        found = await asyncio.to_thread(self.adopt_now, spec)
        if isinstance(found, ExitInfo) and spec.dir.pts.exists():
            await asyncio.to_thread(terminal.stop_cut_chain, spec.dir)  # a terminal session's dtach killed meanwhile
        if found is not None:
            return found
        # Lost. If its shim died but the agent lives on (same pid and start time), it must not run on unwatched
        # while a watchdog starts the task again: stop it, and whatever else the session started.
        info = spec.launch or read_launch(spec.dir)
        agent_alive = info is not None and pid_alive_with_start(info.agent_pid, info.agent_start)
        if self.containment is not None:
            await self.containment.stop(spec.key, _ORPHAN_GRACE)
        if info is not None and agent_alive:
            if info.tty:
                terminal.signal_agent(info.agent_pid, info.agent_start, signal.SIGKILL)
            kill_verified(info.agent_pid, info.agent_start)
            return Lost(f"its shim had died; its agent (pid {info.agent_pid}) was still running and was stopped")
        return None

    def adopt_now(self, spec: AdoptSpec) -> ProcessHandle | ExitInfo | None:
        """Re-adopt a session after a runtime restart (it only reads files: fine in a worker thread).

        exit.json present -> its ExitInfo; the shim alive with the recorded start time -> a handle;
        otherwise None (lost). A process that merely has the old pid is never treated as ours.
        """
        sd = SessionDir(spec.dir.path.absolute())
        ended = read_exit(sd)
        if ended is not None:
            return ended
        info = spec.launch or read_launch(sd)
        if info is None or not isinstance(info.shim_start, int):
            return None
        handle = ProcessHandle(spec.key, sd, info, self.containment)
        if handle.alive():
            return handle
        # It may have ended between our two looks.
        return read_exit(sd)

    async def started(self, spec: AdoptSpec) -> bool:
        # A launch leaves pid.json (or exit.json); earlier tries are moved to tries/.
        return await asyncio.to_thread(lambda: read_launch(spec.dir) is not None or read_exit(spec.dir) is not None)

    async def end_orphans(self, known: Collection[str], live: Collection[str], grace: float, owner: str) -> Orphans:
        """Stop processes of spawns the store never recorded (the last runtime died while starting them).

        Nobody was told about such a session (the control socket answers a spawn only once it is stored), so
        no one can see, steer or stop it: left alone it would run unwatched forever. Only processes whose
        pid *and* start time match their pid.json are signalled, so a reused pid is never hit; and only those
        this store launched: after the store file was deleted or replaced, the sessions the old one knew are
        running work somebody was told about, and are left alone.
        """
        if self.data_dir is None:
            return Orphans()
        unrecorded = await asyncio.to_thread(_unrecorded_launches, self.data_dir, set(known))
        orphans = [(key, info) for key, info in unrecorded if self.data_dir.session(key).owned_by() == owner]
        foreign = [key for key, _ in unrecorded if self.data_dir.session(key).owned_by() != owner]
        if not orphans:
            return Orphans(foreign=foreign)
        handles = [ProcessHandle(key, self.data_dir.session(key), info, self.containment) for key, info in orphans]
        await asyncio.gather(*(h.terminate(grace) for h in handles), return_exceptions=True)
        for _, info in orphans:
            # An agent whose shim is already gone is not in a group we can trust: signal just it.
            kill_verified(info.agent_pid, info.agent_start)
        return Orphans(stopped=[key for key, _ in orphans], foreign=foreign)

    async def close(self) -> None:
        """Nothing to let go of but an empty cgroup directory: each shim runs on its own."""
        if self._containment is not None:
            self._containment.close()


def _unrecorded_launches(data_dir: DataDir, known: set[str]) -> list[tuple[str, LaunchInfo]]:
    """Session dirs the store does not know whose shim or agent still runs (same pid and start time)."""
    try:
        names = os.listdir(data_dir.sessions_root)
    except OSError:
        return []
    out = []
    for name in names:
        if name in known:
            continue
        info = read_launch(data_dir.session(name))
        if info is None:
            continue
        if pid_alive_with_start(info.shim_pid, info.shim_start) or pid_alive_with_start(
            info.agent_pid, info.agent_start
        ):
            out.append((name, info))
    return out


def _announced_shim_pid(early: bytes | bytearray) -> int | None:
    for line in bytes(early).splitlines():
        if line.startswith(b"shim-pid "):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None
