"""The store's file: its schema and migrations, and opening it safely.

A file is opened only once it is known to be ours (SQLite's header, our application id, a schema version this
code knows, undamaged, writable); every way it can be unusable is one `StoreError` line naming the file, and
nothing is written before those checks. Then WAL mode is set and the migrations after the file's version run,
each in its own transaction.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import stat
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiosqlite

from crewtui.errors import StoreError

log = logging.getLogger("crewtui.store")

# "CRWT": marks the file as ours, so another application's SQLite file is refused instead of migrated.
APPLICATION_ID = 0x43525754
_SQLITE_MAGIC = b"SQLite format 3\x00"

# A migration is an SQL script or an async callable working on the open connection. The runner wraps each in
# its own transaction and bumps `user_version`, so a migration must not BEGIN/COMMIT itself.
Migration = str | Callable[[aiosqlite.Connection], Awaitable[None]]

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

# The first `-`-separated part of a label: the top of its group in the dashboard's tree. Written the same in the
# index and in the queries that count by it, so SQLite answers those from the index alone.
TOP_OF_LABEL = "CASE WHEN instr(label, '-') > 0 THEN substr(label, 1, instr(label, '-') - 1) ELSE label END"
LEASE_KEY = "lease_epoch"
STORE_ID_KEY = "store_id"

# v3: the store's identity. Every session dir records the store that launched it (SessionDir.OWNER), so a runtime
# started on a replaced or new store never takes another store's running sessions for its own leftovers.
_V3 = f"""
INSERT OR IGNORE INTO meta (key, value) VALUES ('{STORE_ID_KEY}', lower(hex(randomblob(16))));
"""

# Index i migrates schema version i to i + 1; append to add one. Never edit a released entry.
# v4: a year of history. Listings page newest first by key within a state, and `--since` reads by update time.
_V4 = f"""
CREATE INDEX sessions_state_key ON sessions(state, key);
CREATE INDEX sessions_updated ON sessions(updated_at);
CREATE INDEX sessions_top_key ON sessions({TOP_OF_LABEL}, key);
"""

# v5: the model gateway's use per pool and day (requests, tokens, dollars, refusals), so a daily budget holds
# across a restart and `ctl usage --by pool|day` reads a year without touching the sessions.
_V5 = """
CREATE TABLE usage_days (
    day TEXT NOT NULL,
    pool TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (day, pool)
);
"""

MIGRATIONS: list[Migration] = [_V1, _V2, _V3, _V4, _V5]

UPSERT_SESSION = """
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
INSERT_EVENT = "INSERT OR IGNORE INTO events (seq, ts, kind, session, data) VALUES (?, ?, ?, ?, ?)"

NOT_WRITABLE_ERRORS = {"SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH"}


def current_version() -> int:
    """The schema version this code writes (read at call time, so tests can append a migration)."""
    return len(MIGRATIONS)


def short_reason(exc: BaseException) -> str:
    """A short, single-line reason for an exception, without traceback or chained text."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text


def sqlite_error_name(exc: BaseException) -> str:
    return getattr(exc, "sqlite_errorname", "") or ""


def lease_epoch(rows: Any) -> int:
    try:
        return int(rows[0][0]) if rows else 0
    except (TypeError, ValueError):
        return 0


def _check_header(path: Path) -> None:
    """Refuse a path that is not a file or whose first bytes are not SQLite's, before SQLite sees it."""
    with contextlib.suppress(OSError):  # what stat cannot tell, the open below says
        if not stat.S_ISREG(mode := os.stat(path).st_mode) and not stat.S_ISDIR(mode):
            # A FIFO would block the open below (and the start) forever; a device or socket is no database.
            raise StoreError(f"{path} is not a regular file (a FIFO, socket or device), not a crewtui database")
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
    name = sqlite_error_name(exc)
    if name == "SQLITE_NOTADB":
        return StoreError(f"{path} is not a crewtui database ({short_reason(exc)})")
    if name.startswith("SQLITE_CORRUPT"):
        return _corrupt(path, short_reason(exc))
    if name.startswith(tuple(NOT_WRITABLE_ERRORS)):
        return _not_writable(path) or StoreError(f"{path} is not writable ({short_reason(exc)})")
    if name.startswith("SQLITE_BUSY"):
        return StoreError(f"{path} is locked by another process ({short_reason(exc)})")
    return StoreError(f"{path} cannot be opened: {short_reason(exc)}")


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
    return next(iter(await db.execute_fetchall(sql)))[0]


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

    if objects and _checked_at_open(path):
        # A damaged page can sit anywhere; found later, it would fail writes forever in the middle of a crew.
        # quick_check reads every page (O(size): 19 ms for a 5 MB store) and changes nothing.
        try:
            problems = [r[0] for r in await db.execute_fetchall("PRAGMA quick_check(3)")]
        except sqlite3.Error as exc:
            problems = [short_reason(exc)]
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
            await rollback(db)
            if isinstance(exc, sqlite3.Error) and sqlite_error_name(exc).startswith(tuple(NOT_WRITABLE_ERRORS)):
                raise _open_error(path, exc) from None
            log.error("store %s: migration %d -> %d failed", path, index, index + 1, exc_info=exc)
            raise StoreError(
                f"{path}: upgrading the schema from version {index} to {index + 1} failed: {short_reason(exc)}"
            ) from None


async def rollback(db: aiosqlite.Connection) -> None:
    if not db.in_transaction:
        return
    try:
        await db.execute("ROLLBACK")
    except sqlite3.Error as exc:
        # A failed COMMIT may already have ended the transaction; nothing more to undo.
        log.debug("rollback failed: %s", exc)


# Up to this size the whole file is checked before the runtime starts (~0.1 s); a bigger one (a long history: a
# million sessions are 1.2 GB, a check of 1 s warm and 20 s from disk) is checked after the start, in the
# background (`check_in_background`), and a damaged one is then said loudly.
CHECK_AT_OPEN_BYTES = 64 << 20


def _checked_at_open(path: Path) -> bool:
    try:
        return path.stat().st_size <= CHECK_AT_OPEN_BYTES
    except OSError:
        return True


def needs_background_check(path: Path) -> bool:
    return not _checked_at_open(path)


def check_in_background(path: Path) -> str | None:
    """Read every page of the store through a read-only connection of its own (run it in a worker thread);
    None if it is sound, else one line saying what is damaged and how to recover."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)) as db:
            problems = [str(r[0]) for r in db.execute("PRAGMA quick_check(3)").fetchall()]
    except sqlite3.Error as exc:
        problems = [short_reason(exc)]
    return None if problems == ["ok"] else _corrupt(path, "; ".join(problems)).message


async def connect(path: Path, busy_timeout_ms: int) -> aiosqlite.Connection:
    """Open (creating if needed) the store file at `path`, checked and migrated; its parent dir must exist."""
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
    return db
