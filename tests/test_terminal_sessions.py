"""Terminal sessions (`tty = true`): a real interactive program on a pseudo-terminal held by dtach, in a real
runtime. A test attaches through a real pseudo-terminal (`crewtui attach`), answers, detaches; the runtime is
killed -9 and restarted while the session waits, re-adopts it, and it can be attached to again; the peek shows
its screen; a steer types a line into it; a kill stops the whole chain."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import shutil
import struct
import termios
import time
from pathlib import Path
from typing import Any

import pytest

from crewtui.runtime.drivers.terminal import transcript_lines
from tests.faults.helpers import ENV, PY, Headless, call, kill_leftover_sessions, wait_until

pytestmark = pytest.mark.skipif(shutil.which("dtach") is None, reason="dtach is missing: scripts/install-debian.sh")

# Asks twice and waits each time; exits 0 only when both answers came.
ASK = """
import sys
name = input("Name? ")
print("hello " + name, flush=True)
again = input("Again? ")
print("bye " + again, flush=True)
sys.exit(0 if (name, again) == ("ada", "yes") else 3)
"""

# What dtach writes once it has put the attacher's terminal in raw mode (it clears the screen), just before it
# tells the session it is there: from then on, what is typed is the agent's. Typed earlier, it raced (3 in 12).
DTACH_IN = b"detach with Ctrl-\\ (it keeps running)\r\n\x1b[H\x1b[J"


class Attached:
    """`crewtui attach LABEL` on a real pseudo-terminal, as a person in a terminal runs it."""

    def __init__(self, data: Path, label: str, rows: int = 24, cols: int = 80) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: the user's shell running the command
            os.execve(PY, [PY, "-m", "crewtui", "attach", label, "--data-dir", str(data)], ENV)
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        self.out = b""

    def read_until(self, wanted: bytes, timeout: float = 10.0) -> bytes:
        deadline = time.monotonic() + timeout
        while wanted not in self.out and time.monotonic() < deadline:
            ready, _, _ = select.select([self.fd], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(self.fd, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                self.out += chunk
        assert wanted in self.out, f"{wanted!r} never came; the terminal showed {self.out[-2000:]!r}"
        return self.out

    def type(self, keys: bytes) -> None:
        os.write(self.fd, keys)

    def exit_code(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.read_until(b"\0", timeout=0.05)
            except AssertionError:
                pass
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
        os.kill(self.pid, 9)
        raise AssertionError("crewtui attach did not end")


def session(h: Headless, key: str) -> dict[str, Any]:
    result: dict[str, Any] = call(h.dd.socket, "get", ref=key)["result"]
    return result


def screen(h: Headless, key: str) -> list[str]:
    lines: list[str] = call(h.dd.socket, "peek", ref=key)["result"]["lines"]
    return lines


def asking(h: Headless, label: str) -> str:
    """ASK started as a terminal session, its question on its screen (seen through peek); its key."""
    key: str = call(h.dd.socket, "spawn", label=label, argv=[PY, "-c", ASK], tty=True)["result"]["key"]
    wait_until(lambda: "Name?" in "\n".join(screen(h, key)), 10, "the question on its screen")
    return key


def test_attach_answer_detach_then_a_kill_9_restart_readopts_it_and_it_ends_done(tmp_path: Path) -> None:
    data = tmp_path / "data"
    h = Headless(data)
    try:
        key = asking(h, "ask-1")
        assert session(h, key)["tty"] is True

        a = Attached(data, "ask-1")
        a.read_until(DTACH_IN)
        a.type(b"ada\r")
        a.read_until(b"hello ada")
        a.read_until(b"Again?")
        a.type(b"\x1c")  # Ctrl-\: detach
        a.read_until(b"[detached]")
        assert a.exit_code() == 0
        assert session(h, key)["state"] == "running"  # detaching leaves it running, waiting on the second question
        peek = call(h.dd.socket, "peek", ref=key)["result"]
        assert peek["lines"][:3] == ["Name? ada", "hello ada", "Again?"]
        assert (peek["rows"], peek["cols"]) == (24, 80)  # the attacher's window size

        h.kill9()
        h = Headless(data)
        wait_until(lambda: session(h, key)["state"] == "running", 10, "the session re-adopted")
        b = Attached(data, "ask-1", rows=30, cols=100)
        b.read_until(DTACH_IN)
        b.type(b"yes\r")
        b.read_until(b"bye yes")
        assert b.exit_code() == 0  # the session ended: dtach lets go of the terminal
        wait_until(lambda: session(h, key)["state"] == "done", 10, "done")
        s = session(h, key)
        assert s["exit_code"] == 0
        lines = call(h.dd.socket, "history", ref=key, tail=20)["result"]["lines"]
        assert lines == ["Name? ada", "hello ada", "Again? yes", "bye yes"]  # the transcript, without script's lines
        assert call(h.dd.socket, "peek", ref=key)["result"]["live"] is False
    finally:
        h.stop()
        kill_leftover_sessions(data)


def test_a_steer_types_a_line_and_a_second_attacher_sees_the_same_screen(tmp_path: Path) -> None:
    data = tmp_path / "data"
    h = Headless(data)
    try:
        key = asking(h, "ask-2")
        first, second = Attached(data, "ask-2"), Attached(data, "ask-2")
        for a in (first, second):
            a.read_until(DTACH_IN)
        assert call(h.dd.socket, "send", ref=key, text="ada")["ok"]  # typed into its terminal: Enter included
        for a in (first, second):
            a.read_until(b"hello ada")
        assert call(h.dd.socket, "send", ref=key, text="no")["ok"]
        wait_until(lambda: session(h, key)["state"] == "failed", 10, "it to end")
        assert session(h, key)["exit_code"] == 3  # the agent's own code, through script and the recorder
        for a in (first, second):
            a.read_until(b"bye no")
            assert a.exit_code() == 0
    finally:
        h.stop()
        kill_leftover_sessions(data)


def running_asks(key: str) -> list[int]:
    """Pids of the ASK program itself (not the shim, dtach, recorder and script that carry its text in their
    arguments) started for session `key` (its CREWTUI_SESSION_KEY says which)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            environ = (proc / "environ").read_bytes()
        except OSError:
            continue
        argv = cmdline.split(b"\0")
        if (
            argv[:2] == [PY.encode(), b"-c"]
            and b'input("Again? ")' in argv[2]
            and f"CREWTUI_SESSION_KEY={key}".encode() in environ
        ):
            found.append(int(proc.name))
    return found


def test_kill_stops_the_agent_under_dtach(tmp_path: Path) -> None:
    data = tmp_path / "data"
    h = Headless(data)
    try:
        key = asking(h, "ask-3")
        sd = data / "sessions" / key
        assert (sd / "tty.sock").exists()
        assert len(running_asks(key)) == 1
        assert call(h.dd.socket, "kill", ref=key)["ok"]
        wait_until(lambda: session(h, key)["state"] == "killed", 15, "killed")
        wait_until(lambda: not (sd / "tty.sock").exists(), 10, "dtach to end (it removes its socket)")
        assert running_asks(key) == []  # the agent (its own session under script, under dtach) is gone too
    finally:
        h.stop()
        kill_leftover_sessions(data)


def test_attach_refuses_in_one_line_what_it_cannot_attach_to(tmp_path: Path) -> None:
    data = tmp_path / "data"
    h = Headless(data)
    try:
        call(h.dd.socket, "spawn", label="plain", argv=["sleep", "30"])
        key = call(h.dd.socket, "spawn", label="over", argv=["true"], tty=True)["result"]["key"]
        wait_until(lambda: session(h, key)["state"] == "done", 10, "over to end")
        for label, words in (
            ("plain", "plain is not a terminal session (spawn it with --tty"),
            ("over", "over has ended (done): there is no terminal to attach to"),
            ("nobody", "nobody"),
        ):
            p = ctl_attach(data, label)
            assert p.returncode == 2, p
            assert words in p.stderr and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
        p = call(h.dd.socket, "peek", ref="plain")
        assert not p["ok"] and "not a terminal session" in p["error"]["message"]
    finally:
        h.stop()
        kill_leftover_sessions(data)


def ctl_attach(data: Path, label: str) -> Any:
    import subprocess

    return subprocess.run(
        [PY, "-m", "crewtui", "attach", label, "--data-dir", str(data)],
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
        stdin=subprocess.DEVNULL,
    )


def test_without_dtach_a_terminal_session_fails_naming_the_package(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bare = tmp_path / "bin"  # a PATH without dtach (the shim and its helpers are found by absolute path)
    bare.mkdir()
    h = Headless(data, env={**ENV, "PATH": str(bare)})
    try:
        r = call(h.dd.socket, "spawn", label="t", argv=[PY, "-c", "pass"], tty=True)
        if r["ok"]:
            key = r["result"]["key"]
            wait_until(lambda: session(h, key)["state"] == "failed", 10, "it to fail")
            reason = session(h, key)["reason"]
        else:
            reason = r["error"]["message"]
        assert "need dtach: apt install dtach" in reason
    finally:
        h.stop()
        kill_leftover_sessions(data)


def test_the_transcript_drops_scripts_lines_and_keeps_what_carriage_returns_leave() -> None:
    lines = [
        'Script started on 2026-11-30 13:00:40+00:00 [COMMAND="exec x" TERM="xterm-256color"]',
        "Name? ada\r",
        "10%\r50%\r100%\r",
        "",
        'Script done on 2026-11-30 13:00:41+00:00 [COMMAND_EXIT_CODE="0"]',
    ]
    assert transcript_lines(lines) == ["Name? ada", "100%"]
