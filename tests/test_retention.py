"""Retention: ended sessions leave the runtime's memory once nothing needs them there, and every reader finds
them in the store exactly as they were, so memory stays flat however many sessions a crew runs."""

from __future__ import annotations

import json
import textwrap

import pytest

from crewtui.clock import FakeClock
from crewtui.errors import BadInput, Conflict, StoreError
from crewtui.model import SessionState, SpawnRequest
from crewtui.runtime.drivers import CallableContext
from tests.conftest import PY, SLEEPER, STUBBORN, crew_from, wait_for

S = SessionState
KEEP = 5
BOUND = KEEP + max(1, KEEP // 10)  # an eviction pass starts once this many ended sessions are in memory


async def work(ctx: CallableContext) -> dict:
    ctx.output(f"working on {ctx.label}")
    if ctx.label.startswith("bad"):
        raise RuntimeError("model error")
    return {"label": ctx.label}


async def hold(ctx: CallableContext) -> dict:
    """Runs until steered: `ok` ends it done, anything else fails it."""
    msg = await ctx.next_message()
    if msg != "ok":
        raise RuntimeError(msg)
    return {"msg": msg}


AGENTS = {"work": work, "hold": hold}


async def run_one(orch, label: str, **kw):
    s = await orch.spawn(SpawnRequest(label=label, agent="work", **kw))
    return await orch.wait_ended(s.key, timeout=10)


async def fill(orch, n: int, prefix: str = "filler") -> None:
    """n sessions that start and end, pushing older ended ones out of memory."""
    for i in range(n):
        await run_one(orch, f"{prefix}-{i}")


def per_session_maps(orch) -> dict[str, int]:
    """Every runtime structure that holds something per session."""
    holders = {
        "sessions": orch.table.sessions,
        "_ended": orch.table.ended,
        "_ended_order": orch.retention.ended_order,
        "_children": orch.table.children,
        "_yielded_on": orch.table.yielded_on,
        "_env_extra": orch.launcher.env_extra,
        "_handles": orch.launcher.handles,
        "_waiters": orch.launcher.waiters,
        "_launching": orch.launcher.launching,
        "_killing": orch.launcher.killing,
        "_queue": orch.launcher.queue,
        "_dirty_offsets": orch.tailer.dirty_offsets,
        "_following": orch.tailer.following,
    }
    out = {name: len(held) for name, held in holders.items()}
    out["_yielded_on (values)"] = sum(len(v) for v in orch.table.yielded_on.values())
    out["_children (values)"] = sum(len(v) for v in orch.table.children.values())
    out["labels"], out["domains"] = len(orch.table.labels), len(orch.table.domains)
    out["watcher"] = len(orch.tailer.watcher._key_wd) + len(orch.tailer.watcher._wd_key)
    if orch.scheduler is not None:
        out["watchdogs"] = len(orch.scheduler._watchdogs)
        out["open_runs"] = len(orch.scheduler.open_runs)
        out["timer heap"] = len(orch.scheduler._heap)
    return out


async def test_ended_sessions_leave_memory_and_every_reader_still_finds_them(make_orch):
    orch = await make_orch(callables=AGENTS, keep_ended=KEEP)
    before, history = {}, {}
    for i in range(30):
        end = await run_one(orch, f"{'bad' if i % 3 == 0 else 'good'}-{i}")
        before[end.key] = end.model_dump()  # read while still in memory
        history[end.key] = (await orch.history(end.key)).model_dump()
    await wait_for(lambda: len(orch.sessions) <= BOUND, what="ended sessions to leave memory")
    evicted = [k for k in before if k not in orch.sessions]
    assert len(evicted) >= 30 - BOUND

    for key in evicted:
        label = before[key]["label"]
        assert (await orch.get(key)).model_dump() == before[key]
        assert (await orch.get(label)).model_dump() == before[key]
        assert (await orch.history(label)).model_dump() == history[key] != {}
        assert (await orch.wait_ended(key, timeout=1)).model_dump() == before[key]
        with pytest.raises(Conflict, match="has already ended"):
            await orch.kill(key)
        with pytest.raises(Conflict, match="has ended"):
            await orch.send(label, "hello")
        with pytest.raises(Conflict, match="has ended"):
            await orch.spawn(SpawnRequest(label=f"child-of-{label}", agent="work", parent=key))
    assert {s.key: s.model_dump() for s in await orch.list()} == before
    assert [s.key for s in await orch.list(prefix="bad-")] == sorted(
        k for k in before if before[k]["label"].startswith("bad-")
    )
    assert [s.key for s in await orch.list(state=S.DONE)] == sorted(k for k in before if before[k]["state"] == "done")

    # A retry brings an evicted session back: same key and label, the next attempt, running again.
    bad = next(k for k in evicted if before[k]["label"].startswith("bad-"))
    good = next(k for k in evicted if before[k]["label"].startswith("good-"))
    with pytest.raises(Conflict, match="is done; there is nothing to retry"):
        await orch.retry(good)
    again = await orch.retry(before[bad]["label"])
    assert (again.key, again.attempt) == (bad, 2) and bad in orch.sessions
    end = await orch.wait_ended(bad, timeout=10)
    assert end.state == S.FAILED and end.attempt == 2
    assert (await orch.get(bad)).attempt == 2
    # A new session may take an evicted session's label; the label then means the new one.
    newer = await run_one(orch, before[good]["label"])
    assert (await orch.get(before[good]["label"])).key == newer.key != good


async def test_a_family_leaves_memory_together_and_comes_back_for_a_retry(make_orch):
    orch = await make_orch(callables=AGENTS, keep_ended=KEEP)
    parent = await orch.spawn(SpawnRequest(label="parent", agent="hold"))
    kids = [(await run_one(orch, f"kid-{i}", parent=parent.key)).key for i in range(3)]
    bad_kid = (await run_one(orch, "bad-kid", parent=parent.key)).key
    family = {*kids, bad_kid}
    await fill(orch, 20)
    # The parent lives: its ended children stay, since its yield, children count and cascade read them.
    assert all(k in orch.sessions for k in family)
    got = await orch.yield_(parent=parent.key)
    assert {c.key: c.state for c in got.children} == {**{k: S.DONE for k in kids}, bad_kid: S.FAILED}

    await orch.send(parent.key, "fail")
    assert (await orch.wait_ended(parent.key, timeout=5)).state == S.FAILED
    await fill(orch, 20, prefix="more")
    await wait_for(lambda: parent.key not in orch.sessions, what="the family to leave memory")
    assert not any(k in orch.sessions for k in family) and parent.key not in orch.table.children
    assert [s.key for s in await orch.list(prefix="kid-")] == sorted(kids)

    # A child cannot be retried while its parent has ended, in memory or not.
    with pytest.raises(Conflict, match=r"parent .* has ended"):
        await orch.retry(bad_kid)
    again = await orch.retry(parent.key)
    assert again.attempt == 2 and again.state == S.RUNNING
    assert orch.table.children[parent.key] == family and all(k in orch.sessions for k in family)
    # The earlier attempt's children were handed over: a bare yield now waits for new children only.
    with pytest.raises(BadInput, match="no children left"):
        await orch.yield_(parent=parent.key)
    new_kid = await run_one(orch, "kid-new", parent=parent.key)
    got = await orch.yield_(parent=parent.key)
    assert [c.key for c in got.children] == [new_kid.key]
    # Explicit children may be long evicted ones: their stored end is delivered at once.
    await orch.send(parent.key, "ok")
    await orch.wait_ended(parent.key, timeout=5)
    await fill(orch, 20, prefix="last")
    await wait_for(lambda: parent.key not in orch.sessions, what="the family to leave memory again")
    got = await orch.yield_(children=kids)
    assert [c.key for c in got.children] == kids and all(
        c.result == {"label": f"kid-{i}"} for i, c in enumerate(got.children)
    )


async def test_sessions_a_watchdog_or_an_open_run_still_needs_stay_in_memory(make_orch):
    clock = FakeClock()
    crew = crew_from(
        textwrap.dedent(f"""
        [crew]
        name = "t"
        [agents.pick]
        command = [{json.dumps(PY)}, "-c", "import sys,time; time.sleep(600) if sys.argv[1] == 'hang' else None", "{{task}}"]
        [[cron]]
        name = "pair"
        schedule = {{ kind = "every", every = "1h" }}
        spawn = {{ agent = "pick", label = "pair-{{item}}-{{run}}", task = "{{item}}", items = ["quick", "hang"] }}
    """)
    )
    orch = await make_orch(crew, clock=clock, callables=AGENTS, keep_ended=KEEP)
    # A failed session with attempts left: its watchdog will retry it, so it stays.
    flaky = await run_one(orch, "bad-flaky", watchdog_after=60, max_attempts=2)
    # A run whose second session still runs: the first one's end is part of the run's counts.
    run = await orch.cron_trigger("pair")
    quick, hang = run.sessions
    await orch.wait_ended(quick, timeout=10)
    await fill(orch, 20)
    await wait_for(lambda: len(orch.retention.ended_order) <= BOUND + 2, what="eviction")
    assert flaky.key in orch.sessions and quick in orch.sessions

    await clock.advance(61)
    await wait_for(lambda: orch.sessions[flaky.key].attempt == 2, what="the watchdog to retry the failed session")
    await orch.wait_ended(flaky.key, timeout=5)
    await orch.kill(hang)
    closed = (await orch.runs("pair"))[0]
    assert closed.final and closed.counts["done"] == 1 and closed.counts["killed"] == 1 and closed.rate == 0.5
    await fill(orch, 20, prefix="more")
    await wait_for(lambda: quick not in orch.sessions, what="the closed run's sessions to leave memory")
    assert (await orch.runs("pair"))[0].model_dump() == closed.model_dump()
    assert (await orch.get(quick)).state == S.DONE and (await orch.get(hang)).state == S.KILLED


async def test_nothing_leaves_memory_while_the_store_cannot_take_writes(make_orch, monkeypatch):
    orch = await make_orch(callables=AGENTS, keep_ended=KEEP)

    async def failing_flush() -> None:
        raise StoreError("store x: write failed, 3 records kept for retry: database or disk is full")

    monkeypatch.setattr(orch.store, "flush", failing_flush)
    await fill(orch, 20)
    assert len(orch.sessions) == 20  # their last state may not be in the store: memory is the only copy
    monkeypatch.undo()
    await fill(orch, 2, prefix="after")
    await wait_for(lambda: len(orch.sessions) <= BOUND, what="eviction once the store takes writes")
    assert len(await orch.list()) == 22


async def test_a_restarted_runtime_keeps_only_what_it_needs_in_memory(make_orch):
    first = await make_orch(callables=AGENTS)
    ended = {}
    for i in range(30):
        s = await run_one(first, f"r-{i}")
        ended[s.key] = s.model_dump()
    live = await first.spawn(SpawnRequest(label="still-running", argv=[PY, "-c", SLEEPER]))
    await first.stop()
    second = await make_orch(callables=AGENTS, keep_ended=KEEP)
    await wait_for(lambda: len(second.sessions) <= BOUND + 1, what="the loaded ended sessions to leave memory")
    assert second.sessions[live.key].state == S.RUNNING  # re-adopted, and kept
    listed = {s.key: s.model_dump() for s in await second.list()}
    assert {k: listed[k] for k in ended} == ended and listed[live.key]["state"] == "running"


async def test_per_session_state_stays_bounded_over_hundreds_of_sessions(make_orch):
    """Every map the runtime keeps per session, over 600 sessions of every shape: parents with children and
    yields, sessions killed while queued (with extra env), failures."""
    crew = crew_from("[crew]\nname = 't'\nmax_concurrent = 2\n")
    orch = await make_orch(crew, callables=AGENTS, keep_ended=KEEP)
    peak: dict[str, int] = {}
    for i in range(150):
        a = await orch.spawn(SpawnRequest(label=f"a-{i}", agent="hold"))
        await run_one(orch, f"{'bad' if i % 2 else 'c'}-{i}", parent=a.key)
        d = await orch.spawn(SpawnRequest(label=f"d-{i}", agent="hold"))
        b = await orch.spawn(SpawnRequest(label=f"b-{i}", agent="work", env={"EXTRA": "x" * 100}))
        assert b.state == S.PENDING  # the crew cap of 2 is reached
        await orch.kill(b.key)
        await orch.yield_(parent=a.key)
        await orch.send(a.key, "ok")
        await orch.send(d.key, "fail")
        await orch.wait_ended(a.key, timeout=5)
        await orch.wait_ended(d.key, timeout=5)
        await wait_for(lambda: orch.retention.task is None, what="the eviction pass")  # it runs beside, not inline
        for name, n in per_session_maps(orch).items():
            peak[name] = max(peak.get(name, 0), n)
    assert max(peak.values()) <= BOUND, peak  # without retention: 600 sessions, 150 parents, 150 extra envs
    assert len(await orch.list()) == 600


async def test_a_mass_kill_waits_for_sessions_that_leave_memory_while_it_runs(make_orch):
    # Real processes that take a while to die: the first ones end, and are evicted, while the kill still waits on
    # the rest. The kill must wait on what it held, not look the ended ones up again.
    orch = await make_orch(keep_ended=KEEP)  # kill_grace 0.5 s: the stubborn one holds the kill up that long
    keys = [(await orch.spawn(SpawnRequest(label=f"mass-{i}", argv=[PY, "-c", SLEEPER]))).key for i in range(40)]
    keys.append((await orch.spawn(SpawnRequest(label="mass-stubborn", argv=[PY, "-c", STUBBORN]))).key)
    await wait_for(lambda: all(orch.sessions[k].last_line for k in keys), what="every session to print")
    killed = await orch.kill(prefix="mass-")
    assert sorted(s.key for s in killed) == sorted(keys)
    await wait_for(lambda: len(orch.sessions) <= BOUND, what="killed sessions to leave memory")
    assert {s.state for s in await orch.list(prefix="mass-")} == {S.KILLED}
