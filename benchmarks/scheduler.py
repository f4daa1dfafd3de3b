"""Benchmark: what 1,000 cron jobs and 1,000 pending watchdogs cost the runtime, and how punctually they fire.

Run by hand: `python benchmarks/scheduler.py [N] [IDLE_SECONDS]` (defaults 1000 and 10).

Phase 1 (idle): N cron jobs due in an hour and N live in-process sessions (real coroutines) each with a
watchdog due in an hour; the runtime's CPU time over IDLE_SECONDS of wall time is reported as % of one core.
Phase 2 (firing): N one-shot `at` jobs and N watchdogs all due within a few seconds; the lag between each
timer's due time and its firing is reported (median, p99, max). Targets: < 1% of a core idle, < 50 ms lag.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

from crewtui.config import parse_crew
from crewtui.model import SpawnRequest
from crewtui.runtime.drivers import CallableContext
from crewtui.runtime.orchestrator import Orchestrator


async def waiter(ctx: CallableContext) -> None:
    await ctx.next_message()  # a session that waits to be steered: quiet, alive


def crew_text(n: int) -> str:
    jobs = "\n".join(
        f'[[cron]]\nname = "job-{i:04d}"\n'
        f'schedule = {{ kind = "every", every = "1h", stagger = "30m" }}\ntext = "tick {i}"\n'
        for i in range(n)
    )
    return f"[crew]\nname = 'bench'\nmax_concurrent = {n * 2 + 10}\nmax_children = {n + 10}\n{jobs}"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def main(n: int, idle: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        orch = await Orchestrator.open(Path(tmp) / "data", parse_crew(crew_text(n)), callables={"waiter": waiter})
        await orch.start()
        for i in range(n):
            await orch.spawn(SpawnRequest(label=f"wd-{i:04d}", agent="waiter", watchdog_after=3600))
        await orch.flush()
        await asyncio.sleep(1.0)  # let start-up work settle

        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(idle)
        cpu1, wall1 = time.process_time(), time.perf_counter()
        idle_pct = (cpu1 - cpu0) / (wall1 - wall0) * 100

        # Phase 2: everything due within a few seconds.
        now = orch.clock.now()
        sched = orch.scheduler
        assert sched is not None
        sched.fire_lag.clear()
        for i in range(n):
            at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now + 6 + (i % 50) * 0.05))
            frac = f"{(now + 6 + (i % 50) * 0.05) % 1:.3f}"[1:]
            await orch.cron_add(
                {"name": f"at-{i:04d}", "schedule": {"kind": "at", "at": at + frac + "+00:00"}, "text": f"at {i}"}
            )
        for i, s in enumerate(list(orch.sessions.values())):
            s.watchdog_after = 6 + (i % 50) * 0.05 - (orch.clock.now() - now)
            s.max_attempts = 1
            sched.arm_watchdog(s)
        await asyncio.sleep(12)
        lags = [x * 1000 for x in sched.fire_lag]
        await orch.stop(kill_sessions=True)
    print(f"cron jobs + pending watchdogs:  {n} + {n} (and {n} live in-process sessions)")
    print(f"idle CPU over {idle:.0f} s:            {idle_pct:.2f}% of one core")
    print(f"timers fired in phase 2:        {len(lags)}")
    print(f"fire lag median / p99 / max:    {statistics.median(lags):.1f} / {pct(lags, 0.99):.1f} / {max(lags):.1f} ms")


if __name__ == "__main__":
    asyncio.run(
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, float(sys.argv[2]) if len(sys.argv) > 2 else 10.0)
    )
