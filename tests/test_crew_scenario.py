"""The acceptance scenario of "Runtime core", end to end with real processes: a headless runtime and `crewtui ctl`.

Spawn 50 demo sessions with six label prefixes, steer five, kill five, have one parent spawn three children
and yield on them, then check that `crewtui ctl list --json` agrees with the SQLite file.
"""

from __future__ import annotations

import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from crewtui.locations import DataDir
from tests.test_ctl import Runtime, ctl

PREFIXES = ["blog-publisher", "research-scout", "ads-auditor", "seo-checker", "release-notes", "inbox-triage"]

CREW = """
[crew]
name = "scenario"
max_concurrent = 100

[agents.demo]
command = ["{python}", "-m", "crewtui.agents.demo", "--task", "{task}", "--duration", "120", "--interval", "0.5"]

[agents.lead]
command = ["{python}", "-m", "crewtui.agents.demo", "--task", "{task}", "--duration", "1", "--interval", "0.2", "--children", "3"]
"""


def wait_until(check, timeout: float, what: str):
    deadline = time.time() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_fifty_sessions_steer_kill_yield_and_list_agrees_with_sqlite(tmp_path: Path) -> None:
    crew = tmp_path / "crew.toml"
    crew.write_text(CREW)
    d = tmp_path / "data"
    rt = Runtime(d, crew)
    try:
        labels = [f"{PREFIXES[i % 6]}-item{i:02d}-2026-04-02" for i in range(50)]

        def spawn(label: str) -> dict:
            p = ctl(
                d,
                "spawn",
                "--label",
                label,
                "--agent",
                "demo",
                "--task",
                f"work on {label}",
                "--domain",
                f"item:{label}",
                "--json",
            )
            assert p.returncode == 0, p.stderr
            return json.loads(p.stdout)

        with ThreadPoolExecutor(8) as pool:
            spawned = list(pool.map(spawn, labels))
        assert len({s["key"] for s in spawned}) == 50
        assert {s["state"] for s in spawned} == {"running"}

        steered = labels[:5]
        for label in steered:
            assert ctl(d, "send", label, f"focus on {label}").returncode == 0
        for label in steered:
            wait_until(lambda: f"steered: focus on {label}" in ctl(d, "history", label).stdout, 15, f"steer of {label}")

        killed = labels[-5:]
        for label in killed:
            p = ctl(d, "kill", label, "--json")
            assert p.returncode == 0, p.stderr
            assert json.loads(p.stdout)[0]["state"] == "killed"

        lead = json.loads(
            ctl(
                d,
                "spawn",
                "--label",
                "synthesis-lead",
                "--agent",
                "lead",
                "--task",
                "synthesize the scouts; spawn 3",
                "--json",
            ).stdout
        )

        def lead_done():
            s = json.loads(ctl(d, "list", "--json", "--prefix", "synthesis-lead").stdout)
            return (
                {x["key"]: x for x in s}.get(lead["key"])
                if any(x["key"] == lead["key"] and x["state"] in ("done", "failed") for x in s)
                else None
            )

        final = wait_until(lead_done, 60, "the lead to finish")
        assert final["state"] == "done", ctl(d, "history", lead["key"]).stdout
        children = final["result"]["children"]
        assert len(children) == 3 and all(c["state"] == "done" for c in children)
        everyone = json.loads(ctl(d, "list", "--json").stdout)
        kids = [s for s in everyone if s["parent"] == lead["key"]]
        assert sorted(k["label"] for k in kids) == [f"synthesis-lead-sub-{i}" for i in range(1, 4)] or len(kids) == 3
        history = ctl(d, "history", lead["key"], "--tail", "200").stdout
        assert "children done: 3/3" in history

        by_state: dict[str, int] = {}
        for s in everyone:
            by_state[s["state"]] = by_state.get(s["state"], 0) + 1
        assert by_state == {"running": 45, "killed": 5, "done": 4}
        assert {s["label"].rsplit("-item", 1)[0] for s in everyone if "-item" in s["label"]} == set(PREFIXES)

        # What ctl says is what the SQLite file holds.
        time.sleep(0.5)  # the store writer commits within a batch; a settled crew has nothing in flight
        listed = {s["key"]: s for s in json.loads(ctl(d, "list", "--json").stdout)}
        con = sqlite3.connect(DataDir(d).store)
        rows = {k: json.loads(data) for k, data in con.execute("select key, data from sessions")}
        con.close()
        assert set(rows) == set(listed)
        for key, row in rows.items():
            for field in (
                "label",
                "state",
                "attempt",
                "parent",
                "domain",
                "exit_code",
                "result",
                "shim_pid",
                "agent_pid",
            ):
                assert row[field] == listed[key][field], (key, field)
    finally:
        for s in json.loads(ctl(d, "list", "--json", "--state", "running").stdout or "[]"):
            ctl(d, "kill", s["key"], "--yes")
        rt.stop()
