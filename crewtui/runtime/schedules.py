"""Schedule math: when a job fires, which fires a downtime missed, and how to say it in words.

Pure functions of a `ScheduleConfig` and float epoch seconds (UTC): no clock, no asyncio, no I/O. The scheduler
asks them with whatever time its (possibly fake) clock says, so tests drive them with plain numbers.

The three kinds (the crew file's `schedule = { kind = ... }`, see the README):
- `at`: one instant; nothing after it.
- `every`: `anchor + k * every` for k = 0, 1, 2, ...; without an anchor the epoch (0) is the anchor, so fires
  are aligned to multiples of the interval (a 15m job fires at :00, :15, :30, :45 UTC, and a restart does not
  shift it). No fire happens before the anchor. Computed with O(1) arithmetic, never by iterating.
- `cron`: croniter on an aware datetime in the schedule's zone, one croniter call per fire (~30 µs), so counting
  the fires a downtime missed walks at most `CRON_WALK_CAP` of them and says "more than" past that. Across DST
  changes we follow croniter 7 exactly (the tests pin it down for Europe/Berlin):
  * spring forward (02:00 -> 03:00): a fire whose wall time does not exist that day moves to the first
    existing minute, 03:00; `30 2 * * *` fires once, at 03:00 CEST; hourly `0 * * * *` goes 01:00 CET,
    03:00 CEST (the missing 02:00 and the real 03:00 are one fire, not two);
  * fall back (03:00 -> 02:00): a wall time in the repeated hour matches twice, at two different instants an
    hour apart; `30 2 * * *` fires at 02:30 CEST and again at 02:30 CET, hourly fires at both 02:00s.
  Fire times are always strictly increasing; no epoch is ever returned twice.

Stagger (`every` and `cron` only): a fixed offset in [0, stagger) per job, from a SHA-256 of the job name (not
`hash()`, which is salted per process, so the offset would change on every restart and a persisted next fire
would no longer match). Every fire of the job is shifted by it; the times these functions return include it,
and `stagger_offset` lets the caller recover the nominal time (for `{date}`/`{time}` templates).
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter

from crewtui.config import ScheduleConfig

__all__ = [
    "MisfirePlan",
    "MisfirePolicy",
    "describe",
    "fires_between",
    "format_duration",
    "next_fire",
    "plan_misfires",
    "stagger_offset",
]

MisfirePolicy = Literal["skip", "run_once", "run_all"]

# Below this an `every` interval is lost in float rounding of epoch times (one ulp near 2026 is ~0.24 µs) and
# would fire thousands of times per tick anyway; config.py accepts any positive duration, so we refuse here.
MIN_EVERY = 0.001
_MICRO = timedelta(microseconds=1)
MAX_EPOCH = 253_402_300_799.0  # 9999-12-31 23:59:59 UTC
# Most cron fires `plan_misfires` walks to count a span of missed ones (a cron count has no closed form). At ~30 µs
# a croniter call that is ~60 ms on the runtime's event loop, which plans at start: a day of a minute job (1,440)
# is still counted exactly, a year of it (525,600 fires, ~15 s walked) is "more than 2000". The tail of fires it
# keeps is found exactly all the same, by a walk back from the end of the span (see `_cron_tail`).
CRON_WALK_CAP = 2_000

Step = Callable[[float], float | None]
T = TypeVar("T")


@dataclass(frozen=True)
class MisfirePlan:
    """What to do with the fires a downtime missed: `plan_misfires` fills it, the scheduler carries it out.

    `run`: fires to run now, ascending. `skipped`: missed fires not run (expired ones included), ascending,
    only the most recent `limit` of them; `skipped_count` counts them all, unless `skipped_more`: a cron downtime
    with more fires than `CRON_WALK_CAP` is not counted to its end, and more than `skipped_count` were skipped
    (`run` and `skipped` are exact all the same). `truncated`: `run_all` had more fires within grace than `limit`
    (the older ones went to `skipped`). `next`: the first fire strictly after both `now` and `last_nominal`, None
    when the schedule has no more.
    """

    run: list[float] = field(default_factory=list)
    skipped: list[float] = field(default_factory=list)
    skipped_count: int = 0
    truncated: bool = False
    next: float | None = None
    skipped_more: bool = False


# ------------------------------------------------------------------------------------------------ public


def next_fire(schedule: ScheduleConfig, after: float, *, job: str = "") -> float | None:
    """The first fire time strictly after `after` (stagger included); None when there is none."""
    return _stepper(schedule, job)(_finite(after, "after"))


def fires_between(
    schedule: ScheduleConfig, start: float, end: float, *, job: str = "", limit: int = 100
) -> tuple[list[float], bool]:
    """Fire times in (start, end], ascending, at most `limit`; the bool says whether more were cut off."""
    start, end, limit = _finite(start, "start"), _finite(end, "end"), _limit(limit)
    if end <= start:  # an empty window, e.g. a clock that stepped back; nothing to report, not an error
        return [], False
    step = _stepper(schedule, job)
    out: list[float] = []
    t: float | None = start
    # Ask for one more than `limit` so we know whether the list was cut; the stepper is O(1) per fire.
    while len(out) <= limit:
        t = step(t)  # type: ignore[arg-type]  # t is a float here: the loop breaks on None
        if t is None or t > end:
            return out, False
        out.append(t)
    return out[:limit], True


def plan_misfires(
    schedule: ScheduleConfig,
    last_nominal: float,
    now: float,
    policy: MisfirePolicy,
    grace: float,
    *,
    job: str = "",
    limit: int = 100,
) -> MisfirePlan:
    """Decide what happens to fires missed in (last_nominal, now] after a downtime.

    `last_nominal` is the last fire already handled (persisted), `now` the restart time. A missed fire older
    than `now - grace` has expired and never runs. `skip` runs none; `run_once` runs only the most recent fire
    within grace; `run_all` runs every fire within grace, at most `limit` of them. When `run_all` is cut, it
    keeps the most recent ones: the same choice `run_once` makes, and the older ones are the nearest to expiring
    anyway (so `run_all` with limit 1 is exactly `run_once`).
    """
    last_nominal, now = _finite(last_nominal, "last_nominal"), _finite(now, "now")
    limit = _limit(limit)
    if policy not in ("skip", "run_once", "run_all"):
        raise ValueError(f"expected a misfire policy of skip, run_once or run_all, got {policy!r}")
    if not isinstance(grace, (int, float)) or isinstance(grace, bool) or math.isnan(grace) or grace < 0:
        raise ValueError(f"expected a misfire grace of zero or more seconds, got {grace!r}")
    step = _stepper(schedule, job)
    # Never hand back a fire at or before `last_nominal`, even if the clock stepped back across it:
    # that fire was already handled, and running it again is the double fire a restart must not cause.
    upcoming = step(max(now, last_nominal))
    if now <= last_nominal:
        return MisfirePlan(next=upcoming)

    cut = now - grace  # fires strictly older than this have expired
    # Split (last_nominal, now] into expired = (last_nominal, cut) and live = [cut, now]; as half-open
    # (lo, hi] intervals the boundary is the float just below `cut`, so a fire exactly at `cut` is live.
    below_cut = math.nextafter(cut, -math.inf)
    live_from = max(last_nominal, below_cut)
    # From the live fires we need the ones to run (`limit`, or 1 for run_once even when limit is 0) plus
    # `limit` more for the tail of `skipped`.
    live_count, live_more, live_tail = _span(schedule, job, step, live_from, now, keep=limit + max(1, limit))
    if below_cut > last_nominal:
        expired_count, expired_more, expired_tail = _span(schedule, job, step, last_nominal, below_cut, keep=limit)
    else:
        expired_count, expired_more, expired_tail = 0, False, []

    # A live count that is only a lower bound is over `limit` still (`_span` walks past `keep` before it stops
    # counting), so what runs and `truncated` come out as from a full count.
    n_run = {"skip": 0, "run_once": min(1, live_count), "run_all": min(limit, live_count)}[policy]
    run = live_tail[len(live_tail) - n_run :] if n_run else []
    live_not_run = live_tail[: len(live_tail) - n_run]
    skipped = (expired_tail + live_not_run)[-limit:] if limit else []
    return MisfirePlan(
        run=run,
        skipped=skipped,
        skipped_count=expired_count + live_count - n_run,
        truncated=policy == "run_all" and live_count > limit,
        next=upcoming,
        skipped_more=live_more or expired_more,
    )


def stagger_offset(schedule: ScheduleConfig, job: str = "") -> float:
    """The fixed offset, in [0, stagger), this job's fires are shifted by; 0 for `at` or without stagger.

    Whole milliseconds, so fire times stay readable and the offset is exact to recompute.
    """
    stagger = schedule.stagger
    if not stagger or schedule.kind == "at":
        return 0.0
    if not isinstance(stagger, (int, float)) or not math.isfinite(stagger) or stagger < 0:
        raise ValueError(f"expected a stagger of zero or more seconds, got {stagger!r}")
    units = int(stagger * 1000)
    if units <= 0:  # under a millisecond: not worth spreading
        return 0.0
    digest = hashlib.sha256(job.encode("utf-8", "surrogatepass")).digest()
    return (int.from_bytes(digest[:8], "big") % units) / 1000


def describe(schedule: ScheduleConfig) -> str:
    """One line for the dashboard: "every 15m", "cron 0 9 * * * (Europe/Berlin)", "at 2026-04-02 09:00 UTC"."""
    zone = _zone(schedule)
    if schedule.kind == "at":
        text = f"at {_wall(_need(schedule.at, 'at'), zone)} {schedule.tz}"
    elif schedule.kind == "every":
        text = f"every {format_duration(_every(schedule))}"
        if schedule.anchor is not None:
            text += f" from {_wall(schedule.anchor, zone)} {schedule.tz}"
    elif schedule.kind == "cron":
        text = f"cron {' '.join(_need(schedule.expr, 'expr').split())} ({schedule.tz})"
    else:
        raise ValueError(f"expected a schedule kind of at, every or cron, got {schedule.kind!r}")
    if schedule.stagger and schedule.kind != "at":
        text += f" + stagger {format_duration(schedule.stagger)}"
    return text


def format_duration(seconds: float) -> str:
    """90 -> "90s", 120 -> "2m", 5400 -> "1h30m", 0.25 -> "250ms"; parse_duration reads every result back.

    Under two minutes, plain seconds read better than "1m30s"; from there on, hours/minutes/seconds with the
    zero parts left out. Hours are not folded into days: "48h" is what people write for a watchdog.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        raise ValueError(f"expected a finite number of seconds, got {seconds!r}")
    if seconds < 0:
        raise ValueError(f"expected a duration of zero or more seconds, got {seconds!r}")
    if seconds == 0:
        return "0s"
    if seconds < 1:
        return _decimal(seconds * 1000) + "ms"
    whole = int(seconds)
    if seconds != whole or whole < 120:
        # A fractional part would not fit the h/m/s composition; say it in seconds, up to the millisecond.
        return _decimal(seconds) + "s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(hours, "h"), (minutes, "m"), (secs, "s")]
    return "".join(f"{n}{unit}" for n, unit in parts if n)


# ------------------------------------------------------------------------------------------------ internals


def _stepper(schedule: ScheduleConfig, job: str) -> Step:
    """A function x -> first fire strictly after x, with everything per-schedule (zone, parsed expression,
    offset) prepared once. `next_fire` calls it once; `fires_between` and `plan_misfires` call it in a loop,
    which is why a cron stepper keeps one croniter and re-points it instead of re-parsing the expression.
    """
    if not isinstance(job, str):
        raise ValueError(f"expected a job name as a string, got {job!r}")
    kind = schedule.kind
    zone = _zone(schedule)
    if kind == "at":
        at = _epoch(_need(schedule.at, "at"), zone)
        return lambda x: at if at > x else None

    offset = stagger_offset(schedule, job)
    if kind == "every":
        every = _every(schedule)
        anchor = 0.0 if schedule.anchor is None else _epoch(schedule.anchor, zone)

        def every_step(x: float) -> float | None:
            return _every_fire(anchor, every, offset, _every_index(anchor, every, offset, x))

        return every_step

    if kind == "cron":
        expr = _need(schedule.expr, "expr")
        try:
            it = croniter(expr, datetime.fromtimestamp(0, zone))
        except Exception as exc:  # croniter raises several unrelated classes for bad expressions
            raise ValueError(f"expected a valid cron expression, got {expr!r}: {exc}") from None

        def nominal_after(x: float) -> float | None:
            try:
                start = datetime.fromtimestamp(x, zone)
            except (OverflowError, OSError, ValueError):
                raise ValueError(f"time {x!r} is out of the range a cron schedule can handle") from None
            # fromtimestamp rounds to the microsecond, possibly up, past a fire just after x: step back one
            # microsecond then, and let the caller's check skip a result that is not after x.
            if start.timestamp() > x:
                start -= _MICRO
            try:
                return float(it.get_next(float, start_time=start))
            except CroniterBadDateError:
                return None  # no match within croniter's horizon (50 years): Feb 30, or a year in the past
            except (OverflowError, ValueError) as exc:
                raise ValueError(f"cron {expr!r} after {x!r}: {exc}") from None

        def cron_step(x: float) -> float | None:
            nominal = nominal_after(x - offset)
            # Float rounding of `x - offset`, and the microsecond step back above, can land on a fire that is
            # not after x; move on from the nominal time itself, which croniter handles exactly.
            while nominal is not None and nominal + offset <= x:
                nominal = nominal_after(nominal)
            return None if nominal is None else nominal + offset

        return cron_step

    raise ValueError(f"expected a schedule kind of at, every or cron, got {kind!r}")


def _every_fire(anchor: float, every: float, offset: float, k: int) -> float:
    # The one formula for the k-th fire; everything else is defined through it so a value computed twice is
    # bit-for-bit the same, and next_fire(fire) can never return that fire again.
    return (anchor + k * every) + offset


def _every_index(anchor: float, every: float, offset: float, x: float) -> int:
    """The smallest k >= 0 with fire k > x: an estimate by division, fixed by at most a step or two."""
    k = max(0, math.floor((x - offset - anchor) / every) + 1)
    while k > 0 and _every_fire(anchor, every, offset, k - 1) > x:
        k -= 1
    while _every_fire(anchor, every, offset, k) <= x:
        k += 1
    return k


def _span(
    schedule: ScheduleConfig, job: str, step: Step, lo: float, hi: float, *, keep: int
) -> tuple[int, bool, list[float]]:
    """How many fires fall in (lo, hi], whether there are more than that, and the last `keep` of them (ascending).

    `every` counts by arithmetic, so a week of a 1-second job costs nothing; `at` has at most one fire; cron
    has no closed form, so it walks the fires (one re-pointed croniter call each, ~30 µs), at most
    `CRON_WALK_CAP` of them (or `keep`, if more): past that the count is a lower bound, and the tail is found by
    `_cron_tail` without walking the fires in between.
    """
    if hi <= lo:
        return 0, False, []
    if schedule.kind == "every":
        every = _every(schedule)
        anchor = 0.0 if schedule.anchor is None else _epoch(schedule.anchor, _zone(schedule))
        offset = stagger_offset(schedule, job)
        first = _every_index(anchor, every, offset, lo)
        end = _every_index(anchor, every, offset, hi)  # first index after hi: fires first..end-1 are in range
        count = max(0, end - first)
        fires = [_every_fire(anchor, every, offset, k) for k in range(max(first, end - keep), end)] if keep else []
        return count, False, fires
    cap = max(CRON_WALK_CAP, keep)
    count = 0
    tail: deque[float] = deque(maxlen=keep)
    last = lo
    t = step(lo)
    while t is not None and t <= hi:
        if count == cap:
            # `t` is fire cap + 1, still in the span: stop counting, and find the tail from the end.
            if not keep:
                return count, True, []
            later, everything = _cron_tail(step, last, t, hi, keep, spacing=(last - lo) / count)
            # Fewer than `keep` later fires only when they are all the fires after `last`: the walked tail goes on.
            return count + len(later), not everything, [*tail, *later][-keep:]
        count += 1
        tail.append(t)
        last = t
        t = step(t)
    return count, False, list(tail)


def _cron_tail(
    step: Step, floor: float, first: float, hi: float, keep: int, spacing: float
) -> tuple[list[float], bool]:
    """The fires in (start, hi], ascending, for a `start` >= `floor` late enough that they are few, but at least
    `keep` of them unless there are fewer in (floor, hi]. The bool says whether they are every fire in (floor, hi]
    (`first`, the first fire after `floor`, is among them).

    Windows back from `hi`, each as wide as all those before it together (the first sized from `spacing`, the mean
    gap between fires so far), are walked forward until they hold `keep` fires. A window holding more than a few
    times `keep` (fires bunched after a quiet stretch: `* * * 1-6 *` seen from December) is not walked to its end:
    the search bisects between its start and the fires found so far. Every fire comes from `step`, so the stagger
    offset and DST are as the full walk has them, and none is at or before `floor`.
    """
    budget = 4 * keep
    found: list[float] = []  # the fires in (start, hi], ascending
    start = hi
    width = max(1.0, 1.5 * keep * spacing)
    crowded: float | None = None  # a time with more than `budget` fires between it and `start`
    while True:
        lo = max(floor, start - width)
        window, whole = _walk(step, lo, start, budget)
        if not whole:
            crowded, width = lo, (start - lo) / 2
            continue
        found[:0] = window
        if lo < first:  # no fire in (floor, lo]: `found` is all of them
            return found, True
        if len(found) >= keep:
            return found, False
        # (crowded, lo] still holds more than `budget - keep` fires, enough: the next window is within it.
        start, width = lo, (hi - lo if crowded is None else (lo - crowded) / 2)


def _walk(step: Step, lo: float, hi: float, most: int) -> tuple[list[float], bool]:
    """The fires in (lo, hi], ascending, and True; or the first `most` of them and False if there are more."""
    out: list[float] = []
    t = step(lo)
    while t is not None and t <= hi:
        if len(out) == most:
            return out, False
        out.append(t)
        t = step(t)
    return out, True


def _zone(schedule: ScheduleConfig) -> ZoneInfo:
    try:
        return ZoneInfo(schedule.tz)
    except Exception:  # unknown names, path-like names and empty strings fail in different ways
        raise ValueError(f"expected an IANA time zone like 'UTC' or 'Europe/Berlin', got {schedule.tz!r}") from None


def _every(schedule: ScheduleConfig) -> float:
    every = _need(schedule.every, "every")
    if isinstance(every, bool) or not isinstance(every, (int, float)) or not math.isfinite(every):
        raise ValueError(f"expected 'every' as a finite number of seconds, got {every!r}")
    if every < MIN_EVERY:
        raise ValueError(f"expected 'every' of at least {MIN_EVERY}s, got {every!r}")
    return float(every)


def _epoch(moment: datetime, zone: tzinfo) -> float:
    # config.py makes naive date-times aware in the schedule's zone; a model built around the validators
    # (model_construct) may still hold a naive one, which means the same thing.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.timestamp()


def _wall(moment: datetime, zone: tzinfo) -> str:
    local = (moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)).astimezone(zone)
    return local.strftime("%Y-%m-%d %H:%M:%S" if local.second or local.microsecond else "%Y-%m-%d %H:%M")


def _need(value: T | None, name: str) -> T:
    if value is None:
        raise ValueError(f"schedule has no '{name}', which its kind needs")
    return value


def _finite(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected '{name}' as finite epoch seconds, got {value!r}")
    # Beyond the years datetime can show, float epochs are too coarse for the `every` arithmetic to make
    # progress (and no schedule means anything there): refuse rather than loop.
    if abs(value) > MAX_EPOCH:
        raise ValueError(f"expected '{name}' as epoch seconds within ±{MAX_EPOCH:.0f} (year 9999), got {value!r}")
    return float(value)


def _limit(limit: int) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"expected a limit of zero or more, got {limit!r}")
    return limit


def _decimal(value: float) -> str:
    # Up to three decimals, trailing zeros dropped: 1.5 -> "1.5", 250.0 -> "250", 0.0004 -> "0".
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return text or "0"
