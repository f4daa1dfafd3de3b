"""Attach: hand the user's terminal to a terminal session (`tty = true`) until the detach key gives it back.

`crewtui attach LABEL` runs this from a shell; the dashboard's `enter` suspends itself around it. What runs is
`dtach -a` on the session's socket, in its session dir: several people can be attached to one session at once
(each sees the same screen; the last window size wins), Ctrl-Z goes to the agent (-z), and the screen is redrawn
through a window-size change (-r winch), since dtach keeps no screen of its own to replay.

A session is never attached to from inside itself (a shell session running `crewtui attach` on its own label):
what the attacher prints would be the session's output again, a loop that fills its transcript at 100 kB/s.
Its processes carry its key in CREWTUI_SESSION_KEY.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from crewtui.errors import BadInput, Conflict
from crewtui.locations import SessionDir
from crewtui.model import Session

DETACH_KEY = "^\\"  # Ctrl-\
DETACH_WORDS = "Ctrl-\\"


def attach_command(s: Session) -> tuple[list[str], Path]:
    """The argv and directory that attach to `s`, or one line saying why it cannot be attached to."""
    if not s.tty:
        raise BadInput(f"{s.label} is not a terminal session (spawn it with --tty, or an agent with tty = true)")
    if not s.state.live:
        raise Conflict(f"{s.label} has ended ({s.state.value}): there is no terminal to attach to")
    if s.driver == "ray":  # its terminal is held on its node: peek and steer reach it from here, attach does not
        where = f"node {s.node}" if s.node else "a Ray node"
        raise Conflict(
            f"{s.label} runs on {where}: its terminal is there (dtach -a its {SessionDir.TTY_SOCKET}, in its "
            "session's dir under $TMPDIR/crewtui-NAMESPACE/ on that machine); peek and steer work from here"
        )
    if os.environ.get("CREWTUI_SESSION_KEY") == s.key:
        raise BadInput(f"this runs inside {s.label}: attaching to it from here would feed its screen back into it")
    if s.output_dir is None or not SessionDir(s.output_dir).tty_socket.exists():
        raise Conflict(f"{s.label}: its terminal is not there (ended, or on another machine)")
    found = shutil.which("dtach")
    if found is None:
        raise BadInput("attaching needs dtach: apt install dtach")
    return [found, "-a", SessionDir.TTY_SOCKET, "-e", DETACH_KEY, "-r", "winch", "-z"], Path(s.output_dir)


def attach(s: Session) -> int:
    """Attach this process's terminal to `s` until detached (or the session ends); dtach's exit code."""
    argv, where = attach_command(s)
    return subprocess.run(argv, cwd=where, check=False).returncode
