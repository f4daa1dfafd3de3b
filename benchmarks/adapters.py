"""Benchmark: how fast each preset's parser reads an agent's stdout, against plain `json.loads` of the same lines.

Run by hand: `python benchmarks/adapters.py [LINES] [--parse-only]` (default 200,000); it then runs
`benchmarks/agent_cpu.py` (the runtime's CPU with 100 sessions streaming events) unless `--parse-only`.

For each preset a realistic stream (the streams recorded from the real CLIs in tests/fixtures/agent-streams/, or the
hand-written ones in its `hand/` directory for CLIs that cannot run here) is repeated to about LINES lines and fed
through a fresh conversation (the codex stream after its handshake, approvals answered as they come); the baseline
is `json.loads` of the same lines (aider's are plain text: its baseline is `str.strip`). Printed: lines/s and
events/s per preset, and the parser's cost relative to the baseline. Target: >= 50,000 events/s per preset.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from crewtui.adapters import get_preset
from crewtui.adapters.base import AgentOptions, Conversation, Needs

STREAMS = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "agent-streams"
SOURCES: dict[str, list[str]] = {
    "claude-code": ["claude-tool-permission-allow.jsonl", "claude-two-turns-stdin.jsonl", "claude-429-then-ok.jsonl"],
    "codex": ["codex-app-server-turn.jsonl"],
    "gemini": ["gemini-tool-yolo.jsonl", "gemini-hi.jsonl"],
    "opencode": ["opencode-bash-allow.jsonl", "opencode-hi.jsonl"],
    "aider": ["hand/aider-edit.txt"],
    "openclaw": ["hand/openclaw-result.jsonl"],
}
TARGET = 50_000


def stream(preset: str, n: int) -> list[str]:
    lines: list[str] = []
    for name in SOURCES[preset]:
        path = STREAMS / name
        if not path.exists():
            return []
        lines += [line for line in path.read_text().splitlines() if line.strip()]
    return (lines * (n // len(lines) + 1))[:n]


def parse(preset: str, lines: list[str]) -> tuple[float, int]:
    """(seconds, events) to feed `lines` through one conversation of `preset`, answering what it asks."""
    options = AgentOptions(permissions=get_preset(preset).permissions[0])
    conv: Conversation = get_preset(preset).conversation(options, "task")
    conv.start()
    events = 0
    t0 = time.perf_counter()
    for line in lines:
        evs = conv.feed(line)
        events += len(evs)
        for ev in evs:
            if isinstance(ev, Needs):
                conv.answer(ev.id, True)
    return time.perf_counter() - t0, events


def baseline(lines: list[str], plain: bool) -> float:
    f: Callable[[str], object] = str.strip if plain else json.loads
    t0 = time.perf_counter()
    for line in lines:
        try:
            f(line)
        except ValueError:
            pass
    return time.perf_counter() - t0


def main(n: int) -> int:
    print(f"{'preset':<12} {'lines':>8} {'lines/s':>11} {'events/s':>11} {'baseline lines/s':>17} {'x baseline':>11}")
    slow = []
    for preset in SOURCES:
        lines = stream(preset, n)
        if not lines:
            print(f"{preset:<12} (no stream: record it with scripts/record-agent-streams.py)")
            continue
        seconds, events = min((parse(preset, lines) for _ in range(3)), key=lambda r: r[0])
        base = min(baseline(lines, preset == "aider") for _ in range(3))
        eps = events / seconds
        print(
            f"{preset:<12} {len(lines):>8,} {len(lines) / seconds:>11,.0f} {eps:>11,.0f} "
            f"{len(lines) / base:>17,.0f} {seconds / base:>10.1f}x"
        )
        if eps < TARGET:
            slow.append(preset)
    if slow:
        print(f"below the target of {TARGET:,} events/s: {', '.join(slow)}")
        return 1
    print(f"every preset >= {TARGET:,} events/s")
    return 0


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--parse-only"]
    code = main(int(args[0]) if args else 200_000)
    if "--parse-only" not in sys.argv:
        # The other half: the runtime's CPU with 100 real sessions streaming events, plain vs parsed.
        import asyncio

        from benchmarks import agent_cpu

        print()
        asyncio.run(agent_cpu.main(100, 20, 10))
    sys.exit(code)
