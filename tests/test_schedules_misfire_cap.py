"""`plan_misfires` after a long cron downtime: the count walks at most `CRON_WALK_CAP` fires and then says "more
than"; what runs and the skipped tail stay exact. Planning runs on the runtime's event loop at start, and a full
walk of a year of a minute cron (525,600 croniter calls) froze it for ~15 s.

No test here times anything: they count croniter calls, and check the plan against a plain list of every fire.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import patch

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from crewtui.clock import FakeClock
from crewtui.config import ScheduleConfig
from crewtui.events import CronFired
from crewtui.runtime import schedules
from crewtui.runtime.schedules import CRON_WALK_CAP, MisfirePlan, fires_between, next_fire, plan_misfires
from tests.test_scheduler_hostile import T0, Runtime, crew, settle

YEAR = 365 * 86400


def cron(expr: str, tz: str = "UTC", **kw: object) -> ScheduleConfig:
    return ScheduleConfig(kind="cron", expr=expr, tz=tz, **kw)  # type: ignore[arg-type]


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


@contextmanager
def croniter_calls() -> Iterator[list[int]]:
    """Counts croniter.get_next calls (the cost of a cron step) while in the block: `calls[0]`."""
    calls = [0]
    real = croniter.get_next

    def counting(self: croniter, *args: Any, **kw: Any) -> Any:
        calls[0] += 1
        return real(self, *args, **kw)

    with patch.object(croniter, "get_next", counting):
        yield calls


def every_fire(schedule: ScheduleConfig, lo: float, hi: float, job: str) -> list[float]:
    """Every fire in (lo, hi], one next_fire at a time: the full walk, as the reference."""
    out: list[float] = []
    t = next_fire(schedule, lo, job=job)
    while t is not None and t <= hi:
        out.append(t)
        t = next_fire(schedule, t, job=job)
    return out


def reference_plan(
    schedule: ScheduleConfig, last: float, now: float, policy: str, grace: float, job: str, limit: int
) -> MisfirePlan:
    """`plan_misfires` as its docstring says it, from the list of every missed fire."""
    fires = every_fire(schedule, last, now, job)
    live = [t for t in fires if t >= now - grace]
    n_run = {"skip": 0, "run_once": min(1, len(live)), "run_all": min(limit, len(live))}[policy]
    run = live[len(live) - n_run :] if n_run else []
    not_run = fires[: len(fires) - n_run]
    return MisfirePlan(
        run=run,
        skipped=not_run[-limit:] if limit else [],
        skipped_count=len(not_run),
        truncated=policy == "run_all" and len(live) > limit,
        next=next_fire(schedule, max(now, last), job=job),
    )


# ------------------------------------------------------------------------------------------------ a long downtime


@pytest.mark.parametrize(
    "schedule",
    [cron("* * * * *"), cron("* * * * *", "Europe/Berlin", stagger="90s")],
    ids=["utc", "berlin+stagger"],
)
@pytest.mark.parametrize("policy", ["skip", "run_once", "run_all"])
def test_a_minute_cron_down_a_year_plans_from_a_bounded_walk(schedule: ScheduleConfig, policy: str) -> None:
    job = "nightly"
    last = next_fire(schedule, T0, job=job)
    assert last is not None
    now = last + YEAR  # 525,600 fires missed, a DST change or two among them
    with croniter_calls() as calls:
        plan = plan_misfires(schedule, last, now, policy, 3600, job=job)  # type: ignore[arg-type]
    # A full walk is one call per fire; the bounded one the cap, and a few hundred for the tail.
    assert calls[0] < 2 * CRON_WALK_CAP + 2000, calls[0]
    assert plan.skipped_more and CRON_WALK_CAP < plan.skipped_count < 525_600
    # The tail is exact: the last fires, listed one by one from three hours before `now`.
    tail = every_fire(schedule, now - 3 * 3600, now, job)
    assert tail[-1] == now
    n_run = {"skip": 0, "run_once": 1, "run_all": 61}[policy]  # grace 1h: 61 fires live (now - 1h is in grace)
    assert plan.run == (tail[-n_run:] if n_run else [])
    assert plan.skipped == tail[: len(tail) - n_run][-100:]
    assert plan.truncated is False
    assert plan.next == next_fire(schedule, now, job=job)


def test_every_fire_within_grace_is_still_exact_past_the_cap() -> None:
    """A grace longer than the cap's worth of fires: the live span is cut too; `run_all` still runs the newest
    `limit` and says it was truncated."""
    s = cron("*/5 * * * *", "America/New_York")
    now = utc(2026, 11, 2, 12, 0)
    with croniter_calls() as calls:
        plan = plan_misfires(s, now - YEAR, now, "run_all", 30 * 86400, limit=50)
    assert calls[0] < 2 * CRON_WALK_CAP + 2000, calls[0]
    tail = every_fire(s, now - 100 * 300 - 1, now, "")
    assert plan.run == tail[-50:] and plan.skipped == tail[-100:-50]
    assert plan.truncated and plan.skipped_more and plan.skipped_count > CRON_WALK_CAP


def test_fires_bunched_after_a_quiet_stretch_keep_an_exact_tail() -> None:
    """Every minute January to June, seen from December: the tail search's windows go back from December through
    five quiet months into a crowded June, which it must not walk whole."""
    s = cron("* * * 1-6 *", "Europe/Berlin")
    now = utc(2026, 12, 10)
    with croniter_calls() as calls:
        plan = plan_misfires(s, utc(2026, 1, 1), now, "skip", 0)
    assert calls[0] < 2 * CRON_WALK_CAP + 5000, calls[0]
    june_30_last_2h, _ = fires_between(s, utc(2026, 6, 30, 20), now, limit=1000)
    assert plan.skipped == june_30_last_2h[-100:] and plan.skipped[-1] == utc(2026, 6, 30, 21, 59)
    assert plan.skipped_more and plan.run == [] and plan.next == utc(2026, 12, 31, 23, 0)


def test_just_over_the_cap_the_count_is_exact_when_the_tail_reaches_back() -> None:
    """The tail search reaches back to the last fire counted: no fire went uncounted, so it is not a bound."""
    s = cron("* * * * *")
    with patch.object(schedules, "CRON_WALK_CAP", 250):
        plan = plan_misfires(s, T0, T0 + 260 * 60, "skip", 0)
    assert plan == MisfirePlan(
        skipped=[T0 + 60 * i for i in range(161, 261)], skipped_count=260, next=T0 + 261 * 60, skipped_more=False
    )


# ------------------------------------------------------------------------------------------------ against a full walk

EXPRS = [
    "* * * * *",
    "*/7 * * * *",
    "30 2 * * *",  # the wall time DST skips (spring) and repeats (autumn) in Berlin
    "0 * * * *",
    "*/5 9-17 * * 1-5",
    "* 2 * * *",  # a crowd in the hour DST moves
    "0,1,2,3 0 * * *",
    "* * * * * */30",  # a sixth field: seconds
]
# Around Berlin's and New York's DST changes in 2026, and a plain week.
AROUND = [utc(2026, 3, 29, 1), utc(2026, 10, 25, 1), utc(2026, 3, 8, 7), utc(2026, 11, 1, 6), utc(2026, 5, 12)]


@settings(max_examples=80, derandomize=True, database=None, deadline=None)
@given(
    expr=st.sampled_from(EXPRS),
    tz=st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"]),
    stagger=st.sampled_from([None, "45s", "2h"]),
    job=st.sampled_from(["a", "nightly"]),
    around=st.sampled_from(AROUND),
    before=st.floats(0, 86400),
    down=st.floats(0, 86400),
    policy=st.sampled_from(["skip", "run_once", "run_all"]),
    grace=st.sampled_from([0.0, 60.0, 3600.0, 6 * 3600.0, 1e6]),
    limit=st.integers(0, 6),
    cap=st.sampled_from([1, 4, 30]),
)
def test_the_plan_is_the_full_walks_with_any_cap(
    expr: str,
    tz: str,
    stagger: str | None,
    job: str,
    around: float,
    before: float,
    down: float,
    policy: str,
    grace: float,
    limit: int,
    cap: int,
) -> None:
    """Under the cap the plan is the full walk's to the letter; over it (the cap as it is, or a small one) it runs
    and lists the same fires, and its count is either the full one or a lower bound that says so."""
    s = cron(expr, tz, stagger=stagger)
    last = around - before
    now = last + down
    full = reference_plan(s, last, now, policy, grace, job, limit)
    missed = full.skipped_count + len(full.run)
    for walk_cap in (CRON_WALK_CAP, cap):
        with patch.object(schedules, "CRON_WALK_CAP", walk_cap):
            plan = plan_misfires(s, last, now, policy, grace, job=job, limit=limit)  # type: ignore[arg-type]
        if missed <= walk_cap:
            assert plan == full
        assert (plan.run, plan.skipped, plan.truncated, plan.next) == (
            full.run,
            full.skipped,
            full.truncated,
            full.next,
        )
        if plan.skipped_more:
            assert len(plan.skipped) <= plan.skipped_count < full.skipped_count
        else:
            assert plan.skipped_count == full.skipped_count


# ------------------------------------------------------------------------------------------------ the scheduler says it


async def test_a_restart_a_year_later_says_more_than_n_fires_missed(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    rt = Runtime(tmp_path / "crewtui.db", clock)
    job = """
        [[cron]]
        name = "tick"
        schedule = { kind = "cron", expr = "* * * * *" }
        misfire = "skip"
        text = "tick"
    """
    try:
        await rt.start(crew(job))
        await clock.advance(60)
        await settle()
        await rt.stop()
        await clock.advance(YEAR)
        await rt.start(crew(job), rt.control)
        (told,) = rt.control.fired("skipped")
        assert isinstance(told, CronFired) and told.reason is not None
        words = told.reason.split()
        assert words[:2] == ["more", "than"] and int(words[2]) > CRON_WALK_CAP
        assert told.reason.startswith(f"more than {words[2]} fire(s) missed while no runtime ran (misfire=skip")
        assert told.nominal == T0 + 60 + YEAR  # the newest missed fire, exact
        await rt.stop()
        await clock.advance(30)  # told once: a second restart before the next fire does not tell it again
        await rt.start(crew(job), rt.control)
        assert rt.control.fired("skipped") == [told]
    finally:
        await rt.stop()
