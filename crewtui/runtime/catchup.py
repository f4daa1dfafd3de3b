"""Catch-up: the fires a job missed while no runtime ran (or while its loop slept through them, suspended), planned
by the job's misfire policy (`schedules.plan_misfires`) and then run: all at once with `overlap = "allow"`, else
replayed in order, each waiting for the run before it to close.

The scheduler holds one `CatchUp` and lends it what it needs as plain callables (publish an event, fire a job, mark
a fire handled, look a job up, ask whether a job is idle), so this module does not import the scheduler.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, TypeVar

from crewtui.config import CronConfig
from crewtui.events import CronFired, Event, SystemEvent
from crewtui.model import CronRun
from crewtui.runtime.schedules import plan_misfires

__all__ = ["CatchUp", "MissedJob"]


class MissedJob(Protocol):
    """What catch-up reads and moves on of a job's state (the scheduler's `JobState`)."""

    @property
    def config(self) -> CronConfig: ...

    next_fire: float | None
    last_nominal: float | None


J = TypeVar("J", bound=MissedJob)


class CatchUp(Generic[J]):
    """Plans missed fires and replays them; `J` is the scheduler's job state.

    `fire(state, nominal)` fires the job as a catch-up fire (None when it started no run), `handled(state, nominal)`
    marks a fire handled, `job(name)` is the job's current state (None once it is removed), `idle(name)` says no
    run of the job has a live session or is still spawning its batch.
    """

    def __init__(
        self,
        *,
        publish: Callable[[Event], None],
        fire: Callable[[J, float], Awaitable[CronRun | None]],
        handled: Callable[[J, float], None],
        job: Callable[[str], J | None],
        idle: Callable[[str], bool],
    ) -> None:
        self._publish = publish
        self._fire = fire
        self._handled = handled
        self._job = job
        self._idle = idle
        self._replays: dict[str, deque[float]] = {}  # job -> catch-up fires still to run, in order
        self._replaying: set[str] = set()

    async def at_start(self, state: J, now: float) -> None:
        """Fires missed while no runtime ran: skip, run once or run all (bounded), within misfire_grace."""
        if state.next_fire is None:
            return
        if state.next_fire > now and state.last_nominal is None:
            return
        # From the last fire handled, not from `next_fire`: the loop moves `next_fire` on before the fire it popped
        # has claimed its run, and a crash in between must not lose that fire even when the restart comes before
        # the next one is due.
        last = state.last_nominal if state.last_nominal is not None else state.next_fire - 1e-6
        await self.run(state, self.plan(state, last, now, "while no runtime ran"))

    def plan(self, state: J, last: float, now: float, why: str) -> list[float]:
        """Apply the misfire policy to the fires in (last, now]: move `next_fire` on, say what is skipped, and
        return the fires to run."""
        cfg = state.config
        plan = plan_misfires(cfg.schedule, last, now, cfg.misfire, cfg.misfire_grace, job=cfg.name)
        state.next_fire = plan.next
        if plan.skipped_count:
            why += f" (misfire={cfg.misfire}, grace {cfg.misfire_grace:g}s)"
            last = plan.skipped[-1] if plan.skipped else now
            # A cron downtime too long to count every fire of (see schedules.CRON_WALK_CAP) gives a lower bound.
            count = f"more than {plan.skipped_count}" if plan.skipped_more else str(plan.skipped_count)
            reason = f"{count} fire(s) missed {why}"
            self._publish(CronFired(job=cfg.name, nominal=last, outcome="skipped", reason=reason))
            if plan.skipped and last > (state.last_nominal or -math.inf):  # handled: a restart does not tell it again
                self._handled(state, last)
        if plan.truncated:
            text = f"cron {cfg.name}: more than {len(plan.run)} missed fires; ran only the most recent ones"
            self._publish(SystemEvent(level="warning", text=text))
        return plan.run

    async def run(self, state: J, fires: list[float]) -> None:
        """Run the planned fires: at once with `overlap = "allow"` (or a single one), else as one replay."""
        if state.config.overlap == "allow" or len(fires) <= 1:
            for nominal in fires:
                await self._fire(state, nominal)
            return
        # One replay, in order: each catch-up fire waits for the run before it to close. Fired all at once,
        # `forbid` would skip every one but the first as overlapping its neighbour, and `replace` would kill them.
        self._replays.setdefault(state.config.name, deque()).extend(fires)
        await self.replay(state.config.name)

    async def replay(self, job: str) -> None:
        """Fire the next catch-up fire of `job` once no run of it is live (called again when one closes)."""
        queue = self._replays.get(job)
        state = self._job(job)
        if job in self._replaying:
            return  # the replay under way goes on by itself
        self._replaying.add(job)
        try:
            while queue and state is not None and self._idle(job):
                nominal = queue.popleft()
                run = await self._fire(state, nominal)
                if run is not None and not run.final:
                    break  # the rest waits for this run to close
        finally:
            self._replaying.discard(job)
        if not queue:
            self._replays.pop(job, None)

    def replaying(self, job: str) -> bool:
        """Whether `job` has a replay under way (a run of it closing moves it on)."""
        return job in self._replays

    def first_queued(self, job: str) -> float | None:
        """The oldest catch-up fire of `job` still to run, if any."""
        queue = self._replays.get(job)
        return queue[0] if queue else None

    def forget(self, job: str) -> None:
        """Drop the job's replay (the job was removed)."""
        self._replays.pop(job, None)
