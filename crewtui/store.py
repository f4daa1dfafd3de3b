"""The SQLite store: schema and migrations, a batched writer for sessions and events, and the queries.

The runtime calls `put_session` / `append_event` on every state change and output tick, so those only
enqueue; one writer task drains the queue and commits in batches (one transaction per batch, WAL mode), which
keeps a thousand chatty sessions cheap. Reads and rare direct writes go through the same single connection.

Every way the file can be unusable (not SQLite, another application's database, a newer schema, damaged, not
writable, a write that fails) surfaces as a one-line `StoreError` naming the file.

Fencing: the runtime that owns the data dir takes a lease (`take_lease`), a number bumped in the `meta` table.
Every write transaction first checks that the lease is still its own, so a runtime that lost its lock (the lock
file was deleted and another runtime started) writes nothing more: its next write finds the newer lease, and the
store stops writing and calls `on_fenced`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable, Container
from pathlib import Path
from typing import Any, Union

import aiosqlite

from crewtui.errors import StoreError
from crewtui.model import Event, Session, SessionState, event_from_json

log = logging.getLogger("crewtui.store")

# "CRWT": marks the file as ours, so another application's SQLite file is refused instead of migrated.
APPLICATION_ID = 0x43525754
_SQLITE_MAGIC = b"SQLite format 3\x00"
_MAX_BATCH = 1000
_RETRY_FIRST_DELAY = 0.5
_RETRY_MAX_DELAY = 10.0

# A migration is an SQL script or an async callable working on the open connection. The runner wraps each in
# its own transaction and bumps `user_version`, so a migration must not BEGIN/COMMIT itself.
Migration = Union[str, Callable[[aiosqlite.Connection], Awaitable[None]]]

_V1 = """
CREATE TABLE sessions (
    key TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    state TEXT NOT NULL,
    parent TEXT,
    cron_run TEXT,
    updated_at REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX sessions_label ON sessions(label);
CREATE INDEX sessions_state ON sessions(state);
CREATE INDEX sessions_parent ON sessions(parent);
CREATE INDEX sessions_cron_run ON sessions(cron_run);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    session TEXT,
    data TEXT NOT NULL
);
CREATE INDEX events_session ON events(session);
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# v2: the scheduler's state. Next fire times and runs are persisted, so a restart neither loses nor doubles
# a fire; a run is unique per (job, nominal fire time). Timers are one-shot (watchdogs) and survive restarts.
_V2 = """
CREATE TABLE cron_jobs (
    name TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE cron_runs (
    id TEXT PRIMARY KEY,
    job TEXT NOT NULL,
    nominal REAL NOT NULL,
    number INTEGER NOT NULL,
    final INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL,
    UNIQUE (job, nominal)
);
CREATE INDEX cron_runs_job ON cron_runs(job, number);
CREATE TABLE timers (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    due REAL NOT NULL,
    data TEXT NOT NULL
);
"""

# Index i migrates schema version i to i + 1; append to add one. Never edit a released entry.
MIGRATIONS: list[Migration] = [_V1, _V2]

_UPSERT_SESSION = """
INSERT INTO sessions (key, label, state, parent, cron_run, updated_at, data)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(key) DO UPDATE SET
    label = excluded.label,
    state = excluded.state,
    parent = excluded.parent,
    cron_run = excluded.cron_run,
    updated_at = excluded.updated_at,
    data = excluded.data
"""
# OR IGNORE keyed by seq: replaying events after a crash must not duplicate them.
_INSERT_EVENT = "INSERT OR IGNORE INTO events (seq, ts, kind, session, data) VALUES (?, ?, ?, ?, ?)"

_NOT_WRITABLE_ERRORS = {"SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH"}
LEASE_KEY = "lease_epoch"


class _Fenced(Exception):
    """A write found a newer lease than this store's: another runtime owns the data dir now."""

    def __init__(self, current: int) -> None:
        super().__init__(current)
        self.current = current


def current_version() -> int:
    """The schema version this code writes (read at call time, so tests can append a migration)."""
    return len(MIGRATIONS)


def _reason(exc: BaseException) -> str:
    """A short, single-line reason for an exception, without traceback or chained text."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text


def _error_name(exc: BaseException) -> str:
    return getattr(exc, "sqlite_errorname", "") or ""


class _Flush:
    """A marker in the write queue: its future resolves once the batch holding it has committed."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future


class _Stop:
    """The last item the writer takes: write what came before it, then exit."""

    __slots__ = ()


class _Exec:
    """A row write for the other tables (cron jobs, runs, timers), batched like sessions: the last write
    queued for the same `key` wins within a batch."""

    __slots__ = ("key", "sql", "params")

    def __init__(self, key: str, sql: str, params: tuple[Any, ...]) -> None:
        self.key = key
        self.sql = sql
        self.params = params


_QueueItem = Union[Session, Event, _Flush, _Stop, _Exec]


class Store:
    """One crewtui database file: batched writes of sessions and events, and the queries over them."""

    def __init__(self, path: Path, db: aiosqlite.Connection, busy_timeout_ms: int = 5000) -> None:
        # Use `Store.open`: the connection must be checked and migrated before the writer starts.
        self._path = path
        self._db = db
        self._busy_timeout_ms = busy_timeout_ms
        self._queue: asyncio.Queue[_QueueItem] = asyncio.Queue()
        # Serialises transactions on the one connection: without it a read or set_meta could run between
        # the writer's BEGIN and COMMIT, see a half batch, or be rolled back with it.
        self._lock = asyncio.Lock()
        # What a failed batch left behind, written first by the next attempt so nothing is lost.
        self._retry_sessions: dict[str, Session] = {}
        self._retry_events: list[Event] = []
        self._retry_execs: dict[str, _Exec] = {}
        self._last_error: str | None = None
        self._closed = False
        self._writer: asyncio.Task[None] | None = None
        self._lease: int | None = None  # this store's lease epoch, once taken
        self.fenced: str | None = None  # why writing stopped for good (another runtime took over)
        self.on_fenced: Callable[[str], None] | None = None

    # ------------------------------------------------------------------------------------------ opening

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_ms: int = 5000) -> "Store":
        """Open (creating if needed) the store at `path`; its parent dir must exist (DataDir.ensure).

        Raises StoreError, without touching the file, if it is not a crewtui database, has a newer schema
        than this code knows, or cannot be written.
        """
        path = Path(path)
        _check_header(path)
        _create_owner_only(path)
        try:
            db = await aiosqlite.connect(str(path), isolation_level=None)
        except sqlite3.Error as exc:
            raise _open_error(path, exc) from None
        try:
            await _prepare(path, db, busy_timeout_ms)
        except BaseException:
            await db.close()
            raise
        store = cls(path, db, busy_timeout_ms)
        store._writer = asyncio.create_task(store._write_loop(), name=f"crewtui-store-writer:{path.name}")
        return store

    @property
    def path(self) -> Path:
        return self._path

    async def close(self) -> None:
        """Write everything queued, stop the writer and close the database.

        Raises StoreError if the last writes failed; the connection is closed either way.
        """
        if self._closed:
            return
        failure: StoreError | None = None
        try:
            await self.flush()
        except StoreError as exc:
            failure = exc
        self._closed = True
        if self._writer is not None and not self._writer.done():
            # One last attempt at whatever a failed flush kept, then the writer exits.
            self._queue.put_nowait(_Stop())
            try:
                await self._writer
            except Exception:  # already logged by the writer; closing must still release the file
                pass
        await self._db.close()
        unwritten = len(self._retry_sessions) + len(self._retry_events)
        while not self._queue.empty():
            if not isinstance(self._queue.get_nowait(), (_Flush, _Stop)):
                unwritten += 1
        if unwritten:
            reason = self._last_error or (failure.message if failure else "the writer stopped")
            raise StoreError(f"store {self._path} closed with {unwritten} records not written: {reason}")

    # ------------------------------------------------------------------------------------------ writes

    def put_session(self, session: Session) -> None:
        """Queue an upsert of the session; a copy is queued, so the caller may keep mutating its own."""
        self._check_open()
        self._queue.put_nowait(session.model_copy(deep=True))

    def append_event(self, event: Event) -> None:
        """Queue an event; its `seq` (> 0) was assigned by the runtime."""
        self._check_open()
        if event.seq <= 0:
            raise ValueError(f"event {event.kind!r} has no seq assigned (seq={event.seq})")
        self._queue.put_nowait(event)

    async def flush(self) -> None:
        """Return once everything queued before this call is committed; raise StoreError if it was not."""
        if self._closed:
            return
        writer = self._writer
        if writer is None or writer.done():
            raise StoreError(f"store {self._path}: the writer has stopped ({self._last_error or 'no error recorded'})")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Flush(future))
        # If the writer dies while we wait, don't hang forever on a marker nobody will resolve.
        try:
            done, _ = await asyncio.wait({future, writer}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            future.cancel()  # so the writer skips it instead of leaving an unretrieved exception
            raise
        if future in done:
            future.result()
            return
        raise StoreError(f"store {self._path}: the writer has stopped ({self._last_error or 'no error recorded'})")

    # The scheduler's tables. Queued like sessions (one transaction per batch); `claim_cron_run` is the one
    # direct write, because a fire must be recorded before its batch is spawned or a crash could double it.

    def put_cron_job(self, name: str, source: str, data: str) -> None:
        self._check_open()
        self._queue.put_nowait(_Exec(f"job:{name}", "INSERT OR REPLACE INTO cron_jobs (name, source, data) VALUES (?, ?, ?)",
                                     (name, source, data)))

    def delete_cron_job(self, name: str) -> None:
        self._check_open()
        self._queue.put_nowait(_Exec(f"job:{name}", "DELETE FROM cron_jobs WHERE name = ?", (name,)))

    async def load_cron_jobs(self) -> list[tuple[str, str, str]]:
        """(name, source, data JSON) of every persisted job."""
        return [tuple(r) for r in await self._fetch("SELECT name, source, data FROM cron_jobs ORDER BY name")]

    async def claim_cron_run(self, run_id: str, job: str, nominal: float, number: int, data: str) -> bool:
        """Record a fire; False if that (job, nominal) fire was already recorded (never run it twice)."""
        self._check_open()
        await self.flush()  # keep order with what was queued before
        inserted = await self._direct_write(
            f"record cron run {run_id}",
            "INSERT OR IGNORE INTO cron_runs (id, job, nominal, number, final, data) VALUES (?, ?, ?, ?, 0, ?)",
            (run_id, job, nominal, number, data),
        )
        return inserted == 1

    def put_cron_run(self, run_id: str, final: bool, data: str) -> None:
        self._check_open()
        self._queue.put_nowait(_Exec(f"run:{run_id}", "UPDATE cron_runs SET final = ?, data = ? WHERE id = ?",
                                     (1 if final else 0, data, run_id)))

    async def load_cron_runs(self, job: str | None = None, limit: int | None = None, open_only: bool = False) -> list[str]:
        """Run data JSON, newest first."""
        sql = "SELECT data FROM cron_runs"
        clauses: list[str] = []
        params: list[str | int] = []
        if job is not None:
            clauses.append("job = ?")
            params.append(job)
        if open_only:
            clauses.append("final = 0")
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY nominal DESC, number DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [r[0] for r in await self._fetch(sql, params)]

    def put_timer(self, timer_id: str, kind: str, due: float, data: str) -> None:
        self._check_open()
        self._queue.put_nowait(_Exec(f"timer:{timer_id}", "INSERT OR REPLACE INTO timers (id, kind, due, data) VALUES (?, ?, ?, ?)",
                                     (timer_id, kind, due, data)))

    def delete_timer(self, timer_id: str) -> None:
        self._check_open()
        self._queue.put_nowait(_Exec(f"timer:{timer_id}", "DELETE FROM timers WHERE id = ?", (timer_id,)))

    async def load_timers(self) -> list[tuple[str, str, float, str]]:
        return [tuple(r) for r in await self._fetch("SELECT id, kind, due, data FROM timers ORDER BY due")]

    async def set_meta(self, key: str, value: str) -> None:
        """Write one bookkeeping value directly; committed when this returns."""
        await self._direct_write(f"write meta {key!r}", "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                 (key, value))

    async def _direct_write(self, what: str, sql: str, params: tuple[Any, ...]) -> int:
        """One statement outside the batches, in its own transaction behind the lease check; committed (or rolled
        back) when this returns. Returns the rows changed; failures raise one StoreError line (`could not {what}`)."""
        self._check_open()
        async with self._lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    await self._check_lease()
                    cur = await self._db.execute(sql, params)
                    await self._db.execute("COMMIT")
                except BaseException:
                    await _rollback(self._db)
                    raise
            except _Fenced as exc:
                raise self._fence(exc) from None
            except sqlite3.Error as exc:
                raise StoreError(f"store {self._path}: could not {what}: {_reason(exc)}") from None
        return cur.rowcount

    # ------------------------------------------------------------------------------------------ fencing

    async def take_lease(self) -> int:
        """Become the writer of this store: bump the lease epoch and return it. From now on every write checks
        that the epoch is still ours; a newer one (another runtime took over) fences this store off."""
        self._check_open()
        async with self._lock:
            try:
                await self._db.execute("BEGIN IMMEDIATE")
                try:
                    rows = await self._db.execute_fetchall("SELECT value FROM meta WHERE key = ?", (LEASE_KEY,))
                    epoch = _epoch(rows) + 1
                    await self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (LEASE_KEY, str(epoch)))
                    await self._db.execute("COMMIT")
                except BaseException:
                    await _rollback(self._db)
                    raise
            except sqlite3.Error as exc:
                if _error_name(exc).startswith("SQLITE_BUSY"):
                    raise StoreError(f"{self._path} is locked by another process (still busy after "
                                     f"{self._busy_timeout_ms} ms); is another program writing it?") from None
                raise StoreError(f"store {self._path}: could not take the writer lease: {_reason(exc)}") from None
        self._lease = epoch
        return epoch

    @property
    def lease(self) -> int | None:
        return self._lease

    async def _check_lease(self) -> None:
        """Inside a write transaction: raise _Fenced if the lease is no longer ours."""
        if self._lease is None:
            return
        current = _epoch(await self._db.execute_fetchall("SELECT value FROM meta WHERE key = ?", (LEASE_KEY,)))
        if current != self._lease:
            raise _Fenced(current)

    def _fence(self, exc: _Fenced) -> StoreError:
        """Stop writing for good; tell the owner once."""
        first = self.fenced is None
        if first:
            self.fenced = (
                f"store {self._path}: another runtime took over this data dir (writer lease {exc.current}, "
                f"ours {self._lease}); this runtime stopped writing"
            )
            log.error("%s", self.fenced)
        if first and self.on_fenced is not None and self.fenced is not None:
            try:
                self.on_fenced(self.fenced)
            except Exception:
                log.exception("on_fenced failed")
        return StoreError(self.fenced)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------ reads
    # Reads see committed data only; call flush() first to include what is still queued.

    async def load_sessions(self) -> list[Session]:
        rows = await self._fetch("SELECT data FROM sessions ORDER BY key")
        return [Session.model_validate_json(row[0]) for row in rows]

    async def get_session(self, key: str) -> Session | None:
        rows = await self._fetch("SELECT data FROM sessions WHERE key = ?", (key,))
        return Session.model_validate_json(rows[0][0]) if rows else None

    async def query_sessions(
        self,
        state: SessionState | None = None,
        prefix: str | None = None,
        *,
        label: str | None = None,
        parent: str | None = None,
        exclude: Container[str] = (),
    ) -> list[Session]:
        """Sessions in `state` (if given) whose label starts with `prefix` (if given), is `label` (if given) and
        whose parent is `parent` (if given), ordered by key. Rows whose key is in `exclude` are skipped unparsed
        (the runtime passes the sessions it holds in memory: its copy is newer)."""
        clauses: list[str] = []
        params: list[Any] = []
        if state is not None:
            clauses.append("state = ?")
            params.append(SessionState(state).value)
        if prefix:
            # A range instead of LIKE: LIKE treats '_' (legal in labels) as a wildcard and ignores case,
            # and a range can use the label index.
            clauses.append("label >= ? AND label < ?")
            params.extend([prefix, prefix + "\U0010ffff"])
        if label is not None:
            clauses.append("label = ?")
            params.append(label)
        if parent is not None:
            clauses.append("parent = ?")
            params.append(parent)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = await self._fetch(f"SELECT key, data FROM sessions{where} ORDER BY key", params)
        return [Session.model_validate_json(data) for key, data in rows if key not in exclude]

    async def max_event_seq(self) -> int:
        rows = await self._fetch("SELECT COALESCE(MAX(seq), 0) FROM events")
        return int(rows[0][0])

    async def events(self, since_seq: int = 0, session: str | None = None, limit: int | None = None) -> list[Event]:
        """Events with seq > since_seq (optionally of one session), in ascending seq, at most `limit`."""
        sql = "SELECT data FROM events WHERE seq > ?"
        params: list[Any] = [since_seq]
        if session is not None:
            sql += " AND session = ?"
            params.append(session)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(max(0, limit))
        rows = await self._fetch(sql, params)
        return [event_from_json(row[0]) for row in rows]

    async def events_since(self, ts: float, limit: int = 20_000) -> list[Event]:
        """Events at or after `ts` (the newest `limit`), in ascending seq: what a restarted timeline shows."""
        rows = await self._fetch(
            "SELECT data FROM (SELECT seq, data FROM events WHERE ts >= ? ORDER BY seq DESC LIMIT ?) ORDER BY seq",
            (ts, limit),
        )
        return [event_from_json(row[0]) for row in rows]

    async def get_meta(self, key: str) -> str | None:
        rows = await self._fetch("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    # ------------------------------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"store {self._path} is closed")

    async def _fetch(self, sql: str, params: Any = ()) -> list[Any]:
        self._check_open()
        async with self._lock:
            try:
                return list(await self._db.execute_fetchall(sql, params))
            except sqlite3.Error as exc:
                raise StoreError(f"store {self._path}: read failed: {_reason(exc)}") from None

    async def _write_loop(self) -> None:
        delay = _RETRY_FIRST_DELAY
        while True:
            first: _QueueItem | None
            if self._retry_sessions or self._retry_events or self._retry_execs:
                # Something failed before: retry on the next item or after a backoff, whichever is first,
                # so kept items are not stuck in memory while the runtime is quiet.
                try:
                    first = await asyncio.wait_for(self._queue.get(), timeout=delay)
                except asyncio.TimeoutError:
                    first = None
            else:
                first = await self._queue.get()
            items: list[_QueueItem] = [] if first is None else [first]
            while len(items) < _MAX_BATCH and not self._queue.empty():
                items.append(self._queue.get_nowait())

            sessions = self._retry_sessions
            events = self._retry_events
            execs = self._retry_execs
            self._retry_sessions, self._retry_events, self._retry_execs = {}, [], {}
            flushes: list[asyncio.Future[None]] = []
            stop = False
            for item in items:
                if isinstance(item, Session):
                    sessions[item.key] = item  # last upsert of a key wins
                elif isinstance(item, _Flush):
                    flushes.append(item.future)
                elif isinstance(item, _Stop):
                    stop = True
                elif isinstance(item, _Exec):
                    execs.pop(item.key, None)  # re-insert so the batch keeps the order of last writes
                    execs[item.key] = item
                else:
                    events.append(item)

            error: StoreError | None = None
            if self.fenced is not None:
                # Another runtime owns the store: what this one still queues is not written, and not kept.
                error = StoreError(self.fenced)
                sessions, events, execs = {}, [], {}
            session_rows, event_rows, dropped = self._rows(sessions, events)
            if dropped:
                # Retrying cannot fix these, and keeping them would block every later batch.
                log.error("store %s: dropped %d records that could not be serialised: %s",
                          self._path, len(dropped), "; ".join(dropped))
                error = StoreError(
                    f"store {self._path}: dropped {len(dropped)} records that could not be serialised: {dropped[0]}"
                )
            if session_rows or event_rows or execs:
                try:
                    await self._write_batch(session_rows, event_rows, list(execs.values()))
                except _Fenced as exc:
                    error = self._fence(exc)
                except Exception as exc:
                    self._retry_sessions, self._retry_events, self._retry_execs = sessions, events, execs
                    error = self._batch_failed(exc, len(session_rows) + len(event_rows) + len(execs))
                    delay = min(delay * 2, _RETRY_MAX_DELAY)
                else:
                    if self._last_error is not None:
                        log.info("store %s: writes succeed again", self._path)
                    self._last_error = None
                    delay = _RETRY_FIRST_DELAY
            for future in flushes:
                if future.done():  # the flusher was cancelled
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
            if stop:
                return

    def _batch_failed(self, exc: Exception, count: int) -> StoreError:
        reason = _reason(exc)
        if _error_name(exc).startswith("SQLITE_BUSY"):
            reason = f"database is locked by another process (still busy after {self._busy_timeout_ms} ms)"
        first = self._last_error is None
        self._last_error = reason
        if first:
            # SQLite's own errors are fully described by their reason; anything else is a bug worth a traceback.
            log.error("store %s: writing a batch of %d records failed, kept for retry: %s", self._path, count, reason,
                      exc_info=None if isinstance(exc, sqlite3.Error) else exc)
        else:
            log.warning("store %s: retrying %d records failed again: %s", self._path, count, reason)
        return StoreError(f"store {self._path}: write failed, {count} records kept for retry: {reason}")

    def _rows(
        self, sessions: dict[str, Session], events: list[Event]
    ) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[str]]:
        """SQL rows for the batch; records that cannot be serialised are removed and described instead."""
        session_rows: list[tuple[Any, ...]] = []
        event_rows: list[tuple[Any, ...]] = []
        dropped: list[str] = []
        for key, s in list(sessions.items()):
            try:
                data = s.model_dump_json()
            except Exception as exc:  # e.g. a result holding an object JSON cannot express
                del sessions[key]
                dropped.append(f"session {key}: {_reason(exc)}")
                continue
            session_rows.append((s.key, s.label, SessionState(s.state).value, s.parent, s.cron_run, s.updated_at, data))
        kept: list[Event] = []
        for e in events:
            try:
                data = e.model_dump_json()
            except Exception as exc:
                dropped.append(f"event {e.seq}: {_reason(exc)}")
                continue
            kept.append(e)
            event_rows.append((e.seq, e.ts, e.kind, e.session, data))
        events[:] = kept
        return session_rows, event_rows, dropped

    async def _write_batch(
        self, session_rows: list[tuple[Any, ...]], event_rows: list[tuple[Any, ...]], execs: list[_Exec] = []
    ) -> None:
        async with self._lock:
            # IMMEDIATE takes the write lock up front, so contention waits out busy_timeout at BEGIN
            # instead of failing half-way through the batch.
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                await self._check_lease()
                if session_rows:
                    await self._db.executemany(_UPSERT_SESSION, session_rows)
                if event_rows:
                    await self._db.executemany(_INSERT_EVENT, event_rows)
                for ex in execs:
                    await self._db.execute(ex.sql, ex.params)
                await self._db.execute("COMMIT")
            except BaseException:
                await _rollback(self._db)
                raise


def _epoch(rows: Any) -> int:
    try:
        return int(rows[0][0]) if rows else 0
    except (TypeError, ValueError):
        return 0


# ---------------------------------------------------------------------------------------------- opening


def _check_header(path: Path) -> None:
    """Refuse a path that is not a file or whose first bytes are not SQLite's, before SQLite sees it."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
    except FileNotFoundError:
        return
    except IsADirectoryError:
        raise StoreError(f"{path} is a directory, not a crewtui database") from None
    except PermissionError:
        raise StoreError(f"{path} is not readable (permission denied)") from None
    except OSError as exc:
        raise StoreError(f"{path} cannot be read: {exc.strerror or exc}") from None
    # An empty file is what _create_owner_only leaves when a first open died before writing: treat as new.
    if head and head != _SQLITE_MAGIC:
        raise StoreError(f"{path} is not a crewtui database (not an SQLite file)")


def _create_owner_only(path: Path) -> None:
    """Create the file with mode 0600 so sessions' tasks and results are not readable by other users."""
    if path.exists():
        return
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return
    except FileNotFoundError:
        raise StoreError(f"cannot create {path}: directory {path.parent} does not exist") from None
    except PermissionError:
        raise StoreError(f"cannot create {path}: directory {path.parent} is not writable") from None
    except OSError as exc:
        raise StoreError(f"cannot create {path}: {exc.strerror or exc}") from None
    os.close(fd)


def _corrupt(path: Path, detail: str) -> StoreError:
    detail = detail.replace("*** in database main ***", "").replace("\n", " ").strip()
    detail = detail if len(detail) <= 200 else detail[:197] + "..."
    return StoreError(
        f"{path} is damaged ({detail}); it was left unchanged: recover its data with "
        f"`sqlite3 {path} .recover | sqlite3 recovered.db`, or move it away to start afresh"
    )


def _open_error(path: Path, exc: sqlite3.Error) -> StoreError:
    name = _error_name(exc)
    if name == "SQLITE_NOTADB":
        return StoreError(f"{path} is not a crewtui database ({_reason(exc)})")
    if name.startswith("SQLITE_CORRUPT"):
        return _corrupt(path, _reason(exc))
    if name.startswith(tuple(_NOT_WRITABLE_ERRORS)):
        return _not_writable(path) or StoreError(f"{path} is not writable ({_reason(exc)})")
    if name.startswith("SQLITE_BUSY"):
        return StoreError(f"{path} is locked by another process ({_reason(exc)})")
    return StoreError(f"{path} cannot be opened: {_reason(exc)}")


def _not_writable(path: Path) -> StoreError | None:
    """Name why the process cannot write the database, if the permission bits say it cannot."""
    if not os.access(path, os.W_OK):
        return StoreError(f"{path} is not writable (read-only file)")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return StoreError(
            f"{path} is not writable: its directory {path.parent} is not writable "
            f"(SQLite needs to create {path.name}-wal there)"
        )
    return None


async def _scalar(db: aiosqlite.Connection, sql: str) -> Any:
    """The first column of the first row a query returns."""
    return list(await db.execute_fetchall(sql))[0][0]


async def _prepare(path: Path, db: aiosqlite.Connection, busy_timeout_ms: int) -> None:
    """Check the file is ours and current, then switch to WAL and migrate. Nothing is written before the checks."""
    try:
        # Connection-level settings only: these do not touch the file.
        await db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        await db.execute("PRAGMA foreign_keys = ON")
        await db.execute("PRAGMA synchronous = NORMAL")
        app_id = await _scalar(db, "PRAGMA application_id")
        version = await _scalar(db, "PRAGMA user_version")
        objects = await _scalar(db, "SELECT count(*) FROM sqlite_master")
    except sqlite3.Error as exc:
        raise _open_error(path, exc) from None

    if app_id != APPLICATION_ID:
        if app_id != 0:
            raise StoreError(
                f"{path} is not a crewtui database (application id {app_id:#010x}, expected {APPLICATION_ID:#010x})"
            )
        if objects or version:
            raise StoreError(f"{path} is not a crewtui database (an SQLite database of another application)")
    supported = current_version()
    if version > supported:
        raise StoreError(
            f"{path} has schema version {version}, newer than this crewtui supports ({supported}); upgrade crewtui"
        )

    if objects:
        # A damaged page can sit anywhere; found later, it would fail writes forever in the middle of a crew.
        # quick_check reads every page (O(size): 19 ms for a 5 MB store) and changes nothing.
        try:
            problems = [r[0] for r in await db.execute_fetchall("PRAGMA quick_check(3)")]
        except sqlite3.Error as exc:
            problems = [_reason(exc)]
        if problems != ["ok"]:
            raise _corrupt(path, "; ".join(str(p) for p in problems))

    # Root passes os.access for anything; for everyone else this names the cause before SQLite's vaguer error.
    unwritable = _not_writable(path)
    if unwritable is not None:
        raise unwritable

    try:
        mode = await _scalar(db, "PRAGMA journal_mode = WAL")
    except sqlite3.Error as exc:
        raise _open_error(path, exc) from None
    if str(mode).lower() != "wal":
        raise StoreError(f"{path} is not writable in WAL mode (journal mode stayed {mode!r})")
    await _migrate(path, db, version)


async def _migrate(path: Path, db: aiosqlite.Connection, version: int) -> None:
    """Run every migration after `version`, each in its own transaction with its user_version bump."""
    for index in range(version, current_version()):
        step = MIGRATIONS[index]
        # The id goes in with the first migration, so a half-created file is never mistaken for ours.
        head = f"PRAGMA application_id = {APPLICATION_ID};\n" if index == 0 else ""
        bump = f"PRAGMA user_version = {index + 1};\n"
        try:
            if isinstance(step, str):
                # executescript commits any open transaction first, so the BEGIN lives inside the script.
                await db.executescript(f"BEGIN IMMEDIATE;\n{head}{step}\n;{bump}COMMIT;")
            else:
                await db.execute("BEGIN IMMEDIATE")
                if head:
                    await db.execute(head)
                await step(db)
                await db.execute(bump)
                await db.execute("COMMIT")
        except Exception as exc:
            await _rollback(db)
            if isinstance(exc, sqlite3.Error) and _error_name(exc).startswith(tuple(_NOT_WRITABLE_ERRORS)):
                raise _open_error(path, exc) from None
            log.error("store %s: migration %d -> %d failed", path, index, index + 1, exc_info=exc)
            raise StoreError(
                f"{path}: upgrading the schema from version {index} to {index + 1} failed: {_reason(exc)}"
            ) from None


async def _rollback(db: aiosqlite.Connection) -> None:
    if not db.in_transaction:
        return
    try:
        await db.execute("ROLLBACK")
    except sqlite3.Error as exc:
        # A failed COMMIT may already have ended the transaction; nothing more to undo.
        log.debug("rollback failed: %s", exc)
