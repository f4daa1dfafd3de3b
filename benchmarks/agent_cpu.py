"""Benchmark: the runtime's CPU while 100 agent sessions stream events, with and without a preset reading them.

Run by hand: `python benchmarks/agent_cpu.py [SESSIONS] [EVENTS_PER_SECOND] [SECONDS]` (default 100 sessions, 20
events a second each, 10 s). The same small agent (it prints `jsonl` protocol lines: an activity and a usage
line per step) runs twice in one runtime, in this process: once as a plain argv (the baseline: lines tailed
into output events only), once with `preset = "jsonl"` (every line also parsed into activity, tokens and cost,
and the session updated). Printed: the runtime's own CPU (this process, not the agents) as a share of one core,
and the events it read per second.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crewtui.config import parse_crew
from crewtui.model import SessionState, SpawnRequest
from crewtui.runtime.orchestrator import Orchestrator

AGENT = textwrap.dedent(
    """
    import json, sys, time
    rate, seconds = float(sys.argv[1]), float(sys.argv[2])
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        i += 1
        print(json.dumps({"type": "activity", "text": f"Bash: step {i}"}), flush=True)
        print(json.dumps({"type": "usage", "input": 120, "output": 30}), flush=True)
        time.sleep(2 / rate)
    print(json.dumps({"type": "result", "result": {"steps": i}}), flush=True)
    """
)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def measure(root: Path, preset: bool, sessions: int, rate: float, seconds: float) -> tuple[float, float]:
    agent = root / "agent.py"
    agent.write_text(AGENT)
    how = 'preset = "jsonl"\nprice = { input = 3.0, output = 15.0 }' if preset else ""
    crew = parse_crew(
        f"""
[crew]
name = "bench"
max_concurrent = {sessions}

[agents.streamer]
{how}
command = ["{sys.executable}", "{agent}", "{rate}", "{seconds + 3}"]
""",
        source="bench.toml",
    )
    data = root / ("preset" if preset else "plain")
    orch = await Orchestrator.open(data, crew)
    await orch.start()
    try:
        for i in range(sessions):
            await orch.spawn(SpawnRequest(label=f"s-{i}", agent="streamer", task="x"))
        await asyncio.sleep(2.0)  # every agent started and streaming
        before = {s.key: s.stdout_offset for s in orch.table.sessions.values()}
        c0, t0 = cpu(), time.monotonic()
        await asyncio.sleep(seconds)
        c1, t1 = cpu(), time.monotonic()
        after = {s.key: s.stdout_offset for s in orch.table.sessions.values()}
        lines = 0  # counted after the window, so the counting is not in the figure
        for key, start in before.items():
            with open(data / "sessions" / key / "stdout.log", "rb") as f:
                f.seek(start)
                lines += f.read(after[key] - start).count(b"\n")
        while any(s.state in (SessionState.RUNNING, SessionState.PENDING) for s in orch.table.sessions.values()):
            await asyncio.sleep(0.2)
        if preset:
            tokens = sum(s.tokens.input for s in orch.table.sessions.values() if s.tokens)
            assert tokens > 0, "the preset read nothing"
        return (c1 - c0) / (t1 - t0), lines / (t1 - t0)
    finally:
        await orch.stop(kill_sessions=True)


async def main(sessions: int, rate: float, seconds: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        plain = await measure(root, False, sessions, rate, seconds)
        read = await measure(root, True, sessions, rate, seconds)
    print(f"{sessions} sessions, {rate:g} events/s each, {seconds:g} s measured")
    print(f"{'':<28} {'runtime CPU (one core)':>24} {'events read/s':>14}")
    print(f"{'plain argv (baseline)':<28} {plain[0]:>23.1%} {plain[1]:>14,.0f}")
    print(f"{'preset jsonl (parsed)':<28} {read[0]:>23.1%} {read[1]:>14,.0f}")


if __name__ == "__main__":
    args = [float(a) for a in sys.argv[1:]]
    asyncio.run(main(int(args[0]) if args else 100, args[1] if len(args) > 1 else 20, args[2] if len(args) > 2 else 10))
