"""20 `crewtui ctl` clients at once, each a chain of real processes spawning, steering and killing, plus a race
of all 20 for one label: no action is lost or done twice."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import ECHO_AGENT
from tests.faults.helpers import ENV, PY, Headless, assert_events_contiguous, call, rows, wait_until

CLIENTS = 20


def ctl(d: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "crewtui", "ctl", "--data-dir", str(d), *args], capture_output=True, text=True, timeout=60, env=ENV
    )


def client(d: Path, i: int) -> dict:
    label = f"c-{i}"
    spawned = ctl(d, "spawn", "--label", label, "--json", "--", PY, "-c", ECHO_AGENT)
    assert spawned.returncode == 0, spawned.stderr
    key = json.loads(spawned.stdout)["key"]
    contested = ctl(d, "spawn", "--label", "contested", "--", "sleep", "600")
    for n in (1, 2):
        sent = ctl(d, "send", label, f"m-{i}-{n}")
        assert sent.returncode == 0, sent.stderr

    def echoed() -> bool:
        reply = call(d / "control.sock", "history", ref=key, tail=50)
        return sum(1 for line in reply["result"]["lines"] if line.startswith("steered: ")) >= 2

    wait_until(echoed, 30, f"{label} to echo its steers")
    killed = ctl(d, "kill", key, "--json")
    assert killed.returncode == 0, killed.stderr
    return {"key": key, "state": json.loads(killed.stdout)[0]["state"], "contested": contested}


def test_twenty_ctl_clients_at_once_lose_and_double_nothing(tmp_path: Path) -> None:
    d = tmp_path / "data"
    db = d / "crewtui.db"
    h = Headless(d)
    try:
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(lambda i: client(d, i), range(CLIENTS)))

        assert [r["state"] for r in results] == ["killed"] * CLIENTS
        wins = [r["contested"] for r in results if r["contested"].returncode == 0]
        losses = [r["contested"] for r in results if r["contested"].returncode != 0]
        assert len(wins) == 1 and len(losses) == CLIENTS - 1
        for p in losses:
            assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
            assert "label 'contested' is held by live session" in p.stderr

        sessions = rows(db, "SELECT label, state FROM sessions ORDER BY label")
        labels = Counter(label for label, _ in sessions)
        assert labels == Counter({f"c-{i}": 1 for i in range(CLIENTS)} | {"contested": 1})
        for i, r in enumerate(results):
            out = (d / "sessions" / r["key"] / "stdout.log").read_text()
            steers = [line for line in out.splitlines() if line.startswith("steered: ")]
            assert sorted(steers) == [f"steered: m-{i}-1", f"steered: m-{i}-2"], out

        kinds = Counter(json.loads(r[0])["kind"] for r in rows(db, "SELECT data FROM events"))
        assert kinds["session_spawned"] == CLIENTS + 1 and kinds["session_steered"] == 2 * CLIENTS
        killed = [json.loads(r[0]) for r in rows(db, "SELECT data FROM events WHERE kind = 'session_state_changed'")]
        assert Counter(e["session"] for e in killed if e["new"] == "killed") == Counter(r["key"] for r in results)
        assert ctl(d, "kill", "contested").returncode == 0
        assert_events_contiguous(db)
    finally:
        for s in json.loads(ctl(d, "list", "--json").stdout or "[]"):
            if s["state"] in ("running", "pending", "yielded"):
                ctl(d, "kill", s["key"], "--yes")
        h.stop()
