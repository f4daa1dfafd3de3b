"""The control channel of host mode: a session on a Ray node reaches the runtime through its host's socket.

The host serves one socket per session (`ray_relay.RelayPoint`); a request there rides the runtime's long poll
and is served by the control server *as that session* (`ControlServer.serve_as`). The first tests drive both
ends without Ray; the last ones run real sessions on a real local cluster whose `crewtui ctl` goes through the
relay (their `CREWTUI_SOCKET` is their host's socket, not the runtime's).
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from crewtui.config import CrewConfig
from crewtui.control.client import RemoteRuntime
from crewtui.control.host import RuntimeHost
from crewtui.errors import RuntimeUnavailable
from crewtui.model import SessionState, SpawnRequest
from crewtui.runtime.drivers.ray_relay import RelayPoint
from tests.conftest import PY, py, wait_for

pytestmark = pytest.mark.timeout(240)


def request(op: str, **args: object) -> bytes:
    return (json.dumps({"op": op, "args": args}) + "\n").encode()


# ------------------------------------------------------------------------------------------------ the host's end


async def test_the_gateway_doors_requests_ride_the_same_queue_as_their_own_kind() -> None:
    """A node's gateway door asks through the relay's queue (not a socket an agent can reach): taken with kind
    "gateway", answered like any request; one given up while the runtime serves it is reported cancelled."""
    point = RelayPoint(lambda owner: None)
    point.attach("me", "gen-1")
    asked = asyncio.create_task(point.ask("me", "s-1", b'{"op": "admit", "nonce": "n-1"}\n'))
    await wait_for(lambda: point.has_news("me"), 5, "the door's request held")
    ((rid, key, line, kind),), _ = point.take("me", "gen-1")
    assert (key, kind, json.loads(line)["op"]) == ("s-1", "gateway", "admit")
    point.answer([[rid, b'{"ok": true, "admitted": true}\n']])
    assert json.loads(await asked) == {"ok": True, "admitted": True}
    waiting = asyncio.create_task(point.ask("me", "s-1", b'{"op": "admit", "nonce": "n-2"}\n'))
    await wait_for(lambda: point.has_news("me"), 5, "the second held")
    ((rid, _, _, _),), _ = point.take("me", "gen-1")
    waiting.cancel()  # the agent behind it hung up
    await wait_for(lambda: point.has_news("me"), 5, "the cancel reported")
    assert point.take("me", "gen-1") == ([], [rid])


async def test_a_request_waits_on_the_host_until_the_runtime_answers_and_a_hangup_is_reported(tmp_path: Path) -> None:
    woke: list[str] = []
    point = RelayPoint(woke.append)
    sd = tmp_path / "s-1"
    sd.mkdir(mode=0o700)
    path = await point.serve("tag/s-1", "me", "s-1", sd)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    client = RemoteRuntime(path)
    point.attach("me", "gen-1")  # the runtime's first poll

    call = asyncio.create_task(client.call("list"))
    await wait_for(lambda: point.has_news("me"), 5, "the request held on the host")
    assert woke == ["me"] and not point.has_news("someone-else")
    (rid, key, line, kind), *more = point.take("me", "gen-1")[0]
    assert not more and key == "s-1" and json.loads(line)["op"] == "list" and kind == "ctl"
    assert not point.has_news("me")  # taken once
    assert point.answer([[rid, b'{"ok": true, "result": []}\n']]) == 1
    assert await call == []

    # A client that hangs up mid-wait is reported, so the runtime stops waiting on its behalf.
    _, writer = await asyncio.open_unix_connection(path)
    writer.write(request("yield"))
    await writer.drain()
    await wait_for(lambda: point.has_news("me"), 5, "the yield held")
    ((rid, _, _, _),), _ = point.take("me", "gen-1")
    writer.close()
    await wait_for(lambda: point.has_news("me"), 5, "the hang-up reported")
    assert point.take("me", "gen-1") == ([], [rid])

    # Taken by a runtime that went away before answering: the next runtime's poll fails it in one line, and
    # the earlier runtime's poll (still waiting out its time on the host) takes nothing more.
    call = asyncio.create_task(client.call("info"))
    await wait_for(lambda: point.has_news("me"), 5, "the request held")
    point.take("me", "gen-1")
    point.attach("me", "gen-2")
    with pytest.raises(RuntimeUnavailable, match="restarted while serving this request; ask again"):
        await call
    call = asyncio.create_task(client.call("info"))
    await wait_for(lambda: point.has_news("me"), 5, "the request held")
    assert point.take("me", "gen-1") == ([], [])
    ((rid, _, _, _),), _ = point.take("me", "gen-2")
    point.leave("me", "gen-2")  # a runtime that stops: what it took fails, what comes next waits
    with pytest.raises(RuntimeUnavailable, match="stopped while serving this request; ask again"):
        await call
    assert point.take("me", "gen-2") == ([], [])
    point.attach("me", "gen-3")

    # A session that ends closes its socket; a client still waiting is told so.
    call = asyncio.create_task(client.call("acquire", pool="p"))
    await wait_for(lambda: point.has_news("me"), 5, "the request held")
    point.close("tag/s-1")
    with pytest.raises(RuntimeUnavailable, match="has ended"):
        await call
    assert not Path(path).exists()


# ------------------------------------------------------------------------------------------------ the runtime's end


async def test_a_relayed_request_is_served_as_the_session_it_came_from(tmp_path: Path) -> None:
    host = RuntimeHost(tmp_path / "data")
    orch = await host.start()
    assert host.server is not None and orch.drivers.relay == host.server.serve_as
    serve_as = host.server.serve_as
    try:
        sleeper = py("import time; time.sleep(600)")
        me = await orch.spawn(SpawnRequest(label="relay-me", argv=sleeper))
        other = await orch.spawn(SpawnRequest(label="relay-other", argv=sleeper))

        async def ask(op: str, **args: object) -> dict:
            reply: dict = json.loads(await serve_as(me.key, request(op, **args)))
            return reply

        # Spawn: the parent is the caller (or one of its descendants), never another session.
        kid = await ask("spawn", label="relay-kid", argv=sleeper)
        assert kid["ok"] and kid["result"]["parent"] == me.key
        bad = await ask("spawn", label="relay-kid-2", argv=sleeper, parent=other.key)
        assert not bad["ok"] and "refused to session relay-me" in bad["error"]["message"]
        assert "relay-kid-2" not in {s.label for s in await orch.list()}
        grandkid = await ask("spawn", label="relay-grandkid", argv=sleeper, parent="relay-kid")
        assert grandkid["ok"] and grandkid["result"]["parent"] == kid["result"]["key"]

        # Acting on another session, or on the whole crew, is refused in one line; nothing changes.
        for op, args in (
            ("kill", {"ref": other.key}),
            ("kill", {"prefix": "relay-"}),
            ("send", {"ref": "relay-other", "text": "hi"}),
            ("sweep", {}),
            ("cron_remove", {"name": "x"}),
            ("yield", {"parent": other.key}),
            ("yield", {"children": ["relay-grandkid"]}),  # not its own child
            ("watch", {}),
        ):
            reply = await ask(op, **args)
            assert not reply["ok"], (op, reply)
            assert "\n" not in reply["error"]["message"] and "refused to session relay-me" in reply["error"]["message"]
        assert orch.sessions[other.key].state == SessionState.RUNNING

        # Reading is allowed; its own descendants it may steer and kill.
        listed = await ask("list")
        assert listed["ok"] and len(listed["result"]) == 4
        assert (await ask("ping"))["result"] == "pong"
        killed = await ask("kill", ref="relay-grandkid")
        assert killed["ok"] and orch.sessions[grandkid["result"]["key"]].state == SessionState.KILLED

        # A yield blocks until the child ends; cancelling the call (the client hung up) stops the wait.
        waiting = asyncio.create_task(serve_as(me.key, request("yield")))
        await wait_for(lambda: orch.sessions[me.key].state == SessionState.YIELDED, 10, "yielded")
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        await host.stop(kill_sessions=True)


# ------------------------------------------------------------------------------------------------ on Ray

PARENT = textwrap.dedent(
    """
    import json, os, subprocess, sys
    def ctl(*args):
        p = subprocess.run([sys.executable, "-m", "crewtui", "ctl", *args], capture_output=True, text=True, timeout=120)
        return p.returncode, p.stdout.strip(), p.stderr.strip().replace("\\n", " | ")
    print("socket", os.environ["CREWTUI_SOCKET"], flush=True)
    other = sys.argv[1]
    print("kill-other", *ctl("kill", other, "--yes")[::2], flush=True)
    print("spawn-as-other", *ctl("spawn", "--label", "relay-bad", "--parent", other, "--", sys.executable, "-V")[::2], flush=True)
    kid = "import json; print(json.dumps({'pages': 7}))"
    print("spawned", *ctl("spawn", "--label", "relay-kid", "--", sys.executable, "-c", kid)[::2], flush=True)
    code, out, err = ctl("yield")
    print("yielded", code, err, flush=True)
    print(out, flush=True)
    """
)

GIVES_UP = textwrap.dedent(
    """
    import subprocess, sys, time
    ctl = [sys.executable, "-m", "crewtui", "ctl"]
    slow = [sys.executable, "-c", "import time; time.sleep(600)"]
    subprocess.run([*ctl, "spawn", "--label", "relay-slow", "--", *slow], check=True, capture_output=True)
    p = subprocess.Popen([*ctl, "yield"])
    time.sleep(float(sys.argv[1]))
    p.kill()
    p.wait()
    print("gave up", flush=True)
    time.sleep(600)
    """
)

WAITER = textwrap.dedent(
    """
    import os, subprocess, sys, time
    print("waiting", flush=True)
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.05)
    p = subprocess.run([sys.executable, "-m", "crewtui", "ctl", "info"], capture_output=True, text=True, timeout=120)
    print("asked", p.returncode, p.stderr.strip(), flush=True)
    print(p.stdout.replace("\\n", " "), flush=True)
    """
)


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e '.[ray]')")
    from tests.raycluster import local_cluster

    with local_cluster() as address:
        yield address


def host_crew(address: str) -> CrewConfig:
    from tests.test_ray import ray_crew

    return ray_crew(address, mode="host")


def stdout_of(host: RuntimeHost, key: str) -> str:
    return (host.data_dir.session_dir(key) / "stdout.log").read_text()


@pytest.mark.ray
async def test_a_session_spawns_and_yields_on_a_child_through_its_hosts_socket(
    tmp_path: Path, ray_address: str
) -> None:
    host = RuntimeHost(tmp_path / "data", host_crew(ray_address))
    orch = await host.start()
    try:
        other = await orch.spawn(SpawnRequest(label="relay-other", argv=py("import time; time.sleep(600)")))
        parent = await orch.spawn(SpawnRequest(label="relay-parent", argv=[PY, "-c", PARENT, other.key]))
        await wait_for(lambda: orch.sessions[parent.key].state.terminal, 120, "the parent ended")
        out = stdout_of(host, parent.key)
        s = orch.sessions[parent.key]
        assert s.state == SessionState.DONE, (s.reason, out)
        sock = out.split("socket ", 1)[1].split("\n", 1)[0]
        assert sock != str(host.data_dir.socket) and sock.endswith(f"/{parent.key}/ctl.sock"), sock
        # It cannot act as another session: each refusal is one line, and nothing happened.
        lines = {ln.split(" ", 1)[0]: ln for ln in out.splitlines()}
        assert lines["kill-other"].startswith("kill-other 2 ") and "refused" in lines["kill-other"], out
        assert lines["spawn-as-other"].startswith("spawn-as-other 2 ") and "refused" in lines["spawn-as-other"], out
        assert orch.sessions[other.key].state == SessionState.RUNNING
        assert "relay-bad" not in {x.label for x in await orch.list()}
        # Its child was spawned under it, and the yield brought back the child's result.
        assert lines["spawned"].strip() == "spawned 0", out
        assert lines["yielded"].strip() == "yielded 0", out
        (kid,) = [x for x in await orch.list() if x.label == "relay-kid"]
        assert kid.parent == parent.key and kid.driver == "ray"
        assert s.result["type"] == "yield_result"
        assert [c["result"] for c in s.result["children"]] == [{"pages": 7}]
    finally:
        await host.stop(kill_sessions=True)


@pytest.mark.ray
async def test_a_request_made_while_the_runtime_restarts_waits_for_the_next_runtime(
    tmp_path: Path, ray_address: str
) -> None:
    data, flag = tmp_path / "data", tmp_path / "ask-now"
    first = RuntimeHost(data, host_crew(ray_address))
    orch = await first.start()
    s = await orch.spawn(SpawnRequest(label="relay-waiter", argv=[PY, "-c", WAITER, str(flag)]))
    await wait_for(lambda: "waiting" in stdout_of(first, s.key), 60, "the session started")
    await first.stop()  # the runtime goes away; the host and the session run on
    flag.touch()  # the session asks now: its request waits on its host
    await asyncio.sleep(2.0)
    second = RuntimeHost(data, host_crew(ray_address))
    orch = await second.start()
    try:
        await wait_for(lambda: orch.sessions[s.key].state.terminal, 60, "the session got its answer and ended")
        out = stdout_of(second, s.key)
        assert "asked 0" in out and f'"pid": {os.getpid()}' in out, out
        assert orch.sessions[s.key].state == SessionState.DONE
    finally:
        await second.stop(kill_sessions=True)


@pytest.mark.ray
async def test_an_agent_that_hangs_up_on_a_relayed_yield_cancels_it(tmp_path: Path, ray_address: str) -> None:
    host = RuntimeHost(tmp_path / "data", host_crew(ray_address))
    orch = await host.start()
    try:
        s = await orch.spawn(SpawnRequest(label="relay-quitter", argv=[PY, "-c", GIVES_UP, "4"]))
        await wait_for(lambda: orch.sessions[s.key].state == SessionState.YIELDED, 60, "yielded through the relay")
        await wait_for(lambda: "gave up" in stdout_of(host, s.key), 30, "the agent hung up")
        # The runtime stopped waiting on its behalf: the session runs again, its child untouched.
        await wait_for(lambda: orch.sessions[s.key].state == SessionState.RUNNING, 10, "the yield cancelled")
        (slow,) = [x for x in await orch.list() if x.label == "relay-slow"]
        assert slow.parent == s.key and slow.state == SessionState.RUNNING
        assert not any(link.serving for link in orch.drivers.ray.links.values())  # type: ignore[union-attr]
    finally:
        await host.stop(kill_sessions=True)
