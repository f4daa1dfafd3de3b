"""A store that is locked by another writer, read-only, full or damaged, and a data dir claimed twice: every
case ends in one clear line, loses nothing already written and leaves no half state."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crewtui.errors import StoreError
from crewtui.events import SystemEvent
from crewtui.model import SessionState, SpawnRequest
from tests.faults.helpers import (
    ENV,
    PY,
    Headless,
    assert_events_contiguous,
    call,
    cli_main,
    fill_history,
    kill_group,
    kill_leftover_sessions,
    proc_alive,
    rows,
    run_as_nobody,
    wait_until,
)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "crewtui", *args], capture_output=True, text=True, timeout=timeout, env=ENV, stdin=subprocess.DEVNULL
    )


def one_line_error(p: subprocess.CompletedProcess[str], *needles: str) -> str:
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("crewtui: ") and "Traceback" not in p.stderr, p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def cleanup(h: Headless | None) -> None:
    if h is None or not h.alive():
        return
    for s in call(h.dd.socket, "list")["result"]:
        if s["state"] in ("running", "pending", "yielded"):
            call(h.dd.socket, "kill", ref=s["key"])
    h.stop()


# ------------------------------------------------------------------------------------------------ locked


def test_store_locked_by_another_writer_waits_then_says_so_and_loses_nothing(tmp_path: Path) -> None:
    d = tmp_path / "data"
    db = d / "crewtui.db"
    h = Headless(d)
    blocker = sqlite3.connect(db, isolation_level=None, timeout=0, check_same_thread=False)
    try:
        s0 = call(h.dd.socket, "spawn", label="before", argv=["sleep", "600"])["result"]

        # A short lock: the spawn waits for it (busy timeout), then succeeds.
        blocker.execute("BEGIN EXCLUSIVE")
        releaser = threading.Timer(1.0, lambda: blocker.execute("ROLLBACK"))
        releaser.start()
        t = time.monotonic()
        s1 = call(h.dd.socket, "spawn", timeout=30, label="short-lock", argv=["sleep", "600"])
        assert s1["ok"] and time.monotonic() - t >= 0.8, s1
        releaser.join()

        # A lock held past the busy timeout (5 s): the spawn happens, and the reply says it is not stored yet.
        blocker.execute("BEGIN EXCLUSIVE")
        t = time.monotonic()
        s2 = call(h.dd.socket, "spawn", timeout=30, label="long-lock", argv=["sleep", "600"])
        waited = time.monotonic() - t
        assert not s2["ok"] and s2["error"]["kind"] == "store" and waited >= 4, (s2, waited)
        msg = s2["error"]["message"]
        assert "spawn was done, but the store has not recorded it yet" in msg and "locked by another process" in msg
        assert "\n" not in msg
        # Meanwhile the runtime answers, from memory.
        t = time.monotonic()
        assert h.ping() and time.monotonic() - t < 1
        listed = {s["label"]: s for s in call(h.dd.socket, "list")["result"]}
        assert listed["long-lock"]["state"] == "running"
        # Nothing of it is in the file while the lock is held (no half batch), and everything after.
        blocker.execute("ROLLBACK")
        blocker.close()
        wait_until(
            lambda: rows(db, "SELECT count(*) FROM sessions WHERE label = 'long-lock'")[0][0] == 1,
            15,
            "the kept batch to be written",
        )
        stored = dict(rows(db, "SELECT label, state FROM sessions"))
        assert stored == {"before": "running", "short-lock": "running", "long-lock": "running"}
        assert s0["key"] in {r[0] for r in rows(db, "SELECT key FROM sessions")}
        cleanup(h)
        assert_events_contiguous(db)
    finally:
        try:
            blocker.close()
        except sqlite3.Error:
            pass
        cleanup(h)


def test_runtime_start_on_a_store_locked_by_another_writer_is_refused_in_one_line(tmp_path: Path) -> None:
    d = tmp_path / "data"
    db = d / "crewtui.db"
    Headless(d).stop()
    before = rows(db, "SELECT seq, data FROM events ORDER BY seq")
    blocker = sqlite3.connect(db, isolation_level=None, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        p = run_cli("run", "--headless", "--data-dir", str(d))
        one_line_error(p, str(db), "locked by another process")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert rows(db, "SELECT seq, data FROM events ORDER BY seq") == before
    assert not (d / "control.sock").exists()


# ------------------------------------------------------------------------------------------------ read-only


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A dir outside pytest's owner-only tmp tree, so a process running as `nobody` can reach it."""
    d = Path(tempfile.mkdtemp(prefix="crewtui-fault-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the runtime as another user")
def test_read_only_store_is_refused_in_one_line_and_left_unchanged(shared_dir: Path) -> None:
    d = shared_dir / "data"
    h = Headless(d)
    s = call(h.dd.socket, "spawn", label="kept", argv=["true"])["result"]
    h.stop()
    db = d / "crewtui.db"
    d.chmod(0o777)  # the dir is writable for everyone (lock, socket); only the store is read-only
    (d / "runtime.lock").chmod(0o666)
    db.chmod(0o444)
    before = db.read_bytes()
    code, out = run_as_nobody(cli_main("run", "--headless", "--data-dir", str(d)))  # root ignores chmod
    one_line_error(subprocess.CompletedProcess([], code, "", out), str(db), "not writable (read-only file)")
    assert db.read_bytes() == before
    assert rows(db, "SELECT key FROM sessions") == [(s["key"],)]


# ------------------------------------------------------------------------------------------------ full


def mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir()
    p = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], capture_output=True, text=True
    )
    return p.returncode == 0


def fill(fs: Path) -> Path:
    filler = fs / "filler"
    # Unbuffered: a buffered file would keep the part of a write that did not fit and raise ENOSPC at close.
    with open(filler, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def test_full_filesystem_says_so_keeps_every_record_and_recovers(tmp_path: Path) -> None:
    """A real full disk: the data dir on a 4 MB tmpfs, filled up while the runtime runs."""
    fs = tmp_path / "mnt"
    if not mount_tmpfs(fs, "4m"):
        pytest.skip("cannot mount a tmpfs here; test_full_store_simulated covers SQLITE_FULL")
    d = fs / "data"
    db = d / "crewtui.db"
    h: Headless | None = None
    try:
        h = Headless(d)
        before = call(h.dd.socket, "spawn", label="before", argv=["sleep", "600"])["result"]
        filler = fill(fs)

        full = call(h.dd.socket, "spawn", timeout=30, label="during", argv=["sleep", "600"])
        assert not full["ok"], full
        msg = full["error"]["message"]
        assert "database or disk is full" in msg and "not recorded it yet" in msg and "\n" not in msg, msg
        # The session could not even start (its shim cannot write pid.json), and says why.
        during = {s["label"]: s for s in call(h.dd.socket, "list")["result"]}["during"]
        assert during["state"] == "failed" and "could not start" in during["reason"], during
        assert h.ping()
        assert rows(db, "SELECT count(*) FROM sessions WHERE label = 'during'") == [(0,)]  # no half batch

        filler.unlink()
        after = call(h.dd.socket, "spawn", timeout=30, label="after", argv=["sleep", "600"])
        assert after["ok"], after
        wait_until(
            lambda: (
                dict(rows(db, "SELECT label, state FROM sessions"))
                == {"before": "running", "during": "failed", "after": "running"}
            ),
            15,
            "the kept records",
        )
        cleanup(h)
        h = Headless(d)  # and it starts again from what was kept
        assert {s["label"] for s in call(h.dd.socket, "list")["result"]} == {"before", "during", "after"}
        assert before["key"] in {s["key"] for s in call(h.dd.socket, "list")["result"]}
        cleanup(h)
        assert_events_contiguous(db)
    finally:
        cleanup(h)
        kill_leftover_sessions(d)
        subprocess.run(["umount", "-l", str(fs)], capture_output=True)


async def test_full_store_simulated(make_orch, data_dir, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLITE_FULL at COMMIT (where a full disk shows in WAL mode), for machines that cannot mount a tmpfs."""
    orch = await make_orch()
    before = await orch.spawn(SpawnRequest(label="before", argv=["sleep", "600"]))
    await orch.flush()
    real_execute = orch.store._db.execute

    async def disk_full(sql: str, *args: object) -> object:
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")
        return await real_execute(sql, *args)

    monkeypatch.setattr(orch.store._db, "execute", disk_full)
    during = await orch.spawn(SpawnRequest(label="during", argv=["sleep", "600"]))
    with pytest.raises(StoreError, match="database or disk is full") as info:
        await orch.flush()
    assert "\n" not in str(info.value) and "kept for retry" in str(info.value)
    assert rows(data_dir.store, "SELECT label FROM sessions") == [("before",)]  # rolled back, no half batch
    assert (await orch.get(during.key)).state == SessionState.RUNNING

    monkeypatch.undo()
    await orch.flush()
    assert sorted(rows(data_dir.store, "SELECT label FROM sessions")) == [("before",), ("during",)]
    await orch.kill(before.key)
    await orch.kill(during.key)
    await orch.flush()
    assert_events_contiguous(data_dir.store)


# ------------------------------------------------------------------------------------------------ damaged


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir whose store holds a few hundred KB: 80 ended sessions with 2 KB argvs, and their events."""
    d = tmp_path_factory.mktemp("populated") / "data"
    h = Headless(d)
    for i in range(80):
        call(h.dd.socket, "spawn", label=f"s-{i}", argv=["true", f"{i}-" + "x" * 2048])
    wait_until(lambda: all(s["state"] == "done" for s in call(h.dd.socket, "list")["result"]), 30, "all done")
    h.stop()
    return d


def damage_middle(db: Path) -> None:
    data = bytearray(db.read_bytes())
    pages = len(data) // 4096
    for page in range(pages // 2, pages // 2 + 3):
        data[page * 4096 : (page + 1) * 4096] = os.urandom(4096)
    db.write_bytes(bytes(data))


def damage_last(db: Path) -> None:
    data = bytearray(db.read_bytes())
    data[-4096:] = b"\xff" * 4096
    db.write_bytes(bytes(data))


def truncate_half(db: Path) -> None:
    with open(db, "r+b") as f:
        f.truncate((db.stat().st_size // 4096 // 2) * 4096)


@pytest.mark.parametrize("damage", [damage_middle, damage_last, truncate_half], ids=lambda f: f.__name__)
def test_damaged_store_is_refused_in_one_line_and_left_unchanged(populated: Path, tmp_path: Path, damage) -> None:
    d = tmp_path / "data"
    d.mkdir(mode=0o700)
    db = d / "crewtui.db"
    shutil.copyfile(populated / "crewtui.db", db)
    damage(db)
    before = db.read_bytes()
    p = run_cli("run", "--headless", "--data-dir", str(d))
    line = one_line_error(p, str(db), "is damaged", "left unchanged", ".recover")
    assert len(line) < 500
    assert db.read_bytes() == before
    assert not (d / "control.sock").exists()


async def test_a_store_too_big_to_check_before_the_start_is_checked_after_it_and_damage_is_said(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A year of history is a gigabyte: reading every page before the start would cost it seconds (20 s from disk).
    # Such a store is checked after the start, in the background; damage is then said on the timeline.
    from crewtui.runtime.orchestrator import Orchestrator
    from crewtui.store import schema

    d = tmp_path / "data"
    db = d / "crewtui.db"
    fill_history(d, 3000, span=86400)
    data = bytearray(db.read_bytes())  # pages of old sessions, which a start never reads
    pages = len(data) // 4096
    for page in range(pages // 5, pages // 5 + 3):
        data[page * 4096 : (page + 1) * 4096] = b"\x00\x01" * 2048
    db.write_bytes(bytes(data))
    monkeypatch.setattr(schema, "CHECK_AT_OPEN_BYTES", 0)  # "too big": every store, for this test
    orch = await Orchestrator.open(d)
    events = orch.watch()
    try:
        await orch.start()  # not refused: the check comes after
        said = None
        async with asyncio.timeout(30):
            async for event in events:
                if isinstance(event, SystemEvent) and event.level == "error":
                    said = event.text
                    break
        assert said is not None and str(db) in said and "is damaged" in said and ".recover" in said
    finally:
        await orch.stop()


# ------------------------------------------------------------------------------------------------ two runtimes


def test_second_runtime_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    d = tmp_path / "data"
    h = Headless(d)
    try:
        one_line_error(run_cli("run", "--headless", "--data-dir", str(d)), "already served", f"pid {h.pid}")
        assert h.ping()
    finally:
        h.stop()


FENCE_CREW = """
[crew]
name = "fence"

[[cron]]
name = "heartbeat"
schedule = { kind = "every", every = "1s" }
text = "still here"
"""


def test_runtime_that_lost_its_lock_is_fenced_off_by_the_lease_and_stops(tmp_path: Path) -> None:
    crew = tmp_path / "crew.toml"
    crew.write_text(FENCE_CREW)
    d = tmp_path / "data"
    db = d / "crewtui.db"
    a = Headless(d, crew)
    b: Headless | None = None
    try:
        s = call(a.dd.socket, "spawn", label="shared", argv=["sleep", "600"])["result"]
        assert rows(db, "SELECT value FROM meta WHERE key = 'lease_epoch'") == [("1",)]
        (d / "runtime.lock").unlink()  # the lock is lost: nothing stops a second runtime now
        b = Headless(d, crew)
        assert rows(db, "SELECT value FROM meta WHERE key = 'lease_epoch'") == [("2",)]

        # A's next write (its heartbeat job writes every second) meets lease 2: it stops writing and exits.
        a.proc.wait(timeout=15)
        err = a.proc.stderr.read()
        last = err.strip().splitlines()[-1]
        assert a.proc.returncode == 2 and last.startswith("crewtui: "), err
        assert "another runtime took over this data dir" in last and "stopped writing" in last, last
        # It left the session running for B, and B's socket in place.
        assert proc_alive(s["agent_pid"])
        assert call(d / "control.sock", "info")["result"]["pid"] == b.pid
        assert {x["key"]: x["state"] for x in call(d / "control.sock", "list")["result"]} == {s["key"]: "running"}
        # Nothing A did after B took over reached the store.
        started_b = max(r[0] for r in rows(db, "SELECT seq FROM events WHERE kind = 'runtime_started'"))
        late = [json.loads(r[0]) for r in rows(db, "SELECT data FROM events WHERE seq > ?", (started_b,))]
        assert not [e for e in late if e["kind"] == "runtime_stopped" and e["pid"] == a.pid]
        cleanup(b)
        assert_events_contiguous(db)
    finally:
        if a.alive():
            a.proc.kill()
        cleanup(b)
        kill_group(locals().get("s", {}).get("shim_pid"))


async def test_a_fenced_store_writes_nothing_more_and_says_why_once(tmp_path: Path) -> None:
    """The lease at store level: the older writer's batches, cron claims and meta writes are all refused."""
    from crewtui.events import SystemEvent
    from crewtui.model import Session
    from crewtui.store import Store

    path = tmp_path / "crewtui.db"
    old = await Store.open(path)
    assert await old.take_lease() == 1
    told: list[str] = []
    old.on_fenced = told.append
    old.append_event(SystemEvent(seq=1, text="before"))
    await old.flush()

    new = await Store.open(path)
    assert await new.take_lease() == 2
    now = time.time()
    old.put_session(Session(key="s-old", label="old", created_at=now, updated_at=now))
    old.append_event(SystemEvent(seq=2, text="after"))
    with pytest.raises(StoreError, match="another runtime took over this data dir \\(writer lease 2, ours 1\\)"):
        await old.flush()
    with pytest.raises(StoreError, match="another runtime took over"):
        await old.claim_cron_run("j#1", "j", 1.0, 1, "{}")
    with pytest.raises(StoreError, match="another runtime took over"):
        await old.set_meta("x", "y")
    old.append_event(SystemEvent(seq=3, text="later"))  # still accepted from the runtime, never written
    with pytest.raises(StoreError):
        await old.flush()
    assert len(told) == 1 and "stopped writing" in told[0] and "\n" not in told[0]
    await old.close()

    new.append_event(SystemEvent(seq=2, text="new owner"))
    assert await new.claim_cron_run("j#1", "j", 1.0, 1, "{}")
    await new.flush()
    assert [e.text for e in await new.events()] == ["before", "new owner"]  # type: ignore[attr-defined]
    assert await new.load_sessions() == []
    await new.close()


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_store_deleted_or_replaced_under_a_running_runtime_stops_it_and_kills_nothing(
    tmp_path: Path, how: str
) -> None:
    d = tmp_path / "data"
    db = d / "crewtui.db"
    a = Headless(d)
    b: Headless | None = None
    try:
        s = call(a.dd.socket, "spawn", label="answered", argv=["sleep", "600"])["result"]
        assert proc_alive(s["agent_pid"])
        if how == "deleted":
            for side in ("", "-wal", "-shm"):
                db.with_name(db.name + side).unlink(missing_ok=True)
        else:
            other = tmp_path / "other"
            Headless(other).stop()  # a store of another data dir, moved over this one
            os.replace(other / "crewtui.db", db)
            for side in ("-wal", "-shm"):
                db.with_name(db.name + side).unlink(missing_ok=True)
        # The runtime notices (at its next write, or its idle look within 5 s), stops writing and exits.
        a.proc.wait(timeout=20)
        err = a.proc.stderr.read()
        last = err.strip().splitlines()[-1]
        assert a.proc.returncode == 2 and "Traceback" not in err, err
        assert f"the store file was {how}" in last and "stopped writing" in last and "left running" in last, last
        assert proc_alive(s["agent_pid"])
        # A runtime on the new store never takes the old store's running session for a leftover of its own.
        b = Headless(d)
        assert proc_alive(s["agent_pid"]), "a runtime on a swapped store killed a session it was never told about"
        texts = [e["text"] for e in (call(d / "control.sock", "events")["result"]) if e["kind"] == "system"]
        assert any("another store launched them" in t and s["key"] in t for t in texts), texts
    finally:
        if b is not None:
            b.stop()
        a.stop()
        kill_leftover_sessions(d)
