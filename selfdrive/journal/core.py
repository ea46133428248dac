"""The journal's database core: what every store builds on, and nothing else.

A :class:`Journal` is one database (SQLite now; PostgreSQL next) with five things of
its own: the connection, transactions (``atomic`` and the write scope each store
write takes), the write gate, the hash-chained event log, and migrations. Everything
a journal records beyond that lives in a narrow store that the core carries as an
attribute (``journal.runs``, ``journal.approvals`` …; see :mod:`selfdrive.journal.store`
for the list and for how a new one plugs in).

Stores speak to the core through a small surface that a second backend implements
once: ``_write(doing)`` (a transaction, joined when one is open), ``_read(sql, params)``,
``_append_event(conn, …)`` (a link of the chain, inside a write), ``_check_chain`` (the
run's row agrees with the chain), ``_encode`` and ``_columns``. Their SQL is kept
portable where that costs nothing; what only SQLite has (``INDEXED BY``, ``PRAGMA``,
its integrity error) is asked of the core, never written in a store.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from selfdrive.journal import chain
from selfdrive.journal.chain import STATUS_KINDS, Disagreement
from selfdrive.sdk.errors import AuditMismatchError, JournalError
from selfdrive.sdk.vocabulary import RunState

if TYPE_CHECKING:
    from selfdrive.journal.alerts import AlertStore, ScheduleStore
    from selfdrive.journal.approvals import ApprovalStore, LockStore
    from selfdrive.journal.runs import RunStore

T = TypeVar("T")
GENESIS = "0" * 64
HALT_FLAG = "halt"
#: Columns holding JSON, and the types a database takes as they are (bool is not one).
_JSON_COLUMNS = frozenset({"data", "params", "decision", "firing"})
_PLAIN = frozenset({str, int, float})


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def instant(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def before(now: str, seconds: float) -> str:
    """The journal time ``seconds`` before ``now`` (empty: no horizon at all)."""
    if seconds <= 0:
        return ""
    return (instant(now) - timedelta(seconds=seconds)).astimezone(UTC).isoformat(
        timespec="microseconds")


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


def flag_entries(value: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A flag's entries: those ``append`` keeps, or a value ``set`` wrote whole (as every
    flag was stored before flags could hold several) as its only entry."""
    if value is None:
        return []
    if isinstance(value.get("entries"), list):
        return list(value["entries"])
    return [value]


@dataclass(frozen=True)
class Event:
    """One link of the hash-chained audit trail."""

    id: int
    at: str
    kind: str
    actor: str
    run_id: str | None
    data: dict[str, Any]
    prev_hash: str
    hash: str


def event_digest(prev_hash: str, at: str, kind: str, actor: str, run_id: str | None,
                 data_json: str) -> str:
    body = canonical({"at": at, "kind": kind, "actor": actor, "run_id": run_id,
                      "data": json.loads(data_json)})
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def encode(fields: dict[str, Any]) -> dict[str, Any]:
    """Python values as the columns hold them (JSON text, enum values, 0/1)."""
    out: dict[str, Any] = {}
    for key, value in fields.items():
        if value is None or (type(value) in _PLAIN and key not in _JSON_COLUMNS):
            out[key] = value  # most values: checked first, as every write encodes
        elif key in _JSON_COLUMNS or isinstance(value, dict | list | tuple):
            out[key] = canonical(value)
        elif isinstance(value, RunState):
            out[key] = value.value
        elif isinstance(value, bool):
            out[key] = int(value)
        else:
            out[key] = value
    return out


class Journal(abc.ABC):
    """A journal: the database core, and the narrow stores that record through it."""

    owner: str
    #: The journal as its users know it: its file, or its address (no password).
    name: str
    #: Whose SQL it speaks where the two differ: "sqlite" or "postgresql".
    dialect: str
    #: Runs and their steps: every status change goes through ``runs.transition``.
    runs: RunStore
    #: Approvals and denials, bound to plan hashes and proven by the chain.
    approvals: ApprovalStore
    #: Leases on keys (one run per key at a time).
    locks: LockStore
    #: Alerts received, refused requests sampled, and the claims they make on runs.
    alerts: AlertStore
    #: Schedule fires claimed, missed or skipped.
    schedules: ScheduleStore
    #: Named switches with their history in the chain (autonomy's halt).
    flags: FlagStore

    @contextlib.contextmanager
    def atomic(self, doing: str) -> Iterator[None]:
        """One transaction for every write inside: all of them or none (``doing`` names
        it in errors). Only journal calls belong inside: never an effect, which must
        follow its committed intent."""
        with self._write(doing):
            yield

    def event(self, kind: str, *, actor: str, run_id: str | None = None,
              data: dict[str, Any] | None = None) -> None:
        """Chain an event. A run's status events (``run.<state>``) are written by its
        state-machine move alone: one written here would forge a status change."""
        if kind in STATUS_KINDS:
            raise JournalError(f"event {kind} records a status change; only "
                               f"runs.transition writes it")
        with self._write(f"record event {kind}") as conn:
            self._append_event(conn, kind, actor, run_id, data)

    def events(self, run_id: str | None = None) -> list[Event]:
        if run_id is None:
            rows = self._read("SELECT * FROM events ORDER BY id")
        else:
            rows = self._read("SELECT * FROM events WHERE run_id = ? ORDER BY id", (run_id,))
        return [Event(id=r["id"], at=r["at"], kind=r["kind"], actor=r["actor"],
                      run_id=r["run_id"], data=json.loads(r["data"]), prev_hash=r["prev_hash"],
                      hash=r["hash"]) for r in rows]

    def disagreements(self, run_id: str | None = None) -> list[Disagreement]:
        """Rows of runs and approvals that the audit chain does not back (all, or one
        run's); see :mod:`selfdrive.journal.chain`."""
        return self._query(lambda conn: chain.disagreements(conn, run_id))

    @abc.abstractmethod
    def close(self) -> None: ...

    # -- what stores build on ------------------------------------------------------

    def _setup(self, name: str, dialect: str, busy_timeout: float) -> None:
        """What every journal holds before it connects: its name, its owner (this
        process), and one lock, since fan-out and notification threads share its one
        connection."""
        from selfdrive.journal.processes import process_identity

        self.name = name
        self.dialect = dialect
        self.busy_timeout = busy_timeout
        self.owner = process_identity()
        self._lock = threading.RLock()
        self._column_names: dict[str, tuple[str, ...]] = {}

    def _open_stores(self) -> None:
        """The narrow stores, on this core (once it is connected and migrated)."""
        from selfdrive.journal.alerts import AlertStore, ScheduleStore
        from selfdrive.journal.approvals import ApprovalStore, LockStore
        from selfdrive.journal.runs import RunStore

        self.runs = RunStore(self)
        self.approvals = ApprovalStore(self)
        self.locks = LockStore(self)
        self.alerts = AlertStore(self)
        self.schedules = ScheduleStore(self)
        self.flags = FlagStore(self)

    busy_timeout: float
    #: Serialises the connection's use across threads (fan-out, notifications).
    _lock: threading.RLock
    #: Open write scopes on the connection (``atomic`` nests writes), and whether a write
    #: nested in it failed (its error, when it was the journal's): then all rolls back.
    _depth: int = 0
    _failed: bool | BaseException = False

    @contextlib.contextmanager
    def _write(self, doing: str) -> Iterator[Any]:
        """A write transaction (joined when one is open), yielding its connection.

        The database's part is :meth:`_begin` (take the single-writer lock, open the
        transaction), :meth:`_commit`, :meth:`_abort` and :meth:`_end`; an error of the
        database (:attr:`_db_errors`) becomes :meth:`_error`'s, naming the journal.
        """
        with self._lock:
            if self._depth:
                # Inside atomic(): join its transaction (the lock keeps other threads out
                # until it ends). A write failing in it fails the whole, even if caught.
                self._depth += 1
                try:
                    yield self.conn
                except self._db_errors as exc:
                    error = self._error(exc, doing)
                    self._failed = error
                    raise error from None
                except BaseException as exc:
                    self._failed = exc if isinstance(exc, JournalError) else True
                    raise
                finally:
                    self._depth -= 1
                return
            held = self._begin(doing)
            try:
                self._depth, self._failed = 1, False
                try:
                    yield self.conn
                except self._db_errors as exc:
                    self._abort()
                    raise self._error(exc, doing) from None
                except BaseException:
                    self._abort()
                    raise
                finally:
                    self._depth = 0
                if self._failed:
                    self._abort()
                    cause = self._failed
                    kind = type(cause) if isinstance(cause, JournalError) else JournalError
                    raise kind(f"journal {self.name}: cannot {doing}: a write in it failed, so "
                               f"none of it was recorded"
                               + (f" ({cause})" if isinstance(cause, JournalError) else ""))
                try:
                    self._commit()
                except self._db_errors as exc:
                    self._abort()
                    raise self._error(exc, doing) from None
            finally:
                self._end(held)

    #: What the database's driver raises.
    _db_errors: tuple[type[BaseException], ...] = ()
    #: The connection stores write through.
    conn: Any

    @abc.abstractmethod
    def _begin(self, doing: str) -> Any:
        """Take the single-writer lock and open a write transaction; a token for
        :meth:`_end`. Raises the journal's error when it cannot."""

    @abc.abstractmethod
    def _commit(self) -> None: ...

    @abc.abstractmethod
    def _abort(self) -> None:
        """Roll back the open transaction, hiding no error that caused it."""

    @abc.abstractmethod
    def _end(self, held: Any) -> None:
        """After the transaction, committed or not: release what :meth:`_begin` took."""

    @abc.abstractmethod
    def _error(self, exc: BaseException, doing: str) -> JournalError:
        """The journal's error for the database's ``exc``, naming the journal and why."""

    @abc.abstractmethod
    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def _after_copy(self, conn: Any, tables: Sequence[str]) -> None:
        """Rows were copied in with their ids: make the next ids follow them."""

    def _read_tuples(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows as plain tuples (a database may answer these faster than dicts)."""
        return [tuple(row.values()) for row in self._read(sql, params)]

    @abc.abstractmethod
    def _query(self, read: Callable[[Any], T]) -> T:
        """``read`` given the connection, outside any write (errors name the journal)."""

    def _append_event(self, conn: Any, kind: str, actor: str, run_id: str | None,
                      data: dict[str, Any] | None, *, at: str | None = None) -> None:
        """Chain an event inside a write; ``at`` is the time of the row it records.

        The write holds the journal's single-writer lock, so reading the last link and
        appending the next cannot interleave with another writer's."""
        row = conn.execute("SELECT hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
        prev = row[0] if row else GENESIS
        at, data_json = at or utcnow(), canonical(data or {})
        digest = event_digest(prev, at, kind, actor, run_id, data_json)
        conn.execute("INSERT INTO events (at, kind, actor, run_id, data, prev_hash, hash) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (at, kind, actor, run_id, data_json, prev, digest))

    def _check_chain(self, conn: Any, run_id: str, status: str) -> None:
        """Refuse to act on a run whose row status is not the one its chain ends on."""
        why = chain.status_of(conn, run_id, status)
        if why is not None:
            raise AuditMismatchError(f"{why}: the row was changed outside selfdrive, so "
                                     f"nothing acts on it (`selfdrive audit verify` names "
                                     f"every such row)")

    @abc.abstractmethod
    def _columns(self, conn: Any, table: str) -> tuple[str, ...]:
        """The table's column names, in order."""


    @abc.abstractmethod
    def _hint(self, index: str) -> str:
        """SQL that makes a read use ``index`` where the database takes such a hint."""

    _encode = staticmethod(encode)


class FlagStore:
    """Named switches (autonomy's halt), each change chained with what it replaced."""

    def __init__(self, db: Journal) -> None:
        self._db = db

    def get(self, name: str) -> dict[str, Any] | None:
        rows = self._db._read("SELECT value FROM flags WHERE name = ?", (name,))
        return json.loads(rows[0]["value"]) if rows else None

    def set(self, name: str, value: dict[str, Any] | None, *,
            actor: str) -> list[dict[str, Any]]:
        """Set flag ``name`` to ``value`` (None: off); return the entries it replaced."""
        with self._db._write(f"set {name}") as conn:
            old = conn.execute("SELECT value FROM flags WHERE name = ?", (name,)).fetchone()
            replaced = flag_entries(json.loads(old[0])) if old else []
            if value is None:
                conn.execute("DELETE FROM flags WHERE name = ?", (name,))
                # The off event says what it cleared: the trail reads without the flags.
                self._db._append_event(conn, f"{name}.off", actor, None, {"cleared": replaced})
            else:
                self._put(conn, name, value, actor)
                self._db._append_event(conn, f"{name}.on", actor, None, value)
        return replaced

    def append(self, name: str, entry: dict[str, Any], *,
               actor: str) -> list[dict[str, Any]]:
        """Add ``entry`` to flag ``name``'s entries (turning it on); return them all."""
        # Read and written in one transaction, so two people adding at once keep both.
        with self._db._write(f"set {name}") as conn:
            old = conn.execute("SELECT value FROM flags WHERE name = ?", (name,)).fetchone()
            entries = [*(flag_entries(json.loads(old[0])) if old else []), entry]
            self._put(conn, name, {"entries": entries}, actor)
            self._db._append_event(conn, f"{name}.on", actor, None, entry)
        return entries

    @staticmethod
    def _put(conn: Any, name: str, value: dict[str, Any], actor: str) -> None:
        conn.execute("INSERT INTO flags (name, value, set_by, set_at) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT (name) DO UPDATE SET value = excluded.value, "
                     "set_by = excluded.set_by, set_at = excluded.set_at",
                     (name, canonical(value), actor, utcnow()))


def halt_reasons(conn: Any) -> list[str] | None:
    """The reasons autonomy is halted, read inside a write (None: it is not)."""
    halt = conn.execute("SELECT value FROM flags WHERE name = ?", (HALT_FLAG,)).fetchone()
    if halt is None:
        return None
    return [e.get("reason", "") for e in flag_entries(json.loads(halt[0]))]


def _instant_or_none(text: str | None) -> datetime | None:
    try:
        return instant(text) if text else None
    except (ValueError, OverflowError):
        return None


def not_after(first: str, second: str | None) -> bool:
    """Whether the time ``first`` is at or before ``second`` (times as senders gave them)."""
    a, b = _instant_or_none(first), _instant_or_none(second)
    return a is not None and b is not None and a <= b
