"""The crew's own commands around a workspace: `setup` in a new worktree, `check` on a merged tree.

An argv (never a shell) run in a directory, its output (stdout and stderr as they came) in a temporary file, not in
a pipe: a command that leaves a process behind holding its output (a dev server started by the tests) does not
keep us waiting for that process, and one that prints megabytes costs no memory (only its tail is read). It runs
in a process group of its own: at the timeout the whole group is killed, not only its first process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Ran:
    code: int | None  # its exit status; None when it ran over its time (its group was killed)
    tail: str  # the last characters of what it printed, stripped


def run(
    argv: Sequence[str], cwd: Path, timeout: float, tail: int, started: Callable[[int | None], None] | None = None
) -> Ran:
    """Run `argv` in `cwd`; OSError (FileNotFoundError: no such program) when it cannot start. `started` is told
    its process group (for `kill_group` from elsewhere: a session killed while its setup runs), then None once
    that group is gone (its number may be another's then)."""
    with tempfile.TemporaryFile() as output:
        p = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if started is not None:
            started(p.pid)
        try:
            code: int | None = p.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
            kill_group(p.pid)
            p.wait()
        finally:
            if started is not None:
                started(None)
        size = output.seek(0, os.SEEK_END)
        output.seek(max(0, size - 4 * tail))
        text = output.read().decode("utf-8", errors="replace")
    return Ran(code, text.strip()[-tail:])


def kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def why(exc: OSError) -> str:
    """Why an argv could not start, in a few words."""
    return "not found" if isinstance(exc, FileNotFoundError) else f"could not start: {exc.strerror or exc}"
