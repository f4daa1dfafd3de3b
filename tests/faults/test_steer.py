"""Steering under pressure: a steer line reaches the agent whole or not at all, whatever size the runtime
accepts (up to 64 KiB of text), even when the agent stops reading its input for a while."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crewtui.errors import Conflict
from crewtui.model import MAX_STEER_BYTES, SpawnRequest
from tests.conftest import PY, wait_for

# Reads a first line, then stops reading until the file `go` exists; then reports every line it gets as JSON
# (length and what it is made of) and ends on "quit".
STALLING = """
import json, os, sys, time
go = sys.argv[1]
sys.stdin.readline()
print("stalled", flush=True)
while not os.path.exists(go):
    time.sleep(0.02)
for line in sys.stdin:
    line = line.rstrip("\\n")
    if line == "quit":
        break
    print(json.dumps({"len": len(line), "chars": "".join(sorted(set(line)))}), flush=True)
"""


def lines_of(orch, key: str) -> list[dict]:
    out = (orch.data_dir.session_dir(key) / "stdout.log").read_text().splitlines()
    return [json.loads(line) for line in out if line.startswith("{")]


async def test_a_steer_that_times_out_leaves_nothing_behind_to_corrupt_the_next(make_orch, tmp_path: Path) -> None:
    orch = await make_orch()
    go = tmp_path / "go"
    s = await orch.spawn(SpawnRequest(label="stalling", argv=[PY, "-c", STALLING, str(go)]))
    await orch.send(s.key, "start")
    await wait_for(lambda: orch.sessions[s.key].last_line == "stalled", what="the agent to stop reading")
    orch.launcher.handles[s.key].send_timeout = 0.5  # type: ignore[attr-defined]
    await orch.send(s.key, "a" * 60_000)  # fits in the 64 KiB pipe
    with pytest.raises(Conflict, match="not reading its input; the message was not sent"):
        await orch.send(s.key, "b" * 60_000)  # does not fit while nobody reads: refused, nothing written
    go.write_text("")
    await orch.send(s.key, "c" * 10)
    await orch.send(s.key, "quit")
    await orch.wait_ended(s.key, timeout=20)
    assert lines_of(orch, s.key) == [{"len": 60_000, "chars": "a"}, {"len": 10, "chars": "c"}]


async def test_a_steer_of_exactly_64_kib_is_taken_and_arrives_whole(make_orch, tmp_path: Path) -> None:
    orch = await make_orch()
    go = tmp_path / "go"
    go.write_text("")
    s = await orch.spawn(SpawnRequest(label="big-steer", argv=[PY, "-c", STALLING, str(go)]))
    await orch.send(s.key, "start")
    await orch.send(s.key, "x" * MAX_STEER_BYTES)  # 64 KiB of text and its newline: more than a new pipe holds
    await orch.send(s.key, "quit")
    await orch.wait_ended(s.key, timeout=20)
    assert lines_of(orch, s.key) == [{"len": MAX_STEER_BYTES, "chars": "x"}]
