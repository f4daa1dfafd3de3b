"""Terminal sessions (`tty = true`): the agent runs on a pseudo-terminal that dtach holds, so it outlives the
runtime like any shim-run session and people can attach to it (`crewtui attach LABEL`).

Why dtach: a few hundred kB per session and one job (hold a terminal, let clients attach to it through a Unix
socket, push typed bytes into it); it is a session of its own, started by the session's shim, which watches it
as it watches any agent. tmux would do it too, but its server daemonizes out of the shim's reach, brings the
user's own config, prefix key and nesting along, and a shared server ends every session when it crashes.

The chain: shim -> `dtach -N DIR/tty.sock` -> the recorder (`shim.sh --pty`) -> `script -qfe -O stdout.log` ->
the agent. script(1) copies what the agent writes to the transcript as it comes; the recorder writes the agent's
exit code to DIR/agent-exit (dtach's own is always 1). What the runtime does here itself:

- types into the terminal (a steer, a quick reply): dtach's client protocol, MSG_PUSH packets of up to 8 bytes.
  A steer is a line of text, never keys: control characters in it (Ctrl-C would interrupt the agent, Ctrl-\\ quit
  it, ESC start a sequence such as a bracketed paste's end) are refused in one line, and nothing is typed;
- stops the agent: dtach, the recorder, script and the agent each lead a session of their own, so the shim's
  process group reaches none of them; the agent's group is signalled, found under dtach in /proc.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import struct
from pathlib import Path

from crewtui.errors import BadInput, Conflict
from crewtui.locations import SessionDir
from crewtui.runtime.drivers.procs import pid_alive_with_start

DEFAULT_SIZE = (40, 120)  # rows, cols of a terminal session nobody has attached to yet
_MSG_PUSH = 0
_MAX_SUN_PATH = 100


def dtach() -> str:
    """The dtach program, or one line saying how to install it."""
    found = shutil.which("dtach")
    if found is None:
        raise BadInput("terminal sessions (tty = true) need dtach: apt install dtach (or scripts/install-debian.sh)")
    return found


def shim_env(argv: list[str], size: tuple[int, int]) -> dict[str, str]:
    """What the shim needs to run `argv` as a terminal session: its size, and the argv as one command for
    script(1), quoted so the shell that script starts runs exactly that argv (and `exec`s it)."""
    rows, cols = size
    return {"CREWTUI_TTY": f"{rows} {cols}", "CREWTUI_TTY_CMD": "exec " + shlex.join(argv)}


def _connect(sd: SessionDir) -> socket.socket:
    """A client connection to the session's dtach (a long session dir is reached through /proc/self/fd)."""
    path = sd.tty_socket
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fd = None
    try:
        if len(str(path)) > _MAX_SUN_PATH:
            fd = os.open(sd.path, os.O_RDONLY | os.O_DIRECTORY)
            s.connect(f"/proc/self/fd/{fd}/{SessionDir.TTY_SOCKET}")
        else:
            s.connect(str(path))
    except OSError:
        s.close()
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return s


def push(sd: SessionDir, data: bytes) -> None:
    """Type `data` into the session's terminal, as if someone attached typed it."""
    try:
        s = _connect(sd)
    except OSError as exc:
        raise Conflict(f"its terminal does not answer ({exc.strerror or exc}): it has ended") from None
    with s:
        packets = b"".join(
            struct.pack("BB8s", _MSG_PUSH, len(data[i : i + 8]), data[i : i + 8]) for i in range(0, len(data), 8)
        )
        s.sendall(packets)


_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")  # C0 (but tab), DEL, C1: keys, not text


def typed(line_bytes: bytes) -> bytes:
    """A steer line as keys: the Enter key is a carriage return on a terminal. BadInput when the line holds a
    control character: on a terminal it is a key (Ctrl-C, Ctrl-D, ESC and a sequence), not text."""
    line = line_bytes.rstrip(b"\n")
    m = _CONTROL.search(line.decode("utf-8", errors="replace"))
    if m is not None:
        raise BadInput(
            f"a line typed into a terminal cannot hold control characters ({ascii(m.group())[1:-1]} at character "
            f"{m.start() + 1}): on a terminal they are keys (Ctrl-C, ESC...), attach to press those"
        )
    return line + b"\r"


def answers(sd: SessionDir) -> bool:
    """Whether the session's dtach is there (it removes its socket when it ends)."""
    try:
        _connect(sd).close()
    except OSError:
        return False
    return True


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(x) for x in text.split()]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _start(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def agent_groups(dtach_pid: int, dtach_start: int) -> list[int]:
    """The process groups of what runs under the session's dtach (pid and start time checked first): the
    agent's (the children of script) first, then script's and the recorder's."""
    if not pid_alive_with_start(dtach_pid, dtach_start):
        return []
    agents: list[int] = []
    others: list[int] = []
    todo = _children(dtach_pid)
    while todo:
        pid = todo.pop()
        kids = _children(pid)
        if _comm(pid) == "script":
            agents.extend(kids)
            others.append(pid)
        else:
            todo.extend(kids)
            others.append(pid)
    return _groups(agents + others)


def _groups(pids: list[int]) -> list[int]:
    """The process groups of `pids`, in their order, once each; never init's nor the runtime's own."""
    groups = []
    for pid in pids:
        try:
            pgid = os.getpgid(pid)
        except ProcessLookupError:
            continue
        if pgid > 1 and pgid != os.getpgrp() and pgid not in groups:
            groups.append(pgid)
    return groups


def _recorders(sd: SessionDir) -> list[int]:
    """Pids of the session's recorder (`sh shim.sh --pty DIR ...`), found by its command line."""
    found = []
    want = str(sd.path).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 3 and argv[2] == b"--pty" and argv[3] == want:
            found.append(int(proc.name))
    return found


def stop_cut_chain(sd: SessionDir) -> bool:
    """The chain was cut (its dtach ended with no exit code recorded: killed by hand): what ran under it (the
    recorder, script, the agent, left to init) must not run on unwatched. SIGKILL to each of their groups; True
    when something was there. A chain that ended whole (agent-exit written) is not looked for."""
    if sd.path.joinpath(SessionDir.AGENT_EXIT).exists():
        return False
    hit = False
    for recorder in _recorders(sd):
        tree, todo = [], [recorder]
        while todo:
            pid = todo.pop()
            todo.extend(_children(pid))
            tree.append(pid)
        for pgid in _groups(tree):
            try:
                os.killpg(pgid, signal.SIGKILL)
                hit = True
            except (ProcessLookupError, PermissionError):
                pass
    return hit


def signal_agent(dtach_pid: int, dtach_start: int, sig: int) -> bool:
    """SIGTERM (or any signal but SIGKILL) goes to the agent's group only: the recorder must live to write the
    exit code. SIGKILL goes to every group under dtach. False when nothing was there to signal."""
    groups = agent_groups(dtach_pid, dtach_start)
    if not groups:
        return False
    targets = groups if sig == signal.SIGKILL else groups[:1]
    hit = False
    for pgid in targets:
        try:
            os.killpg(pgid, sig)
            hit = True
        except (ProcessLookupError, PermissionError):
            pass
    return hit


_SCRIPT_MARK = re.compile(r"Script (started|done) on \d{4}-\d\d-\d\d")


def transcript_lines(lines: list[str]) -> list[str]:
    """A terminal session's output lines as its transcript shows them: without script(1)'s first and last line
    (they hold the whole command line), and each line as a terminal leaves it after carriage returns (a progress
    bar redrawn in place is its last state)."""
    out: list[str] = []
    for line in lines:
        if _SCRIPT_MARK.match(line):
            if line.startswith("Script done") and out and not out[-1]:
                out.pop()  # script(1) starts its last line with a line feed of its own
            continue
        line = line.rstrip("\r")
        out.append(line.rsplit("\r", 1)[-1] if "\r" in line else line)
    return out
