"""Shared fixtures: a real orchestrator on a real SQLite store in tmp_path, and small real agent programs."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from crewtui.config import CrewConfig, parse_crew
from crewtui.locations import DataDir
from crewtui.runtime.orchestrator import Orchestrator

PY = sys.executable


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist (the test command runs three workers, a test file each at a time): the Ray test files
    are one unit, run one after another in one worker: each starts a Ray cluster of its own (stopped by its own
    processes, never `ray stop`, which would end every cluster on the machine), but two at once are too heavy for
    a 2-core machine, and each cleans up the node-local host dirs its cluster left in the one shared temp dir."""
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            scope = nodeid.split("::", 1)[0]
            return "ray clusters" if Path(scope).name.startswith("test_ray") else scope

    return Scheduling(config, log)


# Runtimes under test send notifications (the default [notify]): never to the desktop of whoever runs the tests.
for _var in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS"):
    os.environ.pop(_var, None)

# Programs used as agents. Each is a real process; none needs the network.
ECHO_AGENT = textwrap.dedent(
    """
    import json, sys
    print("ready", flush=True)
    got = []
    for line in sys.stdin:
        line = line.rstrip("\\n")
        if line == "quit":
            break
        got.append(line)
        print("steered: " + line, flush=True)
    print(json.dumps({"steered": got}), flush=True)
    """
)
SLEEPER = "import time, sys; print('working', flush=True); time.sleep(600)"
STUBBORN = textwrap.dedent(
    """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print('ignoring SIGTERM', flush=True)
    time.sleep(600)
    """
)


def py(code: str) -> list[str]:
    return [PY, "-c", code]


def result_prog(value: object, code: int = 0) -> list[str]:
    return py(f"import json,sys; print('step 1', flush=True); print(json.dumps({value!r})); sys.exit({code})")


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def crew_from(text: str = "") -> CrewConfig:
    return parse_crew(textwrap.dedent(text) or "[crew]\nname = 'test'\n", source="test.toml")


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Wait for a condition driven by real processes (bounded; fails the test with `what`)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def data_dir(tmp_path: Path) -> DataDir:
    return DataDir(tmp_path / "data").ensure()


@pytest.fixture
async def make_orch(data_dir: DataDir) -> AsyncIterator[Callable[..., asyncio.Future[Orchestrator]]]:
    made: list[Orchestrator] = []

    async def make(crew: CrewConfig | None = None, **kw: object) -> Orchestrator:
        crew = crew or crew_from()
        crew.crew.kill_grace = kw.pop("kill_grace", 0.5)  # type: ignore[assignment]
        kw.setdefault("tail_interval", 0.05)
        o = await Orchestrator.open(data_dir, crew, **kw)
        await o.start()
        made.append(o)
        return o

    yield make  # type: ignore[misc]
    for o in made:
        if o.running:
            await o.stop(kill_sessions=True)


@pytest.fixture
async def orch(make_orch: Callable[..., asyncio.Future[Orchestrator]]) -> Orchestrator:
    return await make_orch()


def read_json(path: Path) -> object:
    return json.loads(path.read_text())
