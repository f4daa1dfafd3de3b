"""The Ray backend against a real local Ray cluster (`ray start --head` on this machine), in actor mode (a Ray
actor per session attempt: `[backend] mode = "actor"`); tests/test_ray_hosts.py tests host mode, the default.

Marked `ray`: they run wherever the `ray` extra is installed (CI installs it); without it they are skipped
and `test_ray_missing_is_one_clear_line` checks the message a user gets instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crewtui.config import CrewConfig
from crewtui.errors import CrewError
from crewtui.locations import DataDir, SessionDir
from crewtui.model import SessionState, SpawnRequest
from crewtui.runtime.drivers import LaunchSpec
from crewtui.runtime.orchestrator import Orchestrator
from tests.conftest import ECHO_AGENT, PY, crew_from, pid_alive, py, wait_for
from tests.raycluster import RAY_BIN, free_port, local_cluster

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]


# Prints a numbered line every 50 ms until told "quit" on stdin; steer lines are echoed.
COUNTER = textwrap.dedent(
    """
    import json, os, sys, threading, time
    stop = threading.Event()
    def listen():
        for line in sys.stdin:
            line = line.strip()
            print("steered: " + line, flush=True)
            if line == "quit":
                stop.set()
                return
    threading.Thread(target=listen, daemon=True).start()
    n = 0
    while not stop.is_set():
        n += 1
        print(f"line {n}", flush=True)
        time.sleep(0.05)
    print(json.dumps({"lines": n}), flush=True)
    """
)


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """The module's cluster."""
    with local_cluster() as address:
        yield address


def ray_crew(address: str, extra: str = "", **backend: str) -> CrewConfig:
    backend.setdefault("mode", "actor")
    settings = "".join(f'{k} = "{v}"\n' for k, v in backend.items())
    return crew_from(
        f"""
        [crew]
        name = "ray-test"
        kill_grace = "2s"

        [backend]
        kind = "ray"
        address = "{address}"
        {settings}
        """
        + textwrap.dedent(extra)
    )


async def open_runtime(data: Path, crew: CrewConfig) -> Orchestrator:
    orch = await Orchestrator.open(data, crew)
    await orch.start()
    return orch


async def running(orch: Orchestrator, key: str) -> None:
    await wait_for(lambda: orch.sessions[key].state == SessionState.RUNNING, 60, f"{key} running")


async def ended(orch: Orchestrator, key: str, timeout: float = 60) -> None:
    await wait_for(lambda: orch.sessions[key].state.terminal, timeout, f"{key} ended")


def stdout_of(orch: Orchestrator, key: str) -> str:
    return (orch.data_dir.session_dir(key) / "stdout.log").read_text()


def actor_exists(key: str, address: str) -> bool:
    """Asked from a separate process, so the answer does not depend on this process's Ray connection."""
    code = (
        f"import ray; ray.init(address={address!r}, namespace='crewtui', log_to_driver=False, logging_level=40)\n"
        f"try:\n    ray.get_actor({key!r}); print('yes')\nexcept ValueError:\n    print('no')"
    )
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    return p.stdout.strip().endswith("yes")


def kill_actor(key: str, address: str) -> None:
    code = (
        f"import ray; ray.init(address={address!r}, namespace='crewtui', log_to_driver=False, logging_level=40)\n"
        f"ray.kill(ray.get_actor({key!r}), no_restart=True)"
    )
    subprocess.run([PY, "-c", code], check=True, capture_output=True, timeout=60)


def cluster_nodes(address: str) -> set[str]:
    code = (
        f"import ray; ray.init(address={address!r}, log_to_driver=False, logging_level=40)\n"
        "print('\\n'.join(n['NodeID'][:6] for n in ray.nodes() if n['Alive']))"
    )
    p = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    return set(p.stdout.split())


# ------------------------------------------------------------------------------------------------ tests


async def test_spawn_steer_result_on_ray(tmp_path: Path, ray_address: str) -> None:
    orch = await open_runtime(tmp_path / "data", ray_crew(ray_address))
    try:
        assert (await orch.info()).backend == f"ray {ray_address} (actor mode)"
        s = await orch.spawn(SpawnRequest(label="ray-echo-1", argv=py(ECHO_AGENT)))
        assert s.driver == "ray"
        await running(orch, s.key)
        # The node is the Ray node that runs the actor (address/node-id prefix).
        node = orch.sessions[s.key].node
        assert node is not None and node.split("/")[1] in cluster_nodes(ray_address)
        await wait_for(lambda: "ready" in stdout_of(orch, s.key), 30, "first output copied back")
        await orch.send(s.key, "look at the footnotes")
        await wait_for(lambda: "steered: look at the footnotes" in stdout_of(orch, s.key), 30, "steer echoed")
        await orch.send(s.key, "quit")
        await ended(orch, s.key)
        done = orch.sessions[s.key]
        assert done.state == SessionState.DONE and done.exit_code == 0
        assert done.result == {"steered": ["look at the footnotes"]}
        # Once its end is recorded locally the actor is gone: it holds no name and no node slot.
        assert (orch.data_dir.session_dir(s.key) / "exit.json").exists()
        await wait_for(lambda: not actor_exists(s.key, ray_address), 30, "actor removed")
        stored = await orch.store.get_session(s.key)
        assert stored is not None and stored.node == node
    finally:
        await orch.stop(kill_sessions=True)


async def test_result_file_failure_and_bad_program_on_ray(tmp_path: Path, ray_address: str) -> None:
    orch = await open_runtime(tmp_path / "data", ray_crew(ray_address))
    try:
        # result.json written into CREWTUI_OUTPUT_DIR on the node comes back as the session's result.
        writer = py(
            "import json, os; json.dump({'pages': 3}, open(os.path.join(os.environ['CREWTUI_OUTPUT_DIR'], "
            "'result.json'), 'w')); print('wrote it')"
        )
        ok = await orch.spawn(SpawnRequest(label="ray-result", argv=writer))
        bad = await orch.spawn(
            SpawnRequest(label="ray-fails", argv=py("import sys; print('oops', file=sys.stderr); sys.exit(3)"))
        )
        missing = await orch.spawn(SpawnRequest(label="ray-missing", argv=["/nonexistent/agent-program"]))
        for s in (ok, bad, missing):
            await ended(orch, s.key)
        assert orch.sessions[ok.key].state == SessionState.DONE
        assert orch.sessions[ok.key].result == {"pages": 3}
        assert orch.sessions[bad.key].state == SessionState.FAILED
        assert orch.sessions[bad.key].exit_code == 3 and "oops" in (orch.sessions[bad.key].reason or "")
        assert orch.sessions[missing.key].state == SessionState.FAILED
        assert "/nonexistent/agent-program" in (orch.sessions[missing.key].reason or "")
    finally:
        await orch.stop(kill_sessions=True)


async def test_kill_stops_the_whole_process_tree_on_the_node(tmp_path: Path, ray_address: str) -> None:
    orch = await open_runtime(tmp_path / "data", ray_crew(ray_address))
    try:
        tree = py(
            "import os, subprocess, sys, time\n"
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "print(f'pids {os.getpid()} {c.pid}', flush=True)\n"
            "time.sleep(600)\n"
        )
        s = await orch.spawn(SpawnRequest(label="ray-tree", argv=tree))
        await wait_for(lambda: "pids" in stdout_of(orch, s.key), 60, "pids printed")
        pids = [int(p) for p in stdout_of(orch, s.key).split("pids", 1)[1].split()[:2]]
        assert all(pid_alive(p) for p in pids)
        await orch.kill(s.key)
        assert orch.sessions[s.key].state == SessionState.KILLED
        await wait_for(lambda: not any(pid_alive(p) for p in pids), 15, "agent and its child gone")
        await wait_for(lambda: not actor_exists(s.key, ray_address), 30, "actor removed")
    finally:
        await orch.stop(kill_sessions=True)


async def test_output_comes_back_in_batches_not_per_line(tmp_path: Path, ray_address: str) -> None:
    orch = await open_runtime(tmp_path / "data", ray_crew(ray_address))
    try:
        s = await orch.spawn(SpawnRequest(label="ray-chatty", argv=py("for i in range(20000): print(f'row {i}')")))
        await ended(orch, s.key)
        rows = stdout_of(orch, s.key).splitlines()
        assert rows == [f"row {i}" for i in range(20000)]  # all of it, in order, once
        driver = orch.drivers.ray
        assert driver.lines_in == 20000
        assert driver.batches <= 20, f"{driver.batches} remote calls for 20,000 lines"
    finally:
        await orch.stop(kill_sessions=True)


async def test_readopted_after_runtime_restart_without_losing_or_doubling_output(
    tmp_path: Path, ray_address: str
) -> None:
    data = tmp_path / "data"
    crew = ray_crew(ray_address)
    first = await open_runtime(data, crew)
    s = await first.spawn(SpawnRequest(label="ray-survivor", argv=py(COUNTER)))
    await wait_for(lambda: "line 5\n" in stdout_of(first, s.key), 60, "output before the restart")
    await first.stop()  # the dashboard goes away; the detached actor and its agent run on
    await asyncio.sleep(1.0)  # output produced while nobody watches
    second = await open_runtime(data, crew)
    try:
        assert second.sessions[s.key].state == SessionState.RUNNING
        assert s.key in second.launcher.handles
        await second.send(s.key, "quit")
        await ended(second, s.key)
        assert second.sessions[s.key].state == SessionState.DONE
        lines = [ln for ln in stdout_of(second, s.key).splitlines() if ln.startswith("line ")]
        assert lines == [f"line {i}" for i in range(1, len(lines) + 1)]  # no gap, no duplicate
        assert second.sessions[s.key].result == {"lines": len(lines)}
        assert len(lines) > 20  # it kept printing while no runtime was there
    finally:
        await second.stop(kill_sessions=True)


async def test_end_while_runtime_down_is_recorded_on_restart(tmp_path: Path, ray_address: str) -> None:
    data = tmp_path / "data"
    crew = ray_crew(ray_address)
    first = await open_runtime(data, crew)
    s = await first.spawn(
        SpawnRequest(
            label="ray-quick",
            argv=py("import json, sys, time; sys.stdin.readline(); print(json.dumps({'answer': 42}))"),
        )
    )
    await running(first, s.key)
    await first.send(s.key, "go")  # it ends right after this, while the runtime is stopping
    await first.stop()
    await asyncio.sleep(1.0)
    second = await open_runtime(data, crew)
    try:
        await ended(second, s.key)
        assert second.sessions[s.key].state == SessionState.DONE
        assert second.sessions[s.key].result == {"answer": 42}
        await wait_for(lambda: not actor_exists(s.key, ray_address), 30, "actor removed")
    finally:
        await second.stop(kill_sessions=True)


async def test_killed_actor_is_lost_and_its_watchdog_retries_it(tmp_path: Path, ray_address: str) -> None:
    marker = tmp_path / "first-try-was-here"
    # The first attempt hangs; a retry (marker present) finishes at once.
    agent = py(
        "import os, sys, time\n"
        f"m = {str(marker)!r}\n"
        "print(f'agent pid {os.getpid()}', flush=True)\n"
        "if os.path.exists(m):\n"
        "    print('second try: done'); sys.exit(0)\n"
        "open(m, 'w').close(); time.sleep(600)\n"
    )
    orch = await open_runtime(tmp_path / "data", ray_crew(ray_address))
    try:
        s = await orch.spawn(SpawnRequest(label="ray-phoenix", argv=agent, watchdog_after=4.0, max_attempts=2))
        await wait_for(lambda: "agent pid" in stdout_of(orch, s.key), 60, "first attempt running")
        first_pid = int(stdout_of(orch, s.key).split("agent pid", 1)[1].split()[0])
        kill_actor(s.key, ray_address)  # as when its node dies
        await wait_for(
            lambda: orch.sessions[s.key].state == SessionState.LOST or orch.sessions[s.key].attempt == 2,
            30,
            "session lost",
        )
        # The agent did not outlive its actor (no second copy running beside the retry).
        await wait_for(lambda: not pid_alive(first_pid), 10, "first attempt's agent gone with its actor")
        await wait_for(
            lambda: orch.sessions[s.key].attempt == 2 and orch.sessions[s.key].state.terminal,
            60,
            "watchdog retry finished",
        )
        assert orch.sessions[s.key].state == SessionState.DONE
        assert "second try: done" in stdout_of(orch, s.key)
        await orch.store.flush()
        events = [e.kind for e in await orch.store.events(0)]
        assert "watchdog_fired" in events and "session_retried" in events
    finally:
        await orch.stop(kill_sessions=True)


def start_node(address: str, resources: str) -> subprocess.Popen[bytes]:
    """Another Ray node on this machine (its own process group, so the test can take it down at once)."""
    return subprocess.Popen(
        [
            RAY_BIN,
            "start",
            f"--address={address}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=1",
            f"--resources={resources}",
            "--disable-usage-stats",
            "--block",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def node_down(node: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(node.pid, signal.SIGKILL)  # the node dies as a machine would: no goodbye
    except ProcessLookupError:
        pass
    node.wait(timeout=30)


async def test_a_session_whose_node_dies_is_lost_and_retried_on_another_node(tmp_path: Path, ray_address: str) -> None:
    crew = ray_crew(
        ray_address,
        extra="""
        [agents.spotty]
        command = ["{python}", "-c", "import os, time; print('on duty', flush=True); time.sleep(600)"]
        resources = { custom = { spot = 1 } }
        max_attempts = 2
        """,
        start_timeout="2m",
    )
    first_node = start_node(ray_address, '{"spot": 1}')
    second_node = None
    orch = await open_runtime(tmp_path / "data", crew)
    try:
        s = await orch.spawn(SpawnRequest(label="spot-worker", agent="spotty", task="x", watchdog_after=25.0))
        await wait_for(lambda: "on duty" in stdout_of(orch, s.key), 90, "running on the spot node")
        doomed = orch.sessions[s.key].node
        node_down(first_node)
        second_node = start_node(ray_address, '{"spot": 1}')  # a replacement spot machine joins
        # Until Ray notices the dead node (missed heartbeats, about 15 s) it may still place actors there;
        # such an actor dies before it starts, and the driver places it again: a spawn now still starts.
        newcomer = await orch.spawn(SpawnRequest(label="spot-newcomer", agent="spotty", task="y"))
        # The old session is lost, loudly, once Ray declares its node dead.
        await wait_for(
            lambda: orch.sessions[s.key].state == SessionState.LOST or orch.sessions[s.key].attempt == 2,
            60,
            "session lost with its node",
        )
        await wait_for(lambda: "on duty" in stdout_of(orch, newcomer.key), 90, "newcomer running")
        assert orch.sessions[newcomer.key].node != doomed
        await orch.kill(newcomer.key)  # its spot slot is for the retry
        await wait_for(
            lambda: orch.sessions[s.key].attempt == 2 and orch.sessions[s.key].state == SessionState.RUNNING,
            120,
            "watchdog retry running on the new node",
        )
        assert orch.sessions[s.key].node not in (None, doomed)
        await orch.store.flush()
        lost = [
            e
            for e in await orch.store.events(0)
            if e.kind == "session_state_changed" and e.session == s.key and e.new == SessionState.LOST
        ]
        assert lost and f"its Ray actor on node {doomed} died" in lost[0].reason
    finally:
        await orch.stop(kill_sessions=True)
        for node in (first_node, second_node):
            if node is not None:
                node_down(node)


async def test_resources_nobody_has_fail_the_start_clearly(tmp_path: Path, ray_address: str) -> None:
    crew = ray_crew(
        ray_address,
        extra="""
        [agents.picky]
        command = ["{python}", "-c", "print('never')"]
        resources = { custom = { unobtainium = 1 } }
        """,
        start_timeout="3s",
    )
    orch = await open_runtime(tmp_path / "data", crew)
    try:
        picky = await orch.spawn(SpawnRequest(label="ray-picky", agent="picky", task="x"))
        await ended(orch, picky.key, 30)
        assert orch.sessions[picky.key].state == SessionState.FAILED
        assert "no Ray node took it within 3s" in orch.sessions[picky.key].reason
        assert "unobtainium" in orch.sessions[picky.key].reason
        assert not actor_exists(picky.key, ray_address)
    finally:
        await orch.stop(kill_sessions=True)


async def test_agent_resources_reach_ray(tmp_path: Path, ray_address: str) -> None:
    """Two sessions that each want all 4 CPUs of the cluster's head node run one after the other."""
    crew = ray_crew(
        ray_address,
        extra="""
        [agents.hungry]
        command = ["{python}", "-c", "import time; print('eating', flush=True); time.sleep(2)"]
        resources = { num_cpus = 4, memory = "64MB" }
        """,
    )
    orch = await open_runtime(tmp_path / "data", crew)
    try:
        first = await orch.spawn(SpawnRequest(label="ray-hungry-1", agent="hungry", task="x"))
        await running(orch, first.key)
        second = await orch.spawn(SpawnRequest(label="ray-hungry-2", agent="hungry", task="x"))
        await ended(orch, first.key)
        await ended(orch, second.key)
        a, b = orch.sessions[first.key], orch.sessions[second.key]
        assert a.state == b.state == SessionState.DONE
        # The second could only be placed once the first had given its CPUs back.
        assert b.started_at >= a.ended_at - 0.5, (a.ended_at, b.started_at)
    finally:
        await orch.stop(kill_sessions=True)


async def test_unreachable_cluster_is_one_clear_error(tmp_path: Path) -> None:
    crew = ray_crew(f"127.0.0.1:{free_port()}")
    orch = await Orchestrator.open(tmp_path / "data", crew)
    started = time.monotonic()
    with pytest.raises(CrewError, match=r"cannot reach the Ray cluster at '127\.0\.0\.1:\d+': .*ray start --head"):
        await orch.start()
    assert time.monotonic() - started < 10
    await orch.store.close()


@pytest.mark.parametrize("mode", ["actor", "host"])
def test_yield_and_ctl_list_across_the_ray_backend(tmp_path: Path, ray_address: str, mode: str) -> None:
    """A parent on Ray spawns three children with `crewtui ctl`, yields, and is woken with their results (in both
    modes: the node is this machine, so the runtime's socket is within reach)."""
    from tests.test_ctl import Runtime, ctl

    crew = tmp_path / "crew.toml"
    crew.write_text(
        textwrap.dedent(f"""
        [crew]
        name = "ray-yield"

        [backend]
        kind = "ray"
        address = "{ray_address}"
        mode = "{mode}"

        [agents.lead]
        command = ["{{python}}", "-m", "crewtui.agents.demo", "--task", "{{task}}", "--duration", "1",
                   "--interval", "0.2", "--children", "3"]
        """)
    )
    data = tmp_path / "data"
    rt = Runtime(data, crew)
    try:
        p = ctl(data, "spawn", "--label", "research-lead-ray", "--agent", "lead", "--task", "survey", "--json")
        assert p.returncode == 0, p.stderr
        parent = json.loads(p.stdout)["key"]
        deadline = time.time() + 90
        while True:
            rows = json.loads(ctl(data, "list", "--json").stdout)
            mine = {r["key"]: r for r in rows}
            if mine[parent]["state"] in ("done", "failed", "lost", "killed", "timed_out"):
                break
            assert time.time() < deadline, f"parent still {mine[parent]['state']}"
            time.sleep(0.3)
        children = [r for r in rows if r["parent"] == parent]
        err = DataDir(data).session_dir(parent) / "stderr.log"
        why = (
            mine[parent]["reason"],
            err.read_text(errors="replace")[-2000:] if err.exists() else "",
            [(c["label"], c["state"], c["reason"]) for c in children],
        )
        assert mine[parent]["state"] == "done", why
        assert len(children) == 3 and all(c["state"] == "done" for c in children), why
        # Every row says where it ran (`ctl list --json` includes the node).
        assert all(r["driver"] == "ray" and r["node"] for r in [mine[parent], *children])
        table = ctl(data, "list").stdout  # and the human table has a NODE column
        assert table.splitlines()[0].split()[5] == "NODE" and mine[parent]["node"] in table
        result = mine[parent]["result"]
        assert sorted(c["key"] for c in result["children"]) == sorted(c["key"] for c in children)
    finally:
        for r in json.loads(ctl(data, "list", "--json").stdout or "[]"):
            if r["state"] in ("running", "yielded", "pending"):
                ctl(data, "kill", r["key"], "--yes")
        rt.stop()


async def test_dashboard_shows_each_sessions_node_and_a_count_per_node(tmp_path: Path, ray_address: str) -> None:
    from textual.widgets import Static

    from crewtui.ui.app import make_app
    from crewtui.ui.widgets.detail import SessionDetail

    orch = await open_runtime(tmp_path / "data", ray_crew(ray_address))
    try:
        app = make_app(orch)
        async with app.run_test(size=(140, 42)) as pilot:
            await app.loaded.wait()
            keys = [(await orch.spawn(SpawnRequest(label=f"ray-ui-{i}", argv=py(ECHO_AGENT)))).key for i in range(2)]
            for key in keys:
                await running(orch, key)
            node = orch.sessions[keys[0]].node
            # The running event carries the node: the UI's copy has it without a re-list.
            await wait_for(
                lambda: all(app.book.sessions.get(k) and app.book.sessions[k].node for k in keys), 30, "nodes in the UI"
            )
            assert app.book.node_counts() == {node: 2}
            app.main_screen.flush_events()
            await pilot.pause()
            header = str(app.query_one("#status", Static).render())  # a Text: its plain string
            assert f"1 node {node} 2" in header
            await wait_for(lambda: "s:" + keys[0] in app.main_screen.session_tree.nodes, 10, "row shown")
            app.main_screen.session_tree.select_key(keys[0])
            await pilot.pause(0.2)
            detail = app.query_one("#detail", SessionDetail)
            assert detail._shown is not None and node in detail._shown  # the "node" row of the detail pane
    finally:
        await orch.stop(kill_sessions=True)


async def test_an_end_recorded_just_before_a_crash_disposes_of_the_leftover_actor(
    tmp_path: Path, ray_address: str
) -> None:
    data = tmp_path / "data"
    crew = ray_crew(ray_address)
    first = await open_runtime(data, crew)
    s = await first.spawn(SpawnRequest(label="ray-leftover", argv=py(COUNTER)))
    await wait_for(lambda: "line 3\n" in stdout_of(first, s.key), 60, "running")
    await first.stop()
    # As if the last runtime had written the end locally and died before removing the actor.
    (first.data_dir.session_dir(s.key) / "exit.json").write_text(json.dumps({"code": 0, "ended_at": time.time()}))
    assert actor_exists(s.key, ray_address)
    second = await open_runtime(data, crew)
    try:
        assert second.sessions[s.key].state == SessionState.DONE
        assert not actor_exists(s.key, ray_address)  # and with it the agent
    finally:
        await second.stop(kill_sessions=True)


async def test_an_actor_that_dies_before_it_starts_is_placed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unit test of the driver's start loop alone (a fake actor class): Ray placed the actor on a node that
    was dying; the first placement dies before answering, the second one starts."""
    from crewtui.runtime.drivers import ray as ray_driver

    monkeypatch.setattr(ray_driver, "_REPLACE_DELAY", 0.01)
    driver = ray_driver.RayDriver("auto", start_timeout=10)
    placed: list[str] = []
    killed: list[object] = []

    class FakeActor:
        def __init__(self, dies: bool) -> None:
            self.dies = dies
            self.info = self

        async def _info(self) -> dict:
            if self.dies:
                raise ray.exceptions.ActorDiedError()
            return {"ip": "10.0.0.9", "node_id": "abcdef0123"}

        def remote(self, *args: object) -> object:
            return self._info()

    class FakeClass:
        def options(self, **opts: object) -> FakeClass:
            return self

        def remote(self, key: str, *args: object) -> FakeActor:
            placed.append(key)
            return FakeActor(dies=len(placed) == 1)

    async def no_name_held(key: str) -> None:
        return None

    driver._actor_cls = FakeClass()
    monkeypatch.setattr(driver, "_free_name", no_name_held)
    monkeypatch.setattr(driver, "kill_actor", killed.append)
    monkeypatch.setattr(ray_driver.RayHandle, "start_pump", lambda self: None)
    handle = await driver.start(
        LaunchSpec(key="s-key", label="s-key", attempt=1, dir=SessionDir(tmp_path / "out"), argv=["true"])
    )
    assert placed == ["s-key", "s-key"] and len(killed) == 1
    assert handle.node == "10.0.0.9/abcdef"
