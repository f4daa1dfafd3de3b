"""How sessions run: `ProcessDriver` starts an argv through the shim, `CallableDriver` runs a Python coroutine.

Both hand back a `SessionHandle` the orchestrator uses the same way: wait for the end, steer (send a line),
terminate. A process session outlives the runtime (see DESIGN.md, "Sessions outlive the dashboard"): the
shim is not our child, so its end is watched through a pidfd registered with the event loop (no thread and
no polling per session), and a restarted runtime re-adopts it with `ProcessDriver.adopt`, trusting a pid
only when its /proc start time matches the one recorded at launch.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import select
import shutil
import signal
import subprocess
import time
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from crewtui.errors import BadInput, Conflict, CrewError
from crewtui.locations import shim_path
from crewtui.model import MAX_STEER_BYTES

PID_FILE = "pid.json"
EXIT_FILE = "exit.json"
RESULT_FILE = "result.json"
STDIN_FIFO = "stdin.fifo"
STDOUT_LOG = "stdout.log"
STDERR_LOG = "stderr.log"

# The shim only forks, writes pid.json and closes a pipe; seconds of silence mean the machine is in trouble.
_START_TIMEOUT = 5.0
# A session that leaves its stdin unread for this long while a steer line waits is not listening.
_SEND_TIMEOUT = 30.0


@dataclass
class LaunchInfo:
    shim_pid: int
    agent_pid: int
    shim_start: int
    agent_start: int


@dataclass
class ExitInfo:
    code: int | None
    signal: int | None = None
    ended_at: float | None = None


# ------------------------------------------------------------------------------------------ /proc helpers


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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


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


def read_exit(out_dir: Path) -> ExitInfo | None:
    """The exit record in `out_dir`, or None. A complete `exit.json.tmp` counts too: the shim writes it in
    one go and only the rename may have been cut short (by a SIGKILL of the group)."""
    info = _exit_from_json(_read_json(out_dir / EXIT_FILE))
    if info is None:
        info = _exit_from_json(_read_json(out_dir / (EXIT_FILE + ".tmp")))
    return info


def read_launch(out_dir: Path) -> LaunchInfo | None:
    """The shim's `pid.json` in `out_dir`, or None if it is missing or incomplete."""
    value = _read_json(out_dir / PID_FILE)
    if not isinstance(value, dict):
        return None
    try:
        fields = [value[k] for k in ("shim_pid", "agent_pid", "shim_start", "agent_start")]
    except KeyError:
        return None
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in fields):
        return None
    return LaunchInfo(*fields)


def validate_argv(argv: list[str], env: Mapping[str, str] | None = None, cwd: Path | None = None,
                  *, local: bool = True) -> None:
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


def _check_steer(line: str) -> bytes:
    data = (line + "\n").encode("utf-8", errors="replace")
    if len(data) > MAX_STEER_BYTES:
        raise BadInput(f"message too long: {len(data)} bytes, at most {MAX_STEER_BYTES} bytes can be sent")
    return data


# ------------------------------------------------------------------------------------------ handles


class SessionHandle(ABC):
    """A running session as the orchestrator sees it, whatever runs it."""

    key: str
    info: LaunchInfo | None
    node: str | None = None  # where it runs, for backends that place sessions on other machines
    lost_reason: str | None = None  # why it ended without an exit record, when the driver knows

    def detach(self) -> None:
        """Stop watching without touching the session (the runtime is going away)."""

    @abstractmethod
    async def wait(self) -> ExitInfo | None:
        """Return when the session has ended: its exit record, or None if it ended without one."""

    @abstractmethod
    async def send(self, line: str) -> None:
        """Write one line to the session's input; Conflict if it has ended."""

    @abstractmethod
    async def terminate(self, grace: float) -> None:
        """Stop the session: politely, then by force after `grace` seconds; return once it is gone."""

    @abstractmethod
    def alive(self) -> bool: ...


class ProcessHandle(SessionHandle):
    """A shim-run process session, watched through a pidfd on the shim.

    Build one with `ProcessDriver.start` or `ProcessDriver.adopt`. It may be built off the loop (adopt runs
    fine in a worker thread): the pidfd joins the event loop the first time the handle is awaited.
    """

    def __init__(self, key: str, out_dir: Path, info: LaunchInfo) -> None:
        self.key = key
        self.info = info
        self.out_dir = out_dir
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ended = asyncio.Event()
        self._exit: ExitInfo | None = None
        self._exit_read = False
        self._send_lock = asyncio.Lock()
        self._pidfd: int | None = None
        self._pgid: int | None = None
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

    def _watch(self) -> asyncio.AbstractEventLoop:
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
        self._watch()
        await self._ended.wait()
        if not self._exit_read:
            self._exit = read_exit(self.out_dir)
            if self._exit is None:
                # The shim renames exit.json before it exits, so one more look only covers slow filesystems.
                await asyncio.sleep(0.02)
                self._exit = read_exit(self.out_dir)
            self._exit_read = True
        return self._exit

    async def send(self, line: str) -> None:
        data = _check_steer(line)
        self._watch()
        if not self.alive():
            raise Conflict(f"session {self.key} has ended; cannot send to it")
        async with self._send_lock:
            try:
                fd = os.open(self.out_dir / STDIN_FIFO, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                # ENXIO: no reader any more, i.e. the shim and the agent are gone.
                raise Conflict(f"session {self.key} cannot take input: {exc.strerror}") from None
            try:
                await self._write_all(fd, data)
            finally:
                os.close(fd)

    async def _write_all(self, fd: int, data: bytes) -> None:
        loop = self._watch()
        view = memoryview(data)
        deadline = loop.time() + _SEND_TIMEOUT
        while view:
            try:
                n = os.write(fd, view)
                view = view[n:]
                continue
            except BlockingIOError:
                pass
            except BrokenPipeError:
                raise Conflict(f"session {self.key} has ended; cannot send to it") from None
            # The pipe is full: wait until the agent reads (or the session ends, which wakes us too).
            remaining = deadline - loop.time()
            if remaining <= 0 or not self.alive():
                raise Conflict(f"session {self.key} is not reading its input; message not (fully) sent")
            writable = loop.create_future()
            loop.add_writer(fd, lambda: writable.done() or writable.set_result(None))
            ended = asyncio.ensure_future(self._ended.wait())
            try:
                await asyncio.wait({writable, ended}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                loop.remove_writer(fd)
                ended.cancel()

    def _signal_group(self, sig: int) -> bool:
        """Signal the session's process group; False if it is empty. Never our own group."""
        pgid = self._pgid
        if pgid is None or pgid <= 1 or pgid == os.getpgrp():
            return False
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return False
        except PermissionError:
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
        loop = self._watch()
        if not self.alive():
            return
        grace = max(0.0, grace)
        self._signal_group(signal.SIGTERM)
        deadline = loop.time() + grace
        try:
            await asyncio.wait_for(self._ended.wait(), timeout=grace)
        except (TimeoutError, asyncio.TimeoutError):
            self._signal_group(signal.SIGKILL)
            await self._ended.wait()
            return
        if self._group_alive():
            # A timer, not a task: nothing to cancel or await if the loop stops first.
            loop.call_at(deadline, self._signal_group, signal.SIGKILL)


class ProcessDriver:
    """Runs an argv (never a shell string) through the shim, in a new session and process group."""

    name = "process"

    def __init__(self, shim: Path | None = None) -> None:
        self.shim = (shim or shim_path()).absolute()
        raise_fd_limit()

    async def start(
        self,
        key: str,
        argv: list[str],
        out_dir: Path,
        env: dict[str, str],
        cwd: Path | None = None,
    ) -> ProcessHandle:
        """Start `argv` as session `key` writing to `out_dir`; return once its pid.json exists."""
        full_env = {**os.environ, **env}
        out_dir = Path(out_dir).absolute()
        # The output dir itself is a fine cwd: it is created below.
        if cwd is not None and Path(cwd).absolute() != out_dir and not Path(cwd).is_dir():
            raise BadInput(f"working directory {cwd} does not exist")
        validate_argv(argv, full_env, cwd)
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        # A retry reuses the dir: the previous attempt's records must not be mistaken for this one's.
        for name in (PID_FILE, EXIT_FILE, RESULT_FILE, PID_FILE + ".tmp", EXIT_FILE + ".tmp", STDIN_FIFO):
            try:
                (out_dir / name).unlink()
            except FileNotFoundError:
                pass
        os.mkfifo(out_dir / STDIN_FIFO, 0o600)

        # The shim closes this pipe once pid.json is written, which wakes us without polling; what it
        # printed before that explains a failed start.
        rfd, wfd = os.pipe()
        try:
            outer = subprocess.Popen(
                ["/bin/sh", str(self.shim), str(out_dir), "--", *argv],
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
            raise CrewError(f"cannot start session {key}: {exc.strerror or exc}") from None
        finally:
            os.close(wfd)
        early = bytearray()
        timed_out = False
        try:
            try:
                await asyncio.wait_for(_read_to_eof(rfd, early), _START_TIMEOUT)
            except (TimeoutError, asyncio.TimeoutError):
                timed_out = True
                self._abandon(outer, rfd, early, out_dir)
            # Every holder of the pipe has closed it, the outer sh included, so it has exited or is exiting.
            if outer.poll() is None:
                await _pidfd_exit(outer.pid)
        except BaseException:
            # Cancelled while starting: a session nobody will watch must not run.
            self._abandon(outer, rfd, early, out_dir)
            raise
        finally:
            os.close(rfd)
            if outer.poll() is None:
                outer.wait()

        info = None if timed_out else read_launch(out_dir)
        if info is None:
            said = early.decode("utf-8", errors="replace").splitlines()
            why = " ".join(ln.strip() for ln in said if ln.strip() and not ln.startswith("shim-pid "))
            missing = f"no {PID_FILE} within {_START_TIMEOUT:g}s" if timed_out else f"its shim wrote no usable {PID_FILE}"
            raise CrewError(f"session {key} did not start: {why or missing}")
        handle = ProcessHandle(key, out_dir, info)
        handle._watch()
        return handle

    @staticmethod
    def _abandon(outer: subprocess.Popen[bytes], rfd: int, early: bytearray, out_dir: Path) -> None:
        """Kill a start we give up on (timeout, cancellation), wherever it got to.

        The supervisor leaves the outer sh's group (setsid) before it announces its pid, so it is found
        from its announcement or pid.json; a short blocking drain of the start-up pipe (it is rare, and the
        shim needs milliseconds) lets it get that far. While the pipe is open the announcing supervisor is
        alive, and until the outer sh is reaped its pid is not reused: the groups killed are ours.
        """
        _kill_group(outer.pid)
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
        shim = _announced_shim_pid(early)
        launched = read_launch(out_dir)
        for pgid in {shim, launched.shim_pid if launched else None} - {None}:
            _kill_group(pgid)  # type: ignore[arg-type]

    def adopt(self, key: str, out_dir: Path, info: LaunchInfo | None) -> ProcessHandle | ExitInfo | None:
        """Re-adopt a session after a runtime restart (may run in a worker thread: it only reads files).

        exit.json present -> its ExitInfo; the shim alive with the recorded start time -> a handle;
        otherwise None (lost). A process that merely has the old pid is never treated as ours.
        """
        out_dir = Path(out_dir).absolute()
        ended = read_exit(out_dir)
        if ended is not None:
            return ended
        info = info or read_launch(out_dir)
        if info is None or not isinstance(info.shim_start, int):
            return None
        handle = ProcessHandle(key, out_dir, info)
        if handle.alive():
            return handle
        # It may have ended between our two looks.
        return read_exit(out_dir)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


async def _pidfd_exit(pid: int) -> None:
    """Return once process `pid` has exited, without blocking the loop."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.add_reader(fd, lambda: done.done() or done.set_result(None))
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)


def _announced_shim_pid(early: bytes | bytearray) -> int | None:
    for line in bytes(early).splitlines():
        if line.startswith(b"shim-pid "):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


async def _read_to_eof(fd: int, into: bytearray) -> None:
    """Read a pipe into `into` until every writer has closed it, without blocking the loop (keeps 64 KiB)."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            readable = loop.create_future()
            loop.add_reader(fd, lambda: readable.done() or readable.set_result(None))
            try:
                await readable
            finally:
                loop.remove_reader(fd)
            continue
        if not chunk:
            return
        if len(into) < 65536:
            into += chunk


# ------------------------------------------------------------------------------------------ callables

AgentFn = Callable[["CallableContext"], Awaitable[Any]]


class CallableContext:
    """What an in-process agent gets: its identity, an output sink and its steer messages."""

    def __init__(self, key: str, label: str, out_dir: Path) -> None:
        self.key = key
        self.label = label
        self.out_dir = out_dir
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    def output(self, line: str) -> None:
        """Append a line to stdout.log, so history and tailing work as for a process."""
        with open(self.out_dir / STDOUT_LOG, "a", encoding="utf-8", errors="replace") as f:
            f.write(line + "\n")

    async def next_message(self) -> str:
        """The next steer line sent to this session."""
        return await self._queue.get()


class CallableHandle(SessionHandle):
    """An in-process session: a coroutine run as a task. Its end is also written to exit.json."""

    def __init__(self, key: str, fn: AgentFn, ctx: CallableContext) -> None:
        self.key = key
        self.info = None
        self.ctx = ctx
        self._exit: ExitInfo | None = None
        self._task = asyncio.get_running_loop().create_task(self._run(fn), name=f"session-{key}")

    async def _run(self, fn: AgentFn) -> None:
        out_dir = self.ctx.out_dir
        try:
            value = await fn(self.ctx)
            (out_dir / RESULT_FILE).write_text(json.dumps(value, default=str))
            self._exit = ExitInfo(code=0, ended_at=time.time())
        except asyncio.CancelledError:
            self._exit = ExitInfo(code=None, signal=signal.SIGTERM.value, ended_at=time.time())
            self._record()
            raise
        except Exception as exc:
            with open(out_dir / STDERR_LOG, "a", encoding="utf-8", errors="replace") as f:
                f.write("".join(traceback.format_exception(exc)))
            self._exit = ExitInfo(code=1, ended_at=time.time())
        self._record()

    def _record(self) -> None:
        if self._exit is None:
            return
        record: dict[str, Any] = {"code": self._exit.code, "ended_at": self._exit.ended_at}
        if self._exit.signal is not None:
            record["signal"] = self._exit.signal
        tmp = self.ctx.out_dir / (EXIT_FILE + ".tmp")
        try:
            tmp.write_text(json.dumps(record) + "\n")
            tmp.replace(self.ctx.out_dir / EXIT_FILE)
        except OSError:
            pass

    def alive(self) -> bool:
        return not self._task.done()

    async def wait(self) -> ExitInfo | None:
        # asyncio.wait, not await: a cancelled waiter must not cancel the session.
        await asyncio.wait({self._task})
        return self._exit

    async def send(self, line: str) -> None:
        _check_steer(line)
        if not self.alive():
            raise Conflict(f"session {self.key} has ended; cannot send to it")
        self.ctx._queue.put_nowait(line)

    async def terminate(self, grace: float) -> None:
        if not self.alive():
            return
        self._task.cancel()
        await asyncio.wait({self._task}, timeout=max(0.0, grace))
        if not self._task.done():
            # It swallowed the cancellation; ask again and wait, since a coroutine cannot be forced.
            self._task.cancel()
            await asyncio.wait({self._task})


class CallableDriver:
    """Runs named async functions as sessions (tests, embedding)."""

    name = "callable"

    def __init__(self, functions: dict[str, AgentFn]) -> None:
        self.functions = dict(functions)

    def has(self, name: str) -> bool:
        return name in self.functions

    def names(self) -> list[str]:
        return sorted(self.functions)

    async def start(self, key: str, label: str, name: str, out_dir: Path) -> CallableHandle:
        fn = self.functions.get(name)
        if fn is None:
            known = ", ".join(sorted(self.functions)) or "none"
            raise BadInput(f"unknown callable agent '{name}' (known: {known})")
        out_dir = Path(out_dir).absolute()
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name_ in (EXIT_FILE, RESULT_FILE):
            try:
                (out_dir / name_).unlink()
            except FileNotFoundError:
                pass
        # Truncate like the shim does, so each attempt's output starts empty.
        for log in (STDOUT_LOG, STDERR_LOG):
            (out_dir / log).write_bytes(b"")
        return CallableHandle(key, fn, CallableContext(key, label, out_dir))


__all__ = [
    "AgentFn",
    "CallableContext",
    "CallableDriver",
    "CallableHandle",
    "ExitInfo",
    "LaunchInfo",
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
