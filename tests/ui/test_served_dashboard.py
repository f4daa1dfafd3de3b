"""A dashboard as `crewtui serve` runs it for a browser page, and what happens when the page's server goes away.

textual-serve starts `serve_command(dd)` through a shell with Textual's web driver, speaking packets over the
process's stdin and stdout pipes. These tests do the same with no server at all: they hold the pipes and play
a server that stops reading, closes the dashboard's input, or dies. Each time the dashboard must exit on its
own or on SIGTERM/SIGHUP within seconds, and the crew's session must keep running.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crewtui.cli.root import serve_command
from crewtui.locations import DataDir
from tests.conftest import SLEEPER
from tests.faults.helpers import ENV, PY, Headless, call, proc_alive, wait_until

EXIT_WITHIN = 5.0  # seconds a served dashboard may take to leave

# What textual-serve's AppService puts in the environment of the apps it starts (_build_environment).
SERVED_ENV = {
    **ENV,
    "TEXTUAL_DRIVER": "textual.drivers.web_driver:WebDriver",
    "TEXTUAL_FPS": "60",
    "TEXTUAL_COLOR_SYSTEM": "truecolor",
    "TERM_PROGRAM": "textual",
    "COLUMNS": "120",
    "ROWS": "40",
}


@pytest.fixture(scope="module")
def crew(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Headless, str]]:
    """A headless runtime with one long-running session, shared by the tests of this module."""
    rt = Headless(tmp_path_factory.mktemp("served") / "data")
    try:
        reply = call(rt.dd.socket, "spawn", label="served-keeps-running", argv=[PY, "-c", SLEEPER])
        assert reply["ok"], reply
        yield rt, reply["result"]["key"]
    finally:
        for s in call(rt.dd.socket, "list")["result"]:
            if s["state"] in ("running", "pending", "yielded"):
                call(rt.dd.socket, "kill", ref=s["key"])
        rt.stop()


class Served:
    """An attached dashboard started the way textual-serve starts one, with this test holding its pipes."""

    def __init__(self, dd: DataDir, log: Path) -> None:
        self.stderr = open(log, "wb")
        self.proc = subprocess.Popen(
            serve_command(dd),
            shell=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=SERVED_ENV,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin = self.proc.stdin
        self.out = self.proc.stdout.fileno()
        self._draining: threading.Thread | None = None
        self._read_until(b"__GANGLION__\n", timeout=30)  # the web driver's hello: the app is up

    def _read_until(self, marker: bytes, timeout: float) -> None:
        buf = b""
        deadline = time.monotonic() + timeout
        while marker not in buf:
            left = deadline - time.monotonic()
            assert left > 0 and self.proc.poll() is None, f"no {marker!r} from the dashboard (exit {self.proc.poll()})"
            if select.select([self.out], [], [], left)[0]:
                chunk = os.read(self.out, 65536)
                assert chunk, "the dashboard closed its output before saying hello"
                buf += chunk

    def drain(self) -> None:
        """Read everything it writes from now on, as a healthy server does."""

        def run() -> None:
            try:
                while os.read(self.out, 65536):
                    pass
            except OSError:
                pass

        self._draining = threading.Thread(target=run, daemon=True)
        self._draining.start()

    def stop_reading_until_full(self) -> None:
        """Play a server that no longer reads: shrink the pipe to one page and wait until the dashboard sleeps
        in write(2) on it."""
        fcntl.fcntl(self.out, fcntl.F_SETPIPE_SZ, 4096)
        wait_until(lambda: blocked_in_pipe_write(self.proc.pid), 30, "the dashboard to block on its full output pipe")

    def exited_within(self, seconds: float) -> int | None:
        try:
            return self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
        self.stderr.close()


def blocked_in_pipe_write(pid: int) -> bool:
    """Some thread of `pid` sleeps writing to a full pipe."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in tids:
        try:
            if Path(f"/proc/{pid}/task/{tid}/wchan").read_text().endswith("pipe_write"):
                return True
        except OSError:
            continue
    return False


@pytest.fixture
def served(crew: tuple[Headless, str], tmp_path: Path) -> Iterator[Served]:
    rt, _ = crew
    dash = Served(rt.dd, tmp_path / "dashboard.stderr")
    try:
        yield dash
    finally:
        dash.close()


def assert_session_still_running(crew: tuple[Headless, str]) -> None:
    rt, key = crew
    s = call(rt.dd.socket, "get", ref=key)["result"]
    assert s["state"] == "running" and proc_alive(s["agent_pid"]), s


def assert_left_cleanly(served: Served, code: int | None, tmp_path: Path) -> None:
    assert code is not None, f"the served dashboard (pid {served.proc.pid}) still runs after {EXIT_WITHIN:g}s"
    assert code == 0, (code, (tmp_path / "dashboard.stderr").read_text(errors="replace")[-2000:])
    err = (tmp_path / "dashboard.stderr").read_text(errors="replace")
    assert "Traceback" not in err, err[-6000:]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_served_dashboard_exits_on_a_signal_even_when_its_server_stopped_reading(
    crew: tuple[Headless, str], served: Served, tmp_path: Path, sig: signal.Signals
) -> None:
    # A server that hangs while shutting down, or whose reader ended with the websocket, leaves the pipe full;
    # Textual's web driver then slept in write(2) on the event loop and never acted on a signal (kill -9 only).
    served.stop_reading_until_full()
    served.proc.send_signal(sig)
    assert_left_cleanly(served, served.exited_within(EXIT_WITHIN), tmp_path)
    assert_session_still_running(crew)


def test_a_served_dashboard_exits_when_its_input_closes(
    crew: tuple[Headless, str], served: Served, tmp_path: Path
) -> None:
    served.drain()
    served.stdin.close()  # the server went away (EOF); before, the input thread just returned
    assert_left_cleanly(served, served.exited_within(EXIT_WITHIN), tmp_path)
    assert_session_still_running(crew)


def test_a_served_dashboard_exits_when_its_server_is_killed(
    crew: tuple[Headless, str], served: Served, tmp_path: Path
) -> None:
    # kill -9 of `crewtui serve`: both pipes lose their other end at once.
    served.stdin.close()
    served.proc.stdout.close()  # type: ignore[union-attr]
    assert_left_cleanly(served, served.exited_within(EXIT_WITHIN), tmp_path)
    assert_session_still_running(crew)
