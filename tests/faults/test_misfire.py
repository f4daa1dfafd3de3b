"""A real headless runtime stopped across three (or more) fires of 1 s cron jobs, then restarted: each misfire
policy does what it says, and no fire is run twice. (Fake-time variants are in tests/test_scheduler.py.)"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from pathlib import Path

import pytest

from crewtui.clock import FakeClock
from crewtui.events import CronFired
from tests.conftest import PY, crew_from, wait_for
from tests.faults.helpers import Headless, assert_events_contiguous, kill_all_live, rows, wait_until

T0 = 1_775_116_800.0  # 2026-04-02 08:00:00 UTC: `every` schedules are aligned to it

POLICIES = ("skip", "run_once", "run_all")
CREW = """
[crew]
name = "misfire"

[agents.tick]
command = ["true"]
""" + "".join(
    f"""
[[cron]]
name = "{p.replace("_", "-")}"
schedule = {{ kind = "every", every = "1s" }}
overlap = "allow"
misfire = "{p}"
misfire_grace = "1h"
spawn = {{ agent = "tick", label = "{p.replace("_", "-")}-{{run}}" }}
"""
    for p in POLICIES
)


def runs_of(db: Path, job: str) -> list[dict]:
    return [json.loads(r[0]) for r in rows(db, "SELECT data FROM cron_runs WHERE job = ? ORDER BY nominal", (job,))]


def cron_events(db: Path, job: str) -> list[dict]:
    out = [json.loads(r[0]) for r in rows(db, "SELECT data FROM events WHERE kind = 'cron_fired' ORDER BY seq")]
    return [e for e in out if e["job"] == job]


def test_each_misfire_policy_after_three_missed_fires(tmp_path: Path) -> None:
    crew = tmp_path / "crew.toml"
    crew.write_text(CREW)
    d = tmp_path / "data"
    db = d / "crewtui.db"
    jobs = [p.replace("_", "-") for p in POLICIES]
    a = Headless(d, crew)
    b: Headless | None = None
    try:
        wait_until(lambda: all(len(runs_of(db, j)) >= 2 for j in jobs), 15, "two runs of each job")
        a.stop()
        stopped = time.time()
        # Down across at least three fires of every job.
        wait_until(lambda: time.time() - stopped >= 3.6, 10, "three fires to pass")
        b = Headless(d, crew)
        restarted = max(
            json.loads(r[0])["ts"] for r in rows(db, "SELECT data FROM events WHERE kind = 'runtime_started'")
        )
        wait_until(
            lambda: all(any(r["nominal"] > restarted + 1 for r in runs_of(db, j)) for j in jobs),
            15,
            "a regular fire of each job after the restart",
        )

        for policy, job in zip(POLICIES, jobs):
            runs = runs_of(db, job)
            nominals = [r["nominal"] for r in runs]
            assert len(nominals) == len(set(nominals)), f"{job}: a fire ran twice"
            last_before = max(r["nominal"] for r in runs if r["started_at"] < restarted)
            events = cron_events(db, job)
            catch_up = sorted(
                e["nominal"] for e in events if e["outcome"] == "ran" and "(catch-up)" in (e["reason"] or "")
            )
            regular_after = min(
                r["nominal"] for r in runs if r["started_at"] >= restarted and r["nominal"] not in catch_up
            )
            missed = [last_before + k for k in range(1, int(regular_after - last_before))]
            assert len(missed) >= 3, (job, last_before, regular_after)
            skipped = [e for e in events if e["outcome"] == "skipped"]
            skipped_count = sum(int(re.match(r"(\d+) fire", e["reason"]).group(1)) for e in skipped)
            if policy == "run_all":
                assert catch_up == missed and skipped_count == 0, (catch_up, missed)
            elif policy == "run_once":
                assert catch_up == missed[-1:] and skipped_count == len(missed) - 1, (catch_up, missed, skipped)
            else:
                assert catch_up == [] and skipped_count == len(missed), (catch_up, missed, skipped)
                assert "misfire=skip" in skipped[0]["reason"]
            # Every nominal time from the first fire on is either a run or a counted skip: nothing lost.
            ran = sorted(nominals)
            assert ran == sorted(set(ran) | set(catch_up))
            gaps = [t for t in range(int(ran[0]), int(ran[-1]) + 1) if float(t) not in set(ran)]
            assert len(gaps) == skipped_count, (job, gaps, skipped_count)
        asyncio.run(kill_all_live(b.client()))
        b.stop()
        assert_events_contiguous(db)
    finally:
        for h in (a, b):
            if h is not None and h.alive():
                h.stop()


@pytest.mark.parametrize("overlap", ["forbid", "replace"])
async def test_run_all_replays_every_missed_fire_in_order_under_any_overlap_policy(make_orch, overlap: str) -> None:
    # Fake time: a 1-minute job, down across three fires. Its catch-up fires are one replay: each waits for the
    # run before it to close, so none is skipped (forbid) or killed (replace) as overlapping its neighbour.
    clock = FakeClock(T0)
    job = f"""
        [agents.work]
        command = [{json.dumps(PY)}, "-c", "import time; time.sleep(0.3); print('{{{{}}}}')"]
        [[cron]]
        name = "tick"
        schedule = {{ kind = "every", every = "1m" }}
        misfire = "run_all"
        misfire_grace = "10m"
        overlap = "{overlap}"
        spawn = {{ agent = "work", label = "tick-r{{run}}" }}
    """
    orch = await make_orch(crew_from(job), clock=clock)
    await clock.advance(60)
    await wait_for(
        lambda: len(orch.sessions) == 1 and all(s.state.terminal for s in orch.sessions.values()), what="the first run"
    )
    await orch.stop()
    await clock.advance(200)  # down across the fires at +120, +180 and +240
    orch2 = await make_orch(crew_from(job), clock=clock)
    await wait_for(
        lambda: len(orch2.sessions) == 4 and all(s.state.terminal for s in orch2.sessions.values()),
        timeout=20,
        what="three catch-up runs, one after the other",
    )
    runs = sorted(await orch2.runs("tick"), key=lambda r: r.nominal)
    assert [r.nominal for r in runs] == [T0 + 60, T0 + 120, T0 + 180, T0 + 240]
    assert all(r.rate == 1.0 for r in runs), [(r.id, r.counts) for r in runs]
    # In order, and never two at once: each catch-up run started after the one before it had closed.
    for before, after in itertools.pairwise(runs[1:]):
        assert before.closed_at is not None and after.started_at >= before.closed_at
    fired = [e for e in await orch2.events() if isinstance(e, CronFired) and e.outcome == "skipped"]
    assert fired == []
