"""Benchmark: how long spawning N real sessions takes, and what they cost in memory.

Run by hand: `python benchmarks/spawn.py [N]` (default 100). Reports the wall time of N spawns through the
orchestrator (each a real shim + agent process), the runtime's RSS growth per session, and the shim's RSS.
Targets (issue "Runtime core"): under 2 s for 100 sessions, under 1 MB of runtime memory per session, a shim
under 2 MB.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

from crewtui.config import parse_crew
from crewtui.model import SpawnRequest
from crewtui.runtime.orchestrator import Orchestrator


def rss_kb(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        crew = parse_crew(f"[crew]\nname='bench'\nmax_concurrent = {n + 10}\nkill_grace = '1s'\n")
        orch = await Orchestrator.open(Path(tmp) / "data", crew)
        await orch.start()
        # Warm up imports and the first launch so the figures are per-session costs.
        warm = await orch.spawn(SpawnRequest(label="warm", argv=["sleep", "60"]))
        await orch.kill(warm.key)
        gc.collect()
        rss0 = rss_kb()
        t0 = time.perf_counter()
        sessions = await asyncio.gather(
            *(orch.spawn(SpawnRequest(label=f"bench-{i:04d}", argv=["sleep", "600"])) for i in range(n))
        )
        elapsed = time.perf_counter() - t0
        await asyncio.sleep(1.0)  # a few tail ticks with every session live
        gc.collect()
        rss1 = rss_kb()
        shim = [rss_kb(s.shim_pid) for s in sessions if s.shim_pid]
        t1 = time.perf_counter()
        await orch.kill(prefix="bench-")
        kill_elapsed = time.perf_counter() - t1
        await orch.stop()
    print(f"sessions spawned:            {n}")
    print(f"spawn wall time:             {elapsed:.2f} s ({elapsed / n * 1000:.1f} ms per session)")
    print(f"runtime RSS growth:          {(rss1 - rss0) / 1024:.1f} MB ({(rss1 - rss0) / n:.0f} kB per session)")
    print(f"shim RSS (median, max):      {statistics.median(shim):.0f} kB, {max(shim)} kB")
    print(f"kill of all {n} (one prefix): {kill_elapsed:.2f} s")


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 100))
