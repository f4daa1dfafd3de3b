"""The scheduler in real time, end to end: a headless runtime, a cron every 2 s, a hang its watchdog retries."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import PY
from tests.faults.helpers import kill_leftover_sessions
from tests.test_ctl import Runtime, assert_one_line_error, ctl

HANG_OR_WORK = (
    "import sys, time, json; t = sys.argv[1]; print('start', t, flush=True); "
    "time.sleep(600) if 'hang' in t else (time.sleep(0.3), print(json.dumps(dict(t=t))))"
)

CREW = f"""
[crew]
name = "realtime"
stale_after = "30s"

[agents.worker]
command = [{json.dumps(PY)}, "-c", {json.dumps(HANG_OR_WORK)}, "{{task}}"]
pool = "model-a"

[pools.model-a]
max_concurrent = 10
rate = "20/s"

[[cron]]
name = "batch"
schedule = {{ kind = "every", every = "2s" }}
overlap = "allow"
watchdog_after = "1500ms"
max_attempts = 2
spawn = {{ agent = "worker", label = "batch-{{item}}-r{{run}}", task = "{{item}}", items = ["a", "b", "c", "hang"] }}
"""


def test_cron_every_2s_with_a_hang_the_watchdog_retries(tmp_path: Path) -> None:
    crew = tmp_path / "crew.toml"
    crew.write_text(CREW)
    d = tmp_path / "data"
    rt = Runtime(d, crew)
    try:
        deadline = time.time() + 30
        first = None
        while time.time() < deadline:
            runs = json.loads(ctl(d, "runs", "--job", "batch", "--json").stdout)
            first = next((r for r in runs if r["number"] == 1), None)
            if first and first["final"]:
                break
            time.sleep(0.3)
        assert first is not None and first["final"], first
        assert first["counts"]["spawned"] == 4 and first["counts"]["done"] == 3
        assert first["counts"]["timed_out"] == 1, first
        assert first["rate"] == 0.75
        sessions = {s["label"]: s for s in json.loads(ctl(d, "list", "--json", "--prefix", "batch-hang-r1").stdout)}
        hang = sessions["batch-hang-r1"]
        assert hang["attempt"] == 2 and hang["state"] == "timed_out"
        out = ctl(d, "runs", "--job", "batch").stdout
        assert "batch#1" in out and "75%" in out
        assert "batch" in ctl(d, "cron", "list").stdout
        assert_one_line_error(ctl(d, "cron", "run", "nope"), "no cron job named 'nope'")
        assert_one_line_error(ctl(d, "cron", "add", "x", "--every", "0s", "--system", "hi"), "every")
        assert_one_line_error(ctl(d, "cron", "add", "x", "--cron", "61 * * * *", "--system", "hi"), "minute")
        assert_one_line_error(
            ctl(d, "cron", "add", "x", "--cron", "0 9 * * *", "--tz", "Nowhere/City", "--system", "hi"), "Nowhere/City"
        )
        assert_one_line_error(ctl(d, "cron", "add", "x", "--at", "2020-01-01T00:00", "--system", "hi"), "in the past")
        assert_one_line_error(ctl(d, "cron", "add", "batch", "--every", "1m", "--system", "hi"), "already exists")
        assert_one_line_error(
            ctl(d, "cron", "add", "x", "--every", "1m", "--agent", "ghost", "--label", "x-{run}"),
            "unknown agent 'ghost'",
        )
        assert_one_line_error(
            ctl(d, "cron", "add", "x", "--every", "1m", "--agent", "worker", "--label", "X {run}"), "label"
        )
        assert_one_line_error(
            ctl(d, "cron", "add", "x", "--every", "1m", "--max-attempts", "0", "--system", "hi"), "max_attempts"
        )
        added = ctl(d, "cron", "add", "hello", "--every", "1h", "--system", "hi")
        assert added.returncode == 0 and "added hello" in added.stdout
        assert ctl(d, "cron", "remove", "hello").returncode == 0
        acq = ctl(d, "acquire", "model-a")
        assert acq.returncode == 0 and json.loads(acq.stdout)["pool"] == "model-a"
        assert_one_line_error(ctl(d, "acquire", "nope"), "nope")
        assert "nothing is stale" in ctl(d, "sweep", "--dry-run").stdout
    finally:
        for s in json.loads(ctl(d, "list", "--json").stdout or "[]"):
            if s["state"] in ("running", "pending", "yielded"):
                ctl(d, "kill", s["key"], "--yes")
        rt.stop()
        # The 2 s job may have fired between the listing and the stop; its sessions outlive the runtime.
        kill_leftover_sessions(d)
