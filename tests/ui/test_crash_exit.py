"""A dashboard that crashes (an error nothing in the app handles) ends as one line naming the log, with exit code
1, on a real terminal: no traceback on the screen, the trace in the log, the embedded runtime stopped cleanly
and the sessions left running.

The crash is made on purpose: the real `crewtui` entry point in a process whose help action raises.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import termios
import textwrap
import threading
from pathlib import Path

from crewtui.locations import DataDir
from tests.faults.helpers import ENV, PY, call, kill_leftover_sessions, proc_alive, wait_until

# What Textual writes to put the terminal back (cursor, modes): not text.
SEQUENCE = re.compile(r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[=>]")

CRASHING_DASHBOARD = textwrap.dedent(
    """
    import sys
    from crewtui.cli import main
    from crewtui.ui.app import CrewApp

    def crash(self):
        raise RuntimeError("a bug [/x] \\x1b]0;title\\x07 here\\nand a second line")

    CrewApp.action_help = crash
    main(args=sys.argv[1:], prog_name="crewtui")
    """
)


def test_a_crash_exits_1_with_one_line_and_the_log_path(tmp_path: Path) -> None:
    dd = DataDir(tmp_path / "data")
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
    proc = subprocess.Popen(
        [PY, "-c", CRASHING_DASHBOARD, "--data-dir", str(dd.root)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**ENV, "TERM": "xterm-256color", "COLUMNS": "120", "LINES": "30"},
        start_new_session=True,
    )
    os.close(slave)
    out = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            out.extend(chunk)
        os.close(master)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:

        def serving() -> bool:
            try:
                return dd.socket.exists() and call(dd.socket, "info", timeout=5)["result"]["pid"] == proc.pid
            except (OSError, ValueError, KeyError, TypeError):
                return False

        wait_until(serving, 30, "the dashboard's runtime to serve")
        ctl = [PY, "-m", "crewtui", "ctl", "--data-dir", str(dd.root)]
        spawned = subprocess.run(
            [*ctl, "spawn", "--label", "survivor", "--json", "--", "sleep", "600"],
            capture_output=True,
            text=True,
            timeout=30,
            env=ENV,
            check=True,
        )
        agent = json.loads(spawned.stdout)["agent_pid"]
        wait_until(lambda: b"survivor" in out, 20, "the dashboard to show the session")
        os.write(master, b"?")  # the help key: the crash
        assert proc.wait(timeout=30) == 1, out.decode(errors="replace")[-3000:]
        reader.join(timeout=10)
        # What is left on the terminal after the app gave it back: one line, no traceback.
        screen = out.decode(errors="replace").rsplit("\x1b[?1049l", 1)[-1]  # after leaving the alternate screen
        assert "Traceback" not in screen and "\x1b]0;" not in screen
        lines = [line for line in SEQUENCE.sub("", screen).replace("\r", "").split("\n") if line.strip()]
        assert len(lines) == 1, screen
        assert lines[0].startswith("crewtui: the dashboard crashed (RuntimeError: a bug [/x]  here)")
        assert lines[0].endswith(f"the details are in {dd.log}")
        log = dd.log.read_text()
        assert "Traceback" in log and "RuntimeError: a bug" in log
        # The embedded runtime stopped (its socket is gone); the session runs on for the next start.
        assert not dd.socket.exists()
        assert proc_alive(agent)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        kill_leftover_sessions(dd.root)
