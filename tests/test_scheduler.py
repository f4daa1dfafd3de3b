"""The scheduler in fake time with real processes: crons, misfires, overlap, watchdogs, limits, sweeps, rates."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import textwrap

import pytest

from crewtui.clock import FakeClock
from crewtui.errors import BadInput, ConfigError, Conflict, NotFound
from crewtui.events import CronFired, RunClosed, SessionRetried, WatchdogFired
from crewtui.model import SessionState, SpawnRequest
from crewtui.runtime.limits import backoff_cap
from tests.conftest import PY, SLEEPER, crew_from, py, wait_for

S = SessionState
T0 = 1_775_116_800.0  # 2026-04-02 08:00:00 UTC: every `every` schedule is aligned to it

AGENTS = f"""
[agents.ok]
command = [{json.dumps(PY)}, "-c", "import json,sys; print(json.dumps(dict(task=sys.argv[1])))", "{{task}}"]
[agents.fail]
command = [{json.dumps(PY)}, "-c", "import sys; print('bad', file=sys.stderr); sys.exit(1)", "{{task}}"]
[agents.sleep]
command = [{json.dumps(PY)}, "-c", {json.dumps(SLEEPER)}, "{{task}}"]
[agents.pick]
command = [{json.dumps(PY)}, "-c", "import sys,time,json; t=sys.argv[1]; print('start', flush=True); time.sleep(600) if 'hang' in t else print(json.dumps(dict(t=t)))", "{{task}}"]
"""


def crew(extra: str, header: str = "") -> object:
    return crew_from(f"[crew]\nname='t'\n{header}\n{AGENTS}\n{textwrap.dedent(extra)}")


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def events_of(orch, kind):
    await orch.flush()
    return [e for e in await orch.events() if isinstance(e, kind)]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


async def test_every_job_fires_on_time_and_each_fire_once(make_orch, clock):
    orch = await make_orch(
        crew("""
        [[cron]]
        name = "heartbeat"
        schedule = { kind = "every", every = "60s" }
        text = "still here"
    """),
        clock=clock,
    )
    assert (await orch.cron_list())[0].next_fire == T0 + 60
    await clock.advance(59)
    assert await events_of(orch, CronFired) == []
    await clock.advance(1)
    await clock.advance(120)
    fired = await events_of(orch, CronFired)
    assert [e.nominal for e in fired] == [T0 + 60, T0 + 120, T0 + 180]
    assert all(e.outcome == "system" for e in fired)
    assert (await orch.cron_list())[0].next_fire == T0 + 240


async def test_spawn_run_counts_completion_rate(make_orch, clock):
    orch = await make_orch(
        crew("""
        [[cron]]
        name = "blog"
        schedule = { kind = "every", every = "1m" }
        spawn = { agent = "ok", label = "blog-{item}-{date}-r{run}", task = "write {item}", domain = "article:{item}", items = ["superada", "openclaw"] }
    """),
        clock=clock,
    )
    await clock.advance(60)
    await wait_for(lambda: bool(orch.scheduler.open_runs) or bool(orch.sessions), what="the run")
    await wait_for(
        lambda: all(s.state.terminal for s in orch.sessions.values()) and len(orch.sessions) == 2, what="both done"
    )
    runs = await orch.runs("blog")
    assert len(runs) == 1 and runs[0].id == "blog#1" and runs[0].final
    assert runs[0].rate == 1.0 and runs[0].counts["spawned"] == 2 and runs[0].counts["done"] == 2
    labels = sorted(s.label for s in orch.sessions.values())
    assert labels == ["blog-openclaw-2026-04-02-r1", "blog-superada-2026-04-02-r1"]
    assert {s.domain for s in orch.sessions.values()} == {"article:superada", "article:openclaw"}
    closed = await events_of(orch, RunClosed)
    assert [(c.run, c.rate) for c in closed] == [("blog#1", 1.0)]


async def test_silent_failures_lower_the_rate(make_orch, clock):
    orch = await make_orch(
        crew("""
        [[cron]]
        name = "mixed"
        schedule = { kind = "every", every = "1m" }
        deadline = "5m"
        spawn = { agent = "pick", label = "mixed-{item}", task = "{item}", items = ["a", "b", "hang", "dup"] }
    """),
        clock=clock,
    )
    # A live session already holds one label the run wants: that spawn is refused and counts as not done.
    await orch.spawn(SpawnRequest(label="mixed-dup", argv=py(SLEEPER)))
    await clock.advance(60)
    await wait_for(lambda: len([s for s in orch.sessions.values() if s.cron_run]) == 3, what="run spawned")
    hang = next(s for s in orch.sessions.values() if s.label == "mixed-hang")
    await wait_for(lambda: orch.sessions[hang.key].last_line == "start", what="hang started")
    os.killpg(orch.sessions[hang.key].shim_pid, signal.SIGKILL)  # vanishes: lost, a silent failure
    await wait_for(lambda: "mixed#1" not in orch.scheduler.open_runs, what="the run to close")
    run = (await orch.runs("mixed"))[0]
    assert run.final
    assert run.counts == {
        "spawned": 4,
        "done": 2,
        "failed": 1,
        "timed_out": 0,
        "killed": 0,
        "lost": 1,
        "running": 0,
        "refused": 1,
    }
    assert run.rate == 0.5
    assert "mixed-dup" in run.refused[0] and "held by live session" in run.refused[0]


async def test_run_deadline_closes_with_live_sessions_counted_not_done(make_orch, clock):
    orch = await make_orch(
        crew("""
        [[cron]]
        name = "slow"
        schedule = { kind = "every", every = "1h" }
        overlap = "allow"
        deadline = "10m"
        spawn = { agent = "sleep", label = "slow-r{run}", task = "x" }
    """),
        clock=clock,
    )
    await clock.advance(3600)
    await wait_for(lambda: any(e.kind == "cron" for e in orch.scheduler.recent), what="the fire")
    assert not (await orch.runs("slow"))[0].final
    await clock.advance(600)
    await wait_for(lambda: "slow#1" not in orch.scheduler.open_runs, what="the deadline")
    run = (await orch.runs("slow"))[0]
    assert run.final and run.rate == 0.0 and run.counts["running"] == 1


@pytest.mark.parametrize("overlap", ["forbid", "replace", "allow"])
async def test_overlap_policies(make_orch, clock, overlap):
    orch = await make_orch(
        crew(f"""
        [[cron]]
        name = "long"
        schedule = {{ kind = "every", every = "1m" }}
        overlap = "{overlap}"
        spawn = {{ agent = "sleep", label = "long-r{{run}}", task = "x" }}
    """),
        clock=clock,
    )
    await clock.advance(60)
    await wait_for(lambda: len(orch.sessions) == 1, what="first run")
    first = next(iter(orch.sessions.values()))
    await clock.advance(60)
    await wait_for(lambda: len([e for e in orch.scheduler.recent if e.kind == "cron"]) == 2, what="second fire")
    # By fire time: a fire's event is published once its batch is spawned, so a skip can come before it.
    fired = sorted(await events_of(orch, CronFired), key=lambda e: e.nominal)
    if overlap == "forbid":
        await settle()
        assert fired[1].outcome == "skipped" and "overlap=forbid" in fired[1].reason
        assert len(orch.sessions) == 1 and orch.sessions[first.key].state == S.RUNNING
        with pytest.raises(Conflict, match="overlap=forbid"):
            await orch.cron_trigger("long")
    elif overlap == "replace":
        await wait_for(lambda: len(orch.sessions) == 2, what="replacement")
        assert fired[1].outcome == "replaced"
        assert orch.sessions[first.key].state == S.KILLED and "replaced" in orch.sessions[first.key].reason
    else:
        await wait_for(lambda: len(orch.sessions) == 2, what="second run")
        assert fired[1].outcome == "ran" and orch.sessions[first.key].state == S.RUNNING


@pytest.mark.parametrize("policy,expected_runs", [("skip", 0), ("run_once", 1), ("run_all", 3)])
async def test_misfire_policies_after_downtime(make_orch, clock, data_dir, policy, expected_runs):
    job = f"""
        [[cron]]
        name = "tick"
        schedule = {{ kind = "every", every = "1m" }}
        misfire = "{policy}"
        misfire_grace = "10m"
        overlap = "allow"  # catch-up runs start together
        spawn = {{ agent = "ok", label = "tick-r{{run}}", task = "t" }}
    """
    orch = await make_orch(crew(job), clock=clock)
    await clock.advance(60)
    await wait_for(lambda: len(orch.sessions) == 1, what="first run")
    await wait_for(lambda: all(s.state.terminal for s in orch.sessions.values()), what="first run done")
    await orch.stop()
    await clock.advance(200)  # down across fires at +120, +180, +240
    orch2 = await make_orch(crew(job), clock=clock)
    await wait_for(lambda: len(orch2.sessions) == 1 + expected_runs, what="catch-up runs")
    await settle()
    runs = await orch2.runs("tick")
    assert [r.number for r in runs] == list(range(1 + expected_runs, 0, -1))
    assert sorted(r.nominal for r in runs)[1:] == (
        [T0 + 240] if policy == "run_once" else [T0 + 120, T0 + 180, T0 + 240][:expected_runs]
    )
    assert (await orch2.cron_list())[0].next_fire == T0 + 300
    skipped = [e for e in await events_of(orch2, CronFired) if e.outcome == "skipped"]
    assert bool(skipped) == (policy != "run_all")


async def test_a_fire_whose_claim_a_crash_cut_off_is_caught_up_even_before_the_next_fire_is_due(
    make_orch, clock, data_dir
):
    """The loop moves `next_fire` on (and it can reach the store with the job's state) before the fire it just
    popped has claimed its run; a kill -9 in between, and a restart before the next fire is due, must still run
    the fire that was never claimed (run_all), not skip to the next one."""
    job = """
        [[cron]]
        name = "tick"
        schedule = { kind = "every", every = "1m" }
        misfire = "run_all"
        misfire_grace = "10m"
        overlap = "allow"
        spawn = { agent = "ok", label = "tick-r{run}", task = "t" }
    """
    orch = await make_orch(crew(job), clock=clock)
    await clock.advance(60)
    await wait_for(lambda: len(orch.sessions) == 1, what="first run")
    await wait_for(lambda: all(s.state.terminal for s in orch.sessions.values()), what="first run done")
    await orch.stop()
    # As the crash left it: the job's next fire already at +180, the +120 fire never claimed.
    con = sqlite3.connect(data_dir.store)
    (data,) = con.execute("SELECT data FROM cron_jobs WHERE name = 'tick'").fetchone()
    state = json.loads(data)
    assert state["last_nominal"] == T0 + 60
    state["next_fire"] = T0 + 180
    con.execute("UPDATE cron_jobs SET data = ? WHERE name = 'tick'", (json.dumps(state),))
    con.commit()
    con.close()
    await clock.advance(90)  # restarted at +150: +120 was missed, +180 is not due yet
    orch2 = await make_orch(crew(job), clock=clock)
    await wait_for(lambda: len(orch2.sessions) == 2, what="the +120 fire caught up")
    assert sorted(r.nominal for r in await orch2.runs("tick")) == [T0 + 60, T0 + 120]
    assert (await orch2.cron_list())[0].next_fire == T0 + 180


async def test_two_fires_due_at_once_both_run_in_order(make_orch, clock):
    """A loop that wakes late (the event loop was busy) pops two due fires of one job together: both run, as runs
    1 and 2 in the order of their times (they once took the same run number and the second was lost)."""
    job = """
        [[cron]]
        name = "tick"
        schedule = { kind = "every", every = "1m" }
        overlap = "allow"
        spawn = { agent = "ok", label = "tick-r{run}", task = "t" }
    """
    orch = await make_orch(crew(job), clock=clock)
    await clock.advance(120)  # +60 and +120 are both due when the loop next looks
    await wait_for(lambda: len(orch.sessions) == 2, what="both fires")
    await settle()
    runs = sorted(await orch.runs("tick"), key=lambda r: r.number)
    assert [(r.number, r.nominal) for r in runs] == [(1, T0 + 60), (2, T0 + 120)]


async def test_a_restart_never_doubles_a_fire(make_orch, clock):
    job = """
        [[cron]]
        name = "once"
        schedule = { kind = "every", every = "1m" }
        spawn = { agent = "ok", label = "once-r{run}", task = "t" }
    """
    orch = await make_orch(crew(job), clock=clock)
    await clock.advance(60)
    await wait_for(lambda: len(orch.sessions) == 1, what="run")
    await orch.stop()
    orch2 = await make_orch(crew(job), clock=clock)  # same instant: the +60 fire is already recorded
    await settle()
    assert len(await orch2.runs("once")) == 1 and len(orch2.sessions) == 1
    await wait_for(lambda: all(s.state.terminal for s in orch2.sessions.values()), what="run 1 done")
    await clock.advance(60)
    await wait_for(lambda: len(orch2.sessions) == 2, what="next run")
    assert [r.number for r in await orch2.runs("once")] == [2, 1]


async def test_watchdog_retries_a_hung_session_then_times_it_out(make_orch, clock):
    orch = await make_orch(clock=clock)
    s = await orch.spawn(SpawnRequest(label="auditor", argv=py(SLEEPER), watchdog_after=900, max_attempts=2))
    first_pid = s.agent_pid
    await clock.advance(899)
    assert orch.sessions[s.key].state == S.RUNNING
    await clock.advance(1)
    await wait_for(lambda: orch.sessions[s.key].attempt == 2 and orch.sessions[s.key].state == S.RUNNING, what="retry")
    assert orch.sessions[s.key].agent_pid != first_pid and orch.sessions[s.key].label == "auditor"
    await clock.advance(900)
    await wait_for(lambda: orch.sessions[s.key].state == S.TIMED_OUT, what="timed out")
    # The watchdog says what it did once its kill is through: the state can be read a moment before.
    for _ in range(200):
        outcomes = [(e.attempt, e.outcome) for e in await events_of(orch, WatchdogFired)]
        if len(outcomes) >= 2:
            break
        await asyncio.sleep(0.05)
    assert outcomes == [(1, "retried"), (2, "timed_out")]
    tries = sorted(p.name for p in (orch.data_dir.session_dir(s.key) / "tries").iterdir())
    assert tries == ["1"]  # the first try's logs are kept aside


async def test_watchdog_is_a_noop_when_done_and_retries_a_lost_session(make_orch, clock):
    orch = await make_orch(clock=clock)
    quick = await orch.spawn(SpawnRequest(label="quick", argv=py("print('{}')"), watchdog_after=60))
    lost = await orch.spawn(SpawnRequest(label="lost-one", argv=py(SLEEPER), watchdog_after=60, max_attempts=3))
    await orch.wait_ended(quick.key, timeout=10)
    os.killpg(lost.shim_pid, signal.SIGKILL)
    await orch.wait_ended(lost.key, timeout=10)
    assert orch.sessions[lost.key].state == S.LOST
    await clock.advance(60)
    await wait_for(lambda: orch.sessions[lost.key].state == S.RUNNING, what="lost retried")
    got = {e.label: e.outcome for e in await events_of(orch, WatchdogFired)}
    assert got == {"quick": "noop", "lost-one": "retried"}
    retried = await events_of(orch, SessionRetried)
    assert [(e.attempt, e.cause) for e in retried] == [(2, "lost")]


async def test_watchdogs_survive_a_restart(make_orch, clock):
    orch = await make_orch(clock=clock)
    s = await orch.spawn(SpawnRequest(label="persist", argv=py(SLEEPER), watchdog_after=100, max_attempts=1))
    await orch.stop()
    orch2 = await make_orch(clock=clock)
    assert orch2.scheduler.watchdog_due(s.key) == T0 + 100
    await clock.advance(100)
    await wait_for(lambda: orch2.sessions[s.key].state == S.TIMED_OUT, what="timed out after restart")


async def test_rate_limited_exit_retries_with_full_jitter_backoff(make_orch, clock):
    orch = await make_orch(
        crew(
            f"""
        [agents.limited]
        command = ["{PY}", "-c", "import sys; print('429 Too Many Requests', file=sys.stderr); sys.exit(75)"]
        pool = "model-a"
        [pools.model-a]
        retry_on_exit = [75]
        backoff = {{ base = "2s", max = "10s" }}
    """
        ),
        clock=clock,
        rng=random.Random(7),
    )
    s = await orch.spawn(SpawnRequest(label="limited-1", agent="limited"))
    pool = orch.pools["model-a"]
    for n in range(1, 6):
        await wait_for(
            lambda: orch.sessions[s.key].rate_limited == n and orch.sessions[s.key].state == S.PENDING,
            what=f"rate limit {n}",
        )
        cur = orch.sessions[s.key]
        delay = cur.next_try_at - clock.now()
        assert 0 <= delay <= backoff_cap(pool.config.backoff, n) == min(10.0, 2.0 * 2 ** (n - 1))
        assert "rate limited" in cur.reason and cur.attempt == 1
        await clock.advance(delay + 0.001)
    causes = [e.cause for e in await events_of(orch, SessionRetried)]
    assert causes == ["rate_limit"] * 5


async def test_pool_cap_queues_in_fifo_order_with_positions(make_orch, clock):
    orch = await make_orch(
        crew(
            f"""
        [agents.gated]
        command = ["{PY}", "-c", "import sys; sys.stdin.readline()"]
        pool = "p"
        [pools.p]
        max_concurrent = 1
    """
        ),
        clock=clock,
    )
    a = await orch.spawn(SpawnRequest(label="g-a", agent="gated"))
    b = await orch.spawn(SpawnRequest(label="g-b", agent="gated"))
    c = await orch.spawn(SpawnRequest(label="g-c", agent="gated"))
    assert [orch.sessions[k].state for k in (a.key, b.key, c.key)] == [S.RUNNING, S.PENDING, S.PENDING]
    assert (orch.sessions[b.key].queue_position, orch.sessions[c.key].queue_position) == (1, 2)
    assert "pool p (1/1 running)" in orch.sessions[b.key].reason
    order = []
    for k in (a.key, b.key, c.key):
        await wait_for(lambda: orch.sessions[k].state == S.RUNNING, what=f"{k} runs")
        order.append(k)
        await orch.send(k, "go")
        await orch.wait_ended(k, timeout=10)
    assert order == [a.key, b.key, c.key]


async def test_stale_sweep_dry_run_then_kill_and_sweep_cron(make_orch, clock):
    orch = await make_orch(
        crew(
            """
        [[cron]]
        name = "sweep-stale"
        schedule = { kind = "every", every = "5m" }
        action = "sweep"
    """,
            header="stale_after = '2m'",
        ),
        clock=clock,
    )
    quiet = await orch.spawn(SpawnRequest(label="quiet", argv=py(SLEEPER)))
    await wait_for(lambda: orch.sessions[quiet.key].last_line == "working", what="first output")
    await clock.advance(119)
    assert await orch.sweep(dry_run=True) == []
    await clock.advance(2)
    preview = await orch.sweep(dry_run=True)
    assert [i.key for i in preview] == [quiet.key] and "no output for 121s" in preview[0].reason
    assert orch.sessions[quiet.key].state == S.RUNNING  # a dry run changes nothing
    killed = await orch.sweep()
    assert [i.key for i in killed] == [quiet.key]
    assert orch.sessions[quiet.key].state == S.KILLED and orch.sessions[quiet.key].reason.startswith("stale")
    other = await orch.spawn(SpawnRequest(label="quiet-2", argv=py(SLEEPER)))
    await wait_for(lambda: orch.sessions[other.key].last_line == "working", what="output")
    await clock.advance(300 - 121)  # the sweep cron fires at +300
    await wait_for(lambda: orch.sessions[other.key].state == S.KILLED, what="cron sweep")
    assert [e.outcome for e in await events_of(orch, CronFired)] == ["swept"]


async def test_cron_add_run_remove_and_bad_jobs_change_nothing(make_orch, clock):
    orch = await make_orch(crew(""), clock=clock)
    info = await orch.cron_add(
        {
            "name": "added",
            "schedule": {"kind": "every", "every": "10m"},
            "spawn": {"agent": "ok", "label": "added-r{run}", "task": "t"},
        }
    )
    assert info.source == "ctl" and info.next_fire == T0 + 600
    run = await orch.cron_trigger("added")
    assert run.id == "added#1" and len(run.sessions) == 1
    bad = [
        ({"name": "b", "schedule": {"kind": "cron", "expr": "61 * * * *"}, "text": "x"}, ConfigError, "minute"),
        (
            {"name": "b", "schedule": {"kind": "cron", "expr": "0 9 * * *", "tz": "Mars/Base"}, "text": "x"},
            ConfigError,
            "Mars/Base",
        ),
        ({"name": "b", "schedule": {"kind": "every", "every": "0s"}, "text": "x"}, ConfigError, "every"),
        (
            {"name": "b", "schedule": {"kind": "every", "every": "1m"}, "spawn": {"agent": "nobody", "label": "x"}},
            ConfigError,
            "unknown agent",
        ),
        (
            {
                "name": "b",
                "schedule": {"kind": "every", "every": "1m"},
                "spawn": {"agent": "ok", "label": "Bad {item}"},
            },
            ConfigError,
            "label",
        ),
        (
            {"name": "b", "schedule": {"kind": "every", "every": "1m"}, "max_attempts": 0, "text": "x"},
            ConfigError,
            "max_attempts",
        ),
        ({"name": "added", "schedule": {"kind": "every", "every": "1m"}, "text": "x"}, Conflict, "already exists"),
        ({"name": "b", "schedule": {"kind": "at", "at": "2020-01-01T00:00:00"}, "text": "x"}, BadInput, "in the past"),
    ]
    for job, exc, needle in bad:
        with pytest.raises(exc, match=needle):
            await orch.cron_add(job)
    assert [j.name for j in await orch.cron_list()] == ["added"]
    past = await orch.cron_add(
        {"name": "late", "schedule": {"kind": "at", "at": "2020-01-01T00:00:00"}, "text": "x"}, allow_past=True
    )
    assert past.next_fire == T0
    await orch.cron_remove("added")
    with pytest.raises(NotFound):
        await orch.cron_remove("added")
    with pytest.raises(NotFound):
        await orch.cron_trigger("ghost")


async def test_crew_jobs_cannot_be_removed_at_runtime(make_orch, clock):
    orch = await make_orch(
        crew("""
        [[cron]]
        name = "fixed"
        schedule = { kind = "every", every = "1m" }
        text = "x"
    """),
        clock=clock,
    )
    with pytest.raises(BadInput, match="crew file"):
        await orch.cron_remove("fixed")


async def test_timeline_has_past_marks_and_next_hour(make_orch, clock):
    orch = await make_orch(
        crew("""
        [[cron]]
        name = "every-20m"
        schedule = { kind = "every", every = "20m" }
        text = "tick"
    """),
        clock=clock,
    )
    s = await orch.spawn(SpawnRequest(label="wd", argv=py(SLEEPER), watchdog_after=1800))
    await clock.advance(1200)
    items = await orch.timeline(clock.now() - 3600, clock.now() + 3600)
    past = [(i.kind, i.name, i.outcome) for i in items if not i.future]
    future = [(i.kind, i.name, i.ts - clock.now()) for i in items if i.future]
    assert ("cron", "every-20m", "system") in past
    assert ("watchdog", "wd", 600.0) in future
    assert [f for f in future if f[0] == "cron"] == [
        ("cron", "every-20m", 1200.0),
        ("cron", "every-20m", 2400.0),
        ("cron", "every-20m", 3600.0),
    ]
    await orch.kill(s.key)


async def test_watchdog_gives_up_on_a_failed_session_without_attempts_left(make_orch, clock):
    orch = await make_orch(clock=clock)
    s = await orch.spawn(
        SpawnRequest(label="broken", argv=py("import sys; sys.exit(1)"), watchdog_after=60, max_attempts=1)
    )
    await orch.wait_ended(s.key, timeout=10)
    await clock.advance(60)
    await wait_for(lambda: any(e.kind == "watchdog" for e in orch.scheduler.recent), what="watchdog")
    assert [(e.outcome) for e in await events_of(orch, WatchdogFired)] == ["gave_up"]
    assert orch.sessions[s.key].state == S.FAILED and orch.sessions[s.key].attempt == 1


async def test_fire_at_start_runs_a_job_once_when_the_runtime_starts(make_orch, clock):
    orch = await make_orch(
        crew("""
        [[cron]]
        name = "warm"
        schedule = { kind = "every", every = "1h" }
        fire_at_start = true
        spawn = { agent = "ok", label = "warm-{item}-r{run}", task = "t", items = ["a", "b"] }
    """),
        clock=clock,
    )
    await wait_for(lambda: len(orch.sessions) == 2, what="the start-up run")
    run = (await orch.runs("warm"))[0]
    assert run.number == 1 and run.nominal == T0
    assert (await orch.cron_list())[0].next_fire == T0 + 3600  # the schedule is unchanged


async def test_a_batch_broken_off_by_an_unexpected_error_still_closes_its_run(make_orch, clock, monkeypatch):
    orch = await make_orch(
        crew("""
        [[cron]]
        name = "trio"
        schedule = { kind = "every", every = "1h" }
        spawn = { agent = "ok", label = "trio-{item}-r{run}", task = "t", items = ["a", "b", "c"] }
    """),
        clock=clock,
    )
    real_spawn = orch.spawn

    async def spawn(req):
        if req.label.startswith("trio-b"):
            raise OSError("too many open files")  # not a refusal (CrewError): a bug or the OS
        return await real_spawn(req)

    monkeypatch.setattr(orch, "spawn", spawn)
    with pytest.raises(OSError):
        await orch.cron_trigger("trio")
    assert orch.scheduler._spawning == set()
    await wait_for(lambda: not orch.scheduler.open_runs, what="the run to close once its one session ended")
    run = (await orch.runs("trio"))[0]
    assert run.final and run.counts["spawned"] == 1 and run.counts["done"] == 1 and run.rate == 1.0
