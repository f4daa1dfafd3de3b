"""One runtime per data dir: an exclusive flock on `runtime.lock` that also records the owner's pid.

flock is released by the kernel when the owner dies (even by kill -9), so a crashed runtime never leaves a
stale lock behind, and a second runtime is refused with the first one's pid rather than a guess.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from crewtui.errors import RuntimeUnavailable


class DataDirLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def owner_pid(self) -> int | None:
        try:
            text = self.path.read_text().strip()
            return int(text.split()[0]) if text else None
        except (OSError, ValueError, IndexError):
            return None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self.owner_pid()
            who = f"pid {pid}" if pid else "another process"
            raise RuntimeUnavailable(
                f"data dir {self.path.parent} is already served by a crewtui runtime ({who}); "
                "attach to it with `crewtui` or `crewtui ctl`, or use another --data-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        os.fsync(fd)
        self._fd = fd

    def held_by_other(self) -> bool:
        """True when some live process holds the lock (a runtime serves the data dir)."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
