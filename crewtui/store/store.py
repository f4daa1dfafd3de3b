"""The SQLite store: sessions, events, the scheduler's tables and bookkeeping, in one crewtui database file.

Writes of sessions, events and scheduler rows only enqueue (see writer.py: one transaction per batch); the
few writes that must be committed before the runtime goes on (a cron fire, the lease, meta values) are direct.
Reads and every write go through one connection, serialised by one lock.

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
from collections.abc import Callable, Container
from pathlib import Path
from typing import Any

import aiosqlite

from crewtui.errors import StoreError
from crewtui.events import Event, event_from_json
from crewtui.model import Session, SessionState
from crewtui.store.schema import (
    LEASE_KEY,
    STORE_ID_KEY,
    TOP_OF_LABEL,
    connect,
    lease_epoch,
    rollback,
    short_reason,
    sqlite_error_name,
)
from crewtui.store.writer import BatchWriter, Exec, Fenced

log = logging.getLogger("crewtui.store")

_LIVE = tuple(s.value for s in SessionState if s.live)


def _limit(n: int) -> int:
    """A row count SQLite takes: a caller's "as many as there are" (10**20) is no error but all rows."""
    return max(0, min(n, (1 << 63) - 1))


def _session_filter(
    state: SessionState | None, prefix: str | None, ended: bool | None, before: str | None, since: float | None
) -> tuple[list[str], list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if state is not None:
        clauses.append("state = ?")
        params.append(SessionState(state).value)
    if prefix:
        # A range instead of LIKE: LIKE treats '_' (legal in labels) as a wildcard and ignores case, and a range
        # can use the label index.
        clauses.append("label >= ? AND label < ?")
        params.extend([prefix, prefix + "\U0010ffff"])
    if ended is not None:
        clauses.append(f"state {'NOT IN' if ended else 'IN'} ({', '.join('?' * len(_LIVE))})")
        params.extend(_LIVE)
    if before is not None:
        clauses.append("key < ?")
        params.append(before)
    if since is not None:
        clauses.append("updated_at >= ?")
        params.append(since)
    return clauses, params


class Store:
    """One crewtui database file: batched writes of sessions and events, and the queries over them."""

    def __init__(self, path: Path, db: aiosqlite.Connection, busy_timeout_ms: int = 5000) -> None:
        # Use `Store.open`: the connection must be checked and migrated before the writer starts.
        self._path = path
        self._db = db
        self._busy_timeout_ms = busy_timeout_ms
        # Serialises transactions on the one connection: without it a read or set_meta could run between
        # the writer's BEGIN and COMMIT, see a half batch, or be rolled back with it.
        self._lock = asyncio.Lock()
        self._closed = False
        self._lease: int | None = None  # this store's lease epoch, once taken
        self.fenced: str | None = None  # why writing stopped for good (another runtime took over)
        self.on_fenced: Callable[[str], None] | None = None
        # Called when writing a batch fails (a full disk), once until a write succeeds again; it must not write.
        self.on_write_failed: Callable[[str], None] | None = None
        # The file this store opened: a write first checks that it is still the one at `path`.
        st = os.stat(path)
        self._identity = (st.st_dev, st.st_ino)
        self.writer = BatchWriter(
            path,
            db,
            self._lock,
            busy_timeout_ms,
            check_lease=self._check_lease,
            check_file=self._check_file,
            fence=self._fence,
            fenced=lambda: self.fenced,
            failing=lambda reason: self.on_write_failed(reason) if self.on_write_failed is not None else None,
        )

    # ------------------------------------------------------------------------------------------ opening

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_ms: int = 5000) -> Store:
        """Open (creating if needed) the store at `path`; its parent dir must exist (DataDir.ensure).

        Raises StoreError, without touching the file, if it is not a crewtui database, has a newer schema
        than this code knows, or cannot be written.
        """
        path = Path(path)
        db = await connect(path, busy_timeout_ms)
        store = cls(path, db, busy_timeout_ms)
        store.writer.start()
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
        # One last attempt at whatever a failed flush kept, then the writer exits.
        unwritten = await self.writer.stop()
        await self._db.close()
        if unwritten:
            reason = self.writer.last_error or (failure.message if failure else "the writer stopped")
            raise StoreError(f"store {self._path} closed with {unwritten} records not written: {reason}")

    # ------------------------------------------------------------------------------------------ writes

    def put_session(self, session: Session) -> None:
        """Queue an upsert of the session; a copy is queued, so the caller may keep mutating its own."""
        self._check_open()
        self.writer.put(session.model_copy(deep=True))

    def append_event(self, event: Event) -> None:
        """Queue an event; its `seq` (> 0) was assigned by the runtime."""
        self._check_open()
        if event.seq <= 0:
            raise ValueError(f"event {event.kind!r} has no seq assigned (seq={event.seq})")
        self.writer.put(event)

    async def flush(self) -> None:
        """Return once everything queued before this call is committed; raise StoreError if it was not."""
        if self._closed:
            return
        await self.writer.flush()

    # The scheduler's tables. Queued like sessions (one transaction per batch); `claim_cron_run` is the one
    # direct write, because a fire must be recorded before its batch is spawned or a crash could double it.

    def put_cron_job(self, name: str, source: str, data: str) -> None:
        self._check_open()
        self.writer.put(
            Exec(
                f"job:{name}",
                "INSERT OR REPLACE INTO cron_jobs (name, source, data) VALUES (?, ?, ?)",
                (name, source, data),
            )
        )

    def delete_cron_job(self, name: str) -> None:
        self._check_open()
        self.writer.put(Exec(f"job:{name}", "DELETE FROM cron_jobs WHERE name = ?", (name,)))

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
        self.writer.put(
            Exec(
                f"run:{run_id}",
                "UPDATE cron_runs SET final = ?, data = ? WHERE id = ?",
                (1 if final else 0, data, run_id),
            )
        )

    async def load_cron_runs(
        self, job: str | None = None, limit: int | None = None, open_only: bool = False
    ) -> list[str]:
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
            params.append(_limit(limit))
        return [r[0] for r in await self._fetch(sql, params)]

    def put_timer(self, timer_id: str, kind: str, due: float, data: str) -> None:
        self._check_open()
        self.writer.put(
            Exec(
                f"timer:{timer_id}",
                "INSERT OR REPLACE INTO timers (id, kind, due, data) VALUES (?, ?, ?, ?)",
                (timer_id, kind, due, data),
            )
        )

    def delete_timer(self, timer_id: str) -> None:
        self._check_open()
        self.writer.put(Exec(f"timer:{timer_id}", "DELETE FROM timers WHERE id = ?", (timer_id,)))

    async def load_timers(self) -> list[tuple[str, str, float, str]]:
        return [tuple(r) for r in await self._fetch("SELECT id, kind, due, data FROM timers ORDER BY due")]

    def put_usage_day(self, day: str, pool: str, data: str) -> None:
        """A gateway pool's use on `day` (YYYY-MM-DD), as JSON (model.UsageTotals); the last write wins."""
        self._check_open()
        self.writer.put(
            Exec(
                f"usage:{day}:{pool}",
                "INSERT OR REPLACE INTO usage_days (day, pool, data) VALUES (?, ?, ?)",
                (day, pool, data),
            )
        )

    async def load_usage_days(self, since: str = "") -> list[tuple[str, str, str]]:
        """(day, pool, data JSON) from `since` (YYYY-MM-DD) on, oldest first."""
        sql = "SELECT day, pool, data FROM usage_days WHERE day >= ? ORDER BY day, pool"
        return [tuple(r) for r in await self._fetch(sql, (since,))]

    async def metered_sessions(self, since: float) -> list[Session]:
        """Sessions updated since `since` that the gateway measured (for `ctl usage` by session, group, run)."""
        sql = "SELECT data FROM sessions WHERE updated_at >= ? AND instr(data, '\"usage\":{') > 0"
        return [Session.model_validate_json(r[0]) for r in await self._fetch(sql, (since,))]

    async def set_meta(self, key: str, value: str) -> None:
        """Write one bookkeeping value directly; committed when this returns."""
        await self._direct_write(
            f"write meta {key!r}", "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value)
        )

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
                    await rollback(self._db)
                    raise
            except Fenced as exc:
                raise self._fence(exc) from None
            except sqlite3.Error as exc:
                raise StoreError(f"store {self._path}: could not {what}: {short_reason(exc)}") from None
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
                    epoch = lease_epoch(rows) + 1
                    await self._db.execute(
                        "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (LEASE_KEY, str(epoch))
                    )
                    await self._db.execute("COMMIT")
                except BaseException:
                    await rollback(self._db)
                    raise
            except sqlite3.Error as exc:
                if sqlite_error_name(exc).startswith("SQLITE_BUSY"):
                    raise StoreError(
                        f"{self._path} is locked by another process (still busy after "
                        f"{self._busy_timeout_ms} ms); is another program writing it?"
                    ) from None
                raise StoreError(f"store {self._path}: could not take the writer lease: {short_reason(exc)}") from None
        self._lease = epoch
        return epoch

    @property
    def lease(self) -> int | None:
        return self._lease

    async def _check_lease(self) -> None:
        """Inside a write transaction: raise Fenced if this store may not write any more: its file was deleted or
        replaced (SQLite would go on writing to the unlinked file, and every answer to a client would be a lie),
        or the lease is no longer ours."""
        self._check_file()
        if self._lease is None:
            return
        current = lease_epoch(await self._db.execute_fetchall("SELECT value FROM meta WHERE key = ?", (LEASE_KEY,)))
        if current != self._lease:
            raise Fenced(f"another runtime took over this data dir (writer lease {current}, ours {self._lease})")

    def _check_file(self) -> None:
        """Raise Fenced if the file at the store's path is no longer the one this store opened."""
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            raise Fenced("the store file was deleted while this runtime ran") from None
        except OSError:
            return  # cannot tell (a transient error): the write itself will say
        if (st.st_dev, st.st_ino) != self._identity:
            raise Fenced("the store file was replaced by another file while this runtime ran")

    def _fence(self, exc: Fenced) -> StoreError:
        """Stop writing for good; tell the owner once."""
        first = self.fenced is None
        if first:
            self.fenced = f"store {self._path}: {exc.why}; this runtime stopped writing"
            log.error("%s", self.fenced)
        if first and self.on_fenced is not None and self.fenced is not None:
            try:
                self.on_fenced(self.fenced)
            except Exception:
                log.exception("on_fenced failed")
        return StoreError(self.fenced or "another runtime took over this data dir")

    # ------------------------------------------------------------------------------------------ reads
    # Reads see committed data only; call flush() first to include what is still queued.

    async def load_sessions(self) -> list[Session]:
        rows = await self._fetch("SELECT data FROM sessions ORDER BY key")
        return [Session.model_validate_json(row[0]) for row in rows]

    async def load_startup(self, recent: int) -> tuple[list[Session], bool]:
        """What a starting runtime holds in memory, by key: every live session and its children, those an open
        cron run or an armed watchdog reads, the `recent` newest, and the ancestors of all of these. Second: whether
        the store holds others (read on demand). A year of history costs a start nothing."""
        live = ", ".join("?" * len(_LIVE))
        rows = await self._fetch(
            f"""
            SELECT key, data FROM sessions WHERE state IN ({live})
            UNION SELECT key, data FROM sessions WHERE parent IN (SELECT key FROM sessions WHERE state IN ({live}))
            UNION SELECT key, data FROM sessions WHERE cron_run IN (SELECT id FROM cron_runs WHERE final = 0)
            UNION SELECT key, data FROM sessions WHERE key IN (SELECT substr(id, 4) FROM timers WHERE kind = 'watchdog')
            UNION SELECT key, data FROM (
                SELECT key, data FROM sessions WHERE state NOT IN ({live}) ORDER BY key DESC LIMIT ?
            )
            """,
            (*_LIVE, *_LIVE, *_LIVE, _limit(recent)),
        )
        loaded = {key: Session.model_validate_json(data) for key, data in rows}
        missing = {s.parent for s in loaded.values() if s.parent and s.parent not in loaded}
        while missing:  # families stay whole upwards: a child in memory finds its parent there
            found = await self._fetch(
                f"SELECT key, data FROM sessions WHERE key IN ({', '.join('?' * len(missing))})", tuple(missing)
            )
            fetched = {key: Session.model_validate_json(data) for key, data in found}
            loaded.update(fetched)
            missing = {s.parent for s in fetched.values() if s.parent and s.parent not in loaded}
        # Whether there is more than what was loaded: counting a million rows to find out would cost a start.
        seen = (await self._fetch("SELECT count(*) FROM (SELECT 1 FROM sessions LIMIT ?)", (len(loaded) + 1,)))[0][0]
        return [loaded[k] for k in sorted(loaded)], int(seen) > len(loaded)

    async def page_sessions(
        self,
        *,
        state: SessionState | None = None,
        prefix: str | None = None,
        ended: bool | None = None,
        before: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[Session]:
        """Sessions that match, newest first (by key), at most `limit`: one page of a listing."""
        clauses, params = _session_filter(state, prefix, ended, before, since)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT data FROM sessions{where} ORDER BY key DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(_limit(limit))
        return [Session.model_validate_json(row[0]) for row in await self._fetch(sql, params)]

    async def older_counts(self, before: str) -> dict[str, int]:
        """Ended sessions created before the session `before`, counted by the first part of their label (the top
        of their group): what a dashboard that loaded only recent history says is there to open."""
        # Counted from the index alone (every session below the key); the live ones among them, a handful, are
        # then taken off: reading each row's state would cost a million row reads.
        rows = await self._fetch(
            f"SELECT {TOP_OF_LABEL} AS top, count(*) FROM sessions WHERE key < ? GROUP BY top", (before,)
        )
        counts = {str(top): int(n) for top, n in rows}
        live = ", ".join("?" * len(_LIVE))
        for (top,) in await self._fetch(
            f"SELECT {TOP_OF_LABEL} FROM sessions WHERE key < ? AND state IN ({live})", (before, *_LIVE)
        ):
            counts[top] -= 1
            if not counts[top]:
                del counts[top]
        return counts

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
        clauses, params = _session_filter(state, prefix, ended=None, before=None, since=None)
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

    async def events(
        self, since_seq: int = 0, session: str | None = None, limit: int | None = None, kind: str | None = None
    ) -> list[Event]:
        """Events with seq > since_seq (optionally of one session, of one kind), in ascending seq, at most `limit`."""
        sql = "SELECT data FROM events WHERE seq > ?"
        params: list[Any] = [since_seq]
        if session is not None:
            sql += " AND session = ?"
            params.append(session)
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(_limit(limit))
        rows = await self._fetch(sql, params)
        return [event_from_json(row[0]) for row in rows]

    async def events_since(self, ts: float, limit: int = 20_000) -> list[Event]:
        """Events at or after `ts` (the newest `limit`), in ascending seq: what a restarted timeline shows."""
        rows = await self._fetch(
            "SELECT data FROM (SELECT seq, data FROM events WHERE ts >= ? ORDER BY seq DESC LIMIT ?) ORDER BY seq",
            (ts, _limit(limit)),
        )
        return [event_from_json(row[0]) for row in rows]

    async def store_id(self) -> str:
        """This store's identity (made when the file was created or upgraded)."""
        return await self.get_meta(STORE_ID_KEY) or ""

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
                raise StoreError(f"store {self._path}: read failed: {short_reason(exc)}") from None
