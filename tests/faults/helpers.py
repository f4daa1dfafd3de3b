"""Shared tools of the fault tests: a real headless runtime process, store readers, bounded waits."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from crewtui.control.client import RemoteRuntime
from crewtui.locations import DataDir, socket_connect_path
from crewtui.model import SessionState
from crewtui.runtime.drivers.terminal import signal_agent

PY = sys.executable
# A runtime under test must not inherit the socket or data dir of whatever runs the tests.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("CREWTUI_")}


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll a condition driven by real processes, at most `timeout` seconds; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


async def await_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """`wait_until` for async tests (the predicate may be a coroutine function)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        await asyncio.sleep(interval)


class Headless:
    """`crewtui run [CREW] --headless --data-dir D` as a real child process."""

    def __init__(
        self,
        data_dir: Path,
        crew: Path | None = None,
        *,
        wait: bool = True,
        env: Mapping[str, str] | None = None,
        umask: int | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.dd = DataDir(self.data_dir)
        args = [PY, "-m", "crewtui", "run", "--headless", "--data-dir", str(self.data_dir)]
        if crew is not None:
            args.insert(4, str(crew))
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(env) if env is not None else ENV,
            umask=-1 if umask is None else umask,
        )
        self.pid = self.proc.pid
        if wait:
            self.wait_serving()

    def wait_serving(self, timeout: float = 30.0) -> None:
        """Until this runtime answers on the socket (it has reconciled and serves; not an older one)."""

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited {self.proc.returncode}: {self.proc.stderr.read()}")
            try:
                return self.dd.socket.exists() and call(self.dd.socket, "info", timeout=5)["result"]["pid"] == self.pid
            except (OSError, ValueError, KeyError, TypeError):
                return False

        wait_until(up, timeout, "the runtime to serve", interval=0.05)

    def ping(self, timeout: float = 5.0) -> bool:
        try:
            return call(self.dd.socket, "ping", timeout=timeout) == {"ok": True, "result": "pong"}
        except OSError:
            return False

    def client(self) -> RemoteRuntime:
        return RemoteRuntime(self.dd.socket, self.data_dir)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc.stderr.close()

    def stop(self, timeout: float = 30.0) -> str:
        """SIGTERM (sessions are left running) and return what the runtime said on stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except ValueError:  # stderr already closed by kill9
            self.proc.wait(timeout=timeout)
            err = ""
        return err


class Dashboard(Headless):
    """`crewtui run [CREW] --data-dir D`: the dashboard with its embedded runtime, as a real child process on a
    real pseudo-terminal (80x24). A thread drains the terminal, so the app never blocks on a full pty, and keeps
    what it wrote (`screen_text`)."""

    def __init__(self, data_dir: Path, crew: Path | None = None, *, wait: bool = True) -> None:
        import fcntl
        import pty
        import struct
        import termios
        import threading

        self.data_dir = Path(data_dir)
        self.dd = DataDir(self.data_dir)
        args = [PY, "-m", "crewtui", "run", "--data-dir", str(self.data_dir)]
        if crew is not None:
            args.insert(4, str(crew))
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        env = {**ENV, "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"}
        # Its own session with the pty as controlling terminal, like a shell in a terminal emulator.
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True, close_fds=True
        )
        os.close(slave)
        self.pid = self.proc.pid
        self._master = master
        self._out = bytearray()
        self._reader = threading.Thread(target=self._drain, name=f"pty-{self.pid}", daemon=True)
        self._reader.start()
        if wait:
            self.wait_serving()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO: every process holding the pty's other end has gone
                break
            if not chunk:
                break
            self._out += chunk
            del self._out[:-1_000_000]
        os.close(self._master)

    def screen_text(self) -> str:
        """What the process wrote to its terminal, escape sequences removed."""
        import re

        return re.sub(
            r"\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])",
            "",
            self._out.decode(errors="replace"),
        )

    def wait_serving(self, timeout: float = 30.0) -> None:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"dashboard exited {self.proc.returncode}: {self.screen_text()[-2000:]}")
            try:
                return self.dd.socket.exists() and call(self.dd.socket, "info", timeout=5)["result"]["pid"] == self.pid
            except (OSError, ValueError, KeyError, TypeError):
                return False

        wait_until(up, timeout, "the dashboard's runtime to serve", interval=0.05)

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self._reader.join(timeout=10)

    def stop(self, timeout: float = 30.0) -> str:
        """SIGTERM (the dashboard leaves and the sessions run on) and return what it wrote to its terminal."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=10)
        return self.screen_text()


def call(sock: Path, op: str, timeout: float = 10.0, **args: Any) -> Any:
    """One request over the control socket with a plain blocking socket; the decoded reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(socket_connect_path(sock))  # a deep data dir's control.sock links to a short twin
        s.sendall((json.dumps({"op": op, "args": args}) + "\n").encode())
        return json.loads(read_line(s))


def read_line(s: socket.socket) -> bytes:
    buf = bytearray()
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def run_as_nobody(fn: Callable[[], int | None]) -> tuple[int, str]:
    """Run `fn` in a forked child that dropped root to `nobody` (65534) first; return (exit code, its output).

    A fork, not an exec: the test interpreter may live where `nobody` cannot read it.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        code = 1
        try:
            os.close(read_end)
            os.dup2(write_end, 1)
            os.dup2(write_end, 2)
            # pytest's capture replaced sys.stdout/err with its own files: point them at the pipe.
            sys.stdout = open(1, "w", closefd=False)
            sys.stderr = open(2, "w", closefd=False)
            os.setgroups([])
            os.setresgid(65534, 65534, 65534)
            os.setresuid(65534, 65534, 65534)
            code = fn() or 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException as exc:
            os.write(2, f"{type(exc).__name__}: {exc}\n".encode())
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def cli_main(*args: str) -> Callable[[], int | None]:
    """`crewtui ARGS` run in this interpreter (for `run_as_nobody`)."""

    def go() -> int | None:
        from crewtui.cli import main

        main(args=list(args), prog_name="crewtui")
        return 0

    return go


def rows(db: Path, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
    """Read committed rows the way another process would (read-only, WAL aware)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, tuple(params)).fetchall()
    finally:
        conn.close()


def assert_events_contiguous(db: Path) -> int:
    """The event log's seqs are exactly 1..N (no gap, no duplicate); returns N."""
    seqs = [r[0] for r in rows(db, "SELECT seq FROM events ORDER BY seq")]
    assert seqs, "no events at all"
    assert len(seqs) == len(set(seqs))
    missing = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
    assert seqs == list(range(1, len(seqs) + 1)), f"gaps in the event log: {missing[:20]}"
    return len(seqs)


def proc_alive(pid: int | None) -> bool:
    """A live, non-zombie process."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat.rpartition(b") ")[2][:1] not in (b"Z", b"X")


def procs_in(directory: Path) -> list[int]:
    """Live processes of the session whose dir is `directory` (DATA/sessions/KEY): its shim and agent, found by
    the environment every process of a session inherits."""
    directory = Path(directory)
    marks = {
        f"CREWTUI_SESSION_KEY={directory.name}".encode(),
        f"CREWTUI_DATA_DIR={directory.parent.parent.absolute()}".encode(),
    }
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                env = set(fh.read().split(b"\0"))
        except OSError:
            continue
        if marks <= env and proc_alive(int(entry)):
            out.append(int(entry))
    return out


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def kill_group(pgid: int | None) -> None:
    if not pgid or pgid <= 1:
        return
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_leftover_sessions(data_dir: Path) -> None:
    """Kill every session process group a data dir's pid.json files name (test cleanup: sessions outlive
    their runtime by design, so a test that stops its runtime must end what it started)."""
    sessions = Path(data_dir) / "sessions"
    for sd in sessions.iterdir() if sessions.exists() else []:
        try:
            pids = json.loads((sd / "pid.json").read_text())
            if pids.get("tty"):  # a terminal session: its agent runs in sessions of its own under dtach
                signal_agent(pids["agent_pid"], pids["agent_start"], signal.SIGKILL)
                kill_group(pids["agent_pid"])
            kill_group(pids["shim_pid"])
        except (OSError, ValueError, KeyError):
            pass


async def kill_all_live(rt: RemoteRuntime) -> None:
    """End every live session of a runtime (test cleanup)."""
    for s in await rt.list():
        if s.state.live:
            try:
                await rt.kill(s.key)
            except Exception:
                pass


def launched_but_unknown(data_dir: Path, known: set[str]) -> list[str]:
    """Session dirs the store knows nothing about whose shim or agent still runs (orphans)."""
    out = []
    for d in sorted((data_dir / "sessions").iterdir()):
        if d.name in known:
            continue
        try:
            pids = json.loads((d / "pid.json").read_text())
        except (OSError, ValueError):
            continue
        if proc_alive(pids.get("shim_pid")) or proc_alive(pids.get("agent_pid")):
            out.append(d.name)
    return out


async def assert_restart_outcome(
    rt: RemoteRuntime,
    data_dir: Path,
    db: Path,
    acked: Mapping[str, tuple[str, int | None]],
    *,
    doomed: int = 15,
    short: int = 15,
    retry_timeout: float = 15,
    cron_job: str | None = None,
    min_cron_span: float | None = None,
) -> None:
    """After a kill -9 of a runtime with live sessions (`long-*`, `short-*`, `doomed-*` and a `burst-*` of spawns
    cut by the kill) and a restart (`rt`): nothing is orphaned, lost silently, doubled or left with a hole in its
    log. `acked` maps the label of every spawn acknowledged before the kill to its (key, agent pid); the `doomed`
    ones had their process group killed during the outage (no exit record), the `short` ones ended during it.
    The 1 s cron job (`cron_job`, or every job's runs when None) must have fired once for each second across the
    outage (misfire = run_all), over at least `min_cron_span` seconds when given. Ends every live session."""
    # No process runs for a session the store does not know (a spawn cut short by the kill).
    known = {r[0] for r in rows(db, "SELECT key FROM sessions")}
    assert launched_but_unknown(data_dir, known) == []

    after = {s.key: s for s in await rt.list()}
    for label, (key, agent_pid) in acked.items():
        assert key in after, f"acknowledged spawn {label} ({key}) was lost by the kill"
        now = after[key]
        if label.startswith(("long-", "burst-")):
            assert now.state == SessionState.RUNNING, (label, now.state, now.reason)
            assert now.agent_pid == agent_pid and proc_alive(now.agent_pid), label  # re-adopted, not restarted
        elif label.startswith("short-"):
            assert now.state == SessionState.DONE and now.exit_code == 0, (label, now.state, now.reason)
    # Sessions of the burst that were never acknowledged: if recorded at all, they run and are watched.
    for s in after.values():
        if s.label.startswith("burst-") and s.label not in acked:
            assert s.state == SessionState.RUNNING and proc_alive(s.agent_pid), (s.label, s.state, s.reason)

    # The doomed were marked lost, and their watchdogs (persisted timers, already due) retried them.
    doomed_keys = {acked[f"doomed-{i}"][0] for i in range(doomed)}

    async def doomed_retried() -> bool:
        return all(s.attempt == 2 for s in await rt.list(prefix="doomed-"))

    await await_until(doomed_retried, retry_timeout, "the watchdogs to retry the lost sessions")

    # Each live session is one shim and one agent, each ended one nothing: no duplicate start, no orphan.
    async def settled() -> list:
        listed = [s for s in await rt.list() if not s.label.startswith("tick-")]
        return listed if all(s.state != SessionState.PENDING for s in listed) else []

    for s in await await_until(settled, 10, "retries to start"):
        want = 2 if s.state == SessionState.RUNNING else 0
        assert len(procs_in(data_dir / "sessions" / s.key)) == want, (s.label, s.state)
    events = await rt.events()
    lost = {e.session for e in events if e.kind == "session_state_changed" and e.new == SessionState.LOST}
    retried = {e.session for e in events if e.kind == "session_retried" and e.cause == "lost"}
    assert lost >= doomed_keys and retried >= doomed_keys
    started = [e for e in events if e.kind == "runtime_started"]
    assert started[-1].lost >= doomed and started[-1].recorded_exits >= short

    # The 1 s job: let it fire a few times after the restart, then every fire once, none missing across the
    # outage (run_all), none doubled.
    where, params = ("WHERE job = ?", (cron_job,)) if cron_job is not None else ("", ())
    first_after = time.time()
    await await_until(
        lambda: (rows(db, f"SELECT max(nominal) FROM cron_runs {where}", params)[0][0] or 0) > first_after + 2,
        15,
        "cron fires after the restart",
    )
    runs = rows(db, f"SELECT job, nominal FROM cron_runs {where} ORDER BY nominal", params)
    assert len(runs) == len(set(runs)), "a cron fire was recorded twice"
    nominals = [n for _, n in runs]
    assert [round(y - x, 6) for x, y in itertools.pairwise(nominals)] == [1.0] * (len(nominals) - 1), (
        "a cron fire was lost across the kill (misfire = run_all)"
    )
    if min_cron_span is not None:
        assert nominals[-1] - nominals[0] >= min_cron_span

    await kill_all_live(rt)
    assert_events_contiguous(db)


def fill_history(data_dir: Path, ended: int, *, start: float | None = None, span: float = 365 * 86400.0) -> int:
    """Write `ended` ended sessions straight into a data dir's store (made if needed), created over `span`
    seconds before `start` (default: now), in a dozen groups: a year of history in seconds, not a year.
    Returns the store's size in bytes."""
    import random

    from crewtui.clock import FakeClock, IdGen
    from crewtui.model import Session
    from crewtui.store import Store

    dd = DataDir(data_dir).ensure()

    async def create() -> None:
        await (await Store.open(dd.store)).close()

    if not dd.store.exists():
        # In a thread of its own: the caller may be an async test, whose loop is running.
        maker = threading.Thread(target=asyncio.run, args=(create(),))
        maker.start()
        maker.join()
    start = time.time() if start is None else start
    clock = FakeClock(start - span)
    ids = IdGen(clock, random.Random(7))
    base = Session(key="s-0", label="x", state=SessionState.DONE, created_at=0.0, updated_at=0.0).model_dump(
        mode="json"
    )
    groups = ("blog", "scout", "audit", "triage", "review", "ops", "seo", "lead", "notes", "sync", "digest", "mail")
    step = span / max(1, ended)
    rows = []
    with sqlite3.connect(dd.store) as db:
        for i in range(ended):
            clock._now += step
            key = ids.new()
            group = groups[i % len(groups)]
            failed = i % 17 == 0
            t = clock.now()
            data = {
                **base,
                "key": key,
                "label": f"{group}-item{i % 997}-r{i // 997}",
                "created_at": t,
                "started_at": t + 1,
                "ended_at": t + 30,
                "updated_at": t + 30,
                "state": "failed" if failed else "done",
                "exit_code": 1 if failed else 0,
                "reason": "exit code 1" if failed else None,
                "result": None if failed else {"n": i},
                "result_bytes": None if failed else len(json.dumps({"n": i})),
                "output_dir": str(dd.session_dir(key)),
                "argv": ["agent", "--task", f"item {i}"],
            }
            rows.append((key, data["label"], data["state"], None, None, t + 30, json.dumps(data)))
            if len(rows) >= 10_000:
                db.executemany(
                    "INSERT INTO sessions (key, label, state, parent, cron_run, updated_at, data) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                rows.clear()
        db.executemany(
            "INSERT INTO sessions (key, label, state, parent, cron_run, updated_at, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return dd.store.stat().st_size


def ctl(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`crewtui ctl --data-dir DATA_DIR ARGS…` as a person runs it (text out, exit code)."""
    return subprocess.run(
        [PY, "-m", "crewtui", "ctl", "--data-dir", str(data_dir), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )


def toml_table(values: dict[str, str]) -> str:
    """An inline TOML table of strings (an agent's `env` in a crew file a test writes)."""
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in values.items()) + " }"
