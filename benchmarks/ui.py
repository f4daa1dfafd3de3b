"""Benchmark: the dashboard with 1,000 sessions and 100 output events a second.

Run by hand: `python benchmarks/ui.py [N] [EVENTS_PER_SECOND]` (default 1000 and 100). Headless, on an
in-memory runtime (the UI's cost, not the runtime's), at 140x42. Reports:

* load: from start to the 1,000 rows in the tree;
* tick: one application of the buffered events (what runs ten times a second), mean / p95 / max;
* key: a key press (cursor down) until the app has handled it and repainted, while events stream;
* a regroup: a spawn that changes the tree's structure.

Targets (issue "Dashboard"): a key press answers in under 50 ms with 1,000 sessions emitting output.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crewtui.api import RuntimeInfo
from crewtui.clock import Clock
from crewtui.events import Event, SessionOutput, SessionSpawned, SessionStateChanged
from crewtui.model import CronJobInfo, CronRun, History, Session, SessionState, TimelineItem
from crewtui.ui.app import make_app

GROUPS = [
    "blog-publisher",
    "research-scout",
    "ads-auditor",
    "code-review",
    "triage",
    "ops",
    "sales-outreach",
    "docs-writer",
    "qa-runner",
    "data-sync",
]


class BenchRuntime:
    """Enough of RuntimeAPI for the dashboard, with N sessions and a firehose of output events."""

    def __init__(self, n: int) -> None:
        now = time.time()
        self.sessions = {}
        for i in range(n):
            group = GROUPS[i % len(GROUPS)]
            label = f"{group}-item{(i // len(GROUPS)) % 25}-r{i // (len(GROUPS) * 25) + 1}"
            key = f"s-bench{i:020d}"
            self.sessions[key] = Session(
                key=key,
                label=label,
                state=SessionState.RUNNING,
                created_at=now - i,
                updated_at=now,
                last_line="starting",
            )
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    async def info(self) -> RuntimeInfo:
        return RuntimeInfo(pid=1, data_dir="/tmp/bench", crew="bench", agents=["a"], started_at=0, max_concurrent=2000)

    async def list(
        self,
        state: Any = None,
        prefix: Any = None,
        limit: int | None = None,
        before: str | None = None,
        since: float | None = None,
        ended: bool | None = None,
    ) -> list[Session]:
        found = [
            s.model_copy()
            for s in sorted(self.sessions.values(), key=lambda s: s.key)
            if ended is None or s.state.terminal == ended
        ]
        return found if limit is None else found[max(0, len(found) - limit) :]

    async def get(self, ref: str) -> Session:
        return self.sessions[ref].model_copy()

    async def history(self, ref: str, tail: int = 50) -> History:
        s = self.sessions[ref]
        return History(key=s.key, label=s.label, state=s.state, lines=[f"line {i}" for i in range(tail)])

    async def watch(self) -> AsyncIterator[Event]:
        while True:
            yield await self.queue.get()

    async def cron_list(self) -> list[CronJobInfo]:
        return [
            CronJobInfo(name=g, schedule="every 2m", payload="spawn", next_fire=time.time() + 60) for g in GROUPS[:4]
        ]

    async def runs(self, job: str | None = None, limit: int = 50) -> list[CronRun]:
        now = time.time()
        return [
            CronRun(
                id=f"{job}#{i}",
                job=job or "x",
                number=i,
                nominal=now - i * 120,
                started_at=now - i * 120,
                final=True,
                rate=random.random(),
                counts={"spawned": 4, "done": 2},
            )
            for i in range(1, 11)
        ]

    async def timeline(self, start: float, end: float) -> list[TimelineItem]:
        return [TimelineItem(ts=start + i * 60, kind="cron", name=GROUPS[i % 4], outcome="ran") for i in range(60)]


def stats(xs: list[float]) -> str:
    xs = sorted(xs)
    p95 = xs[int(len(xs) * 0.95) - 1] if len(xs) >= 20 else xs[-1]
    return (
        f"mean {statistics.mean(xs) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms, max {xs[-1] * 1000:.1f} ms (n={len(xs)})"
    )


async def main(n: int, rate: int) -> None:
    rt = BenchRuntime(n)
    app = make_app(rt, clock=Clock())  # type: ignore[arg-type]
    app.animation_level = "none"
    app.freeze_gc = True  # as run_dashboard does
    ticks: list[float] = []
    screen = app.main_screen
    real_tick = screen._tick

    def timed_tick() -> None:
        t = time.perf_counter()
        real_tick()
        ticks.append(time.perf_counter() - t)

    screen._tick = timed_tick  # type: ignore[method-assign]
    keys = list(rt.sessions)
    t0 = time.perf_counter()
    async with app.run_test(size=(140, 42)) as pilot:
        await app.loaded.wait()
        await pilot.pause()
        load = time.perf_counter() - t0
        rows = sum(1 for k in screen.session_tree.nodes if k.startswith("s:"))
        ticks.clear()

        stop = asyncio.Event()

        async def firehose() -> None:
            i = 0
            while not stop.is_set():
                for _ in range(max(1, rate // 20)):
                    key = random.choice(keys)
                    i += 1
                    if i % 50 == 0:
                        old = rt.sessions[key].state
                        new = SessionState.DONE if old == SessionState.RUNNING else SessionState.RUNNING
                        rt.sessions[key].state = new
                        rt.queue.put_nowait(
                            SessionStateChanged(
                                session=key, label=rt.sessions[key].label, ts=time.time(), old=old, new=new
                            )
                        )
                    else:
                        rt.queue.put_nowait(
                            SessionOutput(
                                session=key,
                                label=rt.sessions[key].label,
                                ts=time.time(),
                                lines=[f"working on step {i}"],
                            )
                        )
                await asyncio.sleep(0.05)

        hose = asyncio.create_task(firehose())
        await asyncio.sleep(2.0)
        latencies: list[float] = []
        for _ in range(40):
            before = screen.session_tree.cursor_line
            t = time.perf_counter()
            app.simulate_key("down")
            while screen.session_tree.cursor_line == before:
                await asyncio.sleep(0)
            app.screen._on_timer_update()  # paint now rather than at the next frame
            latencies.append(time.perf_counter() - t)
            await asyncio.sleep(0.05)
        # A spawn: a new row (structure change) while the hose runs.
        regroup: list[float] = []
        for j in range(10):
            key = f"s-new{j:020d}"
            s = Session(
                key=key,
                label=f"{GROUPS[j]}-fresh-{j}",
                state=SessionState.RUNNING,
                created_at=time.time(),
                updated_at=time.time(),
            )
            rt.sessions[key] = s
            t = time.perf_counter()
            ch = app.book.apply([SessionSpawned(session=key, label=s.label, snapshot=s)])
            screen._apply(ch)
            regroup.append(time.perf_counter() - t)
            await asyncio.sleep(0.05)
        stop.set()
        await hose
        events = len(ticks)
    print(f"sessions: {n}, output events: {rate}/s, rows in the tree: {rows}")
    print(f"load (start to {rows} rows shown): {load * 1000:.0f} ms")
    print(f"tick (apply buffered events, 10/s): {stats(ticks)} over {events} ticks")
    print(f"key (cursor down, handled + repainted): {stats(latencies)}")
    print(f"regroup (a spawn adds a row): {stats(regroup)}")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000, int(sys.argv[2]) if len(sys.argv) > 2 else 100))
