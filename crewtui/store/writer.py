"""The store's batched writer: one task drains the write queue and commits in batches.

The runtime calls `put_session` / `append_event` on every state change and output tick, so those only enqueue;
one transaction per batch (WAL mode) keeps a thousand chatty sessions cheap. Within a batch the last upsert of a
session wins. A batch that fails is kept and retried with backoff, so a full disk loses nothing that the next
attempt can write; a batch that finds another runtime's lease is dropped (see fencing in store.py).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiosqlite

from crewtui.errors import StoreError
from crewtui.events import Event
from crewtui.model import Session, SessionState
from crewtui.store.schema import INSERT_EVENT, UPSERT_SESSION, rollback, short_reason, sqlite_error_name

log = logging.getLogger("crewtui.store")

_MAX_BATCH = 1000
_RETRY_FIRST_DELAY = 0.5
_RETRY_MAX_DELAY = 10.0
_IDLE_CHECK = 5.0  # seconds between looks at the store file while nothing is written


class Fenced(Exception):
    """A write found that this store may not write any more: another runtime owns the data dir now (a newer
    lease), or the file was deleted or replaced under the running runtime. `why` says which."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class Flush:
    """A marker in the write queue: its future resolves once the batch holding it has committed."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future


class Stop:
    """The last item the writer takes: write what came before it, then exit."""

    __slots__ = ()


class Exec:
    """A row write for the other tables (cron jobs, runs, timers), batched like sessions: the last write
    queued for the same `key` wins within a batch."""

    __slots__ = ("key", "params", "sql")

    def __init__(self, key: str, sql: str, params: tuple[Any, ...]) -> None:
        self.key = key
        self.sql = sql
        self.params = params


QueueItem = Session | Event | Flush | Stop | Exec


class BatchWriter:
    """The write queue of one store and the task that commits it."""

    def __init__(
        self,
        path: Path,
        db: aiosqlite.Connection,
        lock: asyncio.Lock,
        busy_timeout_ms: int,
        *,
        check_lease: Callable[[], Awaitable[None]],
        check_file: Callable[[], None],
        fence: Callable[[Fenced], StoreError],
        fenced: Callable[[], str | None],
        failing: Callable[[str], None] | None = None,
    ) -> None:
        self._path = path
        self._db = db
        # Serialises transactions on the one connection (shared with the store's reads and direct writes).
        self._lock = lock
        self._busy_timeout_ms = busy_timeout_ms
        self._check_lease = check_lease
        self._check_file = check_file
        self._fence = fence
        self._fenced = fenced
        self._failing = failing  # told once when batches start failing (until one succeeds again)
        self.queue: asyncio.Queue[QueueItem] = asyncio.Queue()
        # What a failed batch left behind, written first by the next attempt so nothing is lost.
        self.retry_sessions: dict[str, Session] = {}
        self.retry_events: list[Event] = []
        self.retry_execs: dict[str, Exec] = {}
        self.last_error: str | None = None
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self._loop(), name=f"crewtui-store-writer:{self._path.name}")

    def put(self, item: QueueItem) -> None:
        self.queue.put_nowait(item)

    def stopped_error(self) -> StoreError:
        return StoreError(f"store {self._path}: the writer has stopped ({self.last_error or 'no error recorded'})")

    async def flush(self) -> None:
        """Return once everything queued before this call is committed; raise StoreError if it was not."""
        task = self.task
        if task is None or task.done():
            raise self.stopped_error()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait(Flush(future))
        # If the writer dies while we wait, don't hang forever on a marker nobody will resolve.
        try:
            done, _ = await asyncio.wait({future, task}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            future.cancel()  # so the writer skips it instead of leaving an unretrieved exception
            raise
        if future in done:
            future.result()
            return
        raise self.stopped_error()

    async def stop(self) -> int:
        """One last attempt at whatever is kept, then the writer exits; returns how many records stay unwritten."""
        if self.task is not None and not self.task.done():
            self.queue.put_nowait(Stop())
            try:
                await self.task
            except Exception:  # already logged by the writer; closing must still release the file
                pass
        unwritten = len(self.retry_sessions) + len(self.retry_events)
        while not self.queue.empty():
            if not isinstance(self.queue.get_nowait(), (Flush, Stop)):
                unwritten += 1
        return unwritten

    async def _loop(self) -> None:
        delay = _RETRY_FIRST_DELAY
        while True:
            first: QueueItem | None
            if self.retry_sessions or self.retry_events or self.retry_execs:
                # Something failed before: retry on the next item or after a backoff, whichever is first,
                # so kept items are not stuck in memory while the runtime is quiet.
                try:
                    first = await asyncio.wait_for(self.queue.get(), timeout=delay)
                except TimeoutError:
                    first = None
            else:
                try:
                    first = await asyncio.wait_for(self.queue.get(), timeout=_IDLE_CHECK)
                except TimeoutError:
                    # Idle: still look now and then whether the file was deleted or replaced under us, so a quiet
                    # runtime notices too (a write would find it at once).
                    if self._fenced() is None:
                        try:
                            self._check_file()
                        except Fenced as exc:
                            self._fence(exc)
                    continue
            items: list[QueueItem] = [] if first is None else [first]
            while len(items) < _MAX_BATCH and not self.queue.empty():
                items.append(self.queue.get_nowait())

            sessions = self.retry_sessions
            events = self.retry_events
            execs = self.retry_execs
            self.retry_sessions, self.retry_events, self.retry_execs = {}, [], {}
            flushes: list[asyncio.Future[None]] = []
            stop = False
            for item in items:
                if isinstance(item, Session):
                    sessions[item.key] = item  # last upsert of a key wins
                elif isinstance(item, Flush):
                    flushes.append(item.future)
                elif isinstance(item, Stop):
                    stop = True
                elif isinstance(item, Exec):
                    execs.pop(item.key, None)  # re-insert so the batch keeps the order of last writes
                    execs[item.key] = item
                else:
                    events.append(item)

            error: StoreError | None = None
            fenced = self._fenced()
            if fenced is not None:
                # Another runtime owns the store: what this one still queues is not written, and not kept.
                error = StoreError(fenced)
                sessions, events, execs = {}, [], {}
            session_rows, event_rows, dropped = self._rows(sessions, events)
            if dropped:
                # Retrying cannot fix these, and keeping them would block every later batch.
                log.error(
                    "store %s: dropped %d records that could not be serialised: %s",
                    self._path,
                    len(dropped),
                    "; ".join(dropped),
                )
                error = StoreError(
                    f"store {self._path}: dropped {len(dropped)} records that could not be serialised: {dropped[0]}"
                )
            if session_rows or event_rows or execs:
                try:
                    await self.write_batch(session_rows, event_rows, list(execs.values()))
                except Fenced as exc:
                    error = self._fence(exc)
                except Exception as exc:
                    self.retry_sessions, self.retry_events, self.retry_execs = sessions, events, execs
                    error = self._batch_failed(exc, len(session_rows) + len(event_rows) + len(execs))
                    delay = min(delay * 2, _RETRY_MAX_DELAY)
                else:
                    if self.last_error is not None:
                        log.info("store %s: writes succeed again", self._path)
                    self.last_error = None
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
        reason = short_reason(exc)
        if sqlite_error_name(exc).startswith("SQLITE_BUSY"):
            reason = f"database is locked by another process (still busy after {self._busy_timeout_ms} ms)"
        first = self.last_error is None
        self.last_error = reason
        if first:
            # SQLite's own errors are fully described by their reason; anything else is a bug worth a traceback.
            log.error(
                "store %s: writing a batch of %d records failed, kept for retry: %s",
                self._path,
                count,
                reason,
                exc_info=None if isinstance(exc, sqlite3.Error) else exc,
            )
            if self._failing is not None:
                try:
                    self._failing(reason)
                except Exception:
                    log.exception("the store's write-failure hook failed")
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
                dropped.append(f"session {key}: {short_reason(exc)}")
                continue
            session_rows.append((s.key, s.label, SessionState(s.state).value, s.parent, s.cron_run, s.updated_at, data))
        kept: list[Event] = []
        for e in events:
            try:
                data = e.model_dump_json()
            except Exception as exc:
                dropped.append(f"event {e.seq}: {short_reason(exc)}")
                continue
            kept.append(e)
            event_rows.append((e.seq, e.ts, e.kind, e.session, data))
        events[:] = kept
        return session_rows, event_rows, dropped

    async def write_batch(
        self, session_rows: list[tuple[Any, ...]], event_rows: list[tuple[Any, ...]], execs: list[Exec] | None = None
    ) -> None:
        async with self._lock:
            # IMMEDIATE takes the write lock up front, so contention waits out busy_timeout at BEGIN
            # instead of failing half-way through the batch.
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                await self._check_lease()
                if session_rows:
                    await self._db.executemany(UPSERT_SESSION, session_rows)
                if event_rows:
                    await self._db.executemany(INSERT_EVENT, event_rows)
                for ex in execs or []:
                    await self._db.execute(ex.sql, ex.params)
                await self._db.execute("COMMIT")
            except BaseException:
                await rollback(self._db)
                raise
