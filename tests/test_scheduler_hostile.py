"""Hostile tests of the scheduler: races between awaits, restarts between writes, clock jumps, edits while due.

A real store (SQLite in tmp) and a fake session control (sessions are plain records the test ends by hand), all
on a fake clock: no processes, no sleeps for timing.
"""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import Any

import pytest

from crewtui.clock import FakeClock
from crewtui.config import parse_crew
from crewtui.events import CronFired, Event
from crewtui.model import CronRun, Session, SessionState, SpawnRequest
from crewtui.runtime.scheduler import Scheduler
from crewtui.store import Store

T0 = 1_775_116_800.0  # 2026-04-02 08:00:00 UTC


class Control:
    """The SessionControl the scheduler drives; `gate`, when set, holds every spawn until it is opened."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sessions: dict[str, Session] = {}
        self.events: list[Event] = []
        self.gate: asyncio.Event | None = None
        self.sched: Scheduler | None = None

    def publish(self, event: Event) -> None:
        self.events.append(event)

    async def spawn(self, request: SpawnRequest) -> Session:
        if self.gate is not None:
            await self.gate.wait()
        now = self.clock.now()
        s = Session(
            key=f"s-{len(self.sessions) + 1}",
            label=request.label,
            state=SessionState.RUNNING,
            cron_run=request.cron_run,
            created_at=now,
            updated_at=now,
        )
        self.sessions[s.key] = s
        return s

    async def sweep(self, dry_run: bool = False, cause: str = "user") -> list[Any]:
        return []

    async def kill_keys(self, keys: list[str], reason: str, cascade: bool) -> None:
        for key in keys:
            self.end(key, SessionState.KILLED)

    async def watchdog_fired(self, key: str, attempt: int) -> str:
        return "noop"

    def end(self, key: str, state: SessionState = SessionState.DONE) -> None:
        self.sessions[key].state = state
        assert self.sched is not None
        self.sched.session_ended(self.sessions[key])

    def fired(self, outcome: str | None = None) -> list[CronFired]:
        return [e for e in self.events if isinstance(e, CronFired) and (outcome is None or e.outcome == outcome)]


def crew(jobs: str = "") -> Any:
    text = "[crew]\nname = 't'\n[agents.ok]\ncommand = ['true', '{task}']\n" + textwrap.dedent(jobs)
    return parse_crew(text, source="test.toml")


class Runtime:
    """One scheduler on one store file; `restart` is a new runtime on the same file (the last one stopped)."""

    def __init__(self, path: Path, clock: FakeClock) -> None:
        self.path, self.clock = path, clock
        self.store: Store | None = None
        self.sched: Scheduler | None = None
        self.control = Control(clock)

    async def start(self, crew_config: Any, control: Control | None = None) -> Scheduler:
        self.store = await Store.open(self.path)
        self.control = control or Control(self.clock)
        self.sched = Scheduler(self.control, self.store, self.clock, crew_config)  # type: ignore[arg-type]
        self.control.sched = self.sched
        await self.sched.start()
        await settle()
        return self.sched

    async def stop(self) -> None:
        """Stop as a kill would: the scheduler's tasks are cut off wherever they are; what reached the store's
        queue is written (the writer's last batch), nothing more."""
        assert self.sched is not None and self.store is not None
        await self.sched.stop()
        await self.store.close()

    async def runs(self, job: str) -> list[tuple[int, float]]:
        assert self.sched is not None
        return sorted((r.number, r.nominal) for r in await self.sched.runs(job, limit=1000))

    async def runs_raw(self, job: str) -> list[tuple[int, float]]:
        """The job's runs in the store, whether or not the job still exists."""
        assert self.store is not None
        await self.store.flush()
        runs = [CronRun.model_validate_json(d) for d in await self.store.load_cron_runs(job)]
        return sorted((r.number, r.nominal) for r in runs)


async def settle(n: int = 30, fires: bool = True) -> None:
    """Let every task run that can; with `fires`, wait (bounded) for the fires in flight: their store round trips
    run in a thread, which no number of event-loop turns waits for."""
    for _ in range(n):
        await asyncio.sleep(0)
    if fires:
        for task in list(asyncio.all_tasks()):
            name = task.get_coro().__qualname__  # type: ignore[union-attr]
            if name.startswith(("Scheduler.", "CatchUp.")) and name != "Scheduler._loop":
                await asyncio.wait({task}, timeout=5)
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
async def rt(tmp_path: Path, clock: FakeClock) -> Any:
    runtime = Runtime(tmp_path / "crewtui.db", clock)
    yield runtime
    if runtime.sched is not None and runtime.store is not None:
        await runtime.sched.stop()
        await runtime.store.close()


def ctl_job(name: str = "tick", **kw: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "schedule": {"kind": "every", "every": "1m"},
        "overlap": "allow",
        "spawn": {"agent": "ok", "label": name + "-r{run}", "task": "t"},
    }
    data.update(kw)
    return data


# ------------------------------------------------------------------------------------------ run numbers


async def test_a_job_removed_and_added_again_under_its_name_still_fires(rt, clock):
    """Runs are kept after `cron remove`; a job added again under the same name started counting at run 1, its
    run id `tick#1` was taken, so every claim was refused as "already recorded": the job never fired again."""
    sched = await rt.start(crew())
    await sched.add_job(ctl_job())
    await clock.advance(60)
    await settle()
    assert await rt.runs("tick") == [(1, T0 + 60)]
    await sched.remove_job("tick")
    await sched.add_job(ctl_job())
    await clock.advance(60)
    await settle()
    assert [n for n, _ in await rt.runs("tick")] == [1, 2]
    assert [e.run for e in rt.control.fired("ran")] == ["tick#1", "tick#2"]


# ------------------------------------------------------------------------------------------ edits while due


async def test_a_job_removed_while_its_fire_waits_neither_fires_nor_comes_back(rt, clock):
    """The +120 fire waits for the job's fire lock while the +60 run is still spawning; the job is removed then.
    The waiting fire ran anyway and wrote the job's row again: the removed job came back at the next start."""
    sched = await rt.start(crew())
    await sched.add_job(ctl_job())
    rt.control.gate = asyncio.Event()  # spawning is slow
    await clock.advance(120)
    await settle(fires=False)
    await sched.remove_job("tick")
    rt.control.gate.set()
    await settle()
    assert await rt.runs_raw("tick") == [(1, T0 + 60)]
    await rt.stop()
    sched = await rt.start(crew(), rt.control)  # the sessions outlive the runtime
    assert "tick" not in sched.jobs
    await clock.advance(120)
    await settle()
    assert len(await rt.runs_raw("tick")) == 1


# ------------------------------------------------------------------------------------------ clock jumps


class SuspendClock(FakeClock):
    """`suspend`: wall time moves on but sleepers do not see it, as on a real machine: asyncio sleeps on the
    monotonic clock, which stops while the machine is suspended and ignores steps of the wall clock."""

    def suspend(self, seconds: float) -> None:
        self._now += seconds
        self._sleepers = [(when + seconds, n, fut) for when, n, fut in self._sleepers]


HOURLY_TEXT = """
[[cron]]
name = "hourly"
schedule = { kind = "every", every = "1h" }
text = "hourly"
"""


async def test_the_loop_notices_a_wall_clock_that_jumped_forward(tmp_path):
    """The loop slept the whole hour to the next fire on the monotonic clock: after a suspend (or an NTP step) the
    fire already due waited out that hour in full, long after its time."""
    clock = SuspendClock(T0)
    rt = Runtime(tmp_path / "crewtui.db", clock)
    try:
        await rt.start(crew(HOURLY_TEXT))
        clock.suspend(3600 + 600)  # resumed ten minutes after the +1h fire
        await clock.advance(60)
        await settle()
        assert [e.nominal for e in rt.control.fired("system")] == [T0 + 3600]
    finally:
        await rt.stop()


async def test_a_day_suspended_does_not_replay_every_fire_of_a_ten_second_job(tmp_path):
    """On waking, each overdue fire was popped, pushed the next one (also overdue) and fired: 8,640 fires of a 10s
    job at once after a day, whatever the misfire policy and grace said. Now the fires missed are a downtime's:
    run_once runs the newest, the rest are one `skipped` mark."""
    clock = SuspendClock(T0)
    rt = Runtime(tmp_path / "crewtui.db", clock)
    job = """
        [[cron]]
        name = "often"
        schedule = { kind = "every", every = "10s" }
        misfire_grace = "5m"
        text = "tick"
    """
    try:
        sched = await rt.start(crew(job))
        await clock.advance(10)
        await settle()
        clock.suspend(86_400)
        await clock.advance(30)
        await settle()
        # The loop wakes at +86,420 (its 10s sleep, after the suspend): the one before the suspend, the newest
        # missed, then on time again.
        ran = [e.nominal for e in rt.control.fired("system")]
        assert ran == [T0 + 10, T0 + 86_420, T0 + 86_430, T0 + 86_440]
        (skipped,) = rt.control.fired("skipped")
        assert skipped.reason is not None and skipped.reason.startswith("8640 fire(s) missed")
        assert sched.jobs["often"].next_fire is not None and sched.jobs["often"].next_fire > clock.now()
    finally:
        await rt.stop()


async def test_a_fire_past_its_grace_when_the_loop_wakes_has_expired(tmp_path):
    """A daily fire found 20 hours late (the machine slept through it) ran anyway, although a fire older than
    `misfire_grace` never runs after a restart; now it expires the same way."""
    clock = SuspendClock(T0)
    rt = Runtime(tmp_path / "crewtui.db", clock)
    job = """
        [[cron]]
        name = "daily"
        schedule = { kind = "cron", expr = "0 9 * * *" }
        text = "daily"
    """
    try:
        await rt.start(crew(job))
        clock.suspend(3600 + 20 * 3600)  # 09:00 passed 20 hours ago; the next is in three hours
        await clock.advance(30)
        await settle()
        assert rt.control.fired("system") == []
        assert [e.nominal for e in rt.control.fired("skipped")] == [T0 + 3600]
    finally:
        await rt.stop()


# ------------------------------------------------------------------------------------------ restarts


async def test_a_crash_during_a_catch_up_replay_loses_none_of_the_fires_still_queued(rt, clock):
    """run_all + forbid replays missed fires one run at a time. A scheduled fire that came due meanwhile was
    skipped as overlapping and recorded as the last fire handled, ahead of the queue: a crash then lost the
    queued catch-up fires (the restart counted from the newer fire)."""
    job = """
        [[cron]]
        name = "tick"
        schedule = { kind = "every", every = "1m" }
        misfire = "run_all"
        misfire_grace = "10m"
        spawn = { agent = "ok", label = "tick-r{run}", task = "t" }
    """
    await rt.start(crew(job))
    await clock.advance(60)
    await settle()
    rt.control.end("s-1")
    await rt.stop()
    await clock.advance(200)  # down across +120, +180, +240
    sched = await rt.start(crew(job), rt.control)
    assert await rt.runs("tick") == [(1, T0 + 60), (2, T0 + 120)]  # the replay waits for run 2
    await clock.advance(40)  # +300: skipped, run 2 is still live
    await settle()
    assert [e.nominal for e in rt.control.fired("skipped")] == [T0 + 300]
    await rt.stop()  # a crash: +180 and +240 still queued
    sched = await rt.start(crew(job), rt.control)
    for _ in range(30):  # end each run as the replay starts it (a loaded machine may need more turns)
        for s in list(rt.control.sessions.values()):
            if s.state.live:
                rt.control.end(s.key)
        await settle()
        nominals = [nominal for _, nominal in await rt.runs("tick")]
        if {T0 + 180, T0 + 240} <= set(nominals):
            break
    assert {T0 + 180, T0 + 240} <= set(nominals)
    assert len(nominals) == len(set(nominals))
    assert sched.jobs["tick"].next_fire == T0 + 360


async def test_missed_fires_skipped_at_a_restart_are_told_once_not_again_at_the_next(rt, clock):
    """misfire = "skip": the fires missed while down are one `skipped` mark at the restart. A second restart
    before the next fire told the same fires again (the last fire handled had not moved past them)."""
    job = """
        [[cron]]
        name = "tick"
        schedule = { kind = "every", every = "1h" }
        misfire = "skip"
        overlap = "allow"
        spawn = { agent = "ok", label = "tick-r{run}", task = "t" }
    """
    await rt.start(crew(job))
    await clock.advance(3600)  # +1h: run 1
    await settle()
    await rt.stop()
    await clock.advance(3 * 3600 + 60)  # down across +2h, +3h, +4h
    await rt.start(crew(job), rt.control)
    (told,) = rt.control.fired("skipped")
    assert told.reason.startswith("3 fire(s) missed") and told.nominal == T0 + 4 * 3600
    await rt.stop()
    await clock.advance(60)  # restarted again, the next fire (+5h) not due yet
    sched = await rt.start(crew(job), rt.control)
    assert rt.control.fired("skipped") == [told]  # not told again
    assert sched.jobs["tick"].next_fire == T0 + 5 * 3600
    await clock.advance(3600)  # and the next fire still runs
    await settle()
    assert [n for _, n in await rt.runs("tick")] == [T0 + 3600, T0 + 5 * 3600]


async def test_a_manual_fire_does_not_make_a_crash_lose_an_overdue_scheduled_one(tmp_path):
    """`ctl cron trigger` while a scheduled fire is overdue and its loop not yet awake (a suspend): the manual fire
    was stamped as the last fire handled, so a crash then made the restart count missed fires from after it, and
    the overdue scheduled fire was never run."""
    clock = SuspendClock(T0)
    rt = Runtime(tmp_path / "crewtui.db", clock)
    job = """
        [[cron]]
        name = "tick"
        schedule = { kind = "every", every = "1h" }
        spawn = { agent = "ok", label = "tick-r{run}", task = "t" }
    """
    sched = await rt.start(crew(job))
    clock.suspend(3600 + 60)  # the +1h fire is a minute overdue; the loop sleeps on
    run = await sched.trigger("tick")
    assert run is not None and run.manual and run.nominal == T0 + 3660
    assert await rt.runs("tick") == [(1, T0 + 3660)]
    rt.control.end(run.sessions[0])  # done: the overdue fire does not overlap it
    await rt.stop()  # a crash before the loop woke
    await rt.start(crew(job), rt.control)  # misfire = run_once (the default), within the hour's grace
    try:
        assert await rt.runs("tick") == [(1, T0 + 3660), (2, T0 + 3600)]
    finally:
        await rt.stop()
