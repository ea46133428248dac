"""The journal: one database core and the narrow stores that record through it.

``open_journal(path)`` gives a :class:`SqliteJournal`: the core (connection,
transactions, the write gate, the event chain, migrations) with these stores on it:

================  ==============================================================
``runs``          runs and steps; ``runs.transition`` is the one state-machine move
``approvals``     approvals and denials, bound to plan hashes
``locks``         leases on keys
``alerts``        alerts received and the claims they make on runs
``schedules``     schedule fires claimed, missed or skipped
``flags``         named switches (autonomy's halt)
================  ==============================================================

Writes happen in ``BEGIN IMMEDIATE`` transactions behind a kernel lock (the write
gate), so a read-modify-write never races another process; a writer that holds the
journal past the busy timeout gives a clear :class:`JournalLockedError` and the record
is not half-written.

**Adding a store** (the world model's observations are next): write a class in its own
module under ``selfdrive/journal/`` that takes the core in its constructor and records
only through it (``_write`` for a transaction that joins ``atomic``, ``_read``,
``_append_event`` when the record belongs in the audit trail); add its tables as the
next numbered migration; declare it on :class:`~selfdrive.journal.core.Journal` and set
it in :meth:`SqliteJournal.__init__` beside the others. Keep its SQL to what SQLite and
PostgreSQL share (``ON CONFLICT``, ``RETURNING``, ``CASE`` rather than boolean
arithmetic; ``?`` placeholders, which a PostgreSQL core rewrites for its driver) and
ask the core for what one database alone has (``_hint``, ``_columns``,
``_is_conflict``), so that a PostgreSQL core can carry the same store unchanged. A
store never writes ``runs.status``: that is ``runs.transition``'s alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

from selfdrive.journal.alerts import AlertStore, ScheduleStore
from selfdrive.journal.approvals import ApprovalStore, LockStore
from selfdrive.journal.core import (
    GENESIS,
    HALT_FLAG,
    Event,
    FlagStore,
    Journal,
    canonical,
    event_digest,
    flag_entries,
    utcnow,
)
from selfdrive.journal.processes import (
    end_group,
    group_members,
    owner_alive,
    process_identity,
)
from selfdrive.journal.runs import OWNED_STATES, STEPPING_STATES, RunStore
from selfdrive.sdk.errors import (
    JournalError,
    JournalLockedError,
    JournalUnavailableError,
)

if TYPE_CHECKING:
    from selfdrive.config.location import JournalUrl

T = TypeVar("T")

#: SQLite result codes (by prefix) that mean the file cannot be used, in words.
_FILE_FAILURES = (
    ("SQLITE_FULL", "the disk it is on is full"),
    ("SQLITE_READONLY", "it is read-only"),
    ("SQLITE_IOERR", "the disk gave an I/O error"),
    ("SQLITE_CANTOPEN", "the file cannot be opened"),
    ("SQLITE_PERM", "permission denied"),
    ("SQLITE_NOTADB", "the file is not an SQLite database"),
    ("SQLITE_CORRUPT", "the file is corrupt"),
)


def _os_cause(exc: OSError) -> str:
    return exc.strerror or str(exc)


class WriteGate:
    """A kernel lock taken before SQLite's write lock, by every selfdrive process.

    SQLite's busy handler sleeps 1, 2, 5, 10 … 100 ms between tries, so under steady
    contention (a receiver and its workers) waiters sleep long past the moment the
    lock is free, and the journal's single writer sits idle. ``flock`` wakes a waiter
    the moment the lock is released, and the kernel releases it when its holder dies,
    so a killed process never wedges the journal. Each acquisition opens its own file
    description: an abandoned wait (timed out) can never release someone else's hold.
    Writers that are not selfdrive (an ``sqlite3`` shell) still meet SQLite's own
    lock and busy timeout behind it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def acquire(self, timeout: float) -> int | None:
        """Take the gate within ``timeout`` seconds; its file descriptor, or None."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            pass
        except BaseException:
            os.close(fd)
            raise
        # Held: wait in the kernel on a helper thread, so the wait can time out.
        got, lock, state = threading.Event(), threading.Lock(), {"abandoned": False}

        def wait() -> None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except OSError:
                os.close(fd)
                return
            with lock:
                if state["abandoned"]:
                    os.close(fd)  # nobody wants it any more: let it go at once
                else:
                    got.set()

        threading.Thread(target=wait, daemon=True, name="selfdrive-journal-gate").start()
        if got.wait(timeout):
            return fd
        with lock:
            if got.is_set():
                return fd
            state["abandoned"] = True
        return None

    @staticmethod
    def release(fd: int) -> None:
        os.close(fd)  # closing the only descriptor of its open file releases the flock


class SqliteJournal(Journal):
    """The embedded journal: one SQLite file in WAL mode with ``synchronous=FULL``."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        import sqlite_utils

        self.path = path
        self._setup(str(path), "sqlite", busy_timeout)
        self._gate = WriteGate(path.with_name(path.name + ".write.lock"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(str(path), timeout=busy_timeout, isolation_level=None,
                                        check_same_thread=False)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise self._error(exc, "open it") from None
        except OSError as exc:
            raise JournalUnavailableError(f"journal {path}: cannot open it: "
                                          f"{_os_cause(exc)}") from None
        self.db = sqlite_utils.Database(self.conn)
        self._migrate()
        self._open_stores()

    def _setup_locked(self) -> None:
        """WAL and migrations, under the file lock: first opens in parallel must not race
        (switching a new file to WAL takes an exclusive lock that waits no busy timeout)."""
        from selfdrive.journal.migrations import migrations

        mode = self.conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            self.conn.execute("PRAGMA journal_mode=WAL")
        if migrations.pending(self.db):
            migrations.apply(self.db)

    # -- plumbing ----------------------------------------------------------------

    def _error(self, exc: BaseException, doing: str) -> JournalError:
        """The error to raise for ``exc``, naming the journal, what failed and why."""
        text = str(exc)
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in text \
                or "busy" in text:
            return JournalLockedError(
                f"journal {self.path} is locked by another writer; waited "
                f"{self.busy_timeout:g}s to {doing}, and nothing was written. Retry, or find "
                f"the process holding it (fuser {self.path})")
        cause = next((words for prefix, words in _FILE_FAILURES if name.startswith(prefix)),
                     None)
        if cause is not None and not name.startswith("SQLITE_FULL") and self._disk_full():
            cause = "the disk it is on is full"  # SQLite says only "I/O error" for some
        if cause is not None:
            written = "" if doing == "read" else "; nothing of it was written"
            return JournalUnavailableError(f"journal {self.path}: cannot {doing}: {cause} "
                                           f"({text}){written}")
        return JournalError(f"journal {self.path}: cannot {doing}: {text}")

    def _disk_full(self) -> bool:
        try:
            return os.statvfs(self.path.parent).f_bavail == 0
        except OSError:
            return False

    def _migrate(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".migrate.lock")
        try:
            with lock_path.open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX)
                self._setup_locked()
        except sqlite3.Error as exc:
            raise self._error(exc, "apply migrations") from None
        except OSError as exc:
            raise JournalUnavailableError(f"journal {self.path}: cannot apply migrations: "
                                          f"{_os_cause(exc)}") from None

    _db_errors = (sqlite3.Error,)

    def _begin(self, doing: str) -> int:
        """The write gate (a kernel lock beside the file), then ``BEGIN IMMEDIATE``."""
        try:
            held = self._gate.acquire(self.busy_timeout)
        except OSError as exc:
            raise JournalUnavailableError(
                f"journal {self.path}: cannot {doing}: cannot take its write lock "
                f"{self._gate.path}: {_os_cause(exc)}; nothing of it was written") from None
        if held is None:
            raise JournalLockedError(
                f"journal {self.path} is locked by another selfdrive writer; waited "
                f"{self.busy_timeout:g}s to {doing}, and nothing was written. Retry, or "
                f"find the process holding it (fuser {self._gate.path})")
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._gate.release(held)
            raise self._error(exc, doing) from None
        return held

    def _commit(self) -> None:
        self.conn.execute("COMMIT")

    def _end(self, held: int) -> None:
        self._gate.release(held)

    def _abort(self) -> None:
        """Roll back the open transaction. SQLite may have rolled it back already (a
        COMMIT that failed on a full disk does), and a failed ROLLBACK must not hide
        the error that caused it."""
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                return [dict(row) for row in self.conn.execute(sql, params)]
            except sqlite3.Error as exc:
                raise self._error(exc, "read") from None

    def _columns(self, conn: sqlite3.Connection, table: str) -> tuple[str, ...]:
        """Read once per table: this process migrates the journal only when it opens it."""
        if table not in self._column_names:
            rows = conn.execute(f"PRAGMA table_info({table})")
            self._column_names[table] = tuple(r[1] for r in rows)
        return self._column_names[table]


    def _hint(self, index: str) -> str:
        return f"INDEXED BY {index}"

    def _after_copy(self, conn: sqlite3.Connection, tables: Sequence[str]) -> None:
        """Nothing to do: an INTEGER PRIMARY KEY's next id follows the largest one."""

    def _read_tuples(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        def tuples(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
            cursor = conn.cursor()
            cursor.row_factory = None
            return cursor.execute(sql, params).fetchall()

        return self._query(tuples)

    def _query(self, read: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                return read(self.conn)
            except sqlite3.Error as exc:
                raise self._error(exc, "read") from None

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()


@overload
def open_journal(location: Path, *, busy_timeout: float = ...,
                 recover: bool = ...) -> SqliteJournal: ...


@overload
def open_journal(location: Path | JournalUrl, *, busy_timeout: float = ...,
                 recover: bool = ...) -> Journal: ...


def open_journal(location: Path | JournalUrl, *, busy_timeout: float = 5.0,
                 recover: bool = True) -> Journal:
    """Open (creating and migrating) the journal; recover runs of dead processes.

    ``location`` is a SQLite file or a PostgreSQL address (``TeamConfig.journal_location``).
    A journal that cannot be written (full disk, read-only) can still be read: recovery
    then waits for the first command that can write it. One that cannot be reached at
    all raises :class:`JournalUnavailableError` naming it, before anything runs.
    """
    if not isinstance(location, Path):
        from selfdrive.journal.pg import open_postgres

        return open_postgres(location, busy_timeout=busy_timeout, recover=recover)
    journal = SqliteJournal(location, busy_timeout=busy_timeout)
    if recover:
        with contextlib.suppress(JournalUnavailableError):
            journal.runs.recover()
    return journal


__all__ = ["GENESIS", "HALT_FLAG", "OWNED_STATES", "STEPPING_STATES", "AlertStore",
           "ApprovalStore", "Event", "FlagStore", "Journal", "LockStore", "RunStore",
           "ScheduleStore", "SqliteJournal", "WriteGate", "canonical", "end_group",
           "event_digest", "flag_entries", "group_members", "open_journal", "owner_alive",
           "process_identity", "utcnow"]
