"""Restart recovery: what an earlier runtime left is re-adopted, recorded or marked lost.

For every session the store still calls running or yielded, its driver is asked: exit record present ->
the end is recorded; process (or actor) alive with the same identity -> re-adopted, its output tailed from
the stored offset and a pending yield delivered again; neither -> `lost` (a watchdog may retry it). A
pending session the last runtime had in fact started is adopted too, never started twice. Processes of
spawns the store never recorded are stopped (nobody could see or stop them otherwise).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from crewtui.clock import ClockLike
from crewtui.events import SystemEvent
from crewtui.locations import DataDir
from crewtui.model import Session, SessionState
from crewtui.runtime.bus import EventBus
from crewtui.runtime.drivers import AdoptSpec, Drivers, ExitInfo, LaunchInfo, Lost, SessionHandle, unavailable
from crewtui.runtime.launcher import Launcher
from crewtui.runtime.sessions import SessionTable
from crewtui.runtime.tail import read_lines_upto
from crewtui.runtime.yields import Yields

log = logging.getLogger("crewtui.recovery")


@dataclass
class Reconciled:
    """What a start found of the sessions an earlier runtime left."""

    readopted: int = 0
    recorded: int = 0
    lost: int = 0


class Recovery:
    def __init__(
        self,
        table: SessionTable,
        launcher: Launcher,
        yields: Yields,
        drivers: Drivers,
        bus: EventBus,
        clock: ClockLike,
        data_dir: DataDir,
    ) -> None:
        self.table = table
        self.launcher = launcher
        self.yields = yields
        self.drivers = drivers
        self.bus = bus
        self.clock = clock
        self.data_dir = data_dir

    def needs_ray(self) -> bool:
        return any(s.driver == "ray" and not s.state.terminal for s in self.table.sessions.values())

    def _adopt_spec(self, s: Session) -> AdoptSpec:
        launch = None
        if s.shim_pid and s.agent_pid and s.shim_start is not None and s.agent_start is not None:
            launch = LaunchInfo(s.shim_pid, s.agent_pid, s.shim_start, s.agent_start, tty=s.tty)
        return AdoptSpec(key=s.key, attempt=s.attempt, dir=self.data_dir.session(s.key), launch=launch)

    async def reconcile(self) -> Reconciled:
        """Sessions an earlier runtime left: re-adopt the living, record the ended, mark the vanished lost."""
        counts = Reconciled()
        sessions = self.table.sessions.values()
        pending = sorted((s for s in sessions if s.state == SessionState.PENDING), key=lambda s: s.created_at)
        # All at once: each asks its driver (files, /proc, a pidfd: a worker thread each for the process driver),
        # and a thousand one after the other would cost a start most of a second.
        running = [s for s in sessions if s.state.active or s.state == SessionState.YIELDED]
        await asyncio.gather(*(self._reconcile_running(s, counts) for s in running))
        for s in pending:
            driver = self.drivers.get(s.driver)
            # A launch leaves evidence (pid.json, exit.json, a named actor); a pending session with some was
            # started by a runtime that died before recording it as running. Adopt it: starting it again would
            # run the task twice.
            if driver is not None and await driver.started(self._adopt_spec(s)):
                s.started_at = s.started_at or self.clock.now()
                self.table.transition(s, SessionState.RUNNING, reason="started just before the last runtime stopped")
                await self._reconcile_running(s, counts)
            else:
                self.launcher.queue.append(s.key)
        await self._end_orphans()
        return counts

    async def _reconcile_running(self, s: Session, counts: Reconciled) -> None:
        driver = self.drivers.get(s.driver)
        if driver is None:
            what = "its Ray actor" if s.driver == "ray" else "it"
            await self._settle(s, None, counts, f"{what} cannot be reached: {unavailable(s.driver)}")
            return
        if not driver.survives_restart:
            # An in-process coroutine cannot outlive its runtime.
            self.table.transition(s, SessionState.LOST, "in-process session ended with its runtime")
            s.ended_at = self.clock.now()
            self.launcher.after_end(s)
            counts.lost += 1
            return
        found = await driver.adopt(self._adopt_spec(s))
        why = (
            "its Ray actor is gone (its node died, or it was killed) while no runtime was watching"
            if s.driver == "ray"
            else "its process vanished while no runtime was watching"
        )
        await self._settle(s, found, counts, why)

    async def _settle(
        self, s: Session, found: SessionHandle | ExitInfo | Lost | None, counts: Reconciled, lost_reason: str
    ) -> None:
        """Act on what a restart found of a session: its recorded end, a live handle, or nothing (lost)."""
        if isinstance(found, ExitInfo):
            counts.recorded += 1
            await self.launcher.finish(s.key, found)
        elif found is None or isinstance(found, Lost):
            counts.lost += 1
            s.reason = found.reason if isinstance(found, Lost) else lost_reason
            await self.launcher.finish(s.key, None)
        else:
            counts.readopted += 1
            self.launcher.adopt(s, found)
            if s.preset is not None and self.launcher.agents is not None:
                # Read again what it said before, so its conversation knows where it stands (pending requests).
                lines = await asyncio.to_thread(read_lines_upto, self.data_dir.session(s.key).stdout, s.stdout_offset)
                self.launcher.agents.open(s, replay=lines)
            if s.state == SessionState.YIELDED and s.yield_on:
                # The yield outlived the runtime: deliver the children's results when they end.
                self.yields.in_background(self.yields.deliver(s.key, list(s.yield_on), to_stdin=True))

    async def _end_orphans(self) -> None:
        known = set(self.table.sessions)
        for driver in self.drivers.all():
            live = {s.key for s in self.table.sessions.values() if s.driver == driver.kind and s.state.live}
            found = await driver.end_orphans(known, live, self.launcher.kill_grace, self.launcher.store_id)
            if found.foreign:
                keys = ", ".join(found.foreign)
                log.warning("left %d session process(es) of another store running: %s", len(found.foreign), keys)
                self.bus.publish(
                    SystemEvent(
                        level="warning",
                        text=f"left {len(found.foreign)} running session process(es) alone: another store launched "
                        f"them (the store file was replaced or deleted meanwhile): {keys}",
                    )
                )
            stopped = found.stopped
            if not stopped:
                continue
            keys = ", ".join(stopped)
            if driver.kind == "ray":
                for key in stopped:
                    log.warning("stopped Ray actor %s: its spawn was never recorded", key)
                continue
            log.warning("stopped %d process(es) of spawns that were never recorded: %s", len(stopped), keys)
            self.bus.publish(
                SystemEvent(
                    level="warning",
                    text=f"stopped {len(stopped)} unrecorded session "
                    f"process(es) left by a runtime that died while "
                    f"starting them: {keys}",
                )
            )
