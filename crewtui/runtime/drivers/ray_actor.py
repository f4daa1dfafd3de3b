"""The Ray actor that runs one session's process on whichever node Ray picked.

Standard library only, and shipped to the cluster by value (see `ray_driver`), so a node needs Ray and the
agent's own programs but not crewtui. One actor per session attempt, named after the session key:

- the agent argv runs as a child in its own session and process group (never through a shell), with its
  stdin a pipe the actor keeps open for steer lines; a small exec wrapper sets PR_SET_PDEATHSIG first, so if
  the actor itself is killed (ray.kill, a crashed worker) the agent dies with it instead of running on
  unwatched while a watchdog starts a second copy;
- stdout and stderr are drained by two threads into files in a node-local directory, so memory stays
  bounded whatever the agent prints, and any byte offset can be served again (a restarted runtime resumes
  from what it already has);
- `read` is a long poll: it returns as soon as there is output or the end (after a short linger that
  gathers more lines into the same batch), so the runtime makes one remote call per batch, not per line.
"""

from __future__ import annotations

import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from typing import Any

# Runs as the child's first program: arm the parent-death signal, check the parent did not die before it
# was armed, then become the agent (PR_SET_PDEATHSIG survives execve). argv: [parent_pid, agent argv...].
_EXEC_WRAPPER = (
    "import ctypes, os, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, 9, 0, 0, 0)\n"  # PR_SET_PDEATHSIG, SIGKILL
    "if os.getppid() != int(sys.argv[1]): os._exit(137)\n"
    "try:\n"
    "    os.execvp(sys.argv[2], sys.argv[2:])\n"
    "except OSError as exc:\n"
    "    sys.stderr.write(f'cannot run {sys.argv[2]!r}: {exc.strerror or exc}\\n'); os._exit(127)\n"
)

# Over crewtui's own limit (16 MiB, crewtui.model.MAX_RESULT_BYTES: this module cannot import crewtui): such a
# result is cut one byte past it, so the runtime sees it is too big and says so.
MAX_RESULT_BYTES = (16 << 20) + 1
_SEND_TIMEOUT = 30.0
# After the agent exits, how long its output pipes may stay open (a grandchild holding them) before the
# end is reported anyway.
_DRAIN_AFTER_EXIT = 2.0


class SessionActor:
    """One session attempt on a Ray node. Wrapped with `ray.remote` by the driver."""

    def __init__(
        self, key: str, attempt: int, owner: str, argv: list[str], env: dict[str, str], files: dict[str, str]
    ) -> None:
        self.key = key
        self.attempt = attempt
        self.owner = owner
        self.started_at = time.time()
        root = os.path.join(tempfile.gettempdir(), "crewtui-ray")
        os.makedirs(root, mode=0o700, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=f"{key}.{attempt}.", dir=root)
        # The file names of a session dir (the driver passes them: this module cannot import crewtui).
        self.paths = {s: os.path.join(self.dir, files[s]) for s in ("stdout", "stderr")}
        self.result_path = os.path.join(self.dir, files["result"])
        self.sizes = {"stdout": 0, "stderr": 0}
        self.cond = threading.Condition()
        self.exit: dict[str, Any] | None = None
        self.exited_at_mono: float | None = None
        self.open_streams = 2
        self.error: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._send_lock = threading.Lock()
        # Ray's own variables describe this worker, not the agent's job.
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        child_env.update(env)
        child_env["CREWTUI_OUTPUT_DIR"] = self.dir
        started = threading.Event()
        # The child is forked from a thread that lives as long as the child: PR_SET_PDEATHSIG fires when the
        # forking *thread* ends, so a short-lived pool thread must not be its parent.
        threading.Thread(
            target=self._supervise, args=(argv, child_env, started), daemon=True, name=f"session-{key}"
        ).start()
        started.wait()

    # ---------------------------------------------------------------------------------- running

    def _supervise(self, argv: list[str], env: dict[str, str], started: threading.Event) -> None:
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", _EXEC_WRAPPER, str(os.getpid()), *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                cwd=self.dir,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            self.error = f"cannot start {argv[0]!r}: {exc.strerror or exc}"
            with self.cond:
                self.exit = {"code": 127, "signal": None, "ended_at": time.time()}
                self.exited_at_mono = time.monotonic()
                self.open_streams = 0
                self.cond.notify_all()
            started.set()
            return
        self.proc = proc
        for stream, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            threading.Thread(target=self._drain, args=(stream, pipe), daemon=True).start()
        started.set()
        rc = proc.wait()
        with self.cond:
            self.exit = {
                "code": rc if rc >= 0 else None,
                "signal": -rc if rc < 0 else None,
                "ended_at": time.time(),
            }
            self.exited_at_mono = time.monotonic()
            self.cond.notify_all()
        try:
            if proc.stdin is not None:
                proc.stdin.close()
        except OSError:
            pass

    def _drain(self, stream: str, pipe: Any) -> None:
        fd = pipe.fileno()
        with open(self.paths[stream], "ab", buffering=0) as out:
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                out.write(chunk)
                with self.cond:
                    self.sizes[stream] += len(chunk)
                    self.cond.notify_all()
        pipe.close()
        with self.cond:
            self.open_streams -= 1
            self.cond.notify_all()

    def _finished(self) -> bool:
        if self.exit is None:
            return False
        drained_late = self.exited_at_mono is not None and time.monotonic() - self.exited_at_mono > _DRAIN_AFTER_EXIT
        return self.open_streams == 0 or drained_late

    # ---------------------------------------------------------------------------------- remote methods

    def info(self) -> dict[str, Any]:
        try:
            import ray

            ip = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
            node_id = ray.get_runtime_context().get_node_id()
        except Exception:
            ip, node_id = None, None
        return {
            "key": self.key,
            "attempt": self.attempt,
            "owner": self.owner,
            "host": socket.gethostname(),
            "ip": ip,
            "node_id": node_id,
            "actor_pid": os.getpid(),
            "agent_pid": self.proc.pid if self.proc else None,
            "dir": self.dir,
            "error": self.error,
            "started_at": self.started_at,
        }

    def read(self, out_off: int, err_off: int, wait: float, linger: float, max_bytes: int) -> dict[str, Any]:
        """Output past the given offsets (at most `max_bytes` per stream) and, once all is read, the exit."""
        deadline = time.monotonic() + wait
        with self.cond:
            while not (self.sizes["stdout"] > out_off or self.sizes["stderr"] > err_off or self._finished()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(min(left, _DRAIN_AFTER_EXIT))
            has_data = self.sizes["stdout"] > out_off or self.sizes["stderr"] > err_off
            finished = self._finished()
        if has_data and not finished and linger > 0:
            # More lines usually follow the first: gather them into this batch.
            with self.cond:
                self.cond.wait_for(self._finished, timeout=linger)
        with self.cond:
            finished = self._finished()
            sizes = dict(self.sizes)
            ended = dict(self.exit) if finished and self.exit else None
        out = self._slice("stdout", out_off, min(sizes["stdout"], out_off + max_bytes))
        err = self._slice("stderr", err_off, min(sizes["stderr"], err_off + max_bytes))
        complete = out_off + len(out) >= sizes["stdout"] and err_off + len(err) >= sizes["stderr"]
        reply: dict[str, Any] = {"out": out, "err": err, "exit": ended if complete else None}
        if reply["exit"] is not None:
            reply["result"] = self._result()
        return reply

    def _slice(self, stream: str, start: int, end: int) -> bytes:
        if end <= start:
            return b""
        with open(self.paths[stream], "rb") as fh:
            fh.seek(start)
            return fh.read(end - start)

    def _result(self) -> bytes | None:
        path = self.result_path
        try:
            with open(path, "rb") as fh:
                return fh.read(MAX_RESULT_BYTES)  # one byte too many tells the runtime it was too big
        except OSError:
            return None

    def send(self, data: bytes) -> str | None:
        """Write one steer line to the agent's stdin; None when written, else why not."""
        proc = self.proc
        if proc is None or proc.stdin is None or self.exit is not None:
            return "it has ended"
        with self._send_lock:
            fd = proc.stdin.fileno()
            deadline = time.monotonic() + _SEND_TIMEOUT
            try:
                os.set_blocking(fd, False)
                # Whole or nothing (as the local driver): a line cut off by the timeout would have the next one
                # glued onto its first part. We are the pipe's only writer, so its free room only grows.
                if fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) < len(data):
                    fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, len(data))
                while True:
                    capacity = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
                    unread = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
                    if capacity - unread >= len(data):
                        os.write(fd, data)
                        return None
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return f"it has not read its input for {_SEND_TIMEOUT:g}s (nothing of the message was written)"
                    time.sleep(min(left, 0.05))
            except (BrokenPipeError, ValueError, OSError):
                return "it has closed its input"

    def terminate(self, grace: float) -> dict[str, Any] | None:
        """SIGTERM the agent's whole process group, SIGKILL after `grace` seconds; return its exit."""
        proc = self.proc
        if proc is not None and self.exit is None:
            self._signal_group(proc.pid, signal.SIGTERM)
            with self.cond:
                self.cond.wait_for(lambda: self.exit is not None, timeout=grace)
        if proc is not None:
            # The agent may be gone while its children live on in its group.
            self._signal_group(proc.pid, signal.SIGKILL)
            with self.cond:
                self.cond.wait_for(lambda: self.exit is not None, timeout=5.0)
        return dict(self.exit) if self.exit else None

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def cleanup(self) -> None:
        """Remove the node-local files (the runtime has its copy); called just before the actor is killed."""
        import shutil

        shutil.rmtree(self.dir, ignore_errors=True)
