"""The orchestrator with real processes and a real store: every verb, every state transition, every refusal."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import textwrap
from pathlib import Path

import pytest

from crewtui.errors import BadInput, Conflict, NotFound
from crewtui.events import SessionOutput, SessionStateChanged
from crewtui.model import SessionState, SpawnRequest
from crewtui.runtime.drivers import CallableContext
from crewtui.store import Store
from tests.conftest import ECHO_AGENT, PY, SLEEPER, STUBBORN, crew_from, pid_alive, py, result_prog, wait_for

S = SessionState


def store_rows(data_dir) -> dict[str, str]:
    con = sqlite3.connect(data_dir.store)
    try:
        return dict(con.execute("select key, state from sessions").fetchall())
    finally:
        con.close()


async def test_spawn_runs_to_done_with_result_and_store_agrees(orch, data_dir):
    s = await orch.spawn(SpawnRequest(label="blog-publisher-superada", argv=result_prog({"words": 900})))
    assert s.key.startswith("s-") and s.state == S.RUNNING and s.shim_pid and s.agent_pid
    assert Path(s.output_dir) == data_dir.session_dir(s.key)
    done = await orch.wait_ended(s.key, timeout=10)
    assert done.state == S.DONE and done.exit_code == 0 and done.result == {"words": 900}
    await orch.flush()
    assert store_rows(data_dir)[s.key] == "done"
    states = [e.new for e in await orch.events() if isinstance(e, SessionStateChanged) and e.session == s.key]
    assert states == [S.RUNNING, S.DONE]


async def test_nonzero_exit_is_failed_with_stderr_reason(orch):
    s = await orch.spawn(
        SpawnRequest(label="scout-1", argv=py("import sys; print('oops', file=sys.stderr); sys.exit(3)"))
    )
    end = await orch.wait_ended(s.key, timeout=10)
    assert end.state == S.FAILED and end.exit_code == 3
    assert "exit code 3" in end.reason and "oops" in end.reason


async def test_steer_reaches_stdin_and_history_shows_it(orch):
    s = await orch.spawn(SpawnRequest(label="writer-a", argv=py(ECHO_AGENT)))
    await orch.send("writer-a", "make it shorter")
    await orch.send(s.key, "add a title")
    await wait_for(lambda: orch.sessions[s.key].last_line == "steered: add a title", what="steer echo")
    h = await orch.history("writer-a", tail=10)
    assert h.lines[-2:] == ["steered: make it shorter", "steered: add a title"]
    await orch.send(s.key, "quit")
    end = await orch.wait_ended(s.key, timeout=10)
    assert end.state == S.DONE and end.result == {"steered": ["make it shorter", "add a title"]}
    with pytest.raises(Conflict, match="has ended"):
        await orch.send(s.key, "too late")


async def test_steer_refusals_change_nothing(orch):
    s = await orch.spawn(SpawnRequest(label="writer-b", argv=py(ECHO_AGENT)))
    with pytest.raises(BadInput, match="64 KiB"):
        await orch.send(s.key, "x" * (64 * 1024 + 1))
    with pytest.raises(BadInput, match="one line"):
        await orch.send(s.key, "two\nlines")
    with pytest.raises(BadInput, match="empty"):
        await orch.send(s.key, "")
    with pytest.raises(NotFound, match="no-such"):
        await orch.send("no-such", "hi")
    await asyncio.sleep(0.2)
    h = await orch.history(s.key)
    assert not any(line.startswith("steered:") for line in h.lines)


@pytest.mark.parametrize("label", ["", "Upper", "-leading-dash", "has space", "a/b", "..", "x" * 129, "émoji"])
async def test_invalid_labels_are_refused(orch, data_dir, label):
    with pytest.raises(BadInput, match="invalid label"):
        await orch.spawn(SpawnRequest(label=label, argv=py("pass")))
    await orch.flush()
    assert store_rows(data_dir) == {}


async def test_duplicate_live_label_names_the_holder_then_frees_on_end(orch):
    a = await orch.spawn(SpawnRequest(label="ads-auditor", argv=py(ECHO_AGENT)))
    with pytest.raises(Conflict, match=a.key):
        await orch.spawn(SpawnRequest(label="ads-auditor", argv=py("pass")))
    await orch.send(a.key, "quit")
    await orch.wait_ended(a.key, timeout=10)
    b = await orch.spawn(SpawnRequest(label="ads-auditor", argv=py("pass")))
    assert b.key != a.key
    assert (await orch.get("ads-auditor")).key == b.key  # a label names its live (or newest) session


async def test_domains_are_exclusive_until_the_holder_ends(orch):
    a = await orch.spawn(SpawnRequest(label="w-1", argv=py(ECHO_AGENT), domain="article:superada"))
    with pytest.raises(Conflict, match=rf"article:superada.*{a.key} \(w-1\)"):
        await orch.spawn(SpawnRequest(label="w-2", argv=py("pass"), domain="article:superada"))
    other = await orch.spawn(SpawnRequest(label="w-3", argv=py("pass"), domain="article:openclaw"))
    assert other.state == S.RUNNING
    await orch.kill(a.key)
    again = await orch.spawn(SpawnRequest(label="w-2", argv=py("pass"), domain="article:superada"))
    assert again.domain == "article:superada"


async def test_bad_argv_is_refused_and_nothing_is_recorded(orch, data_dir):
    with pytest.raises(BadInput, match="empty"):
        await orch.spawn(SpawnRequest(label="x", argv=[]))
    with pytest.raises(BadInput, match="no-such-program-xyz"):
        await orch.spawn(SpawnRequest(label="x", argv=["no-such-program-xyz", "a"]))
    with pytest.raises(NotFound, match="unknown agent 'ghost'"):
        await orch.spawn(SpawnRequest(label="x", agent="ghost"))
    with pytest.raises(BadInput, match="nothing to run"):
        await orch.spawn(SpawnRequest(label="x"))
    await orch.flush()
    assert store_rows(data_dir) == {}
    assert list(data_dir.sessions_root.iterdir()) == []


async def test_agent_from_crew_gets_task_as_one_argv_element(make_orch):
    crew = crew_from(
        f"""
        [crew]
        name = "t"
        [agents.argv]
        command = [{json.dumps(PY)}, "-c", "import json,sys; print(json.dumps(sys.argv[1:]))", "--task", "{{task}}"]
        """
    )
    orch = await make_orch(crew)
    task = 'Write "SuperAda"; rm -rf /tmp/nope $(touch pwned)'
    s = await orch.spawn(SpawnRequest(label="argv-check", agent="argv", task=task))
    end = await orch.wait_ended(s.key, timeout=10)
    assert end.result == ["--task", task]
    assert not Path(end.output_dir, "pwned").exists()


async def test_kill_takes_the_process_group_and_records_killed(orch, data_dir):
    s = await orch.spawn(SpawnRequest(label="hung-1", argv=py(SLEEPER)))
    assert pid_alive(s.agent_pid)
    killed = await orch.kill("hung-1")
    assert [k.state for k in killed] == [S.KILLED]
    assert not pid_alive(s.agent_pid) and not pid_alive(s.shim_pid)
    await orch.flush()
    assert store_rows(data_dir)[s.key] == "killed"
    with pytest.raises(Conflict, match="already ended"):
        await orch.kill(s.key)


async def test_kill_escalates_to_sigkill_after_grace(orch):
    s = await orch.spawn(SpawnRequest(label="stubborn", argv=py(STUBBORN)))
    await wait_for(lambda: orch.sessions[s.key].last_line == "ignoring SIGTERM", what="SIGTERM ignored")
    await orch.kill(s.key)
    assert orch.sessions[s.key].state == S.KILLED
    assert not pid_alive(s.agent_pid)


async def test_kill_cascades_to_descendants_and_prefix_kills_a_group(orch):
    parent = await orch.spawn(SpawnRequest(label="research-lead", argv=py(SLEEPER)))
    child = await orch.spawn(SpawnRequest(label="research-scout-1", argv=py(SLEEPER), parent=parent.key))
    grandchild = await orch.spawn(SpawnRequest(label="research-scout-1-sub", argv=py(SLEEPER), parent=child.key))
    other = await orch.spawn(SpawnRequest(label="blog-1", argv=py(SLEEPER)))
    await orch.kill(parent.key)
    for k in (parent.key, child.key, grandchild.key):
        assert orch.sessions[k].state == S.KILLED
    assert "parent" in orch.sessions[grandchild.key].reason
    assert orch.sessions[other.key].state == S.RUNNING
    b2 = await orch.spawn(SpawnRequest(label="blog-2", argv=py(SLEEPER)))
    killed = await orch.kill(prefix="blog-")
    assert sorted(k.key for k in killed) == sorted([other.key, b2.key])
    with pytest.raises(NotFound, match="blog-"):
        await orch.kill(prefix="blog-")


async def test_depth_and_fan_out_limits(make_orch):
    orch = await make_orch(crew_from("[crew]\nname='t'\nmax_spawn_depth = 1\nmax_children = 2\n"))
    root = await orch.spawn(SpawnRequest(label="root", argv=py(SLEEPER)))
    c1 = await orch.spawn(SpawnRequest(label="c1", argv=py(SLEEPER), parent=root.key))
    assert c1.depth == 1
    with pytest.raises(Conflict, match="max_spawn_depth 1"):
        await orch.spawn(SpawnRequest(label="gc", argv=py(SLEEPER), parent=c1.key))
    await orch.spawn(SpawnRequest(label="c2", argv=py(SLEEPER), parent="root"))
    with pytest.raises(Conflict, match="max_children 2"):
        await orch.spawn(SpawnRequest(label="c3", argv=py(SLEEPER), parent=root.key))


async def test_yield_waits_without_polling_and_returns_all_results(orch):
    parent = await orch.spawn(SpawnRequest(label="lead", argv=py(ECHO_AGENT)))
    a = await orch.spawn(SpawnRequest(label="lead-scout-a", argv=result_prog({"found": "a"}), parent=parent.key))
    b = await orch.spawn(SpawnRequest(label="lead-scout-b", argv=py(ECHO_AGENT), parent=parent.key))
    waiting = asyncio.create_task(orch.yield_(parent=parent.key))
    await wait_for(lambda: orch.sessions[parent.key].state == S.YIELDED, what="parent yielded")
    # a may already have ended: its result is still part of the message
    assert sorted(orch.sessions[parent.key].yield_on) == sorted([a.key, b.key])
    await asyncio.sleep(0.3)
    assert not waiting.done()  # b still runs
    await orch.send(b.key, "quit")
    out = await asyncio.wait_for(waiting, 10)
    by_key = {c.key: c for c in out.children}
    assert by_key[a.key].result == {"found": "a"} and by_key[a.key].state == S.DONE
    assert by_key[b.key].result == {"steered": []}
    assert orch.sessions[parent.key].state == S.RUNNING


async def test_yield_no_wait_pushes_results_to_parent_stdin(orch):
    parent_prog = textwrap.dedent(
        """
        import json, sys
        print("yielding", flush=True)
        msg = json.loads(sys.stdin.readline())
        print(json.dumps({"woke_with": msg}), flush=True)
        """
    )
    parent = await orch.spawn(SpawnRequest(label="lead2", argv=py(parent_prog)))
    kid = await orch.spawn(SpawnRequest(label="lead2-kid", argv=result_prog({"n": 1}), parent=parent.key))
    assert await orch.yield_(children=[kid.key], parent=parent.key, wait=False) is None
    end = await orch.wait_ended(parent.key, timeout=10)
    woke = end.result["woke_with"]
    assert woke["type"] == "yield_result" and woke["children"][0]["result"] == {"n": 1}


async def test_yield_refusals(orch):
    lone = await orch.spawn(SpawnRequest(label="lone", argv=py(SLEEPER)))
    with pytest.raises(BadInput, match="no children left"):
        await orch.yield_(parent=lone.key)
    with pytest.raises(BadInput, match="--children"):
        await orch.yield_()
    with pytest.raises(NotFound):
        await orch.yield_(children=["nope"])
    assert orch.sessions[lone.key].state == S.RUNNING


async def test_cancelled_yield_returns_parent_to_running(orch):
    parent = await orch.spawn(SpawnRequest(label="p", argv=py(SLEEPER)))
    await orch.spawn(SpawnRequest(label="p-kid", argv=py(SLEEPER), parent=parent.key))
    t = asyncio.create_task(orch.yield_(parent=parent.key))
    await wait_for(lambda: orch.sessions[parent.key].state == S.YIELDED, what="yielded")
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    assert orch.sessions[parent.key].state == S.RUNNING


async def test_pending_queue_under_concurrency_cap_is_fifo(make_orch):
    orch = await make_orch(crew_from("[crew]\nname='t'\nmax_concurrent = 1\n"))
    first = await orch.spawn(SpawnRequest(label="q-1", argv=py(ECHO_AGENT)))
    second = await orch.spawn(SpawnRequest(label="q-2", argv=py(ECHO_AGENT)))
    third = await orch.spawn(SpawnRequest(label="q-3", argv=py("pass")))
    assert first.state == S.RUNNING
    assert (second.state, second.queue_position) == (S.PENDING, 1)
    assert (third.state, third.queue_position) == (S.PENDING, 2)
    with pytest.raises(Conflict, match="not started yet"):
        await orch.send(second.key, "hello")
    await orch.kill(third.key)  # a pending session is killed without ever starting
    assert orch.sessions[third.key].state == S.KILLED and orch.sessions[third.key].shim_pid is None
    await orch.send(first.key, "quit")
    await wait_for(lambda: orch.sessions[second.key].state == S.RUNNING, what="queued session starts")
    assert orch.sessions[second.key].queue_position is None


async def test_session_whose_process_vanishes_is_lost(orch):
    s = await orch.spawn(SpawnRequest(label="vanisher", argv=py(SLEEPER)))
    os.killpg(s.shim_pid, signal.SIGKILL)  # no exit record: the shim dies with the agent
    end = await orch.wait_ended(s.key, timeout=10)
    assert end.state == S.LOST


async def test_restart_readopts_live_sessions_records_exits_and_marks_lost(make_orch, data_dir):
    orch = await make_orch()
    live = await orch.spawn(SpawnRequest(label="survivor", argv=py(ECHO_AGENT)))
    finisher = await orch.spawn(SpawnRequest(label="finisher", argv=py(ECHO_AGENT)))
    vanisher = await orch.spawn(SpawnRequest(label="vanisher", argv=py(SLEEPER)))
    await orch.stop(kill_sessions=False)  # the dashboard goes away; the crew does not
    assert pid_alive(live.agent_pid)
    # While no runtime watches: one session ends normally, one vanishes without a trace.
    os.kill(finisher.agent_pid, signal.SIGTERM)
    await wait_for(lambda: (data_dir.session_dir(finisher.key) / "exit.json").exists(), what="exit.json")
    os.killpg(vanisher.shim_pid, signal.SIGKILL)
    await wait_for(lambda: not pid_alive(vanisher.shim_pid), what="vanisher gone")

    orch2 = await make_orch()
    started = [e for e in await orch2.events() if e.kind == "runtime_started"][-1]
    assert (started.readopted, started.recorded_exits, started.lost) == (1, 1, 1)
    assert orch2.sessions[live.key].state == S.RUNNING
    assert orch2.sessions[finisher.key].state == S.FAILED  # SIGTERM: exit 143
    assert orch2.sessions[vanisher.key].state == S.LOST
    # The re-adopted session is fully ours again: steer it, see its output, end it.
    await orch2.send("survivor", "still there?")
    await wait_for(lambda: orch2.sessions[live.key].last_line == "steered: still there?", what="steer after restart")
    await orch2.send(live.key, "quit")
    end = await orch2.wait_ended(live.key, timeout=10)
    assert end.state == S.DONE and end.result == {"steered": ["still there?"]}


async def test_store_restores_every_session_exactly(make_orch, data_dir):
    orch = await make_orch()
    s = await orch.spawn(SpawnRequest(label="exact", argv=result_prog({"nested": {"a": [1, 2.5, None]}}), domain="d:1"))
    await orch.wait_ended(s.key, timeout=10)
    before = {k: v.model_copy(deep=True) for k, v in orch.sessions.items()}
    await orch.stop()
    store = await Store.open(data_dir.store)
    try:
        after = {s.key: s for s in await store.load_sessions()}
    finally:
        await store.close()
    assert after == before


async def test_registry_is_written_only_by_the_runtime_and_loses_nothing(make_orch, tmp_path, data_dir):
    crew = crew_from("[crew]\nname='t'\nmax_concurrent = 60\nregistry = 'registry.json'\n")
    orch = await make_orch(crew)
    gate = tmp_path / "go"
    prog = f"import json, os, time\nwhile not os.path.exists({str(gate)!r}): time.sleep(0.01)\nprint(json.dumps({{'by': os.environ['CREWTUI_SESSION_LABEL']}}))"
    keys = []
    for i in range(30):
        s = await orch.spawn(SpawnRequest(label=f"article-{i}", argv=py(prog), domain=f"article:{i}"))
        keys.append(s.key)
    gate.write_text("")  # all thirty finish at once
    await asyncio.gather(*(orch.wait_ended(k, timeout=20) for k in keys))
    reg = await orch.registry()
    assert reg == {f"article:{i}": {"by": f"article-{i}"} for i in range(30)}
    assert json.loads((data_dir.root / "registry.json").read_text()) == reg


async def test_registry_absent_is_a_clear_error(orch):
    with pytest.raises(NotFound, match="registry"):
        await orch.registry()


async def test_callable_sessions_return_steer_and_fail(make_orch):
    async def agent(ctx: CallableContext) -> dict:
        ctx.output("thinking")
        msg = await ctx.next_message()
        ctx.output(f"steered: {msg}")
        return {"got": msg}

    async def broken(ctx: CallableContext) -> None:
        raise RuntimeError("model error")

    orch = await make_orch(callables={"thinker": agent, "broken": broken})
    s = await orch.spawn(SpawnRequest(label="thinker-1", agent="thinker"))
    await orch.send(s.key, "go")
    end = await orch.wait_ended(s.key, timeout=5)
    assert end.state == S.DONE and end.result == {"got": "go"}
    assert (await orch.history(s.key)).lines == ["thinking", "steered: go"]
    bad = await orch.spawn(SpawnRequest(label="broken-1", agent="broken"))
    assert (await orch.wait_ended(bad.key, timeout=5)).state == S.FAILED


async def test_event_log_is_gapless_and_output_is_streamed(orch):
    sub = orch.watch()
    s = await orch.spawn(SpawnRequest(label="chatty", argv=py("for i in range(5): print('line', i, flush=True)")))
    await orch.wait_ended(s.key, timeout=10)
    seqs = [e.seq for e in await orch.events()]
    assert seqs == list(range(1, len(seqs) + 1))
    seen = []
    while not sub.queue.empty():
        seen.append(sub.queue.get_nowait())
    lines = [ln for e in seen if isinstance(e, SessionOutput) for ln in e.lines]
    assert lines == [f"line {i}" for i in range(5)]
    sub.close()


async def test_yielded_parent_can_be_killed_with_its_children(orch):
    parent = await orch.spawn(SpawnRequest(label="y-parent", argv=py(SLEEPER)))
    kid = await orch.spawn(SpawnRequest(label="y-kid", argv=py(SLEEPER), parent=parent.key))
    waiting = asyncio.create_task(orch.yield_(parent=parent.key))
    await wait_for(lambda: orch.sessions[parent.key].state == S.YIELDED, what="yielded")
    await orch.kill(parent.key)
    assert orch.sessions[parent.key].state == S.KILLED and orch.sessions[kid.key].state == S.KILLED
    out = await asyncio.wait_for(waiting, 5)  # the waiter is answered, not left hanging
    assert out.children[0].state == S.KILLED


async def test_a_launch_failure_is_the_sessions_failure_not_the_runtimes(orch, monkeypatch):
    async def broken_start(*args, **kwargs):
        raise OSError("fork failed: resource temporarily unavailable")

    monkeypatch.setattr(orch.drivers.process, "start", broken_start)
    s = await orch.spawn(SpawnRequest(label="unlucky", argv=py("pass")))
    assert s.state == S.FAILED and "could not start" in s.reason and "fork failed" in s.reason
    monkeypatch.undo()
    ok = await orch.spawn(SpawnRequest(label="lucky", argv=py("pass")))
    assert ok.state == S.RUNNING


async def test_user_retry_starts_a_new_attempt_with_the_same_key_and_label(orch):
    s = await orch.spawn(SpawnRequest(label="flaky", argv=py("import sys; print('try'); sys.exit(2)")))
    await orch.wait_ended(s.key, timeout=10)
    again = await orch.retry("flaky")
    assert (again.key, again.label, again.attempt) == (s.key, "flaky", 2)
    end = await orch.wait_ended(s.key, timeout=10)
    assert end.state == S.FAILED and end.attempt == 2
    assert (orch.data_dir.session_dir(s.key) / "tries" / "1" / "stdout.log").read_text() == "try\n"
    done = await orch.spawn(SpawnRequest(label="fine", argv=py("pass")))
    await orch.wait_ended(done.key, timeout=10)
    with pytest.raises(Conflict, match="done"):
        await orch.retry(done.key)
    live = await orch.spawn(SpawnRequest(label="busy", argv=py(SLEEPER)))
    with pytest.raises(Conflict, match="still running"):
        await orch.retry(live.key)
