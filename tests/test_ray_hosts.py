"""Host mode of the Ray backend (`[backend] mode = "host"`, the default) against a real local Ray cluster.

One crewtui host actor per node runs that node's sessions through the shim. The cluster is started as
tests/test_ray.py starts its own (a head by `ray start`, more nodes joined with `start_node` and killed with
`node_down`); the sessions are real processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crewtui.config import CrewConfig
from crewtui.events import RuntimeStarted
from crewtui.model import SessionState, SpawnRequest
from crewtui.runtime.drivers.ray_host import host_name, owner_tag
from crewtui.runtime.drivers.ray_hosts import RayHostsDriver
from crewtui.runtime.orchestrator import Orchestrator
from crewtui.spend import UsageTotals
from tests.conftest import ECHO_AGENT, PY, pid_alive, py, wait_for
from tests.raycluster import local_cluster
from tests.test_ray import (
    COUNTER,
    actor_exists,
    ended,
    node_down,
    open_runtime,
    ray_crew,
    running,
    start_node,
    stdout_of,
)

REPO = Path(__file__).resolve().parent.parent

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """The module's cluster (a head node with 2 GPUs as Ray counts them; tests join and kill more nodes)."""
    with local_cluster(gpus=2) as address:
        yield address


def host_crew(address: str, extra: str = "", **backend: str) -> CrewConfig:
    return ray_crew(address, extra, mode="host", **backend)


def hosts(orch: Orchestrator) -> RayHostsDriver:
    driver = orch.drivers.ray
    assert isinstance(driver, RayHostsDriver)
    return driver


def in_cluster(address: str, code: str) -> str:
    """Run `code` in a separate Ray driver process (its own connection), return what it printed."""
    prog = f"import ray; ray.init(address={address!r}, namespace='crewtui', log_to_driver=False, logging_level=40)\n"
    p = subprocess.run([PY, "-c", prog + textwrap.dedent(code)], capture_output=True, text=True, timeout=90)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout


def node_of(orch: Orchestrator, key: str) -> str:
    """The Ray node id of the host that runs a session."""
    node = orch.sessions[key].node
    assert node is not None
    return next(ln.node_id for ln in hosts(orch).links.values() if ln.node == node)


async def host_info(orch: Orchestrator, node_id: str) -> dict:
    return await hosts(orch).links[node_id].actor.info.remote()


# ------------------------------------------------------------------------------------------------ tests


async def test_spawn_steer_result_and_output_in_batches(tmp_path: Path, ray_address: str) -> None:
    orch = await open_runtime(tmp_path / "data", host_crew(ray_address))
    try:
        assert (await orch.info()).backend == f"ray {ray_address} (host mode)"
        s = await orch.spawn(SpawnRequest(label="host-echo", argv=py(ECHO_AGENT)))
        assert s.driver == "ray"
        await running(orch, s.key)
        node_id = node_of(orch, s.key)
        assert orch.sessions[s.key].node.endswith("/" + node_id[:6])
        assert actor_exists(host_name(node_id), ray_address)  # the node's host, found by name
        info = await host_info(orch, node_id)
        # The session runs under the host's shim, in a node-local dir; not as a Ray worker of its own.
        local = Path(info["root"]) / owner_tag(hosts(orch).owner) / s.key
        assert json.loads((local / "pid.json").read_text())["agent_pid"] > 0
        await wait_for(lambda: "ready" in stdout_of(orch, s.key), 30, "first output copied back")
        await orch.send(s.key, "look at the footnotes")
        await wait_for(lambda: "steered: look at the footnotes" in stdout_of(orch, s.key), 30, "steer echoed")
        await orch.send(s.key, "quit")
        await ended(orch, s.key)
        done = orch.sessions[s.key]
        assert done.state == SessionState.DONE and done.exit_code == 0
        assert done.result == {"steered": ["look at the footnotes"]}
        assert (orch.data_dir.session_dir(s.key) / "exit.json").exists()
        await wait_for(lambda: not local.exists(), 30, "node-local files dropped once the end is recorded")

        # 20,000 lines come back whole, in order, once, in a few calls to the host.
        batches = hosts(orch).batches
        chatty = await orch.spawn(
            SpawnRequest(label="host-chatty", argv=py("for i in range(20000): print(f'row {i}')"))
        )
        await ended(orch, chatty.key)
        assert stdout_of(orch, chatty.key).splitlines() == [f"row {i}" for i in range(20000)]
        assert hosts(orch).batches - batches <= 20, f"{hosts(orch).batches - batches} calls for 20,000 lines"
    finally:
        await orch.stop(kill_sessions=True)


async def test_result_file_failure_bad_program_and_kill_of_the_tree(tmp_path: Path, ray_address: str) -> None:
    orch = await open_runtime(tmp_path / "data", host_crew(ray_address))
    try:
        writer = py(
            "import json, os; json.dump({'pages': 3}, open(os.path.join(os.environ['CREWTUI_OUTPUT_DIR'], "
            "'result.json'), 'w')); print('wrote it')"
        )
        ok = await orch.spawn(SpawnRequest(label="host-result", argv=writer))
        bad = await orch.spawn(
            SpawnRequest(label="host-fails", argv=py("import sys; print('oops', file=sys.stderr); sys.exit(3)"))
        )
        missing = await orch.spawn(SpawnRequest(label="host-missing", argv=["/nonexistent/agent-program"]))
        tree = py(
            "import os, subprocess, sys, time\n"
            "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "d = subprocess.Popen([sys.executable, '-c', 'import os, time; os.setsid(); time.sleep(600)'])\n"
            "print(f'pids {os.getpid()} {c.pid} {d.pid}', flush=True)\n"
            "time.sleep(600)\n"
        )
        victim = await orch.spawn(SpawnRequest(label="host-tree", argv=tree))
        for s in (ok, bad, missing):
            await ended(orch, s.key)
        assert orch.sessions[ok.key].state == SessionState.DONE
        assert orch.sessions[ok.key].result == {"pages": 3}
        assert orch.sessions[bad.key].state == SessionState.FAILED
        assert orch.sessions[bad.key].exit_code == 3 and "oops" in (orch.sessions[bad.key].reason or "")
        assert orch.sessions[missing.key].state == SessionState.FAILED
        assert "/nonexistent/agent-program" in (orch.sessions[missing.key].reason or "")

        await wait_for(lambda: "pids" in stdout_of(orch, victim.key), 60, "pids printed")
        pids = [int(p) for p in stdout_of(orch, victim.key).split("pids", 1)[1].split()[:3]]
        assert all(pid_alive(p) for p in pids)
        await orch.kill(victim.key)
        assert orch.sessions[victim.key].state == SessionState.KILLED
        # The agent, its child and the one that left its process group (setsid) are all gone.
        await wait_for(lambda: not any(pid_alive(p) for p in pids), 15, "the whole tree gone")
    finally:
        await orch.stop(kill_sessions=True)


async def test_runtime_restart_readopts_fifty_sessions(tmp_path: Path, ray_address: str) -> None:
    data = tmp_path / "data"
    crew = host_crew(ray_address)
    first = await open_runtime(data, crew)
    keys = [
        (await first.spawn(SpawnRequest(label=f"host-survivor-{i:02d}", argv=py(COUNTER.replace("0.05", "0.2"))))).key
        for i in range(50)
    ]
    await wait_for(lambda: all("line 2\n" in stdout_of(first, k) for k in keys), 120, "all 50 printing")
    await first.stop()  # the dashboard goes away; the host and the shims run on
    await asyncio.sleep(1.0)  # output produced while nobody watches
    started = time.monotonic()
    second = await open_runtime(data, crew)
    try:
        readopt = time.monotonic() - started
        assert all(second.sessions[k].state == SessionState.RUNNING for k in keys)
        assert all(k in second.launcher.handles for k in keys)
        await second.store.flush()
        begun = [e for e in await second.store.events(0) if isinstance(e, RuntimeStarted)]
        assert begun[-1].readopted == 50, begun[-1]
        assert len(hosts(second).links) == 1  # one host (this cluster has one node), whatever the sessions
        await asyncio.gather(*(second.send(k, "quit") for k in keys))
        for k in keys:
            await ended(second, k)
        for k in keys:
            assert second.sessions[k].state == SessionState.DONE
            lines = [ln for ln in stdout_of(second, k).splitlines() if ln.startswith("line ")]
            assert lines == [f"line {i}" for i in range(1, len(lines) + 1)]  # no gap, no duplicate
            assert second.sessions[k].result == {"lines": len(lines)}
        print(f"re-adopted 50 sessions in a start of {readopt:.2f}s")
    finally:
        await second.stop(kill_sessions=True)


async def test_a_host_killed_on_a_live_node_comes_back_and_readopts_its_shims(tmp_path: Path, ray_address: str) -> None:
    orch = await open_runtime(tmp_path / "data", host_crew(ray_address))
    try:
        s = await orch.spawn(SpawnRequest(label="host-steady", argv=py(COUNTER)))
        await wait_for(lambda: "line 3\n" in stdout_of(orch, s.key), 60, "running")
        node_id = node_of(orch, s.key)
        first = await host_info(orch, node_id)
        local = Path(first["root"]) / owner_tag(hosts(orch).owner) / s.key
        agent_pid = json.loads((local / "pid.json").read_text())["agent_pid"]
        # A crash of the host's process: Ray starts it again on its node.
        os.kill(first["pid"], signal.SIGKILL)
        await wait_for(lambda: not pid_alive(first["pid"]), 10, "host process gone")
        seen = stdout_of(orch, s.key).count("\n")
        await wait_for(lambda: stdout_of(orch, s.key).count("\n") > seen + 10, 90, "output flowing again")
        second = await host_info(orch, node_id)
        assert second["pid"] != first["pid"]
        # Removed for good (no restart by Ray): the runtime starts it again under the same name.
        in_cluster(ray_address, f"ray.kill(ray.get_actor({host_name(node_id)!r}), no_restart=True)")
        await wait_for(lambda: not pid_alive(second["pid"]), 10, "second host process gone")
        seen = stdout_of(orch, s.key).count("\n")
        await wait_for(lambda: stdout_of(orch, s.key).count("\n") > seen + 10, 90, "output flowing again")
        assert orch.sessions[s.key].state == SessionState.RUNNING and orch.sessions[s.key].attempt == 1
        assert pid_alive(agent_pid)  # the same agent throughout
        await orch.send(s.key, "quit")
        await ended(orch, s.key)
        assert orch.sessions[s.key].state == SessionState.DONE
        lines = [ln for ln in stdout_of(orch, s.key).splitlines() if ln.startswith("line ")]
        assert lines == [f"line {i}" for i in range(1, len(lines) + 1)]  # nothing lost or doubled
        assert orch.sessions[s.key].result == {"lines": len(lines)}
    finally:
        await orch.stop(kill_sessions=True)


async def test_a_host_that_dies_with_its_node_loses_its_sessions_and_they_are_retried_elsewhere(
    tmp_path: Path, ray_address: str
) -> None:
    crew = host_crew(
        ray_address,
        extra="""
        [agents.spotty]
        command = ["{python}", "-c", "import os, time; print('on duty', os.getpid(), flush=True); time.sleep(600)"]
        resources = { custom = { spot = 1 } }
        max_attempts = 2
        """,
        start_timeout="2m",
    )
    first_node = start_node(ray_address, '{"spot": 1}')
    second_node = None
    strays: list[int] = []
    orch = await open_runtime(tmp_path / "data", crew)
    try:
        s = await orch.spawn(SpawnRequest(label="host-spot", agent="spotty", task="x", watchdog_after=25.0))
        await wait_for(lambda: "on duty" in stdout_of(orch, s.key), 120, "running on the spot node")
        strays.append(int(stdout_of(orch, s.key).split("on duty", 1)[1].split()[0]))
        doomed = orch.sessions[s.key].node
        doomed_root = Path((await host_info(orch, node_of(orch, s.key)))["root"])
        node_down(first_node)  # the raylet and the host die; the shim lives on (see below)
        second_node = start_node(ray_address, '{"spot": 1}')
        await wait_for(
            lambda: orch.sessions[s.key].state == SessionState.LOST or orch.sessions[s.key].attempt == 2,
            90,
            "session lost with its node",
        )
        await wait_for(
            lambda: orch.sessions[s.key].attempt == 2 and orch.sessions[s.key].state == SessionState.RUNNING,
            150,
            "watchdog retry running on the new node",
        )
        assert orch.sessions[s.key].node not in (None, doomed)
        await orch.store.flush()
        lost = [
            e
            for e in await orch.store.events(0)
            if e.kind == "session_state_changed" and e.session == s.key and e.new == SessionState.LOST
        ]
        assert lost and f"its Ray host on node {doomed} died with its node" in lost[0].reason
        # On one machine the dead node's shim lived on (a dead machine takes it along): the new node's host, on the
        # same machine, stops what the dead node left there.
        await wait_for(lambda: not pid_alive(strays[0]), 30, "the dead node's leftover agent stopped")
        assert not doomed_root.exists()
    finally:
        await orch.stop(kill_sessions=True)
        for node in (first_node, second_node):
            if node is not None:
                node_down(node)
        for pid in strays:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(doomed_root, ignore_errors=True)


async def test_resources_are_admitted_through_a_placement_group(tmp_path: Path, ray_address: str) -> None:
    """Two sessions that each want all 4 CPUs of the head node run one after the other; one that wants what no
    node has is refused in one line."""
    crew = host_crew(
        ray_address,
        extra="""
        [agents.hungry]
        command = ["{python}", "-c", "import time; print('eating', flush=True); time.sleep(2)"]
        resources = { num_cpus = 4, memory = "64MB" }

        [agents.picky]
        command = ["{python}", "-c", "print('never')"]
        resources = { custom = { unobtainium = 1 } }
        """,
        start_timeout="4s",
    )
    orch = await open_runtime(tmp_path / "data", crew)
    try:
        picky = await orch.spawn(SpawnRequest(label="host-picky", agent="picky", task="x"))
        first = await orch.spawn(SpawnRequest(label="host-hungry-1", agent="hungry", task="x"))
        await running(orch, first.key)
        tag = owner_tag(hosts(orch).owner)
        groups = json.loads(
            in_cluster(
                ray_address,
                "import json; print(json.dumps([r['name'] for r in ray.util.placement_group_table().values() "
                "if r['state'] == 'CREATED']))",
            )
        )
        assert f"crewtui-{tag}-{first.key}-1" in groups  # Ray's accounting holds the session's CPUs
        second = await orch.spawn(SpawnRequest(label="host-hungry-2", agent="hungry", task="x"))
        await ended(orch, first.key)
        await ended(orch, second.key)
        a, b = orch.sessions[first.key], orch.sessions[second.key]
        assert a.state == b.state == SessionState.DONE
        # The second could only be placed once the first had given its CPUs back.
        assert b.started_at >= a.ended_at - 0.5, (a.ended_at, b.started_at)

        await ended(orch, picky.key, 30)
        reason = orch.sessions[picky.key].reason
        assert orch.sessions[picky.key].state == SessionState.FAILED
        assert "no Ray node took it within 4s" in reason and "no live node has unobtainium 1" in reason
        assert "\n" not in reason
        left = in_cluster(
            ray_address,
            "print(sorted(r['name'] for r in ray.util.placement_group_table().values() if r['state'] != 'REMOVED'))",
        )
        assert tag not in left  # every group of this runtime is gone
    finally:
        await orch.stop(kill_sessions=True)


async def test_sessions_that_reserve_gpus_are_pinned_to_the_ones_ray_gave_them(
    tmp_path: Path, ray_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sessions of one GPU each on the head's two see one GPU each, never the same one; a third that asks for
    none is not pinned (it sees what a local process would); a fourth that wants both waits for them."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    show = "import os, time; print('gpus=' + os.environ.get('CUDA_VISIBLE_DEVICES', 'all'), flush=True); time.sleep(3)"
    crew = host_crew(
        ray_address,
        extra=f"""
        [agents.trainer]
        command = ["{{python}}", "-c", "{show}"]
        resources = {{ num_gpus = 1 }}

        [agents.big-trainer]
        command = ["{{python}}", "-c", "{show}"]
        resources = {{ num_gpus = 2 }}

        [agents.plain]
        command = ["{{python}}", "-c", "{show}"]
        """,
    )
    orch = await open_runtime(tmp_path / "data", crew)
    try:
        one = await orch.spawn(SpawnRequest(label="gpu-one", agent="trainer", task="x"))
        two = await orch.spawn(SpawnRequest(label="gpu-two", agent="trainer", task="x"))
        plain = await orch.spawn(SpawnRequest(label="gpu-none", agent="plain", task="x"))
        for s in (one, two, plain):
            await wait_for(lambda s=s: "gpus=" in stdout_of(orch, s.key), 60, f"{s.label} to say its GPUs")
        seen = {s.label: stdout_of(orch, s.key).split("gpus=")[1].split()[0] for s in (one, two, plain)}
        assert {seen["gpu-one"], seen["gpu-two"]} == {"0", "1"}, seen
        assert seen["gpu-none"] == "all"
        both = await orch.spawn(SpawnRequest(label="gpu-both", agent="big-trainer", task="x"))
        await ended(orch, both.key, 60)
        assert stdout_of(orch, both.key).split("gpus=")[1].split()[0] in ("0,1", "1,0")
        assert orch.sessions[both.key].started_at >= max(orch.sessions[s.key].ended_at for s in (one, two)) - 0.5
    finally:
        await orch.stop(kill_sessions=True)


async def test_sessions_of_a_gateway_pool_on_nodes_go_through_their_nodes_door(
    tmp_path: Path, ray_address: str
) -> None:
    """Three sessions on the cluster share a pool of one request at a time: the crew's one line holds on the nodes
    too (each node's host serves a door on its loopback and asks the runtime's gateway), and every token they
    used is measured and charged to the session that used it."""
    from tests.fakemodel import FakeModel, Usage, slow, text

    with FakeModel() as fake:
        fake.script(*[slow(text(f"answer {i}", usage=Usage(input=100 + i, output=10 + i)), 0.05) for i in range(9)])
        crew = host_crew(
            ray_address,
            extra=f"""
            [pools.anthropic]
            provider = "anthropic"
            upstream = "{fake.url}"
            max_concurrent_requests = 1
            price = {{ input = 3.0, output = 15.0 }}

            [agents.client]
            command = ["{{python}}", "-m", "tests.gateway.anthropic_client", "--requests", "3"]
            pool = "anthropic"
            env = {{ PYTHONPATH = "{REPO}" }}
            """,
        )
        orch = await open_runtime(tmp_path / "data", crew)
        try:
            keys = [(await orch.spawn(SpawnRequest(label=f"node-client-{i}", agent="client"))).key for i in range(3)]
            for k in keys:
                await ended(orch, k, 90)
            got = [orch.sessions[k] for k in keys]
            assert [(s.state, s.result) for s in got] == [(SessionState.DONE, {"statuses": [200] * 3})] * 3, [
                s.reason for s in got
            ]
            assert fake.max_in_flight == 1  # one request at a time for the crew, across the nodes
            served: dict[str, list[int]] = {}
            for r in fake.served_ok():
                u = r.reply.usage  # type: ignore[union-attr]
                got_key = (r.request_headers or {}).get("x-api-key", "?")
                served.setdefault(got_key, [0, 0])
                served[got_key][0] += u.input
                served[got_key][1] += u.output
            for s in got:
                assert s.usage is not None and s.usage.requests == 3, s.label  # measured by the gateway
                assert [s.usage.tokens.input, s.usage.tokens.output] == served[f"sk-{s.label}"]
                assert s.cost_usd == pytest.approx((s.usage.tokens.input * 3.0 + s.usage.tokens.output * 15.0) / 1e6)
            node_id = node_of(orch, keys[0])
            assert (await host_info(orch, node_id))["gateway_port"]  # the node's door is open
        finally:
            await orch.stop(kill_sessions=True)


async def test_a_session_on_a_node_keeps_its_door_across_a_runtime_restart(tmp_path: Path, ray_address: str) -> None:
    """The runtime stops between a node session's two model requests; the next runtime re-adopts it and answers
    its node's door: the second request goes through, and both are charged to it."""
    from tests.fakemodel import FakeModel, Usage, text

    with FakeModel() as fake:
        fake.default_reply = text("fine", usage=Usage(input=20, output=2))
        crew = host_crew(
            ray_address,
            extra=f"""
            [pools.anthropic]
            provider = "anthropic"
            upstream = "{fake.url}"

            [agents.client]
            command = ["{{python}}", "-m", "tests.gateway.anthropic_client", "--requests", "2", "--pause", "6"]
            pool = "anthropic"
            env = {{ PYTHONPATH = "{REPO}" }}
            """,
        )
        data = tmp_path / "data"
        first = await open_runtime(data, crew)
        key = (await first.spawn(SpawnRequest(label="node-long", agent="client"))).key
        await wait_for(lambda: len(fake.served_ok()) == 1, 60, "the first request")
        await wait_for(lambda: (first.sessions[key].usage or UsageTotals()).requests == 1, 10, "it charged")
        await first.stop()  # the session runs on under its host, between its requests
        second = await open_runtime(data, crew)
        try:
            await ended(second, key, 60)
            s = second.sessions[key]
            assert (s.state, s.result) == (SessionState.DONE, {"statuses": [200, 200]}), s.reason
            assert s.usage is not None and s.usage.requests == 2  # the one before the restart and the one after
            assert len(fake.served_ok()) == 2
        finally:
            await second.stop(kill_sessions=True)


@pytest.mark.skipif(shutil.which("dtach") is None, reason="dtach is missing: scripts/install-debian.sh")
async def test_a_terminal_session_on_a_node_is_peeked_steered_and_ends(tmp_path: Path, ray_address: str) -> None:
    """`tty = true` on a Ray node: its host holds the terminal under dtach there; the screen is played from the
    transcript copied back, a steer is typed into it, and attaching is refused from here, saying where it runs."""
    from crewtui.attaching import attach_command
    from crewtui.errors import Conflict
    from tests.test_terminal_sessions import ASK

    orch = await open_runtime(tmp_path / "data", host_crew(ray_address))
    try:
        s = await orch.spawn(SpawnRequest(label="node-tty", argv=[PY, "-c", ASK], tty=True))
        assert s.driver == "ray" and s.tty

        async def on_screen(text: str) -> None:
            for _ in range(300):
                if text in "\n".join((await orch.peek(s.key)).lines):
                    return
                await asyncio.sleep(0.1)
            raise AssertionError(f"{text!r} never on its screen: {(await orch.peek(s.key)).lines}")

        await on_screen("Name?")
        await orch.send(s.key, "ada")  # typed into its terminal on the node, Enter included
        await on_screen("hello ada")
        await on_screen("Again?")
        with pytest.raises(Conflict, match=r"runs on node .*: its terminal is there \(dtach -a its tty.sock"):
            attach_command(orch.sessions[s.key])
        await orch.send(s.key, "yes")
        await ended(orch, s.key, 60)
        done = orch.sessions[s.key]
        assert (done.state, done.exit_code) == (SessionState.DONE, 0)  # the agent's own code, through dtach
        history = await orch.history(s.key, tail=20)
        assert history.lines == ["Name? ada", "hello ada", "Again? yes", "bye yes"]
    finally:
        await orch.stop(kill_sessions=True)


async def test_an_agents_own_cwd_is_used_on_the_node_and_one_the_node_lacks_fails_the_start(
    tmp_path: Path, ray_address: str
) -> None:
    work = tmp_path / "shared-work"
    work.mkdir()
    crew = host_crew(
        ray_address,
        extra=f"""
        [agents.worker]
        command = ["{{python}}", "-c", "import os; print('in ' + os.getcwd(), flush=True)"]
        cwd = "{work}"
        """,
    )
    orch = await open_runtime(tmp_path / "data", crew)
    try:
        s = await orch.spawn(SpawnRequest(label="node-cwd", agent="worker", task="x"))
        await ended(orch, s.key)
        assert orch.sessions[s.key].state == SessionState.DONE
        assert f"in {work}" in stdout_of(orch, s.key)  # where the crew file says, not the node-local dir
        # A directory the node does not have (here: asked of the host directly) fails the start, saying so.
        link = next(iter(hosts(orch).links.values()))
        reply = await link.call("start", "s-nocwd", 1, [PY, "-c", "pass"], {}, "/nonexistent/work", False)
        assert "its cwd /nonexistent/work is not a directory on" in reply["error"]
    finally:
        await orch.stop(kill_sessions=True)


async def test_sessions_without_resources_go_to_the_least_loaded_host(tmp_path: Path, ray_address: str) -> None:
    extra = start_node(ray_address, '{"spare": 1}')
    orch = await open_runtime(tmp_path / "data", host_crew(ray_address))
    try:
        deadline = time.monotonic() + 60
        while len(hosts(orch).links) < 2:  # the new node joins the cluster, then gets its host
            assert time.monotonic() < deadline, "no host on the second node"
            await asyncio.sleep(0.5)
            await hosts(orch).refresh_nodes(force=True)
        keys = [(await orch.spawn(SpawnRequest(label=f"host-spread-{i}", argv=py(COUNTER)))).key for i in range(4)]
        for k in keys:
            await running(orch, k)
        per_node: dict[str, int] = {}
        for k in keys:
            per_node[orch.sessions[k].node] = per_node.get(orch.sessions[k].node, 0) + 1
        assert sorted(per_node.values()) == [2, 2], per_node
    finally:
        await orch.stop(kill_sessions=True)
        node_down(extra)


async def test_sessions_of_actor_mode_are_readopted_after_a_switch_to_host_mode(
    tmp_path: Path, ray_address: str
) -> None:
    data = tmp_path / "data"
    first = await open_runtime(data, ray_crew(ray_address))  # actor mode
    s = await first.spawn(SpawnRequest(label="host-switch", argv=py(COUNTER)))
    await wait_for(lambda: "line 3\n" in stdout_of(first, s.key), 60, "running in its actor")
    await first.stop()
    second = await open_runtime(data, host_crew(ray_address))
    try:
        assert second.sessions[s.key].state == SessionState.RUNNING and s.key in second.launcher.handles
        new = await second.spawn(SpawnRequest(label="host-switch-new", argv=py(ECHO_AGENT)))
        await running(second, new.key)
        assert not actor_exists(new.key, ray_address)  # new sessions run on the hosts
        await second.send(s.key, "quit")
        await ended(second, s.key)
        assert second.sessions[s.key].state == SessionState.DONE
        lines = [ln for ln in stdout_of(second, s.key).splitlines() if ln.startswith("line ")]
        assert lines == [f"line {i}" for i in range(1, len(lines) + 1)]
        assert second.sessions[s.key].result == {"lines": len(lines)}
    finally:
        await second.stop(kill_sessions=True)
