"""`crewtui demo` as a newcomer first sees it: within 10 s of start, sessions have finished, one has failed, a
watchdog has retried a hung one and a cron run has closed with its completion rate.

A real headless `crewtui demo` (its crew file, its agent, real processes). The times come from the store's
event log, stamped by the runtime as things happened, so how often the test looks cannot blur them; the test
only waits, boundedly, until all four are there. Nominally (crewtui/crews/demo.toml) the first sessions end
and the first failure comes at about 3 s, the watchdog's retry and the first closed run at about 6 s: the
room up to 10 s is for a loaded machine.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from crewtui.locations import DataDir
from tests.conftest import PY
from tests.faults.helpers import kill_leftover_sessions
from tests.test_ctl import ENV, ctl

WITHIN = 10.0  # seconds after the runtime started
WAIT = 60.0  # how long to wait for all of it at most, before saying what is missing


def firsts(dd: DataDir) -> dict[str, tuple[float, dict[str, Any]]]:
    """The first event of each kind the test looks for, with its time: "start", "done", "failed", "retried"
    (by a watchdog) and "closed" (a cron run, with a rate)."""
    if not dd.store.exists():
        return {}
    found: dict[str, tuple[float, dict[str, Any]]] = {}
    con = sqlite3.connect(f"file:{dd.store}?mode=ro", uri=True, timeout=5)
    try:
        rows = con.execute(
            "select ts, kind, data from events where kind in "
            "('runtime_started', 'session_state_changed', 'watchdog_fired', 'run_closed') order by seq"
        ).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return {}
    finally:
        con.close()
    for ts, kind, data in rows:
        ev = json.loads(data)
        name = {
            "runtime_started": "start",
            "session_state_changed": ev.get("new") if ev.get("new") in ("done", "failed") else None,
            "watchdog_fired": "retried" if ev.get("outcome") == "retried" else None,
            "run_closed": "closed" if ev.get("rate") is not None else None,
        }[kind]
        if name is not None:
            found.setdefault(name, (ts, ev))
    return found


def test_within_ten_seconds_sessions_finish_one_fails_a_watchdog_retries_and_a_run_closes(tmp_path: Path) -> None:
    d = tmp_path / "demo"
    dd = DataDir(d)
    proc = subprocess.Popen(
        [PY, "-m", "crewtui", "demo", "--headless", "--data-dir", str(d)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + WAIT
        seen = firsts(dd)
        while len(seen) < 5:
            assert proc.poll() is None, f"the demo exited: {proc.stderr.read() if proc.stderr else ''}"
            assert time.monotonic() < deadline, f"after {WAIT:g} s the demo has shown only {sorted(seen)}"
            time.sleep(0.5)
            seen = firsts(dd)

        start = seen["start"][0]
        late = {name: round(ts - start, 1) for name, (ts, _) in seen.items() if ts - start > WITHIN}
        assert not late, f"seconds after start: {late}"
        retried = seen["retried"][1]
        assert retried["label"].startswith("ads-auditor-") and retried["reason"].startswith("not done after 6s")
        closed = seen["closed"][1]
        assert 0 < closed["rate"] <= 1

        # What `crewtui ctl` shows agrees: the closed run with its rate, the ended sessions, the second attempt.
        runs = {r["id"]: r for r in json.loads(ctl(d, "runs", "--json").stdout)}
        assert runs[closed["run"]]["final"] and runs[closed["run"]]["rate"] == closed["rate"]
        sessions = {s["key"]: s for s in json.loads(ctl(d, "list", "--json").stdout)}
        assert sessions[seen["failed"][1]["session"]]["state"] == "failed"
        assert sessions[seen["done"][1]["session"]]["state"] == "done"
        assert sessions[retried["session"]]["attempt"] == 2
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        kill_leftover_sessions(d)  # a headless runtime leaves its sessions running by design
