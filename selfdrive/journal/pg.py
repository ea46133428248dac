"""PostgreSQL under the journal: where it is, how to reach it, its schema, its writes.

A team shares one journal across machines with ``journal = "postgresql://user@host/db"``.
The password never sits in ``selfdrive.toml``: libpq reads it from ``PGPASSWORD`` or a
password file (``~/.pgpass``, or the one ``PGPASSFILE`` names), as ``psql`` does.

Writes keep SQLite's guarantees by the same means: one writer at a time. Every write
transaction first takes one transaction-level advisory lock, so a read-modify-write
(dedup, rate limits, the next link of the audit chain) never races another process on
any machine, and the lock goes with the transaction, even when its process is killed.
Columns keep SQLite's types (text timestamps in ISO 8601 UTC, JSON as text, 0/1
integers), so the stores' SQL and the audit chain's digests are the same on both.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from selfdrive.config.location import JournalUrl
from selfdrive.journal.core import Journal
from selfdrive.sdk.errors import (
    JournalError,
    JournalLockedError,
    JournalUnavailableError,
)

if TYPE_CHECKING:
    import psycopg

T = TypeVar("T")

#: The key of the advisory lock every write transaction takes (any constant will do;
#: this one spells "selfdriv" in ASCII, so it is recognisable in pg_locks).
WRITE_LOCK_KEY = 0x73656C6664726976

class Row:
    """A row as ``sqlite3.Row`` is one: by column name or by position, iterating its
    values, ``keys()`` for ``dict(row)``; so the stores read rows the same way from
    both databases (``for run_id, status in conn.execute(...)`` included)."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: Sequence[Any]) -> None:
        self._index = index
        self._values = tuple(values)

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, int):
            return self._values[key]
        return self._values[self._index[key]]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Row) and other._values == self._values \
            and other._index == self._index

    __hash__ = None  # type: ignore[assignment]

    def keys(self) -> list[str]:
        return list(self._index)

    def __repr__(self) -> str:
        return f"Row({dict(zip(self._index, self._values, strict=True))!r})"


def _row_factory(cursor: Any) -> Any:
    index = {c.name: n for n, c in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> Row:
        return Row(index, values)

    return make


_PARAM = re.compile(r"%|\?")
#: SQLite's words that the learning queries use, in PostgreSQL's (the stores need none).
_JSON_FIELD = re.compile(r"json_extract\((\w+(?:\.\w+)?), '\$\.(\w+)'\)")
_JULIANDAY = re.compile(r"julianday\(([\w.]+)\)")
_WEEK = re.compile(r"strftime\('%Y-W%W', ([\w.]+)\)")
_UNINDEXED = re.compile(r"(?<=[\s(,])\+(?=[A-Za-z_])")


def _week(column: str) -> str:
    # SQLite's %W: weeks start on Monday, days before the year's first Monday are week 00.
    t = f"(({column})::timestamptz AT TIME ZONE 'UTC')"
    return (f"(to_char({t}, 'YYYY') || '-W' || lpad(((extract(doy FROM {t})::int - 1 + 7 - "
            f"((extract(dow FROM {t})::int + 6) % 7)) / 7)::text, 2, '0'))")


def dialect(sql: str) -> str:
    """The few SQLite functions selfdrive's SQL uses, as PostgreSQL says them: JSON
    fields, seconds between ISO timestamps, SQLite's week numbers, and the unary ``+``
    SQLite reads as "do not use an index for this column"."""
    if "json_extract" in sql:
        sql = _JSON_FIELD.sub(lambda m: f"(({m.group(1)})::jsonb ->> '{m.group(2)}')", sql)
    if "julianday" in sql:
        sql = _JULIANDAY.sub(
            lambda m: f"(extract(epoch FROM ({m.group(1)})::timestamptz) / 86400.0)", sql)
    if "strftime" in sql:
        sql = _WEEK.sub(lambda m: _week(m.group(1)), sql)
    if "+" in sql:
        sql = _UNINDEXED.sub("", sql)
    return sql


def translate(sql: str) -> str:
    """A statement as psycopg takes it: :func:`dialect`, then SQLite's ``?`` placeholders
    as ``%s`` (and a literal ``%`` doubled, as in ``LIKE 'alert:%'``).

    selfdrive's SQL writes no ``?`` inside string literals.
    """
    return _PARAM.sub(lambda m: "%s" if m.group() == "?" else "%%", dialect(sql))


class Cursor:
    """What a store gets back from :meth:`Connection.execute`: rows by name or index."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def fetchone(self) -> Row | None:
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchmany(self, size: int) -> list[Row]:
        return list(self._cursor.fetchmany(size)) if self._cursor.description else []

    def fetchall(self) -> list[Row]:
        return list(self._cursor.fetchall()) if self._cursor.description else []

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)


class Connection:
    """One psycopg connection, used like the SQLite one: ``execute(sql, params)``.

    Autocommit outside :meth:`begin_write`/:meth:`commit`; threads share it under the
    journal's own lock, as they share the SQLite connection.
    """

    def __init__(self, location: JournalUrl, *, connect_timeout: float,
                 lock_timeout: float) -> None:
        self.location = location
        self.lock_timeout = lock_timeout
        self.raw = connect(location, timeout=connect_timeout)
        self._local = threading.local()

    @property
    def in_transaction(self) -> bool:
        import psycopg

        return self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        cur = self.raw.cursor(row_factory=_row_factory)
        cur.execute(translate(sql), tuple(params) if params else None)
        return Cursor(cur)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(translate(sql), rows)

    def begin_write(self) -> None:
        """Open a write transaction holding the journal's write lock (waiting at most
        ``lock_timeout`` for it)."""
        import psycopg

        ms = max(1, int(self.lock_timeout * 1000))
        try:
            # One round trip for the three (no parameters: the simple query protocol).
            self.raw.execute(f"BEGIN; SET LOCAL lock_timeout = {ms}; "
                             f"SELECT pg_advisory_xact_lock({WRITE_LOCK_KEY})")
        except psycopg.errors.LockNotAvailable:
            self.rollback()
            raise JournalLockedError(
                f"journal {self.location} is locked by another selfdrive writer; waited "
                f"{self.lock_timeout:g}s, and nothing was written. Retry, or find the "
                f"session holding it (pg_locks, objid {WRITE_LOCK_KEY & 0xFFFFFFFF})") from None
        except BaseException:
            self.rollback()
            raise

    def commit(self) -> None:
        self.raw.execute("COMMIT")

    def rollback(self) -> None:
        import psycopg

        if self.in_transaction:
            try:
                self.raw.execute("ROLLBACK")
            except psycopg.Error:
                pass

    def close(self) -> None:
        self.raw.close()


def connect(location: JournalUrl, *, timeout: float) -> psycopg.Connection[Any]:
    """Open a connection, or say why not, naming the journal (never its password)."""
    try:
        import psycopg
    except ImportError:
        raise JournalUnavailableError(
            f"journal {location}: PostgreSQL journals need psycopg; install it with "
            f"pip install 'selfdrive[postgres]'") from None
    try:
        return psycopg.connect(location.url, autocommit=True,
                               connect_timeout=max(1, round(timeout)),
                               application_name="selfdrive")
    except psycopg.Error as exc:
        raise JournalUnavailableError(f"journal {location}: cannot connect: "
                                      f"{_cause(exc)}; nothing was written") from None


def _cause(exc: Exception) -> str:
    """libpq's message, one line, without the server's own address spelled twice."""
    text = " ".join(str(exc).split())
    return text.removeprefix("connection failed: ")


def error(location: JournalUrl, exc: Exception, doing: str) -> JournalError:
    """The error to raise for a psycopg error, naming the journal and what failed."""
    import psycopg

    if isinstance(exc, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
        return JournalLockedError(f"journal {location}: waited too long to {doing}; nothing "
                                  f"of it was written. Retry")
    if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        written = "" if doing == "read" else "; nothing of it was written"
        return JournalUnavailableError(f"journal {location}: cannot {doing}: "
                                       f"{_cause(exc)}{written}")
    return JournalError(f"journal {location}: cannot {doing}: {_cause(exc)}")


def integrity_errors() -> tuple[type[Exception], ...]:
    import psycopg

    return (psycopg.IntegrityError,)


# -- schema ------------------------------------------------------------------------

_ID = "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"

#: Numbered as SQLite's migrations are, one for one: the same name is the same schema.
MIGRATIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("0001_runs_steps_events_flags", (
        "CREATE TABLE runs (id TEXT PRIMARY KEY, runbook TEXT NOT NULL, mode TEXT NOT NULL, "
        "status TEXT NOT NULL, risk TEXT, requested_by TEXT NOT NULL, os_user TEXT, "
        "params TEXT, decision TEXT, firing TEXT, plan_hash TEXT, dedup_key TEXT, owner TEXT, "
        "error TEXT, runbook_file TEXT, code_digest TEXT, verified INTEGER, "
        "created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, updated_at TEXT)",
        "CREATE INDEX idx_runs_runbook_created_at ON runs (runbook, created_at)",
        "CREATE INDEX idx_runs_status ON runs (status)",
        "CREATE UNIQUE INDEX idx_runs_dedup_key ON runs (dedup_key)",
        f"CREATE TABLE steps (id {_ID}, run_id TEXT NOT NULL REFERENCES runs (id), "
        "seq INTEGER NOT NULL, phase TEXT NOT NULL, kind TEXT NOT NULL, name TEXT, "
        "target TEXT, command TEXT, readonly INTEGER, planned INTEGER, status TEXT NOT NULL, "
        "attempt INTEGER, exit_code INTEGER, stdout TEXT, stderr TEXT, truncated INTEGER, "
        "error TEXT, data TEXT, started_at TEXT NOT NULL, finished_at TEXT, "
        "duration DOUBLE PRECISION)",
        "CREATE UNIQUE INDEX idx_steps_run_id_seq ON steps (run_id, seq)",
        f"CREATE TABLE events (id {_ID}, at TEXT NOT NULL, kind TEXT NOT NULL, "
        "actor TEXT NOT NULL, run_id TEXT, data TEXT NOT NULL, prev_hash TEXT NOT NULL, "
        "hash TEXT NOT NULL)",
        "CREATE INDEX idx_events_run_id ON events (run_id)",
        "CREATE TABLE flags (name TEXT PRIMARY KEY, value TEXT, set_by TEXT, set_at TEXT)",
    )),
    ("0002_locks", (
        "CREATE TABLE locks (key TEXT PRIMARY KEY, run_id TEXT, owner TEXT, acquired_at TEXT, "
        "expires_at TEXT)",
    )),
    ("0003_approvals", (
        f"CREATE TABLE approvals (id {_ID}, run_id TEXT NOT NULL REFERENCES runs (id), "
        "decision TEXT NOT NULL, actor TEXT NOT NULL, os_user TEXT, plan_hash TEXT NOT NULL, "
        "reason TEXT, at TEXT NOT NULL)",
        "CREATE INDEX idx_approvals_run_id ON approvals (run_id)",
        "ALTER TABLE runs ADD COLUMN expires_at TEXT",
        "ALTER TABLE steps ADD COLUMN plan_hash TEXT",
        "CREATE INDEX idx_runs_mode_created_at ON runs (mode, created_at)",
    )),
    ("0004_alerts_schedules", (
        f"CREATE TABLE alerts (id {_ID}, received_at TEXT NOT NULL, source TEXT NOT NULL, "
        "name TEXT, status TEXT NOT NULL, labels TEXT, annotations TEXT, fingerprint TEXT, "
        "starts_at TEXT, group_key TEXT, matched TEXT, remote TEXT, reason TEXT, "
        "http_status INTEGER, brief TEXT)",
        "CREATE INDEX idx_alerts_received_at ON alerts (received_at)",
        "CREATE INDEX idx_alerts_name_received_at ON alerts (name, received_at)",
        f"CREATE TABLE alert_runs (id {_ID}, alert_id BIGINT NOT NULL REFERENCES alerts (id), "
        "runbook TEXT NOT NULL, fingerprint TEXT, dedup_key TEXT, run_id TEXT, "
        "outcome TEXT NOT NULL, detail TEXT, diagnostic INTEGER, owner TEXT, "
        "claimed_at TEXT NOT NULL, updated_at TEXT)",
        "CREATE INDEX idx_alert_runs_alert_id ON alert_runs (alert_id)",
        "CREATE INDEX idx_alert_runs_runbook_fingerprint_id ON alert_runs "
        "(runbook, fingerprint, id)",
        "CREATE UNIQUE INDEX idx_alert_runs_dedup_key ON alert_runs (dedup_key)",
        "CREATE INDEX idx_alert_runs_run_id ON alert_runs (run_id)",
        "CREATE TABLE schedules (id TEXT PRIMARY KEY, last_fire TEXT, updated_at TEXT)",
        f"CREATE TABLE schedule_fires (id {_ID}, schedule_id TEXT NOT NULL, "
        "fire_time TEXT NOT NULL, status TEXT NOT NULL, run_id TEXT, owner TEXT, "
        "claimed_at TEXT NOT NULL, finished_at TEXT, detail TEXT)",
        "CREATE UNIQUE INDEX idx_schedule_fires_schedule_id_fire_time ON schedule_fires "
        "(schedule_id, fire_time)",
        "CREATE INDEX idx_schedule_fires_schedule_id_status ON schedule_fires "
        "(schedule_id, status)",
    )),
    ("0005_learning_indexes", (
        "CREATE INDEX idx_runs_window ON runs (created_at, runbook, mode, status, verified, "
        "started_at, finished_at, dedup_key, id)",
        "CREATE INDEX idx_runs_runbook_status_verified_mode ON runs "
        "(runbook, status, verified, mode)",
        "CREATE INDEX idx_runs_runbook_started_at ON runs (runbook, started_at)",
        "CREATE INDEX idx_runs_alert_record ON runs (((firing::jsonb) ->> 'name'), runbook, "
        "status, verified) WHERE ((firing::jsonb) ->> 'kind') = 'alert'",
        "CREATE INDEX idx_steps_verify_retried ON steps (started_at, run_id, name, attempt) "
        "WHERE phase = 'verify' AND kind = 'check' AND attempt > 1 AND status = 'ok'",
        "CREATE INDEX idx_alerts_uncovered ON alerts (received_at, name, fingerprint) "
        "WHERE status = 'firing' AND matched = '[]'",
    )),
    ("0006_alert_intake_replays_and_refusals", (
        "ALTER TABLE alerts ADD COLUMN requests INTEGER",
        "ALTER TABLE alerts ADD COLUMN last_at TEXT",
        "CREATE TABLE alert_deliveries (key TEXT PRIMARY KEY, alert_id BIGINT NOT NULL, "
        "seen_at TEXT NOT NULL)",
        "CREATE INDEX idx_alert_deliveries_seen_at ON alert_deliveries (seen_at)",
        "CREATE INDEX idx_alerts_resolved ON alerts (fingerprint, source, id) "
        "WHERE status = 'resolved'",
    )),
    ("0007_process_groups", (
        "ALTER TABLE steps ADD COLUMN pgroup TEXT",
        "ALTER TABLE locks ADD COLUMN pgroup TEXT",
    )),
)


def _applied(conn: Connection) -> set[str]:
    found = conn.execute("SELECT to_regclass('selfdrive_migrations')").fetchone()
    if found is None or found[0] is None:
        return set()
    return {r[0] for r in conn.execute("SELECT name FROM selfdrive_migrations")}


def migrate(conn: Connection) -> list[str]:
    """Apply the migrations this database lacks, in order, under the write lock (so
    processes opening a new journal at once do not race); the names applied."""
    from selfdrive.journal.store import utcnow

    if _applied(conn) >= {name for name, _ in MIGRATIONS}:
        return []  # the common case: no lock to wait for behind a long write
    conn.begin_write()
    try:
        conn.execute("CREATE TABLE IF NOT EXISTS selfdrive_migrations (name TEXT PRIMARY KEY, "
                     "applied_at TEXT NOT NULL)")
        done = {r[0] for r in conn.execute("SELECT name FROM selfdrive_migrations")}
        applied = []
        for name, statements in MIGRATIONS:
            if name in done:
                continue
            for statement in statements:
                conn.execute(statement)
            conn.execute("INSERT INTO selfdrive_migrations (name, applied_at) VALUES (?, ?)",
                         (name, utcnow()))
            applied.append(name)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return applied


# -- the journal -------------------------------------------------------------------


class PostgresJournal(Journal):
    """The shared journal: the same stores as SQLite's, on one PostgreSQL database."""

    def __init__(self, location: JournalUrl, *, busy_timeout: float = 5.0) -> None:
        self.location = location
        self._setup(str(location), "postgresql", busy_timeout)
        self._db_errors = psycopg_errors()
        self.conn = Connection(location, connect_timeout=busy_timeout,
                               lock_timeout=busy_timeout)
        try:
            migrate(self.conn)
        except psycopg_errors() as exc:
            self.conn.close()
            raise error(location, exc, "apply migrations") from None
        self._open_stores()

    def _begin(self, doing: str) -> None:
        try:
            self.conn.begin_write()
        except psycopg_errors() as exc:
            raise error(self.location, exc, doing) from None

    def _commit(self) -> None:
        self.conn.commit()

    def _end(self, held: None) -> None:
        """Nothing to release: the advisory lock ends with the transaction."""

    def _abort(self) -> None:
        self.conn.rollback()

    def _error(self, exc: BaseException, doing: str) -> JournalError:
        assert isinstance(exc, Exception)
        return error(self.location, exc, doing)

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        return self._query(lambda conn: [dict(row) for row in conn.execute(sql, params)])

    def _read_tuples(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._query(lambda conn: [row._values for row in conn.execute(sql, params)])

    def _query(self, read: Callable[[Connection], T]) -> T:
        with self._lock:
            try:
                return read(self.conn)
            except psycopg_errors() as exc:
                raise error(self.location, exc, "read") from None

    def _columns(self, conn: Connection, table: str) -> tuple[str, ...]:
        if table not in self._column_names:
            rows = conn.execute("SELECT column_name FROM information_schema.columns WHERE "
                                "table_schema = current_schema() AND table_name = ? "
                                "ORDER BY ordinal_position", (table,))
            self._column_names[table] = tuple(r[0] for r in rows)
        return self._column_names[table]


    def _hint(self, index: str) -> str:
        return ""  # PostgreSQL's planner takes no index hints

    def _after_copy(self, conn: Connection, tables: Sequence[str]) -> None:
        """Identity columns go on from the largest id copied in."""
        for table in tables:
            if "id" not in self._columns(conn, table):
                continue
            found = conn.execute("SELECT pg_get_serial_sequence(?, 'id')", (table,)).fetchone()
            if found is None or found[0] is None:
                continue  # no identity column (runs are keyed by their run id)
            conn.execute(f"SELECT setval(?, COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) "
                         f"FROM {table}", (found[0],))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


def psycopg_errors() -> tuple[type[Exception], ...]:
    import psycopg

    return (psycopg.Error,)


def open_postgres(location: JournalUrl, *, busy_timeout: float = 5.0,
                  recover: bool = True) -> PostgresJournal:
    """Open (migrating) the shared journal; recover runs of this host's dead processes
    (a run whose process ran on another host is that host's to recover)."""
    journal = PostgresJournal(location, busy_timeout=busy_timeout)
    if recover:
        with contextlib.suppress(JournalUnavailableError):
            journal.runs.recover()
    return journal
