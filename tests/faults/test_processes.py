"""Processes that escape a kill, or come back: an agent that leaves its process group, a daemon it forks, an
agent whose shim dies, and a person's kill racing a watchdog's."""

from __future__ import annotations

import asyncio
import os
import signal
import textwrap
from pathlib import Path

import pytest

from crewtui.events import WatchdogFired
from crewtui.model import SessionState, SpawnRequest
from crewtui.runtime.drivers import containment
from tests.conftest import PY, STUBBORN, crew_from, pid_alive, wait_for

S = SessionState

# Leaves the session's process group, then waits: a signal to the group never reaches it.
SETSID = "import os, time; os.setsid(); print(os.getpid(), flush=True); time.sleep(600)"
# Double-forks a daemon in a session of its own (it writes its pid to argv[1]), then waits itself.
DAEMON = textwrap.dedent(
    """
    import os, sys, time
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            open(sys.argv[1], "w").write(str(os.getpid()))
            time.sleep(600)
        os._exit(0)
    print("parent waits", flush=True)
    time.sleep(600)
    """
)


@pytest.fixture(params=["cgroup", "environment"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "environment":
        monkeypatch.setattr(containment, "_cgroup_root", lambda data_dir: None)
    return str(request.param)


async def runtime(make_orch, mode: str):  # type: ignore[no-untyped-def]
    orch = await make_orch()
    kind = (await orch.info()).containment
    if mode == "cgroup" and kind != containment.CGROUP:
        pytest.skip("this machine gives this user no cgroup v2 hierarchy to write to")
    assert kind == (containment.CGROUP if mode == "cgroup" else containment.ENVIRONMENT)
    return orch


async def test_a_kill_stops_an_agent_that_left_its_process_group(make_orch, mode: str) -> None:
    orch = await runtime(make_orch, mode)
    s = await orch.spawn(SpawnRequest(label="escaper", argv=[PY, "-c", SETSID]))
    await wait_for(lambda: (orch.sessions[s.key].last_line or "").isdigit(), what="the agent's pid")
    escaped = int(orch.sessions[s.key].last_line or 0)
    assert escaped == orch.sessions[s.key].agent_pid
    (killed,) = await orch.kill(s.key)
    assert killed.state == S.KILLED
    assert not pid_alive(escaped), "the agent that called setsid() survived the kill"


async def test_a_kill_stops_a_daemon_the_agent_double_forked(make_orch, mode: str, tmp_path: Path) -> None:
    orch = await runtime(make_orch, mode)
    pidfile = tmp_path / "daemon.pid"
    s = await orch.spawn(SpawnRequest(label="daemonizer", argv=[PY, "-c", DAEMON, str(pidfile)]))
    await wait_for(lambda: pidfile.exists() and pidfile.read_text().isdigit(), what="the daemon")
    daemon = int(pidfile.read_text())
    assert pid_alive(daemon) and os.getsid(daemon) != os.getsid(orch.sessions[s.key].agent_pid or 0)
    await orch.kill(s.key)
    assert not pid_alive(daemon), "the daemon survived the kill"


async def test_an_agent_whose_shim_dies_is_stopped_before_its_watchdog_retries(make_orch, mode: str) -> None:
    orch = await runtime(make_orch, mode)
    s = await orch.spawn(
        SpawnRequest(
            label="orphaned",
            argv=[PY, "-c", "import time; print('up', flush=True); time.sleep(600)"],
            watchdog_after=1.5,
            max_attempts=2,
        )
    )
    await wait_for(lambda: orch.sessions[s.key].last_line == "up", what="the agent")
    first = orch.sessions[s.key]
    agent, shim = first.agent_pid, first.shim_pid
    assert agent and shim
    os.kill(shim, signal.SIGKILL)  # the shim dies; its agent, in the same group, is not signalled
    await wait_for(lambda: orch.sessions[s.key].state == S.LOST, what="lost")
    assert not pid_alive(agent), "the orphaned agent was left running"
    assert f"agent (pid {agent}) was still running and was stopped" in (orch.sessions[s.key].reason or "")
    await wait_for(lambda: orch.sessions[s.key].attempt == 2, timeout=15, what="the watchdog's retry")
    await wait_for(lambda: orch.sessions[s.key].agent_pid not in (None, agent), what="the second attempt")
    await orch.kill(s.key)


async def test_a_restart_stops_an_agent_whose_shim_died_meanwhile(make_orch, data_dir: Path) -> None:
    crew = crew_from()
    first = await make_orch(crew)
    s = await first.spawn(
        SpawnRequest(label="left", argv=[PY, "-c", "import time; print('up', flush=True); time.sleep(600)"])
    )
    await wait_for(lambda: first.sessions[s.key].last_line == "up", what="the agent")
    agent, shim = first.sessions[s.key].agent_pid, first.sessions[s.key].shim_pid
    assert agent and shim
    await first.stop()  # the session runs on ...
    os.kill(shim, signal.SIGKILL)  # ... and its shim dies while no runtime watches
    second = await make_orch(crew)
    assert second.sessions[s.key].state == S.LOST
    assert "its agent" in (second.sessions[s.key].reason or "") and not pid_alive(agent)


async def test_a_persons_kill_during_a_watchdogs_kill_is_final(make_orch) -> None:
    crew = crew_from("[crew]\nname = 't'\nkill_grace = '2s'\n")
    orch = await make_orch(crew)
    orch.launcher.kill_grace = 2.0
    s = await orch.spawn(SpawnRequest(label="stubborn", argv=[PY, "-c", STUBBORN], watchdog_after=1.0, max_attempts=3))
    await wait_for(lambda: orch.sessions[s.key].last_line == "ignoring SIGTERM", what="the agent")
    # The watchdog fires after 1 s and starts killing it (SIGTERM ignored: it waits out the 2 s grace).
    await wait_for(lambda: s.key in orch.launcher.killing, timeout=10, what="the watchdog's kill")
    (mine,) = await orch.kill(s.key)
    assert mine.state == S.KILLED and mine.attempt == 1
    await asyncio.sleep(1.0)  # the watchdog's turn: it must not retry
    now = orch.sessions[s.key]
    assert (now.state, now.attempt) == (S.KILLED, 1)
    fired = [e for e in await orch.events() if isinstance(e, WatchdogFired) and e.session == s.key]
    assert [e.outcome for e in fired] == ["noop"] and "killed by a person" in (fired[0].reason or "")
