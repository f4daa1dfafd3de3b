"""Schedule math: next fire per kind, stagger, DST days as croniter 7 handles them, windows, misfire plans, text.

Times are float epoch seconds (UTC). The DST tests pin croniter's behaviour with exact epochs, so a croniter
upgrade that changes it fails here rather than silently moving (or doubling) real fires.
"""

from __future__ import annotations

import hashlib
import itertools
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crewtui.config import ScheduleConfig
from crewtui.model import parse_duration
from crewtui.runtime.schedules import (
    MisfirePlan,
    describe,
    fires_between,
    format_duration,
    next_fire,
    plan_misfires,
    stagger_offset,
)

BERLIN = ZoneInfo("Europe/Berlin")
T0 = 1_775_116_800.0  # 2026-04-02 08:00:00 UTC, FakeClock's default start


def every(value: str | float, **kw: object) -> ScheduleConfig:
    return ScheduleConfig(kind="every", every=value, **kw)  # type: ignore[arg-type]


def cron(expr: str, tz: str = "UTC", **kw: object) -> ScheduleConfig:
    return ScheduleConfig(kind="cron", expr=expr, tz=tz, **kw)  # type: ignore[arg-type]


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def berlin(*args: int, fold: int = 0) -> float:
    return datetime(*args, tzinfo=BERLIN, fold=fold).timestamp()


def iterate(schedule: ScheduleConfig, after: float, n: int, job: str = "") -> list[float]:
    """n successive fires, each asked for with the previous one, as the scheduler does."""
    out: list[float] = []
    t: float | None = after
    for _ in range(n):
        t = next_fire(schedule, t, job=job)  # type: ignore[arg-type]
        if t is None:
            break
        out.append(t)
    return out


# ------------------------------------------------------------------------------------------------ at


def test_at_in_the_future_fires_once_at_that_instant() -> None:
    s = ScheduleConfig(kind="at", at="2026-04-02T09:00:00Z")  # type: ignore[arg-type]
    assert next_fire(s, T0) == utc(2026, 4, 2, 9)
    assert next_fire(s, utc(2026, 4, 2, 9)) is None  # strictly after: the instant itself is not "after"
    assert next_fire(s, utc(2026, 4, 2, 9) - 0.001) == utc(2026, 4, 2, 9)


def test_at_in_the_past_is_none() -> None:
    s = ScheduleConfig(kind="at", at="2026-04-01T09:00:00Z")  # type: ignore[arg-type]
    assert next_fire(s, T0) is None
    assert fires_between(s, T0, T0 + 86400) == ([], False)


def test_naive_at_is_wall_time_in_the_schedule_zone() -> None:
    s = ScheduleConfig(kind="at", at="2026-04-02T09:00:00", tz="Europe/Berlin")  # type: ignore[arg-type]
    assert next_fire(s, T0 - 86400) == utc(2026, 4, 2, 7)  # 09:00 CEST


def test_at_ignores_stagger() -> None:
    s = ScheduleConfig(kind="at", at="2026-04-02T09:00:00Z", stagger="30s")  # type: ignore[arg-type]
    assert stagger_offset(s, "job") == 0.0
    assert next_fire(s, T0, job="job") == utc(2026, 4, 2, 9)


# ------------------------------------------------------------------------------------------------ every


def test_every_without_anchor_is_aligned_to_the_epoch() -> None:
    s = every("15m")
    quarters = [utc(2026, 4, 2, 9, 15), utc(2026, 4, 2, 9, 30), utc(2026, 4, 2, 9, 45)]
    assert iterate(s, utc(2026, 4, 2, 9, 7, 13), 3) == quarters
    assert next_fire(s, utc(2026, 4, 2, 9, 15)) == utc(2026, 4, 2, 9, 30)  # on a fire: the following one
    assert every(90).model_dump()["every"] == 90
    assert next_fire(every(90), 0.0) == 90.0


def test_every_counts_from_the_anchor() -> None:
    s = every("15m", anchor="2026-04-02T09:07:30Z")
    anchor = utc(2026, 4, 2, 9, 7, 30)
    # Before the anchor, the first fire is the anchor itself: nothing fires before it.
    assert next_fire(s, T0) == anchor
    assert next_fire(s, anchor - 1e9) == anchor
    assert iterate(s, anchor, 3) == [anchor + 900, anchor + 1800, anchor + 2700]
    # Long after the anchor, still on its grid (no drift from repeated addition).
    later = next_fire(s, anchor + 10_000_000.5)
    assert later is not None and (later - anchor) % 900 == 0 and 0 < later - (anchor + 10_000_000.5) <= 900


def test_every_naive_anchor_is_wall_time_in_the_zone() -> None:
    s = every("1h", anchor="2026-04-02T09:30:00", tz="Europe/Berlin")
    assert next_fire(s, T0) == utc(2026, 4, 2, 8, 30)  # anchor 07:30 UTC, one hour on from it


def test_every_is_arithmetic_not_iteration() -> None:
    # The shortest interval a crew may ask for (1 s) about a time ~300 years out: iteration would take minutes
    # per call; this is instant. (It used to use 1 ms, which a crew file can no longer ask for.)
    s = every(1.0)
    start = time.perf_counter()
    for i in range(1000):
        t = 1e10 + i * 0.37
        got = next_fire(s, t)
        assert got is not None and t < got <= t + 1.0 + 1e-6
    assert time.perf_counter() - start < 0.5


# ------------------------------------------------------------------------------------------------ cron


def test_cron_in_utc_and_in_a_zone() -> None:
    assert next_fire(cron("0 9 * * *"), T0) == utc(2026, 4, 2, 9)
    assert next_fire(cron("0 9 * * *"), utc(2026, 4, 2, 9)) == utc(2026, 4, 3, 9)
    assert next_fire(cron("0 9 * * *", "Europe/Berlin"), T0) == utc(2026, 4, 3, 7)  # 09:00 CEST, today's passed
    assert next_fire(cron("*/5 * * * *"), T0 + 0.5) == T0 + 300
    # a sub-second `after` just before a fire still gets that fire, not the one after it
    assert next_fire(cron("*/5 * * * *"), T0 + 300 - 1e-6) == T0 + 300


def test_cron_that_never_matches_again_is_none() -> None:
    assert next_fire(cron("0 0 1 1 * 0 2020"), T0) is None  # a year field in the past


def test_spring_forward_berlin_2026_03_29() -> None:
    # 02:00 CET -> 03:00 CEST; local 02:xx does not exist that day.
    daily = cron("30 2 * * *", "Europe/Berlin")
    # croniter moves the nonexistent 02:30 to the first existing minute, 03:00 CEST (01:00 UTC): once.
    day_start, next_day = berlin(2026, 3, 29), berlin(2026, 3, 30)
    assert fires_between(daily, day_start - 1, next_day - 1) == ([1_774_746_000.0], False)
    assert 1_774_746_000.0 == utc(2026, 3, 29, 1) == berlin(2026, 3, 29, 3)
    assert iterate(daily, berlin(2026, 3, 28), 3) == [
        1_774_661_400.0,  # 03-28 02:30 CET
        1_774_746_000.0,  # 03-29 03:00 CEST (the 02:30 that did not exist)
        1_774_830_600.0,  # 03-30 02:30 CEST
    ]

    hourly = cron("0 * * * *", "Europe/Berlin")
    fires, more = fires_between(hourly, day_start - 1, next_day - 1)
    assert not more and len(fires) == 23  # a 23-hour day, one fire per hour that exists
    assert fires[:4] == [1_774_738_800.0, 1_774_742_400.0, 1_774_746_000.0, 1_774_749_600.0]  # 00, 01 CET; 03, 04 CEST
    assert all(b - a == 3600 for a, b in itertools.pairwise(fires))  # hourly in real time straight through
    assert iterate(hourly, 1_774_742_400.0, 1) == [1_774_746_000.0]  # 01:00 CET -> 03:00 CEST, no double 03:00


def test_fall_back_berlin_2026_10_25() -> None:
    # 03:00 CEST -> 02:00 CET; local 02:xx happens twice that day.
    daily = cron("30 2 * * *", "Europe/Berlin")
    # croniter fires a wall time of the repeated hour at both instants: 02:30 CEST, then 02:30 CET an hour later.
    day_start, next_day = berlin(2026, 10, 25), berlin(2026, 10, 26)
    assert fires_between(daily, day_start - 1, next_day - 1) == ([1_792_888_200.0, 1_792_891_800.0], False)
    assert 1_792_888_200.0 == utc(2026, 10, 25, 0, 30) == berlin(2026, 10, 25, 2, 30, fold=0)
    assert 1_792_891_800.0 == utc(2026, 10, 25, 1, 30) == berlin(2026, 10, 25, 2, 30, fold=1)
    assert iterate(daily, berlin(2026, 10, 24), 4) == [
        1_792_801_800.0,  # 10-24 02:30 CEST
        1_792_888_200.0,  # 10-25 02:30 CEST
        1_792_891_800.0,  # 10-25 02:30 CET (the same wall time again)
        1_792_978_200.0,  # 10-26 02:30 CET
    ]
    # Asked from inside the repeated hour, it is consistent with the list above.
    assert next_fire(daily, berlin(2026, 10, 25, 2, 45, fold=0)) == 1_792_891_800.0
    assert next_fire(daily, berlin(2026, 10, 25, 2, 15, fold=1)) == 1_792_891_800.0
    assert next_fire(daily, berlin(2026, 10, 25, 2, 45, fold=1)) == 1_792_978_200.0

    hourly = cron("0 * * * *", "Europe/Berlin")
    fires, more = fires_between(hourly, day_start - 1, next_day - 1)
    assert not more and len(fires) == 25  # a 25-hour day
    assert fires[1:5] == [1_792_882_800.0, 1_792_886_400.0, 1_792_890_000.0, 1_792_893_600.0]  # 01, 02 CEST; 02, 03 CET
    assert all(b - a == 3600 for a, b in itertools.pairwise(fires))


@pytest.mark.parametrize("expr", ["30 2 * * *", "0 * * * *", "*/20 1-3 * * *"])
@pytest.mark.parametrize("day", [(2026, 3, 28), (2026, 10, 24)])
@pytest.mark.parametrize("stagger", [None, "37s", "2h"])
def test_dst_fires_strictly_increase_and_agree_from_any_point(
    expr: str, day: tuple[int, int, int], stagger: str | None
) -> None:
    s = cron(expr, "Europe/Berlin", stagger=stagger)
    start = berlin(*day, 20)
    fires, more = fires_between(s, start, start + 2 * 86400, job="j", limit=1000)
    assert not more and fires
    assert all(a < b for a, b in itertools.pairwise(fires))
    assert len(set(fires)) == len(fires)  # never the same epoch twice
    # From any moment (here every 7.5 minutes, and just before and at each fire), next_fire is the next listed fire.
    probes = [start + i * 450.0 for i in range(int(86400 * 1.5 / 450))]
    probes += [f - 1e-6 for f in fires] + fires[:-1]
    for t in probes:
        expected = next((f for f in fires if f > t), None)
        if expected is not None:
            assert next_fire(s, t, job="j") == expected


# ------------------------------------------------------------------------------------------------ stagger


def test_stagger_is_a_stable_hash_of_the_job_name() -> None:
    s = every("1m", stagger="30s")
    # SHA-256, not hash(): the same offset in every process, so persisted fire times stay valid across restarts.
    digest = hashlib.sha256(b"blog-publisher").digest()
    assert stagger_offset(s, "blog-publisher") == (int.from_bytes(digest[:8], "big") % 30_000) / 1000
    assert stagger_offset(s, "blog-publisher") == stagger_offset(every("1m", stagger="30s"), "blog-publisher")
    assert stagger_offset(every("1m"), "blog-publisher") == 0.0


def test_stagger_within_range_and_spread_across_jobs() -> None:
    s = cron("0 9 * * *", stagger="30s")
    offsets = [stagger_offset(s, f"job-{i}") for i in range(200)]
    assert all(0 <= o < 30 for o in offsets)
    assert len(set(offsets)) > 190  # 30,000 possible millisecond offsets: collisions are rare
    fires = {next_fire(s, T0, job=f"job-{i}") for i in range(200)}
    assert len(fires) > 190
    assert all(f is not None and utc(2026, 4, 2, 9) <= f < utc(2026, 4, 2, 9, 0, 30) for f in fires)


@pytest.mark.parametrize(
    "schedule", [every("1m", stagger="45s"), cron("*/5 * * * *", stagger="10m"), every("1m", stagger="5m")]
)
def test_stagger_never_fires_twice(schedule: ScheduleConfig) -> None:
    offset = stagger_offset(schedule, "x")
    assert offset > 0
    fires = iterate(schedule, T0, 50, job="x")
    period = 60 if schedule.kind == "every" else 300
    assert [round(b - a, 6) for a, b in itertools.pairwise(fires)] == [period] * 49
    assert all(round(f - offset) % period == 0 for f in fires)  # nominal + offset
    for f in fires:
        assert next_fire(schedule, f, job="x") not in (None, f)
        assert next_fire(schedule, f - 1e-6, job="x") == f  # just before a fire: that fire
    assert fires_between(schedule, T0, fires[-1], job="x", limit=100) == (fires, False)


# ------------------------------------------------------------------------------------------------ fires_between


def test_fires_between_is_start_exclusive_end_inclusive() -> None:
    s = every(60)
    assert fires_between(s, T0, T0 + 180) == ([T0 + 60, T0 + 120, T0 + 180], False)
    assert fires_between(s, T0 - 1, T0 + 60) == ([T0, T0 + 60], False)
    assert fires_between(s, T0, T0) == ([], False)
    assert fires_between(s, T0 + 100, T0) == ([], False)  # a window backwards is empty, not an error


def test_fires_between_limit_and_truncation() -> None:
    s = every(60)
    assert fires_between(s, T0, T0 + 3600, limit=5) == ([T0 + 60 * i for i in range(1, 6)], True)
    assert fires_between(s, T0, T0 + 300, limit=5) == ([T0 + 60 * i for i in range(1, 6)], False)  # exactly 5
    assert fires_between(s, T0, T0 + 300, limit=0) == ([], True)
    assert fires_between(s, T0, T0 + 30, limit=0) == ([], False)
    fires, more = fires_between(cron("* * * * *"), T0, T0 + 86400)
    assert more and len(fires) == 100 and fires[0] == T0 + 60 and fires[-1] == T0 + 6000


# ------------------------------------------------------------------------------------------------ misfires

EVERY_MIN = every(60)
CRON_MIN = cron("* * * * *")
LAST = T0  # the last fire handled before the downtime
NOW = T0 + 180  # missed: T0+60, T0+120, T0+180


@pytest.mark.parametrize("schedule", [EVERY_MIN, CRON_MIN], ids=["every", "cron"])
def test_misfires_three_missed_all_within_grace(schedule: ScheduleConfig) -> None:
    missed = [T0 + 60, T0 + 120, T0 + 180]
    assert plan_misfires(schedule, LAST, NOW, "skip", 3600) == MisfirePlan(
        run=[], skipped=missed, skipped_count=3, truncated=False, next=T0 + 240
    )
    assert plan_misfires(schedule, LAST, NOW, "run_once", 3600) == MisfirePlan(
        run=[T0 + 180], skipped=[T0 + 60, T0 + 120], skipped_count=2, truncated=False, next=T0 + 240
    )
    assert plan_misfires(schedule, LAST, NOW, "run_all", 3600) == MisfirePlan(
        run=missed, skipped=[], skipped_count=0, truncated=False, next=T0 + 240
    )


@pytest.mark.parametrize("schedule", [EVERY_MIN, CRON_MIN], ids=["every", "cron"])
def test_misfires_three_missed_one_expired(schedule: ScheduleConfig) -> None:
    grace = 100  # now - grace = T0+80: the fire at T0+60 has expired
    assert plan_misfires(schedule, LAST, NOW, "skip", grace) == MisfirePlan(
        run=[], skipped=[T0 + 60, T0 + 120, T0 + 180], skipped_count=3, truncated=False, next=T0 + 240
    )
    assert plan_misfires(schedule, LAST, NOW, "run_once", grace) == MisfirePlan(
        run=[T0 + 180], skipped=[T0 + 60, T0 + 120], skipped_count=2, truncated=False, next=T0 + 240
    )
    assert plan_misfires(schedule, LAST, NOW, "run_all", grace) == MisfirePlan(
        run=[T0 + 120, T0 + 180], skipped=[T0 + 60], skipped_count=1, truncated=False, next=T0 + 240
    )


def test_misfire_grace_boundary_and_all_expired() -> None:
    # A fire exactly `grace` old is still within grace.
    assert plan_misfires(EVERY_MIN, LAST, NOW, "run_all", 120).run == [T0 + 60, T0 + 120, T0 + 180]
    # The newest missed fire older than grace: nothing runs, even for run_once.
    plan = plan_misfires(EVERY_MIN, LAST, NOW + 30, "run_once", 10)
    assert plan.run == [] and plan.skipped_count == 3 and plan.next == T0 + 240
    # grace 0: only a fire at exactly `now` runs.
    assert plan_misfires(EVERY_MIN, LAST, NOW, "run_all", 0).run == [T0 + 180]


@pytest.mark.parametrize("schedule", [EVERY_MIN, CRON_MIN], ids=["every", "cron"])
def test_run_all_caps_at_limit_keeping_the_most_recent(schedule: ScheduleConfig) -> None:
    now = T0 + 150 * 60  # 150 missed fires, all within grace
    plan = plan_misfires(schedule, LAST, now, "run_all", 86400)
    assert plan.truncated
    assert plan.run == [T0 + 60 * i for i in range(51, 151)]
    assert plan.skipped == [T0 + 60 * i for i in range(1, 51)] and plan.skipped_count == 50
    assert plan.next == now + 60
    # run_once is run_all with room for one
    once = plan_misfires(schedule, LAST, now, "run_once", 86400)
    assert plan_misfires(schedule, LAST, now, "run_all", 86400, limit=1).run == once.run == [now]


def test_long_downtime_counts_without_listing_everything() -> None:
    s = every(1)
    now = LAST + 30 * 86400  # a month of a 1-second job: 2,592,000 missed
    start = time.perf_counter()
    plan = plan_misfires(s, LAST, now, "run_all", 3600)
    assert time.perf_counter() - start < 0.1
    assert plan.run == [now - 99 + i for i in range(100)] and plan.truncated
    assert plan.skipped_count == 2_592_000 - 100
    assert plan.skipped == [now - 199 + i for i in range(100)]  # the most recent 100 of those not run


def test_misfires_for_at_and_when_nothing_was_missed() -> None:
    at = ScheduleConfig(kind="at", at="2026-04-02T08:01:00Z")  # type: ignore[arg-type]
    assert plan_misfires(at, T0, T0 + 120, "run_once", 3600) == MisfirePlan(run=[T0 + 60], skipped_count=0, next=None)
    assert plan_misfires(EVERY_MIN, T0, T0 + 30, "run_all", 3600) == MisfirePlan(next=T0 + 60)


def test_misfires_as_the_scheduler_asks_just_below_a_pending_fire() -> None:
    # The scheduler passes next_fire - 1e-6 when nothing was handled yet; the pending fire counts as missed.
    pending = next_fire(CRON_MIN, T0)
    assert pending == T0 + 60
    plan = plan_misfires(CRON_MIN, pending - 1e-6, T0 + 125, "run_all", 3600)
    assert plan.run == [T0 + 60, T0 + 120] and plan.next == T0 + 180


def test_clock_behind_last_fire_never_refires_it() -> None:
    plan = plan_misfires(EVERY_MIN, T0 + 120, T0 + 30, "run_all", 3600)
    assert plan == MisfirePlan(next=T0 + 180)


# ------------------------------------------------------------------------------------------------ text


def test_describe() -> None:
    at_utc = ScheduleConfig(kind="at", at="2026-04-02T09:00:00Z")  # type: ignore[arg-type]
    at_berlin = ScheduleConfig(kind="at", at="2026-04-02T09:00:00", tz="Europe/Berlin")  # type: ignore[arg-type]
    assert describe(at_utc) == "at 2026-04-02 09:00 UTC"
    assert describe(at_berlin) == "at 2026-04-02 09:00 Europe/Berlin"
    assert describe(every("15m")) == "every 15m"
    assert describe(every(90)) == "every 90s"
    assert describe(cron("0 9 * * *", "Europe/Berlin")) == "cron 0 9 * * * (Europe/Berlin)"
    assert describe(cron("*/5 * * * *", stagger="30s")) == "cron */5 * * * * (UTC) + stagger 30s"
    assert describe(every("1h", anchor="2026-04-02T09:07:00Z")) == "every 1h from 2026-04-02 09:07 UTC"


@pytest.mark.parametrize(
    "seconds, text",
    [
        (90, "90s"),
        (120, "2m"),
        (5400, "1h30m"),
        (0.25, "250ms"),
        (0, "0s"),
        (1, "1s"),
        (150, "2m30s"),
        (3600, "1h"),
        (3690, "1h1m30s"),
        (86400, "24h"),
        (1.5, "1.5s"),
        (0.0004, "0.4ms"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.one_of(st.integers(0, 10**7), st.floats(0, 10**6, allow_nan=False).map(lambda x: round(x, 3))))
def test_format_duration_reads_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds, abs=1e-3)


# ------------------------------------------------------------------------------------------------ odd inputs


def test_odd_inputs_raise_value_error() -> None:
    with pytest.raises(ValueError, match="after"):
        next_fire(EVERY_MIN, float("nan"))
    with pytest.raises(ValueError, match="after"):
        next_fire(CRON_MIN, 1e300)
    with pytest.raises(ValueError, match="policy"):
        plan_misfires(EVERY_MIN, T0, NOW, "sometimes", 60)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="grace"):
        plan_misfires(EVERY_MIN, T0, NOW, "skip", -1)
    with pytest.raises(ValueError, match="limit"):
        fires_between(EVERY_MIN, T0, NOW, limit=-1)
    with pytest.raises(ValueError, match="every"):
        next_fire(ScheduleConfig.model_construct(kind="every", every=0.0, tz="UTC", anchor=None, stagger=None), T0)
    with pytest.raises(ValueError, match="expr"):
        next_fire(ScheduleConfig.model_construct(kind="cron", expr=None, tz="UTC", stagger=None), T0)
    with pytest.raises(ValueError, match="cron expression"):
        next_fire(ScheduleConfig.model_construct(kind="cron", expr="61 * * * *", tz="UTC", stagger=None), T0)
    with pytest.raises(ValueError, match="time zone"):
        next_fire(ScheduleConfig.model_construct(kind="cron", expr="* * * * *", tz="Mars/Olympus", stagger=None), T0)
    with pytest.raises(ValueError):
        format_duration(-1)


# ------------------------------------------------------------------------------------------------ properties


@given(every_s=st.integers(1, 86400), after=st.floats(0, 4e9, allow_nan=False))
def test_every_next_fire_is_after_and_within_one_interval(every_s: int, after: float) -> None:
    got = next_fire(every(every_s), after)
    assert got is not None
    assert got > after
    assert got - after <= every_s


_MINUTE = st.sampled_from(["*", "0", "30", "*/5", "15,45", "0-10/3", "59"])
_HOUR = st.sampled_from(["*", "0", "2", "9", "*/6", "1-3", "23"])
_DOM = st.sampled_from(["*", "*", "1", "15", "28", "1-7"])
_MONTH = st.sampled_from(["*", "*", "1", "3,10", "*/2", "11-12"])
_DOW = st.sampled_from(["*", "*", "*", "0", "1-5", "sat"])
_ZONE = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"])


@settings(max_examples=60, deadline=None)
@given(
    expr=st.tuples(_MINUTE, _HOUR, _DOM, _MONTH, _DOW).map(" ".join),
    tz=_ZONE,
    after=st.floats(utc(2020, 1, 1), utc(2035, 1, 1), allow_nan=False),
    job=st.text(max_size=8),
    stagger=st.sampled_from([None, "30s", "1h"]),
)
def test_cron_next_fire_strictly_increases(expr: str, tz: str, after: float, job: str, stagger: str | None) -> None:
    s = cron(expr, tz, stagger=stagger)
    fires = iterate(s, after, 12, job=job)
    assert len(fires) == 12  # every generated expression matches at least yearly
    assert fires[0] > after
    assert all(a < b for a, b in itertools.pairwise(fires))
