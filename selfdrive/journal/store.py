"""The journal: every decision, step and outcome, in SQLite.

Writes happen in ``BEGIN IMMEDIATE`` transactions so a read-modify-write never
races another process; a writer that holds the journal past the busy timeout gives
a clear :class:`JournalLockedError` and the record is not half-written. The store
sits behind :class:`Journal` so that a shared database can replace SQLite later.
"""

from __future__ import annotations

import abc
import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from selfdrive.journal import chain
from selfdrive.journal.chain import Disagreement
from selfdrive.journal.records import ApprovalRecord, RunRecord, StepRecord
from selfdrive.sdk.errors import (
    AuditMismatchError,
    DuplicateRunError,
    JournalError,
    JournalLockedError,
    JournalUnavailableError,
)
from selfdrive.sdk.vocabulary import RunState

GENESIS = "0" * 64
#: States in which a run belongs to a live process; recovery checks those owners.
OWNED_STATES = (RunState.REQUESTED, RunState.DECIDED, RunState.APPROVED, RunState.RUNNING,
                RunState.ROLLING_BACK)
#: States in which a run may record steps.
STEPPING_STATES = (RunState.DECIDED, RunState.RUNNING, RunState.ROLLING_BACK)
HALT_FLAG = "halt"
#: Columns holding JSON, and the types SQLite takes as they are (bool is not one).
_JSON_COLUMNS = frozenset({"data", "params", "decision", "firing"})
_PLAIN = frozenset({str, int, float})


def flag_entries(value: dict[str, Any] | None) -> list[dict[str, Any]]:
    """A flag's entries: those ``append_flag`` keeps, or a value ``set_flag`` wrote whole
    (as every flag was stored before flags could hold several) as its only entry."""
    if value is None:
        return []
    if isinstance(value.get("entries"), list):
        return list(value["entries"])
    return [value]


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


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _instant(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _before(now: str, seconds: float) -> str:
    """The journal time ``seconds`` before ``now`` (empty: no horizon at all)."""
    if seconds <= 0:
        return ""
    return (_instant(now) - timedelta(seconds=seconds)).astimezone(UTC).isoformat(
        timespec="microseconds")


def _not_after(first: str, second: str | None) -> bool:
    """Whether the time ``first`` is at or before ``second`` (times as senders gave them)."""
    if not second:
        return False
    try:
        return _instant(first) <= _instant(second)
    except (ValueError, OverflowError):
        return False


def process_identity(pid: int | None = None) -> str:
    """``host:pid:start`` — start time guards against a recycled pid."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def _start_ticks(pid: int) -> str:
    fields = _stat(pid)
    return "?" if fields is None else fields[_START]


#: In the fields of ``/proc/PID/stat`` after the command name: state, parent, process
#: group, and the start time (field 22, in clock ticks since boot).
_STATE, _PGRP, _START = 0, 2, 19


def _stat(pid: int | str) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this host; None when it lives elsewhere."""
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start in ("?", _start_ticks(pid))


def group_members(group: str) -> list[int] | None:
    """The live processes of the process group that ``group`` names (``host:pgid:start``,
    its leader's :func:`process_identity`); None when it lives on another host.

    Only processes of that group that started no earlier than its leader count, and a
    group whose leader's pid now belongs to a later process is gone: Linux reuses no pid
    while a group of that id has a member, so this never names a stranger.
    """
    host, _, rest = group.partition(":")
    pgid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pgid.isdigit():
        return None
    if not start.isdigit():
        return []  # its leader was gone before it could read a command
    leader = _stat(pgid)
    if leader is not None and leader[_START] != start:
        return []
    members = []
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            fields = _stat(entry.name)
            if (fields is not None and fields[_PGRP] == pgid and fields[_STATE] != "Z"
                    and int(fields[_START]) >= int(start)):
                members.append(int(entry.name))
    return members


def end_group(group: str, *, wait: float = 1.0) -> list[int] | None:
    """SIGKILL every member of ``group`` (see :func:`group_members`). Returns the pids left
    after at most ``wait`` seconds (processes this user may not signal, or stuck in the
    kernel), or None for a group on another host, which cannot be reached from here."""
    deadline = time.monotonic() + wait
    denied: set[int] = set()
    while True:
        members = group_members(group)
        if members is None:
            return None
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError:
                denied.add(pid)
        if not members or set(members) <= denied or time.monotonic() >= deadline:
            return members
        time.sleep(0.005)


def canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      default=str)


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


class Journal(abc.ABC):
    """What the executor, learning and CLI need from a journal."""

    owner: str

    @abc.abstractmethod
    def atomic(self, doing: str) -> contextlib.AbstractContextManager[None]:
        """One transaction for every write inside: all of them or none (``doing`` names
        it in errors). Only journal calls belong inside: never an effect, which must
        follow its committed intent."""

    @abc.abstractmethod
    def create_run(self, fields: dict[str, Any], *, actor: str) -> RunRecord: ...

    @abc.abstractmethod
    def transition(self, run_id: str, to: RunState, *, actor: str,
                   data: dict[str, Any] | None = None, **fields: Any) -> RunRecord: ...

    @abc.abstractmethod
    def begin_step(self, run_id: str, *, phase: str, kind: str, fence_halt: bool = False,
                   **fields: Any) -> int: ...

    @abc.abstractmethod
    def finish_step(self, step_id: int, *, status: str, **fields: Any) -> None: ...

    @abc.abstractmethod
    def event(self, kind: str, *, actor: str, run_id: str | None = None,
              data: dict[str, Any] | None = None) -> None: ...

    @abc.abstractmethod
    def get_run(self, run_id: str) -> RunRecord: ...

    @abc.abstractmethod
    def runs(self, *, runbook: str | None = None, status: Sequence[str] = (),
             limit: int = 50) -> list[RunRecord]: ...

    @abc.abstractmethod
    def steps(self, run_id: str) -> list[StepRecord]: ...

    @abc.abstractmethod
    def events(self, run_id: str | None = None) -> list[Event]: ...

    @abc.abstractmethod
    def get_flag(self, name: str) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def set_flag(self, name: str, value: dict[str, Any] | None, *,
                 actor: str) -> list[dict[str, Any]]:
        """Set flag ``name`` to ``value`` (None: off); return the entries it replaced."""

    @abc.abstractmethod
    def append_flag(self, name: str, entry: dict[str, Any], *,
                    actor: str) -> list[dict[str, Any]]:
        """Add ``entry`` to flag ``name``'s entries (turning it on); return them all."""

    @abc.abstractmethod
    def recent_outcomes(self, runbook: str, limit: int) -> list[tuple[str, bool | None]]: ...

    @abc.abstractmethod
    def verified_successes(self, runbook: str) -> int: ...

    @abc.abstractmethod
    def record_approval(self, run_id: str, *, actor: str, os_user: str, plan_hash: str,
                        reason: str | None, counts: Callable[[str], bool], needed: int,
                        expires_at: str) -> tuple[int, bool]: ...

    @abc.abstractmethod
    def record_denial(self, run_id: str, *, actor: str, os_user: str, reason: str,
                      plan_hash: str) -> RunRecord: ...

    @abc.abstractmethod
    def add_plan_steps(self, run_id: str, plan_hash: str,
                       steps: Sequence[dict[str, Any]]) -> None: ...

    @abc.abstractmethod
    def approvals(self, run_id: str) -> list[ApprovalRecord]: ...

    @abc.abstractmethod
    def granted(self, run_id: str, plan_hash: str) -> list[str]: ...

    @abc.abstractmethod
    def disagreements(self, run_id: str | None = None) -> list[Disagreement]: ...

    @abc.abstractmethod
    def count_runs(self, *, since: str, mode: str, runbook: str | None = None) -> int: ...

    @abc.abstractmethod
    def rate_counts(self, *, since: str, mode: str, runbook: str) -> tuple[int, int]: ...

    @abc.abstractmethod
    def acquire_lock(self, key: str, run_id: str, *, ttl: float) -> str | None: ...

    @abc.abstractmethod
    def release_lock(self, key: str, run_id: str) -> None: ...

    # -- alerts and schedules (selfdrive.triggers) ----------------------------------

    @abc.abstractmethod
    def record_alerts(self, alerts: Sequence[dict[str, Any]], *, window: float,
                      replay_window: float = 0.0) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def record_refusals(self, refusals: Sequence[dict[str, Any]]) -> list[int]: ...

    @abc.abstractmethod
    def run_alert_ids(self, run_ids: Sequence[str]) -> dict[str, int]: ...

    @abc.abstractmethod
    def update_alert_claim(self, claim_id: int, *, outcome: str, run_id: str | None = None,
                           detail: str | None = None) -> None: ...

    @abc.abstractmethod
    def set_alert_brief(self, alert_id: int, brief: str) -> None: ...

    @abc.abstractmethod
    def alerts(self, *, limit: int = 50, name: str | None = None) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def get_alert(self, alert_id: int) -> dict[str, Any] | None: ...

    @abc.abstractmethod
    def alert_claims(self, *, alert_id: int | None = None,
                     outcome: str | None = None) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def run_for_dedup_key(self, key: str) -> RunRecord | None: ...

    @abc.abstractmethod
    def schedule_last_fire(self, schedule_id: str) -> str | None: ...

    @abc.abstractmethod
    def claim_schedule_fire(self, schedule_id: str, *, fire_time: str | None,
                            missed: Sequence[str] = (), missed_total: int | None = None,
                            stale_after: float = 3600.0,
                            seen: str | None = None) -> dict[str, Any]: ...

    @abc.abstractmethod
    def finish_schedule_fire(self, schedule_id: str, fire_time: str, *, status: str,
                             run_id: str | None = None, detail: str | None = None) -> None: ...

    @abc.abstractmethod
    def schedule_fires(self, schedule_id: str | None = None, *,
                       limit: int = 100) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def interrupt_run(self, run_id: str, *, actor: str, reason: str) -> RunRecord: ...

    @abc.abstractmethod
    def recover(self) -> list[str]: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class SqliteJournal(Journal):
    """The embedded journal: one SQLite file in WAL mode with ``synchronous=FULL``."""

    def __init__(self, path: Path, *, busy_timeout: float = 5.0) -> None:
        import sqlite_utils

        self.path = path
        self.busy_timeout = busy_timeout
        self.owner = process_identity()
        self._gate = WriteGate(path.with_name(path.name + ".write.lock"))
        # One connection, shared by fan-out and notification threads: serialise its use.
        self._lock = threading.RLock()
        self._depth = 0  # open write scopes on the connection (atomic() nests writes)
        # A write nested in atomic() failed (its error when it was the journal's): roll
        # the whole back.
        self._failed: bool | BaseException = False
        self._runs_column_names: tuple[str, ...] = ()
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

    def _error(self, exc: sqlite3.Error, doing: str) -> JournalError:
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

    @contextlib.contextmanager
    def atomic(self, doing: str) -> Iterator[None]:
        with self._write(doing):
            yield

    @contextlib.contextmanager
    def _write(self, doing: str) -> Iterator[sqlite3.Connection]:
        with self._lock:
            if self._depth:
                # Inside atomic(): join its transaction (the lock keeps other threads out
                # until it ends). A write failing in it fails the whole, even if caught.
                self._depth += 1
                try:
                    yield self.conn
                except sqlite3.Error as exc:
                    error = self._error(exc, doing)
                    self._failed = error
                    raise error from None
                except BaseException as exc:
                    self._failed = exc if isinstance(exc, JournalError) else True
                    raise
                finally:
                    self._depth -= 1
                return
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
                try:
                    self.conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as exc:
                    raise self._error(exc, doing) from None
                self._depth, self._failed = 1, False
                try:
                    yield self.conn
                except sqlite3.Error as exc:
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
                    raise kind(f"journal {self.path}: cannot {doing}: a write in it failed, so "
                               f"none of it was recorded"
                               + (f" ({cause})" if isinstance(cause, JournalError) else ""))
                try:
                    self.conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    self._abort()
                    raise self._error(exc, doing) from None
            finally:
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

    def _append_event(self, conn: sqlite3.Connection, kind: str, actor: str,
                      run_id: str | None, data: dict[str, Any] | None, *,
                      at: str | None = None) -> None:
        """Chain an event; ``at`` is the time of the row it records, when it has one."""
        row = conn.execute("SELECT hash FROM events ORDER BY id DESC LIMIT 1").fetchone()
        prev = row[0] if row else GENESIS
        at, data_json = at or utcnow(), canonical(data or {})
        digest = event_digest(prev, at, kind, actor, run_id, data_json)
        conn.execute("INSERT INTO events (at, kind, actor, run_id, data, prev_hash, hash) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (at, kind, actor, run_id, data_json, prev, digest))

    @staticmethod
    def _check_chain(conn: sqlite3.Connection, run_id: str, status: str) -> None:
        """Refuse to act on a run whose row status is not the one its chain ends on."""
        why = chain.status_of(conn, run_id, status)
        if why is not None:
            raise AuditMismatchError(f"{why}: the row was changed outside selfdrive, so "
                                     f"nothing acts on it (`selfdrive audit verify` names "
                                     f"every such row)")

    def _runs_columns(self, conn: sqlite3.Connection) -> tuple[str, ...]:
        """Read once: this process migrates the journal only when it opens it."""
        if not self._runs_column_names:
            rows = conn.execute("PRAGMA table_info(runs)")
            self._runs_column_names = tuple(r[1] for r in rows)
        return self._runs_column_names

    @staticmethod
    def _encode(fields: dict[str, Any]) -> dict[str, Any]:
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

    # -- runs --------------------------------------------------------------------

    def create_run(self, fields: dict[str, Any], *, actor: str) -> RunRecord:
        now = utcnow()
        row = self._encode({"status": RunState.REQUESTED, "owner": self.owner,
                            "created_at": now, "updated_at": now, **fields})
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._write("record the run request") as conn:
            try:
                conn.execute(f"INSERT INTO runs ({cols}) VALUES ({marks})", list(row.values()))
            except sqlite3.IntegrityError as exc:
                key = fields.get("dedup_key")
                held = key and conn.execute("SELECT id, status FROM runs WHERE dedup_key = ?",
                                            (key,)).fetchone()
                if held:
                    raise DuplicateRunError(
                        f"run {fields.get('id')} not recorded: run {held['id']} "
                        f"({held['status']}) already holds dedup key {key!r}",
                        run_id=held["id"]) from None
                raise JournalError(f"run {fields.get('id')} not recorded: {exc}") from None
            self._append_event(conn, "run.requested", actor, row["id"],
                               {"runbook": row["runbook"], "params": fields.get("params", {})})
            return RunRecord.from_row({**dict.fromkeys(self._runs_columns(conn)), **row})

    def transition(self, run_id: str, to: RunState, *, actor: str,
                   data: dict[str, Any] | None = None, **fields: Any) -> RunRecord:
        now = utcnow()
        with self._write(f"move run {run_id} to {to.value}") as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise JournalError(f"no run {run_id}")
            current = RunState(row["status"])
            if not current.can_become(to):
                raise JournalError(f"run {run_id} is {current.value}; it cannot become "
                                   f"{to.value}")
            self._check_chain(conn, run_id, current.value)
            if row["owner"] not in (None, self.owner) and current in OWNED_STATES:
                raise JournalError(f"run {run_id} is owned by {row['owner']}, not this process")
            values = self._encode({"status": to, "updated_at": now, **fields})
            if to is RunState.RUNNING and "started_at" not in fields:
                values["started_at"] = now
            if to.final and "finished_at" not in fields:
                values["finished_at"] = now
            sets = ", ".join(f"{k} = ?" for k in values)
            conn.execute(f"UPDATE runs SET {sets} WHERE id = ?", [*values.values(), run_id])
            self._append_event(conn, f"run.{to.value}", actor, run_id,
                               {"from": current.value, **(data or {})})
            # The row as written: what reading it back would give, without the read.
            return RunRecord.from_row({**dict(row), **values})

    def get_run(self, run_id: str) -> RunRecord:
        rows = self._read("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            rows = self._read("SELECT * FROM runs WHERE id LIKE ? ORDER BY created_at DESC "
                              "LIMIT 2", (run_id.replace("%", "") + "%",))
            if len(rows) != 1:
                from selfdrive.sdk.errors import UsageError

                what = "no run" if not rows else "more than one run starts with"
                raise UsageError(f"{what} {run_id!r} in {self.path}")
        return RunRecord.from_row(rows[0])

    def runs(self, *, runbook: str | None = None, status: Sequence[str] = (),
             limit: int = 50) -> list[RunRecord]:
        where, params = [], []
        if runbook:
            where.append("runbook = ?")
            params.append(runbook)
        if status:
            where.append(f"status IN ({', '.join('?' for _ in status)})")
            params.extend(status)
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        return [RunRecord.from_row(r) for r in self._read(sql, [*params, limit])]

    # -- steps -------------------------------------------------------------------

    def begin_step(self, run_id: str, *, phase: str, kind: str, fence_halt: bool = False,
                   **fields: Any) -> int:
        """Write a step's intent. Fenced: the run must still be ours and stepping."""
        with self._write("record a step before it runs") as conn:
            row = conn.execute("SELECT status, owner FROM runs WHERE id = ?",
                               (run_id,)).fetchone()
            if row is None:
                raise JournalError(f"no run {run_id}")
            if row["status"] not in STEPPING_STATES or row["owner"] != self.owner:
                raise JournalError(f"run {run_id} is {row['status']} and owned by "
                                   f"{row['owner']}; this process may not act for it")
            if fence_halt:
                halt = conn.execute("SELECT value FROM flags WHERE name = ?",
                                    (HALT_FLAG,)).fetchone()
                if halt is not None:
                    from selfdrive.sdk.errors import HaltedError

                    reasons = [e.get("reason", "") for e in flag_entries(json.loads(halt[0]))]
                    raise HaltedError(f"autonomy was halted while the run was going: "
                                      f"{'; '.join(reasons)}")
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE run_id = ?",
                               (run_id,)).fetchone()[0]
            values = self._encode({"run_id": run_id, "seq": seq, "phase": phase, "kind": kind,
                                   "status": "started", "started_at": utcnow(), **fields})
            cols = ", ".join(values)
            marks = ", ".join("?" for _ in values)
            cur = conn.execute(f"INSERT INTO steps ({cols}) VALUES ({marks})",
                               list(values.values()))
            return int(cur.lastrowid or 0)

    def finish_step(self, step_id: int, *, status: str, **fields: Any) -> None:
        """Write a step's result; a step that an interruption already settled stays so."""
        values = self._encode({"status": status, "finished_at": utcnow(), **fields})
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._write("record a step's result") as conn:
            conn.execute(f"UPDATE steps SET {sets} WHERE id = ? AND status = 'started'",
                         [*values.values(), step_id])

    def steps(self, run_id: str) -> list[StepRecord]:
        rows = self._read("SELECT * FROM steps WHERE run_id = ? ORDER BY seq", (run_id,))
        return [StepRecord.from_row(r) for r in rows]

    # -- events and flags --------------------------------------------------------

    def event(self, kind: str, *, actor: str, run_id: str | None = None,
              data: dict[str, Any] | None = None) -> None:
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

    def get_flag(self, name: str) -> dict[str, Any] | None:
        rows = self._read("SELECT value FROM flags WHERE name = ?", (name,))
        return json.loads(rows[0]["value"]) if rows else None

    def set_flag(self, name: str, value: dict[str, Any] | None, *,
                 actor: str) -> list[dict[str, Any]]:
        with self._write(f"set {name}") as conn:
            old = conn.execute("SELECT value FROM flags WHERE name = ?", (name,)).fetchone()
            replaced = flag_entries(json.loads(old[0])) if old else []
            if value is None:
                conn.execute("DELETE FROM flags WHERE name = ?", (name,))
                # The off event says what it cleared: the trail reads without the flags.
                self._append_event(conn, f"{name}.off", actor, None, {"cleared": replaced})
            else:
                conn.execute("INSERT OR REPLACE INTO flags (name, value, set_by, set_at) "
                             "VALUES (?, ?, ?, ?)", (name, canonical(value), actor, utcnow()))
                self._append_event(conn, f"{name}.on", actor, None, value)
        return replaced

    def append_flag(self, name: str, entry: dict[str, Any], *,
                    actor: str) -> list[dict[str, Any]]:
        # Read and written in one transaction, so two people adding at once keep both.
        with self._write(f"set {name}") as conn:
            old = conn.execute("SELECT value FROM flags WHERE name = ?", (name,)).fetchone()
            entries = [*(flag_entries(json.loads(old[0])) if old else []), entry]
            conn.execute("INSERT OR REPLACE INTO flags (name, value, set_by, set_at) "
                         "VALUES (?, ?, ?, ?)",
                         (name, canonical({"entries": entries}), actor, utcnow()))
            self._append_event(conn, f"{name}.on", actor, None, entry)
        return entries

    # -- learning inputs ---------------------------------------------------------

    def recent_outcomes(self, runbook: str, limit: int) -> list[tuple[str, bool | None]]:
        """(status, verified) of the latest finished live runs, newest first.

        ``verified`` is True when verification passed, False when it failed, None when
        no verification ran.
        """
        rows = self._read(
            "SELECT status, verified FROM runs WHERE runbook = ? AND mode != 'dry-run' "
            "AND status IN ('succeeded', 'failed', 'verification_failed', 'rolled_back', "
            "'rollback_failed', 'interrupted') ORDER BY created_at DESC LIMIT ?",
            (runbook, limit))
        return [(r["status"], None if r["verified"] is None else bool(r["verified"]))
                for r in rows]

    def verified_successes(self, runbook: str) -> int:
        rows = self._read("SELECT COUNT(*) AS n FROM runs WHERE runbook = ? AND "
                          "status = 'succeeded' AND verified = 1 AND mode != 'dry-run'",
                          (runbook,))
        return int(rows[0]["n"])

    # -- approvals ---------------------------------------------------------------

    def record_approval(self, run_id: str, *, actor: str, os_user: str, plan_hash: str,
                        reason: str | None, counts: Callable[[str], bool], needed: int,
                        expires_at: str) -> tuple[int, bool]:
        """Record ``actor``'s approval of ``plan_hash``; approve the run once enough count.

        One transaction: the run must be pending on that very plan, as the audit chain
        says too; a person approving twice counts once; approvals are counted from the
        chain's ``approval.granted`` events, never from rows alone; ``counts`` says
        whether an approver counts (rules from config). Returns (approvals that count,
        whether the run is now approved).
        """
        from selfdrive.sdk.errors import UsageError

        with self._write(f"record approval of run {run_id}") as conn:
            row = conn.execute("SELECT status, plan_hash FROM runs WHERE id = ?",
                               (run_id,)).fetchone()
            if row is None:
                raise UsageError(f"no run {run_id}")
            if row["status"] != RunState.PENDING_APPROVAL.value:
                raise UsageError(f"run {run_id} is {row['status']}, not pending_approval")
            if row["plan_hash"] != plan_hash:
                raise UsageError(f"run {run_id} now waits on plan {row['plan_hash'][:12]}, "
                                 f"not {plan_hash[:12]}")
            self._check_chain(conn, run_id, row["status"])
            approvers = {e["actor"] for e in chain.granted(conn, run_id, plan_hash)}
            if actor not in approvers:
                at = utcnow()
                conn.execute("INSERT INTO approvals (run_id, decision, actor, os_user, plan_hash,"
                             " reason, at) VALUES (?, 'approve', ?, ?, ?, ?, ?)",
                             (run_id, actor, os_user, plan_hash, reason, at))
                self._append_event(conn, "approval.granted", actor, run_id,
                                   {"plan_hash": plan_hash, "os_user": os_user,
                                    "reason": reason}, at=at)
                approvers.add(actor)
            counted = sum(1 for a in approvers if counts(a))
            approved = counted >= needed
            if approved:
                conn.execute("UPDATE runs SET status = ?, owner = NULL, expires_at = ?, "
                             "updated_at = ? WHERE id = ?",
                             (RunState.APPROVED.value, expires_at, utcnow(), run_id))
                self._append_event(conn, "run.approved", actor, run_id,
                                   {"from": RunState.PENDING_APPROVAL.value,
                                    "plan_hash": plan_hash, "approvers": sorted(approvers),
                                    "expires_at": expires_at})
        return counted, approved

    def record_denial(self, run_id: str, *, actor: str, os_user: str, reason: str,
                      plan_hash: str) -> RunRecord:
        """Deny a run that waits for a human (pending, or approved but not yet run)."""
        from selfdrive.sdk.errors import UsageError

        with self._write(f"record denial of run {run_id}") as conn:
            row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise UsageError(f"no run {run_id}")
            current = RunState(row["status"])
            if not current.can_become(RunState.DENIED):
                raise UsageError(f"run {run_id} is {current.value}; only a run waiting for "
                                 f"approval can be denied")
            now = utcnow()
            conn.execute("INSERT INTO approvals (run_id, decision, actor, os_user, plan_hash, "
                         "reason, at) VALUES (?, 'deny', ?, ?, ?, ?, ?)",
                         (run_id, actor, os_user, plan_hash, reason, now))
            conn.execute("UPDATE runs SET status = ?, owner = NULL, error = ?, finished_at = ?, "
                         "updated_at = ? WHERE id = ?",
                         (RunState.DENIED.value, f"denied by {actor}: {reason}", now, now,
                          run_id))
            self._append_event(conn, "run.denied", actor, run_id,
                               {"from": current.value, "plan_hash": plan_hash,
                                "os_user": os_user, "reason": reason}, at=now)
            return self._run_in(conn, run_id)

    def add_plan_steps(self, run_id: str, plan_hash: str,
                       steps: Sequence[dict[str, Any]]) -> None:
        """Record what a plan saw and would change, in one transaction (not effects)."""
        with self._write(f"record the plan of run {run_id}") as conn:
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM steps WHERE run_id = ?",
                               (run_id,)).fetchone()[0]
            now = utcnow()
            for step in steps:
                seq += 1
                values = self._encode({"run_id": run_id, "seq": seq, "plan_hash": plan_hash,
                                       "started_at": now, "finished_at": now, **step})
                cols = ", ".join(values)
                marks = ", ".join("?" for _ in values)
                conn.execute(f"INSERT INTO steps ({cols}) VALUES ({marks})",
                             list(values.values()))

    def approvals(self, run_id: str) -> list[ApprovalRecord]:
        rows = self._read("SELECT * FROM approvals WHERE run_id = ? ORDER BY id", (run_id,))
        return [ApprovalRecord.from_row(r) for r in rows]

    def granted(self, run_id: str, plan_hash: str) -> list[str]:
        """Who approved this plan of this run, as the audit chain proves it: the actors of
        its ``approval.granted`` events that are links of the chain where they stand."""
        with self._lock:
            try:
                return sorted({e["actor"] for e in chain.granted(self.conn, run_id, plan_hash)
                               if chain.out_of_place(self.conn, e) is None})
            except sqlite3.Error as exc:
                raise self._error(exc, "read") from None

    def disagreements(self, run_id: str | None = None) -> list[Disagreement]:
        """Rows of runs and approvals that the audit chain does not back (all, or one
        run's); see :mod:`selfdrive.journal.chain`."""
        with self._lock:
            try:
                return chain.disagreements(self.conn, run_id)
            except sqlite3.Error as exc:
                raise self._error(exc, "read") from None

    def count_runs(self, *, since: str, mode: str, runbook: str | None = None) -> int:
        sql = "SELECT COUNT(*) AS n FROM runs WHERE mode = ? AND created_at >= ?"
        params: list[Any] = [mode, since]
        if runbook is not None:
            sql += " AND runbook = ?"
            params.append(runbook)
        return int(self._read(sql, params)[0]["n"])

    def rate_counts(self, *, since: str, mode: str, runbook: str) -> tuple[int, int]:
        """(runs of ``runbook``, runs in all) in ``mode`` created since ``since``.

        What rate limits read at every decision: one range scan of the window index
        (migration 0005) answers both, without visiting the runs table.
        """
        rows = self._read("SELECT COUNT(*) AS total, COALESCE(SUM(runbook = ?), 0) AS own "
                          "FROM runs INDEXED BY idx_runs_window "
                          "WHERE created_at >= ? AND mode = ?", (runbook, since, mode))
        return int(rows[0]["own"]), int(rows[0]["total"])

    # -- locks -------------------------------------------------------------------

    def acquire_lock(self, key: str, run_id: str, *, ttl: float) -> str | None:
        """Take the lease on ``key`` for ``run_id``; return the holder's run id if taken.

        A lease whose run has ended, whose owner died or whose expiry passed is free,
        unless a command of its run is still running (see :meth:`_lease_held`).
        """
        now = datetime.now(UTC)
        with self._write(f"take lock {key!r}") as conn:
            row = conn.execute("SELECT l.run_id, l.owner, l.expires_at, l.pgroup, r.status "
                               "FROM locks l LEFT JOIN runs r ON r.id = l.run_id "
                               "WHERE l.key = ?", (key,)).fetchone()
            # The same run held by another live process counts as held too (two resumes).
            if row is not None and (row["run_id"] != run_id or row["owner"] != self.owner) \
                    and self._lease_held(conn, row, now):
                return str(row["run_id"])
            expires = datetime.fromtimestamp(now.timestamp() + ttl, UTC)
            conn.execute("INSERT OR REPLACE INTO locks (key, run_id, owner, acquired_at, "
                         "expires_at) VALUES (?, ?, ?, ?, ?)",
                         (key, run_id, self.owner, now.isoformat(), expires.isoformat()))
        return None

    @staticmethod
    def _lease_held(conn: sqlite3.Connection, row: sqlite3.Row, now: datetime) -> bool:
        """Whether a lease holds: its run goes on in a live process (within its expiry),
        or a command of its run outlived the run's process. Such a command holds the
        lease, whatever its expiry, until it is gone: recovery ends it (or, failing
        that, names its group on the lease)."""
        if row["pgroup"]:
            return any(group_members(g) != [] for g in row["pgroup"].split())
        if row["status"] is None or RunState(row["status"]).final:
            return False
        if owner_alive(row["owner"]) is not False:
            return datetime.fromisoformat(row["expires_at"]) > now
        groups = conn.execute("SELECT DISTINCT pgroup FROM steps WHERE run_id = ? AND "
                              "status = 'started' AND pgroup IS NOT NULL", (row["run_id"],))
        return any(group_members(g[0]) != [] for g in groups)

    def release_lock(self, key: str, run_id: str) -> None:
        with self._write(f"release lock {key!r}") as conn:
            conn.execute("DELETE FROM locks WHERE key = ? AND run_id = ?", (key, run_id))

    # -- alerts and schedules (selfdrive.triggers) ----------------------------------

    _ALERT_JSON = ("labels", "annotations", "matched")

    def record_alerts(self, alerts: Sequence[dict[str, Any]], *, window: float,
                      replay_window: float = 0.0) -> list[dict[str, Any]]:
        """Journal received alerts and claim the runs they start, in one transaction.

        Each alert is a dict of ``alerts`` columns plus ``claims``: dicts with
        ``runbook``, ``outcome`` ("claim" or "error"), ``dedup_key``, ``detail`` and
        ``diagnostic``. A claim becomes ``queued`` unless (runbook, fingerprint) already
        has a claim made within ``window`` seconds or whose run has not ended: then it
        is a ``duplicate`` naming that run. Deciding inside the write transaction is
        what makes dedup hold across threads and processes. Returns, per alert, its
        ``id``, ``status``, ``reason`` and its claim rows.

        Within ``replay_window`` seconds two more things are remembered. An alert whose
        ``deliveries`` (the sender's ids for a delivery) were seen before is a replay:
        nothing new is written but a count on the alert it repeats, and it comes back
        with ``replay`` true and that alert's id. A firing alert that began no later
        than the latest resolution of its fingerprint (same source) replays something
        already over: it is journaled as ``ignored`` and claims nothing.
        """
        out: list[dict[str, Any]] = []
        with self._write(f"record {len(alerts)} alert(s)") as conn:
            for alert in alerts:
                fields = {k: v for k, v in alert.items() if k not in ("claims", "deliveries")}
                fields.setdefault("received_at", utcnow())
                now = fields["received_at"]
                since = _before(now, replay_window)
                keys = list(alert.get("deliveries") or ())
                replayed = self._replayed(conn, keys, now, since) if keys and since else None
                if replayed is not None:
                    out.append(replayed)
                    continue
                claims_asked = list(alert.get("claims", ()))
                over = self._resolved_before(conn, fields, since) if since else None
                if over is not None:
                    fields["status"] = "ignored"
                    fields["reason"] = over
                    claims_asked = []
                row = {k: (canonical(v) if k in self._ALERT_JSON else v)
                       for k, v in fields.items()}
                cols = ", ".join(row)
                marks = ", ".join("?" for _ in row)
                cur = conn.execute(f"INSERT INTO alerts ({cols}) VALUES ({marks})",
                                   list(row.values()))
                alert_id = int(cur.lastrowid or 0)
                for key in keys:
                    conn.execute("INSERT OR REPLACE INTO alert_deliveries (key, alert_id, "
                                 "seen_at) VALUES (?, ?, ?)", (key, alert_id, now))
                claims = [self._claim_alert_run(conn, alert_id, fields, claim, now, window)
                          for claim in claims_asked]
                out.append({"id": alert_id, "status": fields.get("status"),
                            "reason": fields.get("reason"), "replay": False,
                            "claims": claims})
            if replay_window and any(alert.get("deliveries") for alert in alerts):
                # Forget what no replay can be checked against any more: bounded storage.
                conn.execute("DELETE FROM alert_deliveries WHERE seen_at < ?",
                             (_before(utcnow(), replay_window),))
        return out

    @staticmethod
    def _replayed(conn: sqlite3.Connection, keys: list[str], now: str,
                  since: str) -> dict[str, Any] | None:
        """A delivery seen before: count it on the alert it repeats, record nothing else."""
        marks = ", ".join("?" for _ in keys)
        seen = conn.execute(f"SELECT d.alert_id, a.status FROM alert_deliveries d "
                            f"JOIN alerts a ON a.id = d.alert_id "
                            f"WHERE d.key IN ({marks}) AND d.seen_at >= ? "
                            f"ORDER BY d.seen_at LIMIT 1", [*keys, since]).fetchone()
        if seen is None:
            return None
        conn.execute("UPDATE alerts SET requests = COALESCE(requests, 1) + 1, last_at = ? "
                     "WHERE id = ?", (now, seen["alert_id"]))
        return {"id": seen["alert_id"], "status": seen["status"], "replay": True,
                "reason": f"a replay of the delivery journaled as alert #{seen['alert_id']}",
                "claims": []}

    @staticmethod
    def _resolved_before(conn: sqlite3.Connection, alert: dict[str, Any],
                         since: str) -> str | None:
        """Why a firing alert repeats one already resolved, or None if it does not."""
        began = alert.get("starts_at")
        if alert.get("status") != "firing" or not began:
            return None
        row = conn.execute("SELECT id, starts_at FROM alerts WHERE status = 'resolved' AND "
                           "fingerprint = ? AND source = ? AND received_at >= ? "
                           "ORDER BY id DESC LIMIT 1",
                           (alert.get("fingerprint"), alert.get("source"), since)).fetchone()
        if row is None or not _not_after(began, row["starts_at"]):
            return None
        return (f"a replay: it began at {began}, not after alert #{row['id']} resolved this "
                f"fingerprint ({row['starts_at']}); starts nothing")

    def _claim_alert_run(self, conn: sqlite3.Connection, alert_id: int,
                         alert: dict[str, Any], claim: dict[str, Any], now: str,
                         window: float) -> dict[str, Any]:
        runbook, fingerprint = claim["runbook"], alert.get("fingerprint")
        outcome, detail, key, run_id = claim["outcome"], claim.get("detail"), None, None
        if outcome == "claim":
            outcome, key = "queued", claim["dedup_key"]
            prior = conn.execute(
                "SELECT a.id, a.alert_id, a.claimed_at, a.run_id, r.id AS live_run, "
                "r.status FROM alert_runs a LEFT JOIN runs r ON r.dedup_key = a.dedup_key "
                "WHERE a.runbook = ? AND a.fingerprint = ? AND a.dedup_key IS NOT NULL "
                "ORDER BY a.id DESC LIMIT 1", (runbook, fingerprint)).fetchone()
            if prior is not None:
                claimed = datetime.fromisoformat(prior["claimed_at"])
                age = (datetime.fromisoformat(now) - claimed).total_seconds()
                in_flight = prior["status"] is not None and not RunState(prior["status"]).final
                if in_flight or age < window:
                    outcome, key = "duplicate", None
                    run_id = prior["live_run"] or prior["run_id"]
                    what = f"run {run_id}" if run_id else "a queued run"
                    if in_flight:
                        detail = (f"{what} for this alert fingerprint is still "
                                  f"{prior['status']} (claimed by alert #{prior['alert_id']})")
                    else:
                        detail = (f"{what} was started for this alert fingerprint by alert "
                                  f"#{prior['alert_id']} {age:.0f}s ago, within the "
                                  f"{window:g}s dedup window")
        cur = conn.execute(
            "INSERT INTO alert_runs (alert_id, runbook, fingerprint, dedup_key, run_id, "
            "outcome, detail, diagnostic, owner, claimed_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (alert_id, runbook, fingerprint, key, run_id, outcome, detail,
             int(bool(claim.get("diagnostic"))), self.owner, now, now))
        return {"id": int(cur.lastrowid or 0), "alert_id": alert_id, "runbook": runbook,
                "fingerprint": fingerprint, "dedup_key": key, "run_id": run_id,
                "outcome": outcome, "detail": detail,
                "diagnostic": bool(claim.get("diagnostic")), "claimed_at": now}

    def record_refusals(self, refusals: Sequence[dict[str, Any]]) -> list[int]:
        """Journal refused requests (never their body or credentials), sampled.

        A dict with an ``id`` adds ``requests`` more refusals to that row; one without
        is a new row with ``source``, ``reason``, ``http_status``, ``remote``,
        ``received_at`` and ``requests``. ``last_at`` is when the latest arrived.
        Returns the row ids, in order, all written in one transaction.
        """
        ids: list[int] = []
        with self._write(f"record {len(refusals)} sample(s) of refused requests") as conn:
            for r in refusals:
                if r.get("id") is not None:
                    conn.execute("UPDATE alerts SET requests = COALESCE(requests, 1) + ?, "
                                 "last_at = ? WHERE id = ?",
                                 (r["requests"], r["last_at"], r["id"]))
                    ids.append(int(r["id"]))
                    continue
                cur = conn.execute(
                    "INSERT INTO alerts (received_at, source, status, reason, http_status, "
                    "remote, requests, last_at) VALUES (?, ?, 'refused', ?, ?, ?, ?, ?)",
                    (r.get("received_at") or utcnow(), r["source"], r["reason"],
                     r["http_status"], r.get("remote"), r.get("requests", 1),
                     r.get("last_at")))
                ids.append(int(cur.lastrowid or 0))
        return ids

    def update_alert_claim(self, claim_id: int, *, outcome: str, run_id: str | None = None,
                           detail: str | None = None) -> None:
        with self._write(f"record the outcome of alert claim {claim_id}") as conn:
            conn.execute("UPDATE alert_runs SET outcome = ?, run_id = COALESCE(?, run_id), "
                         "detail = COALESCE(?, detail), updated_at = ? WHERE id = ?",
                         (outcome, run_id, detail, utcnow(), claim_id))

    def set_alert_brief(self, alert_id: int, brief: str) -> None:
        with self._write(f"store the brief of alert {alert_id}") as conn:
            conn.execute("UPDATE alerts SET brief = ? WHERE id = ?", (brief, alert_id))

    def _alert_row(self, row: dict[str, Any]) -> dict[str, Any]:
        for key in self._ALERT_JSON:
            row[key] = json.loads(row[key]) if row.get(key) else ({} if key != "matched"
                                                                   else [])
        return row

    def alerts(self, *, limit: int = 50, name: str | None = None) -> list[dict[str, Any]]:
        """Received alerts, newest first, each with its claims (runbook, outcome, run)."""
        sql, params = "SELECT * FROM alerts", list[Any]()
        if name is not None:
            sql += " WHERE name = ?"
            params.append(name)
        rows = self._read(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        claims: dict[int, list[dict[str, Any]]] = {}
        marks = ", ".join("?" for _ in ids)
        for claim in self._read(f"SELECT a.*, r.status AS run_status FROM alert_runs a "
                                f"LEFT JOIN runs r ON r.id = a.run_id "
                                f"WHERE a.alert_id IN ({marks}) ORDER BY a.id", ids):
            claim["diagnostic"] = bool(claim["diagnostic"])
            claims.setdefault(claim["alert_id"], []).append(claim)
        return [self._with_claims(r, claims.get(r["id"], [])) for r in rows]

    def get_alert(self, alert_id: int) -> dict[str, Any] | None:
        rows = self._read("SELECT * FROM alerts WHERE id = ?", (alert_id,))
        if not rows:
            return None
        return self._with_claims(rows[0], self.alert_claims(alert_id=alert_id))

    def _with_claims(self, row: dict[str, Any], claims: list[dict[str, Any]]) -> dict[str, Any]:
        """The alert with its claims and ``run_ids``: the runs its own claims started (a
        duplicate claim only points at another alert's run, and has no dedup key)."""
        runs = [c["run_id"] for c in claims if c["run_id"] and c["dedup_key"]]
        return {**self._alert_row(row), "claims": claims, "run_ids": list(dict.fromkeys(runs))}

    def run_alert_ids(self, run_ids: Sequence[str]) -> dict[str, int]:
        """The alert that started each run, for the runs an alert started."""
        if not run_ids:
            return {}
        marks = ", ".join("?" for _ in run_ids)
        rows = self._read(f"SELECT r.id AS run_id, a.alert_id FROM runs r "
                          f"JOIN alert_runs a ON a.dedup_key = r.dedup_key "
                          f"WHERE r.id IN ({marks}) AND r.dedup_key LIKE 'alert:%'",
                          list(run_ids))
        return {r["run_id"]: int(r["alert_id"]) for r in rows}

    def alert_claims(self, *, alert_id: int | None = None,
                     outcome: str | None = None) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        if alert_id is not None:
            where.append("a.alert_id = ?")
            params.append(alert_id)
        if outcome is not None:
            where.append("a.outcome = ?")
            params.append(outcome)
        sql = ("SELECT a.*, r.status AS run_status FROM alert_runs a "
               "LEFT JOIN runs r ON r.id = a.run_id"
               + (" WHERE " + " AND ".join(where) if where else ""))
        rows = self._read(sql + " ORDER BY a.id", params)
        for row in rows:
            row["diagnostic"] = bool(row["diagnostic"])
        return rows

    def run_for_dedup_key(self, key: str) -> RunRecord | None:
        rows = self._read("SELECT * FROM runs WHERE dedup_key = ?", (key,))
        return RunRecord.from_row(rows[0]) if rows else None

    def schedule_last_fire(self, schedule_id: str) -> str | None:
        rows = self._read("SELECT last_fire FROM schedules WHERE id = ?", (schedule_id,))
        return rows[0]["last_fire"] if rows else None

    def claim_schedule_fire(self, schedule_id: str, *, fire_time: str | None,
                            missed: Sequence[str] = (), missed_total: int | None = None,
                            stale_after: float = 3600.0,
                            seen: str | None = None) -> dict[str, Any]:
        """Claim one fire of a schedule (and journal the fires it missed), atomically.

        Fire times are UTC ISO strings. Nothing is claimed when the schedule's latest
        handled fire is at or after ``fire_time`` (another scheduler got there first),
        or when an earlier fire of it is still in progress in a live process (that one
        is recorded ``skipped``). ``seen`` is a fire time to remember as handled without
        running it (a schedule's first sight). ``stale_after`` seconds bounds how long a
        claim whose owner cannot be checked (another host) counts as in progress.
        """
        now = utcnow()
        newest = max([t for t in (fire_time, seen, *missed) if t], default=None)
        with self._write(f"claim a fire of schedule {schedule_id!r}") as conn:
            row = conn.execute("SELECT last_fire FROM schedules WHERE id = ?",
                               (schedule_id,)).fetchone()
            last = row["last_fire"] if row else None
            if last is not None and newest is not None and last >= newest:
                return {"claimed": False, "status": "taken", "missed": 0,
                        "detail": f"fire {newest} was already handled (latest handled: {last})"}
            fresh = [t for t in missed if last is None or t > last]
            for at in fresh:
                conn.execute("INSERT OR IGNORE INTO schedule_fires (schedule_id, fire_time, "
                             "status, owner, claimed_at, detail) VALUES (?, ?, 'missed', ?, ?, "
                             "?)", (schedule_id, at, self.owner, now,
                                    "the scheduler was not running within the grace period"))
            total = len(fresh) if missed_total is None else max(missed_total, len(fresh))
            if total:
                self._append_event(conn, "schedule.missed", "scheduler", None,
                                   {"schedule": schedule_id, "count": total,
                                    "first": min(fresh) if fresh else None,
                                    "last": max(fresh) if fresh else None})
            result: dict[str, Any] = {"claimed": False, "status": "missed", "missed": total,
                                      "detail": None}
            if fire_time is not None:
                result = {**self._claim_fire(conn, schedule_id, fire_time, now, stale_after),
                          "missed": total}
            if newest is not None:
                conn.execute("INSERT INTO schedules (id, last_fire, updated_at) VALUES (?, ?, ?) "
                             "ON CONFLICT(id) DO UPDATE SET last_fire = excluded.last_fire, "
                             "updated_at = excluded.updated_at", (schedule_id, newest, now))
        return result

    def _claim_fire(self, conn: sqlite3.Connection, schedule_id: str, fire_time: str, now: str,
                    stale_after: float) -> dict[str, Any]:
        busy = conn.execute("SELECT fire_time, owner, claimed_at FROM schedule_fires WHERE "
                            "schedule_id = ? AND status = 'claimed' AND fire_time != ? "
                            "ORDER BY fire_time DESC LIMIT 1",
                            (schedule_id, fire_time)).fetchone()
        if busy is not None:
            alive = owner_alive(busy["owner"])
            age = (datetime.fromisoformat(now)
                   - datetime.fromisoformat(busy["claimed_at"])).total_seconds()
            if alive or (alive is None and age < stale_after):
                detail = (f"the run for fire {busy['fire_time']} is still in progress "
                          f"(scheduler {busy['owner']}); schedules never overlap")
                conn.execute("INSERT OR IGNORE INTO schedule_fires (schedule_id, fire_time, "
                             "status, owner, claimed_at, finished_at, detail) "
                             "VALUES (?, ?, 'skipped', ?, ?, ?, ?)",
                             (schedule_id, fire_time, self.owner, now, now, detail))
                return {"claimed": False, "status": "skipped", "detail": detail}
            conn.execute("UPDATE schedule_fires SET status = 'interrupted', finished_at = ?, "
                         "detail = ? WHERE schedule_id = ? AND fire_time = ?",
                         (now, f"scheduler {busy['owner']} went away during this fire",
                          schedule_id, busy["fire_time"]))
        try:
            conn.execute("INSERT INTO schedule_fires (schedule_id, fire_time, status, owner, "
                         "claimed_at) VALUES (?, ?, 'claimed', ?, ?)",
                         (schedule_id, fire_time, self.owner, now))
        except sqlite3.IntegrityError:
            return {"claimed": False, "status": "taken",
                    "detail": f"fire {fire_time} was claimed by another scheduler"}
        return {"claimed": True, "status": "claimed", "detail": None}

    def finish_schedule_fire(self, schedule_id: str, fire_time: str, *, status: str,
                             run_id: str | None = None, detail: str | None = None) -> None:
        with self._write(f"record the end of a fire of schedule {schedule_id!r}") as conn:
            conn.execute("UPDATE schedule_fires SET status = ?, run_id = ?, detail = ?, "
                         "finished_at = ? WHERE schedule_id = ? AND fire_time = ?",
                         (status, run_id, detail, utcnow(), schedule_id, fire_time))

    def schedule_fires(self, schedule_id: str | None = None, *,
                       limit: int = 100) -> list[dict[str, Any]]:
        """Fires claimed, missed or skipped, newest first."""
        if schedule_id is None:
            return self._read("SELECT * FROM schedule_fires ORDER BY fire_time DESC, id DESC "
                              "LIMIT ?", (limit,))
        return self._read("SELECT * FROM schedule_fires WHERE schedule_id = ? "
                          "ORDER BY fire_time DESC, id DESC LIMIT ?", (schedule_id, limit))

    def interrupt_run(self, run_id: str, *, actor: str, reason: str) -> RunRecord:
        """Mark this process's own unfinished run ``interrupted`` (a stop was forced).

        Like crash recovery, but for a run that is still ours: marked first (the run's
        own thread can record nothing more), then its command in flight is killed; its
        step's outcome becomes ``unknown``; nothing is re-run; its lock goes once
        nothing of that command is left.
        """
        with self._write(f"mark run {run_id} interrupted") as conn:
            row = conn.execute("SELECT status, owner FROM runs WHERE id = ?",
                               (run_id,)).fetchone()
            if row is None:
                raise JournalError(f"no run {run_id}")
            current = RunState(row["status"])
            if not current.can_become(RunState.INTERRUPTED) or row["owner"] != self.owner:
                return self._run_in(conn, run_id)
            groups = self._mark_interrupted(
                conn, run_id, actor=actor,
                step_error=f"stopped during this step ({reason}); its outcome is unknown",
                error=f"{reason} while the run was {current.value}; not re-run",
                data={"from": current.value, "reason": reason})
        self._end_commands(run_id, groups)
        return self.get_run(run_id)

    @staticmethod
    def _run_in(conn: sqlite3.Connection, run_id: str) -> RunRecord:
        row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        return RunRecord.from_row(dict(row))

    # -- crash recovery ----------------------------------------------------------

    def recover(self) -> list[str]:
        """Mark runs whose owning process died as ``interrupted``; never re-run them.

        Then the command each one was running is ended: its process group (recorded
        with the step's intent) is killed, on this host, as far as this user may. A
        run's lock is released only once nothing of that group is left; otherwise the
        lock stays, naming the group, until a later recovery finds it gone.
        """
        marks = ", ".join("?" for _ in OWNED_STATES)
        candidates = self._read(f"SELECT id, owner FROM runs WHERE status IN ({marks})",
                                [s.value for s in OWNED_STATES])
        dead = [r["id"] for r in candidates
                if r["owner"] and r["owner"] != self.owner and owner_alive(r["owner"]) is False]
        recovered = []
        for run_id in dead:
            with self._write(f"mark run {run_id} interrupted") as conn:
                row = conn.execute("SELECT status, owner FROM runs WHERE id = ?",
                                   (run_id,)).fetchone()
                if row is None or row["status"] not in [s.value for s in OWNED_STATES] \
                        or owner_alive(row["owner"]) is not False:
                    continue
                groups = self._mark_interrupted(
                    conn, run_id, actor="selfdrive",
                    step_error="the process died during this step; its outcome is unknown",
                    error=(f"process {row['owner']} died while the run was {row['status']}; "
                           f"not re-run"),
                    data={"from": row["status"], "dead_owner": row["owner"]})
            self._end_commands(run_id, groups)
            recovered.append(run_id)
        self._release_kept_locks()
        return recovered

    def _mark_interrupted(self, conn: sqlite3.Connection, run_id: str, *, actor: str,
                          step_error: str, error: str, data: dict[str, Any]) -> list[str]:
        """Mark the run interrupted and its steps in flight ``unknown``. Returns the process
        groups of those steps; the run's lock now holds exactly while they live."""
        groups = [r[0] for r in conn.execute(
            "SELECT DISTINCT pgroup FROM steps WHERE run_id = ? AND status = 'started' "
            "AND pgroup IS NOT NULL ORDER BY pgroup", (run_id,))]
        now = utcnow()
        unknown = conn.execute(
            "UPDATE steps SET status = 'unknown', finished_at = ?, error = ? "
            "WHERE run_id = ? AND status = 'started'", (now, step_error, run_id)).rowcount
        conn.execute("UPDATE runs SET status = 'interrupted', finished_at = ?, updated_at = ?, "
                     "error = ? WHERE id = ?", (now, now, error, run_id))
        if groups:
            conn.execute("UPDATE locks SET pgroup = ? WHERE run_id = ?",
                         (" ".join(groups), run_id))
        else:
            conn.execute("DELETE FROM locks WHERE run_id = ?", (run_id,))
        self._append_event(conn, "run.interrupted", actor, run_id,
                           {**data, "steps_outcome_unknown": unknown})
        return groups

    def _end_commands(self, run_id: str, groups: list[str]) -> None:
        """Kill the process groups of an interrupted run's commands, then release its
        lock; what cannot be killed keeps the lock, and the run's error says so."""
        if not groups:
            return
        left = {g: pids for g in groups if (pids := end_group(g)) != []}
        with self._write(f"release the lock of run {run_id}") as conn:
            held = conn.execute("SELECT key FROM locks WHERE run_id = ?", (run_id,)).fetchone()
            if not left:
                conn.execute("DELETE FROM locks WHERE run_id = ?", (run_id,))
                return
            conn.execute("UPDATE locks SET pgroup = ? WHERE run_id = ?", (" ".join(left), run_id))
            why = "; ".join(
                f"process group {g} outlived it ("
                + (f"processes {', '.join(map(str, pids))} could not be stopped" if pids
                   else "it lives on another host") + ")" for g, pids in left.items())
            lock = f"; lock {held['key']!r} stays held until they end" if held else ""
            conn.execute("UPDATE runs SET error = error || ? WHERE id = ?",
                         (f"; its command's {why}{lock}", run_id))
            self._append_event(conn, "lock.kept", "selfdrive", run_id,
                               {"key": held["key"] if held else None, "processes_left": left})

    def _release_kept_locks(self) -> None:
        """Locks kept for groups that outlived their run: try to end them again; release
        each lock once its groups are gone."""
        for row in self._read("SELECT key, run_id, pgroup FROM locks WHERE pgroup IS NOT NULL"):
            if any(end_group(g) != [] for g in row["pgroup"].split()):
                continue
            with self._write(f"release lock {row['key']!r}") as conn:
                gone = conn.execute("DELETE FROM locks WHERE key = ? AND run_id = ? AND "
                                    "pgroup = ?", (row["key"], row["run_id"], row["pgroup"]))
                if gone.rowcount:
                    self._append_event(conn, "lock.released", "selfdrive", row["run_id"],
                                       {"key": row["key"], "pgroup": row["pgroup"],
                                        "why": "the processes that kept it are gone"})

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.close()


def open_journal(path: Path, *, busy_timeout: float = 5.0, recover: bool = True) -> SqliteJournal:
    """Open (creating and migrating) the journal; recover runs of dead processes.

    A journal that cannot be written (full disk, read-only) can still be read: recovery
    then waits for the first command that can write it.
    """
    journal = SqliteJournal(path, busy_timeout=busy_timeout)
    if recover:
        with contextlib.suppress(JournalUnavailableError):
            journal.recover()
    return journal
