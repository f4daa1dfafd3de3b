"""Fixtures for the parser tests: streams recorded from the real CLIs (scripts/record-agent-streams.py) and
hand-written ones (tests/fixtures/agent-streams/hand/, for CLIs that cannot run here)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from crewtui.adapters.base import AgentEvent, Conversation, Tokens, Totals

STREAMS = Path(__file__).resolve().parent.parent / "fixtures" / "agent-streams"
HAND = STREAMS / "hand"


def recorded(name: str) -> list[str]:
    """The stdout lines of a recorded scenario; skips the test when it has not been recorded."""
    path = STREAMS / f"{name}.jsonl"
    if not path.exists():
        pytest.skip(
            f"{path.name} not recorded yet: run scripts/install-agents.sh, then scripts/record-agent-streams.py"
        )
    return path.read_text().splitlines()


def served(name: str) -> dict[str, Any]:
    value = json.loads((STREAMS / f"{name}.served.json").read_text())
    assert isinstance(value, dict)
    return value


def served_tokens(name: str) -> Tokens:
    """The tokens the fake model served in a recorded scenario (uncached input, as crewtui counts)."""
    t = served(name)["total"]
    return Tokens(t["input"], t["output"], t["cache_read"], t["cache_write"])


def hand(name: str) -> list[str]:
    return (HAND / name).read_text().splitlines()


def feed_all(conv: Conversation, lines: list[str]) -> tuple[list[AgentEvent], Totals]:
    events: list[AgentEvent] = []
    totals = Totals()
    for line in lines:
        for ev in conv.feed(line):
            events.append(ev)
            totals.apply(ev)
    return events, totals


def of(events: list[AgentEvent], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]
