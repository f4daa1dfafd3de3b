"""Agents that end before their shim has looked at them: the launch record must still be complete, or a session
that ran and exited 0 is reported as "did not start" (it was, about once in a hundred `true` sessions)."""

from __future__ import annotations

from collections import Counter

from crewtui.model import SessionState, SpawnRequest
from tests.conftest import crew_from


async def test_three_hundred_instant_agents_all_count_as_done(make_orch) -> None:
    orch = await make_orch(crew_from("[crew]\nname = 'instant'\nmax_concurrent = 300\n"))
    sessions = [await orch.spawn(SpawnRequest(label=f"instant-{i}", argv=["true"])) for i in range(300)]
    ended = [await orch.wait_ended(s.key, timeout=20) for s in sessions]  # most are read back from the store
    states = Counter(s.state for s in ended)
    reasons = {s.reason for s in ended if s.state != SessionState.DONE}
    assert states == Counter({SessionState.DONE: 300}), reasons
    assert all(s.exit_code == 0 for s in ended)
