"""Tests of the SQLite store: exact round trips, batching, filters, migrations, refusal of bad files, write failures.

Every test uses a real database file under tmp_path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiosqlite
import pytest

import crewtui.store.schema as store_mod
from crewtui.errors import StoreError
from crewtui.events import Event, RuntimeStarted, SessionOutput, SessionSpawned, SessionStateChanged, SystemEvent
from crewtui.model import Session, SessionState
from crewtui.store import APPLICATION_ID, Store, current_version

T0 = 1_775_116_800.0


def make_session(key: str, label: str, **fields: object) -> Session:
    base: dict[str, object] = {"key": key, "label": label, "created_at": T0, "updated_at": T0}
    base.update(fields)
    return Session(**base)


def varied_sessions() -> list[Session]:
    return [
        make_session("s-01", "blog-publisher-superada-2026-04-02"),
        make_session(
            "s-02",
            "blog-publisher-openclaw-guide-2026-04-02",
            state=SessionState.DONE,
            attempt=2,
            max_attempts=3,
            agent="writer",
            task="Write «openclaw» guide\nwith a newline",
            argv=["python", "-m", "crewtui.agents.demo", "--task", "a b 'c'"],
            parent="s-01",
            depth=1,
            domain="article:openclaw-guide",
            pool="model-a",
            cron_run="run-7",
            watchdog_after=900.0,
            started_at=T0 + 0.1,
            ended_at=T0 + 123.456789012345,
            updated_at=T0 + 123.456789012345,
            exit_code=0,
            result={
                "words": 1234,
                "score": 0.1 + 0.2,
                "tiny": 1e-300,
                "ratio": 1.0,
                "nested": {"list": [1, 2.5, None, True, "x"], "empty": {}, "none": None},
                "unicode": "naïve ☃",
            },
            reason="finished",
            output_dir="/data/sessions/s-02",
            stdout_offset=4096,
            last_output_at=T0 + 120.0,
            last_line='{"done": true}',
        ),
        make_session(
            "s-03",
            "sweep_stale-1",
            state=SessionState.YIELDED,
            shim_pid=1234,
            agent_pid=1235,
            shim_start=987654321,
            agent_start=987654322,
            yield_on=["s-04", "s-05"],
            result=[1, [2, [3]]],
        ),
        make_session("s-04", "child-a", state=SessionState.PENDING, queue_position=3, result="plain string"),
        make_session("s-05", "child-b", state=SessionState.LOST, exit_code=-9, result=0, node="node-1"),
    ]


def make_events(n: int, start: int = 1, session: str | None = None) -> list[Event]:
    return [
        SessionOutput(seq=seq, ts=T0 + seq / 1000, session=session, label="x", lines=[f"line {seq}"], nbytes=7)
        for seq in range(start, start + n)
    ]


def file_bytes(path: Path) -> bytes:
    return path.read_bytes()


@pytest.fixture(autouse=True)
async def close_leftover_stores() -> AsyncIterator[None]:
    """Close every store a test opened, even when an assertion failed before its close.

    An open aiosqlite connection keeps a non-daemon thread alive, which would hang pytest at exit.
    """
    opened: list[Store] = []
    real_open = Store.open.__func__  # type: ignore[attr-defined]

    async def recording_open(cls: type[Store], path: Path, **kw: object) -> Store:
        s = await real_open(cls, path, **kw)
        opened.append(s)
        return s

    # Its own MonkeyPatch, so a test calling monkeypatch.undo() keeps this one.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Store, "open", classmethod(recording_open))
        yield
    for s in opened:
        if not s._closed:
            try:
                await s.close()
            except StoreError:
                pass


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "crewtui.db")
    yield s
    await s.close()


# ---------------------------------------------------------------------------------------------- round trips


async def test_reopen_restores_sessions_exactly(tmp_path: Path) -> None:
    path = tmp_path / "crewtui.db"
    sessions = varied_sessions()
    store = await Store.open(path)
    for s in reversed(sessions):
        store.put_session(s)
    await store.close()

    store = await Store.open(path)
    try:
        loaded = await store.load_sessions()
        assert loaded == sessions  # ordered by key, every field equal
        assert loaded[1].result["score"] == 0.1 + 0.2
        assert await store.get_session("s-02") == sessions[1]
        assert await store.get_session("s-99") is None
        assert store.path == path
    finally:
        await store.close()


async def test_new_db_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "crewtui.db"
    store = await Store.open(path)
    await store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_put_session_stores_a_copy(store: Store) -> None:
    s = make_session("s-01", "a", result={"n": 1})
    store.put_session(s)
    s.state = SessionState.RUNNING
    s.result["n"] = 2
    await store.flush()
    got = await store.get_session("s-01")
    assert got is not None
    assert got.state is SessionState.PENDING
    assert got.result == {"n": 1}


async def test_upsert_updates_in_place(tmp_path: Path) -> None:
    path = tmp_path / "crewtui.db"
    store = await Store.open(path)
    s = make_session("s-01", "worker-1")
    store.put_session(s)
    await store.flush()
    store.put_session(s.model_copy(update={"state": SessionState.RUNNING, "updated_at": T0 + 1}))
    # Several upserts of one key in one batch: the last one wins.
    store.put_session(s.model_copy(update={"state": SessionState.DONE, "updated_at": T0 + 2, "result": {"ok": 1}}))
    await store.close()

    store = await Store.open(path)
    try:
        loaded = await store.load_sessions()
        assert len(loaded) == 1
        assert loaded[0].state is SessionState.DONE
        assert loaded[0].result == {"ok": 1}
        assert [x.key for x in await store.query_sessions(state=SessionState.DONE)] == ["s-01"]
        assert await store.query_sessions(state=SessionState.PENDING) == []
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT state, updated_at FROM sessions").fetchall() == [("done", T0 + 2)]


async def test_events_round_trip_in_order_with_filters(tmp_path: Path) -> None:
    path = tmp_path / "crewtui.db"
    events: list[Event] = [
        RuntimeStarted(seq=1, ts=T0, pid=42, data_dir="/d"),
        SessionSpawned(seq=2, ts=T0 + 1, session="s-01", label="a", parent=None, cron_run="r1"),
        SessionStateChanged(
            seq=3, ts=T0 + 2, session="s-01", label="a", old=SessionState.PENDING, new=SessionState.RUNNING
        ),
        SessionOutput(seq=4, ts=T0 + 3, session="s-02", label="b", stream="stderr", lines=["boom", ""], nbytes=5),
        SystemEvent(seq=5, ts=T0 + 4, text="cron fired", level="warning"),
        SessionStateChanged(
            seq=6,
            ts=T0 + 5,
            session="s-01",
            label="a",
            old=SessionState.RUNNING,
            new=SessionState.DONE,
            exit_code=0,
            reason="ok",
        ),
    ]
    store = await Store.open(path)
    # Appended out of order: reads come back in seq order all the same.
    for e in reversed(events):
        store.append_event(e)
    await store.close()

    store = await Store.open(path)
    try:
        assert await store.events() == events
        assert await store.events(since_seq=4) == events[4:]
        assert await store.events(session="s-01") == [events[1], events[2], events[5]]
        assert await store.events(since_seq=2, session="s-01") == [events[2], events[5]]
        assert await store.events(limit=2) == events[:2]
        assert await store.events(since_seq=1, session="s-01", limit=1) == [events[1]]
        assert await store.events(since_seq=6) == []
        assert await store.max_event_seq() == 6
    finally:
        await store.close()


async def test_max_event_seq_is_zero_when_empty(store: Store) -> None:
    assert await store.max_event_seq() == 0
    store.append_event(SystemEvent(seq=41, ts=T0, text="x"))
    store.append_event(SystemEvent(seq=7, ts=T0, text="y"))
    await store.flush()
    assert await store.max_event_seq() == 41


async def test_event_without_seq_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="seq"):
        store.append_event(SystemEvent(ts=T0, text="no seq"))


async def test_duplicate_seq_is_ignored(store: Store) -> None:
    store.append_event(SystemEvent(seq=1, ts=T0, text="first"))
    store.append_event(SystemEvent(seq=1, ts=T0, text="same batch duplicate"))
    await store.flush()
    store.append_event(SystemEvent(seq=1, ts=T0, text="replayed later"))
    store.append_event(SystemEvent(seq=2, ts=T0, text="second"))
    await store.flush()
    got = await store.events()
    assert [(e.seq, e.text) for e in got] == [(1, "first"), (2, "second")]  # type: ignore[union-attr]


async def test_batching_many_items_without_awaiting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "crewtui.db"
    store = await Store.open(path)
    batches: list[tuple[int, int]] = []
    real_write_batch = store.writer.write_batch

    async def counting_write_batch(
        session_rows: list[tuple[object, ...]], event_rows: list[tuple[object, ...]], execs: list = []
    ) -> None:
        batches.append((len(session_rows), len(event_rows)))
        await real_write_batch(session_rows, event_rows, execs)

    monkeypatch.setattr(store.writer, "write_batch", counting_write_batch)
    for e in make_events(5000, session="s-0001"):
        store.append_event(e)
    for i in range(500):
        store.put_session(make_session(f"s-{i:04d}", f"bulk-{i}", state=SessionState.RUNNING, updated_at=T0 + i))
    await store.flush()

    assert await store.max_event_seq() == 5000
    assert len(await store.events(session="s-0001")) == 5000
    assert len(await store.load_sessions()) == 500
    # Batches of about a thousand, not one transaction per item.
    assert sum(e for _, e in batches) == 5000 and sum(s for s, _ in batches) == 500
    assert 5 <= len(batches) <= 8
    await store.close()

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(store_mod.MIGRATIONS) == current_version()
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 5000


async def test_query_sessions_by_state_and_prefix(store: Store) -> None:
    for s in [
        make_session("s-1", "blog-a", state=SessionState.RUNNING),
        make_session("s-2", "blog-b", state=SessionState.DONE),
        make_session("s-3", "blogger-x", state=SessionState.RUNNING),
        make_session("s-4", "news-a", state=SessionState.RUNNING),
        make_session("s-5", "a_b-1", state=SessionState.DONE),
        make_session("s-6", "axb-1", state=SessionState.DONE),
    ]:
        store.put_session(s)
    await store.flush()

    async def keys(**kw: object) -> list[str]:
        return [s.key for s in await store.query_sessions(**kw)]  # type: ignore[arg-type]

    assert await keys() == ["s-1", "s-2", "s-3", "s-4", "s-5", "s-6"]
    assert await keys(state=SessionState.RUNNING) == ["s-1", "s-3", "s-4"]
    assert await keys(prefix="blog") == ["s-1", "s-2", "s-3"]
    assert await keys(prefix="blog-") == ["s-1", "s-2"]
    assert await keys(prefix="blog", state=SessionState.DONE) == ["s-2"]
    assert await keys(prefix="a_b") == ["s-5"]  # '_' is literal, not a wildcard
    assert await keys(prefix="BLOG") == []  # labels are lower case; no case folding
    assert await keys(prefix="zzz") == []


async def test_meta_get_and_set(tmp_path: Path) -> None:
    path = tmp_path / "crewtui.db"
    store = await Store.open(path)
    assert await store.get_meta("last_run") is None
    await store.set_meta("last_run", "1")
    await store.set_meta("last_run", "2")
    await store.set_meta("other", "")
    # Committed on return: visible to another connection at once.
    with sqlite3.connect(path) as conn:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    assert len(meta.pop("store_id")) == 32  # every store has an identity (schema v3)
    assert meta == {"last_run": "2", "other": ""}
    await store.close()
    store = await Store.open(path)
    try:
        assert await store.get_meta("last_run") == "2"
        assert await store.get_meta("other") == ""
    finally:
        await store.close()


async def test_closed_store_refuses_use(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "crewtui.db")
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.put_session(make_session("s-1", "a"))
    with pytest.raises(StoreError, match="closed"):
        await store.load_sessions()


async def test_empty_file_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "crewtui.db"
    path.write_bytes(b"")
    store = await Store.open(path)
    store.put_session(make_session("s-1", "a"))
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID


# ---------------------------------------------------------------------------------------------- bad files


def assert_one_line_naming(exc: StoreError, path: Path) -> None:
    text = str(exc)
    assert str(path) in text
    assert "\n" not in text
    assert "Traceback" not in text


async def test_text_file_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "crewtui.db"
    path.write_text("these are my notes, not a database\n" * 20)
    before = file_bytes(path)
    with pytest.raises(StoreError, match="is not a crewtui database") as info:
        await Store.open(path)
    assert_one_line_naming(info.value, path)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None or info.value.__suppress_context__
    assert file_bytes(path) == before


async def test_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "crewtui.db"
    path.mkdir()
    with pytest.raises(StoreError, match="directory") as info:
        await Store.open(path)
    assert_one_line_naming(info.value, path)


async def test_foreign_sqlite_db_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "crewtui.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE contacts (name TEXT, phone TEXT)")
        conn.execute("INSERT INTO contacts VALUES ('ada', '123')")
    conn.close()
    before = file_bytes(path)
    with pytest.raises(StoreError, match="is not a crewtui database") as info:
        await Store.open(path)
    assert_one_line_naming(info.value, path)
    assert file_bytes(path) == before


async def test_other_application_id_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "crewtui.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 0x46534C31")
    conn.execute("CREATE TABLE sessions (key TEXT)")  # same table name must not fool the check
    conn.commit()
    conn.close()
    before = file_bytes(path)
    with pytest.raises(StoreError, match=r"is not a crewtui database \(application id 0x46534c31") as info:
        await Store.open(path)
    assert_one_line_naming(info.value, path)
    assert file_bytes(path) == before


async def test_newer_schema_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "crewtui.db"
    store = await Store.open(path)
    store.put_session(make_session("s-1", "a"))
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 7")
    conn.commit()
    conn.close()
    before = file_bytes(path)
    with pytest.raises(StoreError) as info:
        await Store.open(path)
    assert str(info.value) == (
        f"{path} has schema version 7, newer than this crewtui supports ({current_version()}); upgrade crewtui"
    )
    assert file_bytes(path) == before


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A dir outside pytest's owner-only tmp tree, so a child that dropped root privileges can reach it."""
    d = Path(tempfile.mkdtemp(prefix="crewtui-store-test-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        for p in [d, *d.rglob("*")]:
            if not p.is_symlink():
                p.chmod(0o700 if p.is_dir() else 0o600)
        shutil.rmtree(d)


def open_without_privileges(path: Path) -> str:
    """Try Store.open in a forked child as an ordinary user; return "ok" or "ExceptionName: message".

    chmod does not stop root, so when the tests run as root the child drops to `nobody` first.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into pytest
        code = 0
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setresgid(65534, 65534, 65534)
                os.setresuid(65534, 65534, 65534)

            async def attempt() -> None:
                s = await Store.open(path)
                await s.close()

            try:
                asyncio.run(attempt())
                message = "ok"
            except BaseException as exc:  # report anything, the parent asserts on it
                message = f"{type(exc).__name__}: {exc}"
            os.write(write_end, message.encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return b"".join(chunks).decode()


def test_read_only_file_is_refused_unchanged(shared_dir: Path) -> None:
    path = shared_dir / "crewtui.db"

    async def make() -> None:
        s = await Store.open(path)
        s.put_session(make_session("s-1", "a"))
        await s.close()

    asyncio.run(make())
    shared_dir.chmod(0o777)
    path.chmod(0o444)
    before = file_bytes(path)
    outcome = open_without_privileges(path)
    assert outcome.startswith("StoreError: ")
    assert "not writable (read-only file)" in outcome and str(path) in outcome and "\n" not in outcome
    assert file_bytes(path) == before


def test_unwritable_dir_is_refused(shared_dir: Path) -> None:
    path = shared_dir / "crewtui.db"
    shared_dir.chmod(0o555)
    outcome = open_without_privileges(path)
    assert outcome.startswith("StoreError: ")
    assert "not writable" in outcome and str(path) in outcome and "\n" not in outcome
    assert not path.exists()


def test_existing_db_in_unwritable_dir_is_refused(shared_dir: Path) -> None:
    path = shared_dir / "crewtui.db"

    async def make() -> None:
        s = await Store.open(path)
        await s.close()

    asyncio.run(make())
    path.chmod(0o666)  # the file itself is writable; only the dir (where -wal must go) is not
    shared_dir.chmod(0o555)
    before = file_bytes(path)
    outcome = open_without_privileges(path)
    assert outcome.startswith("StoreError: ")
    assert "not writable: its directory" in outcome and str(path) in outcome
    assert file_bytes(path) == before


async def test_missing_parent_dir_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "crewtui.db"
    with pytest.raises(StoreError, match="does not exist") as info:
        await Store.open(path)
    assert_one_line_naming(info.value, path)
    assert not path.parent.exists()


# ---------------------------------------------------------------------------------------------- migrations


def make_v1_by_hand(path: Path, sessions: list[Session]) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(
        f"BEGIN; PRAGMA application_id = {APPLICATION_ID}; {store_mod.MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;"
    )
    conn.executemany(
        "INSERT INTO sessions (key, label, state, parent, cron_run, updated_at, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(s.key, s.label, s.state.value, s.parent, s.cron_run, s.updated_at, s.model_dump_json()) for s in sessions],
    )
    conn.execute(
        "INSERT INTO events (seq, ts, kind, session, data) VALUES (1, 0, 'system', NULL, ?)",
        (SystemEvent(seq=1, text="kept").model_dump_json(),),
    )
    conn.close()


async def test_migration_upgrades_and_keeps_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "crewtui.db"
    sessions = varied_sessions()
    make_v1_by_hand(path, sessions)

    async def add_cron_runs(db: aiosqlite.Connection) -> None:
        await db.execute("CREATE TABLE cron_runs (id TEXT PRIMARY KEY, job TEXT NOT NULL)")
        await db.execute("INSERT INTO cron_runs VALUES ('r1', 'blog')")

    v2 = "CREATE TABLE cron_jobs (name TEXT PRIMARY KEY, data TEXT NOT NULL)"
    monkeypatch.setattr(store_mod, "MIGRATIONS", [store_mod.MIGRATIONS[0], v2])
    store = await Store.open(path)
    try:
        assert await store.load_sessions() == sessions
        assert [e.seq for e in await store.events()] == [1]
    finally:
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM cron_jobs").fetchone()[0] == 0

    # A callable migration works the same way, from where the file is.
    monkeypatch.setattr(store_mod, "MIGRATIONS", [store_mod.MIGRATIONS[0], v2, add_cron_runs])
    store = await Store.open(path)
    await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        assert conn.execute("SELECT id, job FROM cron_runs").fetchall() == [("r1", "blog")]


async def test_failed_migration_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "crewtui.db"
    make_v1_by_hand(path, varied_sessions()[:1])
    broken = "CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1)"
    monkeypatch.setattr(store_mod, "MIGRATIONS", [store_mod.MIGRATIONS[0], broken])
    with pytest.raises(StoreError, match="from version 1 to 2 failed: no such table: no_such_table") as info:
        await Store.open(path)
    assert_one_line_naming(info.value, path)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "half_done" not in tables


# ---------------------------------------------------------------------------------------------- write failures


async def test_write_failure_surfaces_and_leaves_no_half_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "crewtui.db"
    store = await Store.open(path)
    real_executemany = store._db.executemany

    async def disk_full(sql: str, rows: object) -> object:
        if "INTO events" in sql:  # the session upserts of the batch have already run by now
            raise sqlite3.OperationalError("database or disk is full")
        return await real_executemany(sql, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(store._db, "executemany", disk_full)
    store.put_session(make_session("s-1", "a"))
    for e in make_events(10):
        store.append_event(e)
    with caplog.at_level(logging.ERROR, logger="crewtui.store"), pytest.raises(StoreError) as info:
        await store.flush()
    assert_one_line_naming(info.value, path)
    assert "database or disk is full" in str(info.value)
    assert any("database or disk is full" in r.getMessage() for r in caplog.records)

    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 0
    assert await store.load_sessions() == []

    # The failed items were kept: once the disk has room, the next flush writes them.
    monkeypatch.undo()
    await store.flush()
    assert [s.key for s in await store.load_sessions()] == ["s-1"]
    assert await store.max_event_seq() == 10
    await store.close()


async def test_close_raises_when_writes_still_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "crewtui.db"
    store = await Store.open(path)

    async def disk_full(sql: str, rows: object) -> object:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(store._db, "executemany", disk_full)
    store.put_session(make_session("s-1", "a"))
    store.append_event(SystemEvent(seq=1, text="x"))
    with pytest.raises(StoreError, match="closed with 2 records not written: database or disk is full") as info:
        await store.close()
    assert_one_line_naming(info.value, path)
    # The file was released: another open works and sees nothing of the failed batch.
    monkeypatch.undo()
    store = await Store.open(path)
    try:
        assert await store.load_sessions() == []
    finally:
        await store.close()


async def test_locked_database_makes_flush_raise(tmp_path: Path) -> None:
    path = tmp_path / "crewtui.db"
    store = await Store.open(path, busy_timeout_ms=50)
    blocker = sqlite3.connect(path, isolation_level=None, timeout=0.05)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        store.put_session(make_session("s-1", "a"))
        store.append_event(SystemEvent(seq=1, text="x"))
        with pytest.raises(StoreError, match="locked") as info:
            await store.flush()
        assert_one_line_naming(info.value, path)
        assert blocker.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await store.flush()
    assert [s.key for s in await store.load_sessions()] == ["s-1"]
    assert await store.max_event_seq() == 1
    await store.close()


async def test_unserialisable_record_is_dropped_not_retried_forever(store: Store) -> None:
    store.put_session(make_session("s-bad", "bad", result={"handle": object()}))
    store.put_session(make_session("s-good", "good"))
    with pytest.raises(StoreError, match="session s-bad") as info:
        await store.flush()
    assert_one_line_naming(info.value, store.path)
    # The good record of the same batch was written, and the bad one does not block later batches.
    store.append_event(SystemEvent(seq=1, text="later"))
    await store.flush()
    assert [s.key for s in await store.load_sessions()] == ["s-good"]
    assert await store.max_event_seq() == 1
