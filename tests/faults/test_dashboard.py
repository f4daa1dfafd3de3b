"""The runtime embedded in a dashboard, in a real terminal: kill -9 of the dashboard with 50 live sessions (mid-
batch of the event writer), and a dashboard whose runtime is fenced off by a newer one."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path

from crewtui.errors import CrewError
from crewtui.model import SessionState, SpawnRequest
from tests.faults.helpers import (
    ENV,
    PY,
    Dashboard,
    Headless,
    assert_restart_outcome,
    await_until,
    kill_all_live,
    kill_group,
    kill_leftover_sessions,
    proc_alive,
    rows,
    wait_until,
)

# 50 live sessions from the crew itself, fired when the dashboard starts: 20 that outlive the outage, 15 that end
# during it (exit.json) and 15 whose process group is killed during it (no exit record: lost), which their
# watchdog must retry; and a 1 s job that must fire across the outage (run_all).
CREW = """
[crew]
name = "dashboard-crash"
max_concurrent = 200
kill_grace = "1s"

[agents.sleep]
command = ["sleep", "{{task}}"]

[agents.tick]
command = ["true"]

[[cron]]
name = "long"
schedule = {{ kind = "every", every = "1h" }}
fire_at_start = true
spawn = {{ agent = "sleep", label = "long-{{item}}", task = "600", items = [{twenty}] }}

[[cron]]
name = "short"
schedule = {{ kind = "every", every = "1h" }}
fire_at_start = true
spawn = {{ agent = "sleep", label = "short-{{item}}", task = "10", items = [{fifteen}] }}

[[cron]]
name = "doomed"
schedule = {{ kind = "every", every = "1h" }}
fire_at_start = true
watchdog_after = "25s"
max_attempts = 2
spawn = {{ agent = "sleep", label = "doomed-{{item}}", task = "600", items = [{fifteen}] }}

[[cron]]
name = "tick"
schedule = {{ kind = "every", every = "1s" }}
overlap = "allow"
misfire = "run_all"
misfire_grace = "1h"
spawn = {{ agent = "tick", label = "tick-{{run}}" }}
""".format(twenty=", ".join(f'"{i}"' for i in range(20)), fifteen=", ".join(f'"{i}"' for i in range(15)))


def ctl_list(data_dir: Path) -> list[dict]:
    """`crewtui ctl list --json`, as a user would look."""
    out = subprocess.run(
        [PY, "-m", "crewtui", "--data-dir", str(data_dir), "ctl", "list", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


async def test_kill9_of_a_dashboard_with_50_live_sessions_then_restart_readopts_records_or_retries_each(
    tmp_path: Path,
) -> None:
    crew = tmp_path / "crew.toml"
    crew.write_text(CREW)
    # The restart runs the same crew without the start-up fires (they would start a second batch).
    crew_after = tmp_path / "crew-after.toml"
    crew_after.write_text(CREW.replace("fire_at_start = true", "fire_at_start = false"))
    d = tmp_path / "data"
    db = d / "crewtui.db"
    dash = Dashboard(d, crew)
    b: Headless | None = None
    try:

        def fifty_running() -> dict[str, dict]:
            listed = {s["label"]: s for s in ctl_list(d) if not s["label"].startswith("tick-")}
            return listed if len(listed) == 50 and all(s["state"] == "running" for s in listed.values()) else {}

        acked = wait_until(fifty_running, 60, "the crew's 50 sessions to run", interval=0.3)
        assert "crewtui" in dash.screen_text() and dash.alive()  # a real dashboard is on the terminal

        # A burst of spawns over its socket, and kill -9 while they are being written: the writer is mid-batch.
        rt = dash.client()
        burst = [
            asyncio.ensure_future(rt.spawn(SpawnRequest(label=f"burst-{i}", argv=["sleep", "600"]))) for i in range(30)
        ]
        for n, fut in enumerate(asyncio.as_completed(burst), start=1):
            try:
                s = await fut
            except CrewError:
                continue
            acked[s.label] = s.model_dump(mode="json")
            if n >= 5:
                break
        dash.kill9()
        killed_at = time.monotonic()
        for fut in burst:
            try:
                s = await fut
            except (CrewError, OSError):
                continue
            acked[s.label] = s.model_dump(mode="json")  # answered just before the kill
        assert not proc_alive(dash.pid)

        # While no runtime runs: the doomed die without an exit record, the short ones end normally.
        for label, s in acked.items():
            if label.startswith("doomed-"):
                kill_group(s["shim_pid"])
        await await_until(
            lambda: all((d / "sessions" / acked[f"short-{i}"]["key"] / "exit.json").exists() for i in range(15)),
            20,
            "the short sessions to end",
        )
        await await_until(lambda: time.monotonic() - killed_at >= 3.5, 10, "three missed fires")

        b = Headless(d, crew_after)
        rt = b.client()
        await assert_restart_outcome(
            rt,
            d,
            db,
            {label: (s["key"], s["agent_pid"]) for label, s in acked.items()},
            doomed=15,
            short=15,
            retry_timeout=40,
            cron_job="tick",
        )
        # The start-up fires ran once each, in the dashboard's runtime; the restart fired none of them again.
        assert sorted(r[0] for r in rows(db, "SELECT job FROM cron_runs WHERE job != 'tick'")) == [
            "doomed",
            "long",
            "short",
        ]
    finally:
        if dash.alive():
            dash.kill9()
        if b is not None and b.alive():
            try:
                await kill_all_live(b.client())
            except CrewError:
                pass
            b.stop()
        kill_leftover_sessions(d)  # anything a failed assertion left behind


FENCE_CREW = """
[crew]
name = "dashboard-fence"

[[cron]]
name = "heartbeat"
schedule = { kind = "every", every = "1s" }
text = "still here"
"""


def test_a_dashboard_whose_runtime_is_fenced_off_exits_saying_so_and_leaves_the_sessions(tmp_path: Path) -> None:
    crew = tmp_path / "crew.toml"
    crew.write_text(FENCE_CREW)
    d = tmp_path / "data"
    db = d / "crewtui.db"
    dash = Dashboard(d, crew)
    b: Headless | None = None
    s: dict = {}
    try:
        s = json.loads(
            subprocess.run(
                [
                    PY,
                    "-m",
                    "crewtui",
                    "--data-dir",
                    str(d),
                    "ctl",
                    "spawn",
                    "--label",
                    "shared",
                    "--json",
                    "--",
                    "sleep",
                    "600",
                ],
                capture_output=True,
                text=True,
                timeout=30,
                env=ENV,
                check=True,
            ).stdout
        )
        wait_until(lambda: "shared" in dash.screen_text(), 15, "the dashboard to show the session")
        (d / "runtime.lock").unlink()  # the lock is lost: nothing stops a second runtime now
        b = Headless(d, crew)
        assert rows(db, "SELECT value FROM meta WHERE key = 'lease_epoch'") == [("2",)]

        # The dashboard's next write (its heartbeat job writes every second) meets lease 2: the embedded runtime
        # stops, and the dashboard leaves the terminal and says why, instead of showing a crew it no longer runs.
        dash.proc.wait(timeout=20)
        screen = dash.stop()
        assert dash.proc.returncode == 2, screen[-2000:]
        assert "another runtime took over this data dir" in screen and "stopped writing" in screen, screen[-2000:]
        assert "left to the runtime that now serves" in screen
        # It killed nothing and left B's socket in place.
        assert proc_alive(s["agent_pid"])
        assert b.ping() and b.client() is not None
        listed = asyncio.run(b.client().list())
        assert [(x.key, x.state) for x in listed] == [(s["key"], SessionState.RUNNING)]
    finally:
        if dash.alive():
            dash.kill9()
        if b is not None and b.alive():
            b.stop()
        kill_group(s.get("shim_pid"))
