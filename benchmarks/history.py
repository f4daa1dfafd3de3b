"""Benchmark: a year of history. A store of 1,000,000 ended sessions plus 1,000 live ones (real processes).

Run by hand: `python benchmarks/history.py [ENDED] [LIVE]` (default 1,000,000 and 1,000). It spawns LIVE real
sessions (`sleep`) through a runtime, stops it (they run on), writes ENDED ended sessions straight into the store
(a dozen groups over a year), then measures, each against what a start cost before (every session loaded):

* runtime start: `Orchestrator.open` + `start` until it serves (reconciling and re-adopting the live ones);
* dashboard first paint: the app on that runtime, headless at 140x42, until its first listing is shown;
* `crewtui ctl list --limit 100`: the whole command, as a user runs it, against a headless runtime;
* the store's size per session.

Targets (issue "Hardening", item 12): under 1 s each on the 2-core development machine.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crewtui.config import parse_crew
from crewtui.locations import DataDir
from crewtui.model import SpawnRequest
from crewtui.runtime.orchestrator import Orchestrator
from crewtui.store import Store
from tests.faults.helpers import ENV, Headless, fill_history

CREW = "[crew]\nname = 'history'\nmax_concurrent = 2000\nkill_grace = '1s'\n"


async def spawn_live(dd: DataDir, n: int) -> None:
    orch = await Orchestrator.open(dd, parse_crew(CREW))
    await orch.start()
    await asyncio.gather(*(orch.spawn(SpawnRequest(label=f"live-{i:04d}", argv=["sleep", "3600"])) for i in range(n)))
    await orch.stop()  # the sessions run on, for the next start to re-adopt


async def measure_start(dd: DataDir) -> tuple[float, Orchestrator]:
    t0 = time.perf_counter()
    orch = await Orchestrator.open(dd, parse_crew(CREW))
    await orch.start()
    return time.perf_counter() - t0, orch


async def measure_first_paint(orch: Orchestrator) -> tuple[float, float]:
    """(first paint: the live sessions and the recent window shown; the older history counted, after it)."""
    from crewtui.ui.app import make_app

    app = make_app(orch)
    t0 = time.perf_counter()
    async with app.run_test(size=(140, 42)):
        await app.loaded.wait()
        paint = time.perf_counter() - t0
        await app.main_screen.older_counted.wait()
        return paint, time.perf_counter() - t0


async def measure_full_load(dd: DataDir) -> float:
    """What a start cost before: every stored session read and parsed."""
    store = await Store.open(dd.store)
    t0 = time.perf_counter()
    sessions = await store.load_sessions()
    elapsed = time.perf_counter() - t0
    del sessions
    await store.close()
    return elapsed


def measure_ctl_list(dd: DataDir) -> tuple[float, float]:
    """(ctl list --limit 100, ctl --version): the second is the interpreter's own start, for comparison."""

    def timed(args: list[str]) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "crewtui", *args], env=ENV, check=True, capture_output=True)
        return time.perf_counter() - t0

    list_s = min(timed(["ctl", "--data-dir", str(dd.root), "list", "--limit", "100"]) for _ in range(3))
    bare = min(timed(["--version"]) for _ in range(3))
    return list_s, bare


async def kill_live(dd: DataDir) -> None:
    orch = await Orchestrator.open(dd, parse_crew(CREW))
    await orch.start()
    await orch.kill(prefix="live-")
    await orch.stop()


def main(ended: int, live: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dd = DataDir(Path(tmp) / "data").ensure()
        t0 = time.perf_counter()
        asyncio.run(spawn_live(dd, live))
        print(f"spawned {live} live sessions in {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        size = fill_history(dd.root, ended)
        total = ended + live
        print(f"wrote {ended:,} ended sessions in {time.perf_counter() - t0:.1f} s", flush=True)

        async def in_process() -> tuple[float, tuple[float, float], int]:
            start_s, orch = await measure_start(dd)
            held = len(orch.sessions)
            paint = await measure_first_paint(orch)
            await orch.stop()
            return start_s, paint, held

        start_s, (paint_s, counted_s), held = asyncio.run(in_process())
        full_s = asyncio.run(measure_full_load(dd))
        h = Headless(dd.root)
        try:
            list_s, bare_s = measure_ctl_list(dd)
        finally:
            h.stop()
        asyncio.run(kill_live(dd))
        print()
        print(f"sessions in the store:                  {total:,} ({ended:,} ended, {live:,} live)")
        print(f"store size:                             {size / 2**20:.0f} MB ({size / total:.0f} bytes per session)")
        print(f"runtime start (re-adopting {live}):       {start_s:.2f} s, holding {held:,} sessions in memory")
        print(f"  before: reading every session alone: {full_s:.2f} s")
        print(f"dashboard first paint:                  {paint_s:.2f} s (older history counted by {counted_s:.2f} s)")
        print(
            f"ctl list --limit 100 (whole command):   {list_s:.2f} s (the interpreter starting `crewtui --version`: "
            f"{bare_s:.2f} s)"
        )
        print(f"peak RSS of this process:               {_peak_rss_mb():.0f} MB")


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


if __name__ == "__main__":
    os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000, int(sys.argv[2]) if len(sys.argv) > 2 else 1000)
