"""The scheduler: cron jobs, watchdogs and run deadlines on one timer heap, and completion rate per cron run.

One task sleeps until the earliest timer (on the injectable clock), so 1,000 jobs and 1,000 watchdogs cost
nothing while idle. Next fire times, runs and watchdogs are persisted: a restart neither loses nor doubles a
fire (a run is unique per job and nominal fire time, recorded before its batch is spawned), and fires missed
while the runtime was down follow the job's misfire policy.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import math
from collections import deque
from collections.abc import Coroutine, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel

from crewtui.clock import ClockLike
from crewtui.config import CrewConfig, CronConfig, render_template, template_values, validate_cron_job
from crewtui.errors import BadInput, Conflict, CrewError, NotFound
from crewtui.events import CronFired, Event, RunClosed, SystemEvent, timeline_mark
from crewtui.model import CronJobInfo, CronRun, Session, SessionState, SpawnRequest, SweepItem, TimelineItem
from crewtui.runtime.catchup import CatchUp
from crewtui.runtime.schedules import describe, fires_between, next_fire, stagger_offset

if TYPE_CHECKING:
    from crewtui.store import Store

log = logging.getLogger("crewtui.scheduler")

TimerKind = Literal["cron", "watchdog", "deadline"]
RECENT_MARKS = 5000  # timeline marks kept in memory (the UI shows the past hour)
FUTURE_MARKS = 500  # at most this many upcoming marks per timeline request
MAX_SLEEP = 30.0  # the loop looks at the wall clock at least this often


class SessionControl(Protocol):
    """What the scheduler drives: sessions, through the runtime's verbs (the orchestrator implements it)."""

    @property
    def sessions(self) -> Mapping[str, Session]:
        """Sessions in memory (a watched or run-counted session is never evicted: see `Scheduler.needs`)."""
        ...

    def publish(self, event: Event) -> None: ...

    async def spawn(self, request: SpawnRequest) -> Session: ...

    async def sweep(self, dry_run: bool = False, cause: Literal["user", "cron"] = "user") -> list[SweepItem]: ...

    async def kill_keys(self, keys: list[str], reason: str, cascade: bool) -> None: ...

    async def watchdog_fired(self, key: str, attempt: int) -> str: ...


class JobState(BaseModel):
    """A cron job and where it stands; persisted as one row per job."""

    config: CronConfig
    source: Literal["crew", "ctl"] = "crew"
    next_fire: float | None = None
    last_nominal: float | None = None
    runs: int = 0
    last_rate: float | None = None


class Scheduler:
    def __init__(self, control: SessionControl, store: Store, clock: ClockLike, crew: CrewConfig) -> None:
        self.control = control
        self.store = store
        self.clock = clock
        self.crew = crew
        self.jobs: dict[str, JobState] = {}
        self.open_runs: dict[str, CronRun] = {}
        self._heap: list[tuple[float, int, str, str, int]] = []  # (due, n, kind, target, attempt)
        self._n = 0
        self._watchdogs: dict[str, tuple[float, int]] = {}  # session key -> (due, attempt) of its live watchdog
        self._firing: set[str] = set()  # sessions whose watchdog is acting now (killed for a retry: not final)
        self._spawning: set[str] = set()  # runs whose batch is still being spawned
        self._catch_up = CatchUp[JobState](
            publish=lambda event: self.control.publish(event),
            fire=lambda state, nominal: self._fire(state, nominal, catch_up=True),
            handled=self._handled,
            job=self.jobs.get,
            idle=self._idle,
        )
        self._fire_locks: dict[str, asyncio.Lock] = {}  # job -> its fires, one at a time
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._jobs_tasks: set[asyncio.Task[Any]] = set()
        self.recent: deque[TimelineItem] = deque(maxlen=RECENT_MARKS)
        self.fire_lag: deque[float] = deque(maxlen=10_000)  # seconds between due and fire (benchmarks read it)

    # -------------------------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        now = self.clock.now()
        await self._load_recent(now - 3600)
        stored: dict[str, JobState] = {}
        for name, _source, data in await self.store.load_cron_jobs():
            try:
                stored[name] = JobState.model_validate_json(data)
            except ValueError as exc:
                log.error("cron job %s in the store is unreadable, dropped: %s", name, exc)
                self.store.delete_cron_job(name)
        for cfg in self.crew.cron:
            prev = stored.pop(cfg.name, None)
            if prev is not None and prev.config.schedule == cfg.schedule:
                prev.config, prev.source = cfg, "crew"
                self.jobs[cfg.name] = prev
            else:
                state = JobState(config=cfg, source="crew", next_fire=next_fire(cfg.schedule, now, job=cfg.name))
                if prev is not None:
                    state.runs, state.last_rate = prev.runs, prev.last_rate
                self.jobs[cfg.name] = state
        for name, state in stored.items():
            if state.source == "ctl":
                self.jobs[name] = state
            else:
                self.store.delete_cron_job(name)  # gone from the crew file
        for name, state in self.jobs.items():
            for data in await self.store.load_cron_runs(name, limit=20):  # newest first
                run = CronRun.model_validate_json(data)
                state.runs = max(state.runs, run.number)
                if not run.manual:  # a manual fire is no scheduled one: an overdue fire before it is still missed
                    state.last_nominal = max(state.last_nominal or run.nominal, run.nominal)
                    break
        for _, kind, due, data in await self.store.load_timers():
            if kind == "watchdog":
                d = json.loads(data)
                self._watchdogs[d["key"]] = (due, d["attempt"])
                self._push(due, "watchdog", d["key"], d["attempt"])
        for data in await self.store.load_cron_runs(open_only=True):
            run = CronRun.model_validate_json(data)
            self.open_runs[run.id] = run
            if run.deadline is not None:
                self._push(run.deadline, "deadline", run.id)
        for run in list(self.open_runs.values()):
            self._update_run(run)
        for name, state in self.jobs.items():
            await self._catch_up.at_start(state, now)
            self._persist_job(state)
            if state.next_fire is not None:
                self._push(state.next_fire, "cron", name)
        for warning in self.crew.warnings():
            self.control.publish(SystemEvent(level="warning", text=warning))
        self._task = asyncio.create_task(self._loop(), name="scheduler")
        for state in self.jobs.values():
            if state.config.fire_at_start:
                self._background(self._fire_at_start(state))

    async def _fire_at_start(self, state: JobState) -> None:
        try:
            await self._fire(state, self.clock.now(), manual=True)
        except CrewError as exc:
            log.info("cron %s at start: %s", state.config.name, exc.message)

    async def stop(self) -> None:
        for t in [self._task, *self._jobs_tasks]:
            if t is not None:
                t.cancel()
        await asyncio.gather(*(t for t in [self._task, *self._jobs_tasks] if t is not None), return_exceptions=True)
        self._task = None

    async def _load_recent(self, since: float) -> None:
        for ev in await self.store.events_since(since):
            self.note(ev)

    # -------------------------------------------------------------------------------------- timers

    def _push(self, due: float, kind: TimerKind, target: str, attempt: int = 0) -> None:
        self._n += 1
        heapq.heappush(self._heap, (due, self._n, kind, target, attempt))
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            now = self.clock.now()
            while self._heap and self._heap[0][0] <= now:
                due, _, kind, target, attempt = heapq.heappop(self._heap)
                try:
                    self._dispatch(due, kind, target, attempt, now)
                except Exception:
                    log.exception("timer %s %s failed", kind, target)
            self._wake.clear()
            waits: set[asyncio.Task[Any]] = {asyncio.ensure_future(self._wake.wait())}
            if self._heap:
                # Bounded: the sleep is monotonic time, the timers wall time (a suspend or a clock step splits them).
                waits.add(asyncio.ensure_future(self.clock.sleep(min(self._heap[0][0] - now, MAX_SLEEP))))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    def _dispatch(self, due: float, kind: str, target: str, attempt: int, now: float) -> None:
        if kind == "cron":
            state = self.jobs.get(target)
            if state is None or state.next_fire != due:
                return  # removed or rescheduled: a stale heap entry
            self.fire_lag.append(now - due)
            cfg = state.config
            state.next_fire = next_fire(cfg.schedule, due, job=target)
            late = state.next_fire is not None and state.next_fire <= now
            if now - due > cfg.misfire_grace or (late and fires_between(cfg.schedule, due, now, job=target)[1]):
                # Woken long after its time (the machine was suspended, the wall clock stepped forward): the
                # fires missed are a downtime's, for the misfire policy, not a backlog to run one by one.
                fires = self._catch_up.plan(
                    state, math.nextafter(due, -math.inf), now, "while the runtime was suspended"
                )
                self._background(self._catch_up.run(state, fires))
            else:
                self._background(self._fire(state, due))
            if state.next_fire is not None:
                self._push(state.next_fire, "cron", target)
        elif kind == "watchdog":
            if self._watchdogs.get(target) != (due, attempt):
                return  # disarmed or re-armed for a later attempt
            del self._watchdogs[target]
            self._firing.add(target)
            self.store.delete_timer(f"wd:{target}")
            self.fire_lag.append(now - due)
            self._background(self._watchdog(target, attempt))
        elif kind == "deadline":
            run = self.open_runs.get(target)
            if run is not None:
                self._update_run(run)

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        t = asyncio.create_task(coro)
        self._jobs_tasks.add(t)
        t.add_done_callback(self._jobs_tasks.discard)

    # -------------------------------------------------------------------------------------- watchdogs

    def arm_watchdog(self, s: Session) -> None:
        """A one-shot timer at now + watchdog_after for the session's current attempt."""
        assert s.watchdog_after
        due = self.clock.now() + s.watchdog_after
        self._watchdogs[s.key] = (due, s.attempt)
        self.store.put_timer(f"wd:{s.key}", "watchdog", due, json.dumps({"key": s.key, "attempt": s.attempt}))
        self._push(due, "watchdog", s.key, s.attempt)

    def watchdog_due(self, key: str) -> float | None:
        wd = self._watchdogs.get(key)
        return wd[0] if wd else None

    async def _watchdog(self, key: str, attempt: int) -> None:
        try:
            await self.control.watchdog_fired(key, attempt)
        finally:
            self._firing.discard(key)
            s = self.control.sessions.get(key)
            if s is not None and s.cron_run in self.open_runs:
                self._update_run(self.open_runs[s.cron_run])

    # -------------------------------------------------------------------------------------- firing

    def _idle(self, job: str) -> bool:
        """No run of the job has a live session or is still spawning its batch (a catch-up replay waits for it)."""
        return not self._live_of_previous_runs(job) and not any(
            self.open_runs[r].job == job for r in self._spawning if r in self.open_runs
        )

    def _live_of_previous_runs(self, job: str) -> list[str]:
        """Live sessions of the job's open runs, including those of a run whose batch is still being spawned (a
        session belongs to its run from the moment it exists, before its launch returns)."""
        runs = {run.id for run in self.open_runs.values() if run.job == job}
        if not runs:
            return []
        return [s.key for s in self.control.sessions.values() if s.cron_run in runs and s.state.live]

    async def _fire(
        self, state: JobState, nominal: float, catch_up: bool = False, manual: bool = False
    ) -> CronRun | None:
        """One fire of a job, after the fires of the same job before it: two in flight at once (a loop that woke
        late pops two due fires together) would take the same run number, and the second would be refused as
        already recorded: a fire lost."""
        async with self._fire_locks.setdefault(state.config.name, asyncio.Lock()):
            if self.jobs.get(state.config.name) is not state:
                return None  # removed (or removed and added again) while this fire waited
            return await self._fire_now(state, nominal, catch_up, manual)

    async def _fire_now(self, state: JobState, nominal: float, catch_up: bool, manual: bool) -> CronRun | None:
        cfg = state.config
        note = " (catch-up)" if catch_up else " (out of schedule)" if manual else ""
        if cfg.text is not None:
            self._handled(state, nominal, manual)
            self.control.publish(SystemEvent(text=cfg.text))
            self.control.publish(CronFired(job=cfg.name, nominal=nominal, outcome="system", reason=cfg.text[:200]))
            return None
        if cfg.action == "sweep":
            self._handled(state, nominal, manual)
            swept = await self.control.sweep(cause="cron")
            reason = f"{sum(1 for i in swept if i.kind == 'stale')} stale session(s) killed, "
            reason += f"{sum(1 for i in swept if i.action == 'remove')} worktree(s) removed{note}"
            self.control.publish(CronFired(job=cfg.name, nominal=nominal, outcome="swept", reason=reason))
            return None
        assert cfg.spawn is not None
        live = self._live_of_previous_runs(cfg.name)
        outcome: Literal["ran", "replaced"] = "ran"
        if live and cfg.overlap == "forbid":
            reason = f"previous run still has {len(live)} live session(s) (overlap=forbid)"
            self._handled(state, nominal, manual)
            self.control.publish(CronFired(job=cfg.name, nominal=nominal, outcome="skipped", reason=reason))
            if manual:
                raise Conflict(f"cron {cfg.name}: {reason}")
            return None
        if live and cfg.overlap == "replace":
            await self.control.kill_keys(live, f"replaced by a new run of {cfg.name} (overlap=replace)", cascade=True)
            outcome = "replaced"
        number = state.runs + 1
        run = CronRun(
            id=f"{cfg.name}#{number}",
            job=cfg.name,
            number=number,
            nominal=nominal,
            started_at=self.clock.now(),
            planned=len(cfg.spawn.items),
            deadline=(self.clock.now() + cfg.deadline) if cfg.deadline else None,
            manual=manual,
        )
        if not await self._claim(run):
            log.info("cron %s fire at %s was already recorded; not running it again", cfg.name, nominal)
            return None
        state.runs = number = run.number
        self._handled(state, nominal, manual)
        self.open_runs[run.id] = run
        self._spawning.add(run.id)  # a quick first session must not close the run before the rest exist
        try:
            # Labels say the nominal time, without the job's stagger offset.
            when = datetime.fromtimestamp(nominal - stagger_offset(cfg.schedule, cfg.name), tz=cfg.schedule.zone)
            for item in cfg.spawn.items:
                values = template_values(item, when, number)
                label = "?"
                try:
                    label = render_template(cfg.spawn.label, values, f"cron {cfg.name}: label")
                    req = SpawnRequest(
                        label=label,
                        agent=cfg.spawn.agent,
                        task=render_template(cfg.spawn.task, values, f"cron {cfg.name}: task"),
                        domain=render_template(cfg.spawn.domain, values, f"cron {cfg.name}: domain")
                        if cfg.spawn.domain
                        else None,
                        cron_run=run.id,
                        watchdog_after=cfg.watchdog_after,
                        max_attempts=cfg.max_attempts,
                    )
                    s = await self.control.spawn(req)
                    run.sessions.append(s.key)
                except CrewError as exc:
                    run.refused.append(f"{label}: {exc.message}")
        except Exception:
            # Not a refusal but a bug or an OS error broke the batch off: the run keeps what it spawned and must
            # still close once those are settled (left "spawning", it never would).
            self._spawning.discard(run.id)
            self._update_run(run)
            raise
        finally:
            self._spawning.discard(run.id)
        if run.deadline is not None:
            self._push(run.deadline, "deadline", run.id)
        reason = f"{len(run.sessions)} spawned" + (f", {len(run.refused)} refused" if run.refused else "") + note
        self.control.publish(CronFired(job=cfg.name, nominal=nominal, run=run.id, outcome=outcome, reason=reason))
        self._update_run(run)
        return run

    def _handled(self, state: JobState, nominal: float, manual: bool = False) -> None:
        """The fire at `nominal` is handled. A restart counts the missed fires from here, so never past a catch-up
        fire still queued (a newer fire skipped as overlapping the replay must not make a crash lose the rest),
        and never for a manual fire (`nominal` is when it was asked for: a scheduled fire overdue then, its loop
        not yet awake after a suspend, would be lost by a crash)."""
        if manual:
            return
        queued = self._catch_up.first_queued(state.config.name)
        state.last_nominal = nominal if queued is None else min(nominal, math.nextafter(queued, -math.inf))
        self._persist_job(state)

    async def _claim(self, run: CronRun) -> bool:
        """Record the fire; False if this (job, nominal) fire is recorded already. A refusal can also mean that
        only its run id was taken (runs outlive `cron remove`, so a job added again under its name counts from 0;
        a crash can lose the count): then the run takes the number after the job's highest and claims again."""
        for _ in range(2):
            if await self.store.claim_cron_run(run.id, run.job, run.nominal, run.number, run.model_dump_json()):
                return True
            recorded = [CronRun.model_validate_json(d) for d in await self.store.load_cron_runs(run.job)]
            if not recorded or any(r.nominal == run.nominal for r in recorded):
                return False
            run.number = max(r.number for r in recorded) + 1
            run.id = f"{run.job}#{run.number}"
        return False

    # -------------------------------------------------------------------------------------- runs

    def _settled(self, s: Session) -> bool:
        """Terminal, and no watchdog will retry it (a failed or lost try with attempts left is not final)."""
        if s.state.live or s.key in self._firing:
            return False
        if s.state in (SessionState.FAILED, SessionState.LOST, SessionState.KILLED) and s.attempt < s.max_attempts:
            return s.key not in self._watchdogs
        return True

    def needs(self, s: Session) -> bool:
        """Whether the scheduler still reads this session from memory: its watchdog is armed or acting (it may
        retry it), or its cron run is open (the run's counts and rate are made from its sessions)."""
        return (
            s.key in self._watchdogs
            or s.key in self._firing
            or (s.cron_run is not None and s.cron_run in self.open_runs)
        )

    def counts(self, run: CronRun) -> dict[str, int]:
        c = dict.fromkeys(("spawned", "done", "failed", "timed_out", "killed", "lost", "running", "refused"), 0)
        c["failed"] = c["refused"] = len(run.refused)
        c["spawned"] = len(run.sessions) + len(run.refused)
        for key in run.sessions:
            st = self.control.sessions[key].state
            if st.live:
                c["running"] += 1
            else:
                c[st.value] += 1
        return c

    def _update_run(self, run: CronRun) -> None:
        run.counts = self.counts(run)
        spawned = run.counts["spawned"]
        run.rate = run.counts["done"] / spawned if spawned else None
        now = self.clock.now()
        settled = run.id not in self._spawning and all(self._settled(self.control.sessions[k]) for k in run.sessions)
        if settled or (run.deadline is not None and now >= run.deadline):
            run.final = True
            run.closed_at = now
            self.open_runs.pop(run.id, None)
            state = self.jobs.get(run.job)
            if state is not None:
                state.last_rate = run.rate
                self._persist_job(state)
            self.control.publish(RunClosed(job=run.job, run=run.id, rate=run.rate, counts=dict(run.counts)))
            if self._catch_up.replaying(run.job):
                self._background(self._catch_up.replay(run.job))
        self.store.put_cron_run(run.id, run.final, run.model_dump_json())

    def session_ended(self, s: Session) -> None:
        if s.cron_run is not None and s.cron_run in self.open_runs:
            self._update_run(self.open_runs[s.cron_run])

    async def runs(self, job: str | None = None, limit: int = 50) -> list[CronRun]:
        if job is not None and job not in self.jobs:
            raise NotFound(f"no cron job named {job!r}; jobs: {', '.join(sorted(self.jobs)) or 'none'}")
        await self.store.flush()
        out = [CronRun.model_validate_json(d) for d in await self.store.load_cron_runs(job, limit=limit)]
        for i, run in enumerate(out):
            if run.id in self.open_runs:  # the live copy has the newest counts
                out[i] = self.open_runs[run.id].model_copy(deep=True)
        return out

    # -------------------------------------------------------------------------------------- jobs API

    def _persist_job(self, state: JobState) -> None:
        if self.jobs.get(state.config.name) is not state:
            return  # removed while a fire of it was in flight: writing its row would bring it back at the next start
        self.store.put_cron_job(state.config.name, state.source, state.model_dump_json())

    def job_info(self, name: str) -> CronJobInfo:
        st = self._job(name)
        cfg = st.config
        payload: Literal["spawn", "sweep", "system"] = (
            "spawn" if cfg.spawn else "sweep" if cfg.action == "sweep" else "system"
        )
        return CronJobInfo(
            name=name, schedule=describe(cfg.schedule), payload=payload, source=st.source, next_fire=st.next_fire,
            last_fire=st.last_nominal, runs=st.runs, misfire=cfg.misfire, overlap=cfg.overlap, last_rate=st.last_rate,
        )  # fmt: skip

    def job_infos(self) -> list[CronJobInfo]:
        return [self.job_info(name) for name in sorted(self.jobs)]

    def _job(self, name: str) -> JobState:
        st = self.jobs.get(name)
        if st is None:
            raise NotFound(f"no cron job named {name!r}; jobs: {', '.join(sorted(self.jobs)) or 'none'}")
        return st

    async def trigger(self, name: str) -> CronRun | None:
        """Fire a job now, outside its schedule (its next scheduled fire is unchanged)."""
        st = self._job(name)
        return await self._fire(st, self.clock.now(), manual=True)

    async def add_job(self, data: dict[str, Any], allow_past: bool = False) -> CronJobInfo:
        name = data.get("name")
        if isinstance(name, str) and name in self.jobs:
            raise Conflict(f"a cron job named {name!r} already exists ({self.jobs[name].source})")
        cfg = validate_cron_job(self.crew, data)
        if cfg.schedule.never_fires():
            raise BadInput(f"cron {cfg.name}: `{cfg.schedule.expr}` never fires (no such date); not added")
        now = self.clock.now()
        nxt = next_fire(cfg.schedule, now, job=cfg.name)
        if cfg.schedule.kind == "at":
            at = cfg.schedule.at.timestamp() if cfg.schedule.at else now
            if at <= now:
                if not allow_past:
                    raise BadInput(
                        f"cron {cfg.name}: `at` {cfg.schedule.at} is in the past; add --allow-past to run it now"
                    )
                nxt = now
        state = JobState(config=cfg, source="ctl", next_fire=nxt)
        self.jobs[cfg.name] = state
        self._persist_job(state)
        if nxt is not None:
            self._push(nxt, "cron", cfg.name)
        return self.job_info(cfg.name)

    async def remove_job(self, name: str) -> CronJobInfo:
        st = self._job(name)
        if st.source == "crew":
            raise BadInput(
                f"cron {name!r} is defined in the crew file; remove it there (it would come back at the next start)"
            )
        info = self.job_info(name)
        del self.jobs[name]
        self._catch_up.forget(name)
        self.store.delete_cron_job(name)
        return info

    # -------------------------------------------------------------------------------------- timeline

    def note(self, ev: Event) -> None:
        """Keep the marks the timeline shows (called for every published event)."""
        item = timeline_mark(ev)
        if item is not None:
            self.recent.append(item)

    async def timeline(self, start: float, end: float) -> list[TimelineItem]:
        now = self.clock.now()
        past = [i for i in self.recent if start <= i.ts <= min(end, now)]
        future: list[TimelineItem] = []
        if end > now:
            for name, st in self.jobs.items():
                fires, _ = fires_between(st.config.schedule, now, end, job=name, limit=60)
                future += [TimelineItem(ts=t, kind="cron", name=name, future=True) for t in fires]
            for key, (due, _) in self._watchdogs.items():
                if now < due <= end:
                    s = self.control.sessions.get(key)
                    future.append(TimelineItem(ts=due, kind="watchdog", name=s.label if s else key, future=True))
            for run in self.open_runs.values():
                if run.deadline is not None and now < run.deadline <= end:
                    future.append(
                        TimelineItem(ts=run.deadline, kind="run", name=run.id, outcome="deadline", future=True)
                    )
            future.sort(key=lambda i: i.ts)
            future = future[:FUTURE_MARKS]
        return past + future
