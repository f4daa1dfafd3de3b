"""kill -9 of a headless runtime with 50 live sessions, in the middle of a burst of spawns (the event writer
mid-batch), then a restart: nothing is orphaned, lost silently, doubled or left with a hole in its log."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

from crewtui.errors import CrewError
from crewtui.model import SessionState, SpawnRequest
from tests.faults.helpers import (
    Headless,
    assert_events_contiguous,
    assert_restart_outcome,
    await_until,
    kill_all_live,
    kill_group,
    kill_leftover_sessions,
    proc_alive,
    procs_in,
)

CREW = """
[crew]
name = "crash"
max_concurrent = 200
max_children = 100
kill_grace = "1s"

[agents.tick]
command = ["true"]

[[cron]]
name = "tick"
schedule = { kind = "every", every = "1s" }
overlap = "allow"
misfire = "run_all"
misfire_grace = "1h"
spawn = { agent = "tick", label = "tick-{run}" }
"""


async def test_kill9_mid_burst_then_restart_readopts_records_or_retries_every_session(tmp_path: Path) -> None:
    crew = tmp_path / "crew.toml"
    crew.write_text(CREW)
    d = tmp_path / "data"
    db = d / "crewtui.db"
    a = Headless(d, crew)
    rt = a.client()
    b: Headless | None = None
    try:
        # 50 live sessions: 20 that outlive the outage, 15 that end during it (exit.json), 15 whose whole process
        # group is killed during it (no exit record: lost) and whose watchdog must retry them.
        long = [SpawnRequest(label=f"long-{i}", argv=["sleep", "600"]) for i in range(20)]
        short = [SpawnRequest(label=f"short-{i}", argv=["sleep", "2"]) for i in range(15)]
        doomed = [
            SpawnRequest(label=f"doomed-{i}", argv=["sleep", "600"], watchdog_after=3, max_attempts=2)
            for i in range(15)
        ]
        acked = {s.label: s for s in await asyncio.gather(*(rt.spawn(r) for r in long + short + doomed))}
        assert len(acked) == 50 and all(s.state == SessionState.RUNNING for s in acked.values())

        # A burst, and kill -9 while its spawns are being written: the writer is mid-batch.
        burst = [
            asyncio.ensure_future(rt.spawn(SpawnRequest(label=f"burst-{i}", argv=["sleep", "600"]))) for i in range(30)
        ]
        for n, fut in enumerate(asyncio.as_completed(burst), start=1):
            try:
                s = await fut
            except CrewError:
                continue
            acked[s.label] = s
            if n >= 5:
                break
        a.kill9()
        killed_at = time.monotonic()
        for fut in burst:
            try:
                s = await fut
            except (CrewError, OSError):
                continue
            acked[s.label] = s  # answered just before the kill
        assert not proc_alive(a.pid)

        # While no runtime runs: the doomed die without an exit record, the short ones end normally.
        for label, s in acked.items():
            if label.startswith("doomed-"):
                kill_group(s.shim_pid)
        await await_until(
            lambda: all((d / "sessions" / acked[f"short-{i}"].key / "exit.json").exists() for i in range(15)),
            15,
            "the short sessions to end",
        )
        # Stay down across at least three fires of the 1 s cron job.
        await await_until(lambda: time.monotonic() - killed_at >= 3.5, 10, "three missed fires")

        b = Headless(d, crew)
        rt = b.client()
        await assert_restart_outcome(
            rt,
            d,
            db,
            {label: (s.key, s.agent_pid) for label, s in acked.items()},
            doomed=15,
            short=15,
            retry_timeout=15,
            min_cron_span=5,
        )
    finally:
        for h in (a, b):
            if h is not None and h.alive():
                try:
                    await kill_all_live(h.client())
                except CrewError:
                    pass
                h.stop()
        kill_leftover_sessions(d)  # anything a failed assertion left behind


async def test_restart_adopts_a_launch_stored_as_pending_and_stops_launches_never_stored(tmp_path: Path) -> None:
    """The two records a kill -9 can cut between launch and store, forged exactly: a session still stored as
    `pending` although its process was started, and a started process whose session row never reached the store."""
    d = tmp_path / "data"
    db = d / "crewtui.db"
    a = Headless(d)
    rt = a.client()
    b: Headless | None = None
    try:
        started = await rt.spawn(SpawnRequest(label="started", argv=["sleep", "600"]))
        ghost = await rt.spawn(SpawnRequest(label="ghost", argv=["sleep", "600"]))
        a.kill9()
        conn = sqlite3.connect(db)
        with conn:
            data = json.loads(conn.execute("SELECT data FROM sessions WHERE key = ?", (started.key,)).fetchone()[0])
            for k in ("shim_pid", "agent_pid", "shim_start", "agent_start", "started_at"):
                data[k] = None
            data["state"] = "pending"
            conn.execute(
                "UPDATE sessions SET state = 'pending', data = ? WHERE key = ?", (json.dumps(data), started.key)
            )
            conn.execute("DELETE FROM sessions WHERE key = ?", (ghost.key,))
        conn.close()

        b = Headless(d)
        rt = b.client()
        again = await rt.get(started.key)
        assert again.state == SessionState.RUNNING and again.agent_pid == started.agent_pid  # adopted, not re-run
        assert sorted(procs_in(d / "sessions" / started.key)) == sorted([started.shim_pid, started.agent_pid])
        assert not proc_alive(ghost.shim_pid) and not proc_alive(ghost.agent_pid)
        texts = [e.text for e in await rt.events() if e.kind == "system"]
        assert any("stopped 1 unrecorded session process" in t and ghost.key in t for t in texts), texts
        await kill_all_live(rt)
        assert_events_contiguous(db)
    finally:
        for h in (a, b):
            if h is not None and h.alive():
                h.stop()
        for s in (locals().get("started"), locals().get("ghost")):
            if s is not None:
                kill_group(s.shim_pid)
