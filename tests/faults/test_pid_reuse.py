"""pid reuse: after a restart, a session's recorded pid belongs to an unrelated process. The re-adopt check
(pid *and* /proc start time) must see through it: the stranger lives on, the session is `lost`."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from pathlib import Path

from crewtui.model import SessionState, SpawnRequest
from crewtui.runtime.drivers import proc_start_time
from tests.faults.helpers import Headless, await_until, kill_all_live, kill_group, proc_alive


async def test_a_stranger_with_the_old_pid_is_not_adopted_signalled_or_killed(tmp_path: Path) -> None:
    d = tmp_path / "data"
    db = d / "crewtui.db"
    a = Headless(d)
    b: Headless | None = None
    stranger = None
    try:
        s = await a.client().spawn(
            SpawnRequest(label="victim", argv=["sleep", "600"], watchdog_after=2, max_attempts=2)
        )
        a.stop()
        kill_group(s.shim_pid)  # the session dies with no exit record while no runtime watches
        await await_until(lambda: not proc_alive(s.shim_pid) and not proc_alive(s.agent_pid), 10, "the session to die")

        # An unrelated process, leader of its own process group, now "has" the session's pids.
        stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
        real_start = proc_start_time(stranger.pid)
        assert real_start is not None
        forged = {
            "shim_pid": stranger.pid,
            "agent_pid": stranger.pid,
            "shim_start": real_start - 1,
            "agent_start": real_start - 1,
        }
        out_dir = d / "sessions" / s.key
        (out_dir / "pid.json").write_text(json.dumps(forged) + "\n")
        conn = sqlite3.connect(db)
        with conn:
            data = json.loads(conn.execute("SELECT data FROM sessions WHERE key = ?", (s.key,)).fetchone()[0])
            data.update(forged)
            conn.execute("UPDATE sessions SET data = ? WHERE key = ?", (json.dumps(data), s.key))
        conn.close()

        b = Headless(d)
        rt = b.client()
        events = await rt.events()
        lost = [
            e for e in events if e.kind == "session_state_changed" and e.session == s.key and e.new == SessionState.LOST
        ]
        assert lost and "vanished" in (lost[0].reason or "")
        # Its watchdog retries it as a new process; the stranger is never touched.
        await await_until(
            lambda: stranger.poll() is None and proc_start_time(stranger.pid) == real_start, 1, "stranger"
        )

        async def retried() -> bool:
            got = await rt.get(s.key)
            return got.attempt == 2 and got.state == SessionState.RUNNING

        await await_until(retried, 15, "the watchdog to retry the lost session")
        again = await rt.get(s.key)
        assert again.shim_pid != stranger.pid and again.agent_pid != stranger.pid
        await rt.kill(s.key)
        assert stranger.poll() is None and proc_alive(stranger.pid)
        assert proc_start_time(stranger.pid) == real_start
    finally:
        if stranger is not None:
            stranger.send_signal(signal.SIGKILL)
            stranger.wait()
        for h in (a, b):
            if h is not None and h.alive():
                await kill_all_live(h.client())
                h.stop()
