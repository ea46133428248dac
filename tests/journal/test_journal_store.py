"""The journal, on SQLite and on PostgreSQL alike (the ``journal`` fixture is both):
durability settings, migrations, the hash chain, locking, recovery."""

from __future__ import annotations

import itertools
import re
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from selfdrive import RunState
from selfdrive.journal import (
    HALT_FLAG,
    SqliteJournal,
    event_digest,
    open_journal,
    process_identity,
)
from selfdrive.journal.migrations import migrations
from selfdrive.sdk.errors import DuplicateRunError, HaltedError, JournalError, JournalLockedError

S = RunState
GENESIS = "0" * 64


def raw(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def new_run(journal: SqliteJournal, run_id: str = "run-1", **fields: Any):
    return journal.runs.create({"id": run_id, "runbook": "clean-disk", "mode": "autonomous",
                               "requested_by": "alice", "params": {"host": "web1"},
                               **fields}, actor="alice")


EVENTS = "SELECT * FROM events ORDER BY id"


def event_rows(path: Path) -> list[dict[str, Any]]:
    conn = raw(path)
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM events ORDER BY id")]
    finally:
        conn.close()


def chain_breaks(rows: list[dict[str, Any]]) -> list[int]:
    """Ids of events whose link or digest does not check out."""
    broken, prev = [], GENESIS
    for row in rows:
        digest = event_digest(row["prev_hash"], row["at"], row["kind"], row["actor"],
                              row["run_id"], row["data"])
        if row["prev_hash"] != prev or digest != row["hash"]:
            broken.append(row["id"])
        prev = row["hash"]
    return broken


# -- durability settings and migrations ----------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])
def test_wal_mode_and_full_sync(journal, path):
    assert journal.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert journal.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert journal.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    other = raw(path)
    try:  # WAL is a property of the file, seen by every connection
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


def test_creates_its_folder_and_the_tables(path):
    assert not path.parent.exists()
    open_journal(path).close()
    conn = raw(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    finally:
        conn.close()
    assert {"runs", "steps", "events", "flags", "_sqlite_migrations"} <= tables


def applied(path: Path) -> list[dict[str, Any]]:
    conn = raw(path)
    try:
        return [dict(r) for r in conn.execute(
            "SELECT migration_set, name, applied_at FROM _sqlite_migrations ORDER BY id")]
    finally:
        conn.close()


def test_migrations_are_numbered_and_applied_once(path):
    names = [m.name for m in migrations.pending(sqlite_db_without_tables())]
    assert names, "the journal has migrations"
    numbers = [int(re.match(r"(\d{4})_", n).group(1)) for n in names]  # type: ignore[union-attr]
    assert numbers == list(range(1, len(names) + 1)), names

    open_journal(path).close()
    first = applied(path)
    assert [r["name"] for r in first] == names
    assert {r["migration_set"] for r in first} == {"selfdrive.journal"}

    for _ in range(2):  # reopening is a no-op
        open_journal(path).close()
    assert applied(path) == first


def sqlite_db_without_tables() -> Any:
    import sqlite_utils

    return sqlite_utils.Database(memory=True)


def test_concurrent_first_opens_migrate_once(path):
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def opener() -> None:
        try:
            barrier.wait()
            open_journal(path).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    assert len(applied(path)) == len(migrations.pending(sqlite_db_without_tables()))


# -- the hash chain ------------------------------------------------------------------


def fill(journal: SqliteJournal) -> None:
    new_run(journal, "run-1")
    journal.runs.transition("run-1", S.DECIDED, actor="alice", data={"mode": "autonomous"})
    journal.flags.set(HALT_FLAG, {"by": "bob", "reason": "maintenance", "since": "now"},
                     actor="bob")
    journal.event("note.custom", actor="carol", data={"text": "ünïcödé ✓", "n": [1, 2]})
    journal.flags.set(HALT_FLAG, None, actor="bob")
    journal.runs.transition("run-1", S.RUNNING, actor="alice")


def test_events_form_a_hash_chain(journal, outside):
    fill(journal)
    rows = outside.rows(EVENTS)
    assert [r["kind"] for r in rows] == ["run.requested", "run.decided", "halt.on",
                                         "note.custom", "halt.off", "run.running"]
    assert rows[0]["prev_hash"] == GENESIS
    for before, after in itertools.pairwise(rows):
        assert after["prev_hash"] == before["hash"]
    assert chain_breaks(rows) == []
    assert len({r["hash"] for r in rows}) == len(rows)
    # The API returns the same chain.
    events = journal.events()
    assert [(e.prev_hash, e.hash) for e in events] == [(r["prev_hash"], r["hash"]) for r in rows]
    assert [e.kind for e in journal.events("run-1")] == ["run.requested", "run.decided",
                                                         "run.running"]


@pytest.mark.parametrize(("column", "value"), [
    ("data", '{"from":"requested","mode":"dry-run"}'),
    ("actor", "mallory"),
    ("at", "2020-01-01T00:00:00.000000+00:00"),
    ("kind", "run.planned"),
])
@pytest.mark.forged_journal
def test_tampering_with_a_row_breaks_the_chain(journal, outside, column, value):
    fill(journal)
    outside.execute(f"UPDATE events SET {column} = ? WHERE kind = 'run.decided'", value)
    [tampered] = outside.rows("SELECT id FROM events WHERE "
                              "prev_hash = (SELECT hash FROM events WHERE id = 1)")
    assert chain_breaks(outside.rows(EVENTS)) == [tampered["id"]]


def test_rewriting_a_hash_or_deleting_a_row_breaks_the_links(journal, outside):
    fill(journal)
    outside.execute("DELETE FROM events WHERE kind = 'note.custom'")
    rows = outside.rows(EVENTS)
    assert [r["kind"] for r in rows if r["id"] in chain_breaks(rows)] == ["halt.off"]

    # Recomputing the tampered row's own hash only moves the break to the next row.
    [row] = outside.rows("SELECT * FROM events WHERE kind = 'halt.off'")
    [prev] = outside.rows("SELECT hash FROM events WHERE kind = 'halt.on'")
    digest = event_digest(prev["hash"], row["at"], row["kind"], row["actor"], row["run_id"],
                          row["data"])
    outside.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE id = ?", prev["hash"],
                    digest, row["id"])
    rows = outside.rows(EVENTS)
    assert [r["kind"] for r in rows if r["id"] in chain_breaks(rows)] == ["run.running"]


def test_concurrent_writers_keep_one_linear_chain(path):
    open_journal(path).close()
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def writer(n: int) -> None:
        j = SqliteJournal(path)
        try:
            barrier.wait()
            for i in range(25):
                j.event("load.test", actor=f"writer-{n}", data={"i": i})
        except BaseException as exc:
            errors.append(exc)
        finally:
            j.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    rows = event_rows(path)
    assert len(rows) == 100
    assert chain_breaks(rows) == []


# -- locking -------------------------------------------------------------------------


def test_a_held_write_lock_gives_a_clear_error_and_writes_nothing(path):
    open_journal(path).close()
    holder = raw(path)
    holder.execute("BEGIN IMMEDIATE")
    journal = SqliteJournal(path, busy_timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(JournalLockedError) as info:
            new_run(journal)
        waited = time.monotonic() - started
        assert 0.25 <= waited < 3
        assert str(path) in str(info.value)
        assert "nothing was written" in str(info.value)
        assert isinstance(info.value, JournalError)
        with pytest.raises(JournalLockedError):
            journal.event("x", actor="alice")

        holder.execute("ROLLBACK")
        run = new_run(journal)
        assert run.status is S.REQUESTED
        assert [r.id for r in journal.runs.find()] == ["run-1"]
        assert [e.kind for e in journal.events()] == ["run.requested"]
    finally:
        holder.close()
        journal.close()


HOLD_GATE = """
import sys, time
from pathlib import Path
from selfdrive.journal import open_journal
journal = open_journal(Path(sys.argv[1]))
with journal.atomic("hold the journal"):
    journal.event("held", actor="holder")
    print("holding", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _holder(path: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process inside a journal transaction for ``seconds``."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD_GATE, str(path), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "holding\n"
    return proc


def test_a_selfdrive_writer_holding_on_gives_a_clear_error_and_writes_nothing(path):
    open_journal(path).close()
    holder = _holder(path, 2.0)
    journal = SqliteJournal(path, busy_timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(JournalLockedError) as info:
            new_run(journal)
        assert 0.25 <= time.monotonic() - started < 1.5
        assert "locked by another selfdrive writer" in str(info.value)
        assert "nothing was written" in str(info.value)
        assert holder.wait(10) == 0
        # The abandoned wait let go of the gate once it got it: writes go on.
        assert new_run(journal).status is S.REQUESTED
        assert [e.kind for e in journal.events()] == ["held", "run.requested"]
    finally:
        holder.kill()
        journal.close()


def test_a_writer_killed_inside_a_transaction_does_not_wedge_the_journal(path):
    open_journal(path).close()
    holder = _holder(path, 60)
    journal = SqliteJournal(path, busy_timeout=10)
    try:
        done = threading.Event()
        waiter = threading.Thread(target=lambda: (new_run(journal), done.set()))
        waiter.start()
        time.sleep(0.3)
        assert not done.is_set()  # it waits for the holder …
        holder.kill()
        holder.wait(5)
        assert done.wait(3)  # … and goes on the moment the kernel drops the dead holder's lock
        waiter.join(5)
        assert [e.kind for e in journal.events()] == ["run.requested"]  # its write rolled back
    finally:
        holder.kill()
        journal.close()


@pytest.mark.parametrize("backend", ["sqlite"])  # SQLite's WAL; PostgreSQL's MVCC is its own
def test_readers_do_not_block_the_writer(journal, path):
    reader = raw(path)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
        new_run(journal)  # WAL: a reader holds no write lock
        # The reader keeps its snapshot until it ends its transaction.
        assert reader.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
        reader.execute("COMMIT")
        assert reader.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
    finally:
        reader.close()


# -- runs, transitions, steps ------------------------------------------------------


def test_legal_transitions_update_the_row_and_log_an_event(journal):
    run = new_run(journal)
    assert run.status is S.REQUESTED and run.owner == journal.owner
    assert run.params == {"host": "web1"}
    journal.runs.transition(run.id, S.DECIDED, actor="alice")
    running = journal.runs.transition(run.id, S.RUNNING, actor="alice")
    assert running.started_at is not None and running.finished_at is None
    done = journal.runs.transition(run.id, S.SUCCEEDED, actor="alice", verified=True)
    assert done.finished_at is not None
    kinds = [(e.kind, e.data.get("from")) for e in journal.events(run.id)]
    assert kinds == [("run.requested", None), ("run.decided", "requested"),
                     ("run.running", "decided"), ("run.succeeded", "running")]
    assert journal.runs.verified_successes("clean-disk") == 1
    assert journal.runs.recent_outcomes("clean-disk", 5) == [("succeeded", True)]


@pytest.mark.parametrize(("path_to", "illegal"), [
    ([], S.SUCCEEDED),
    ([S.DECIDED, S.PLANNED], S.RUNNING),
    ([S.DECIDED, S.RUNNING, S.SUCCEEDED], S.ROLLING_BACK),
    ([S.DECIDED, S.PENDING_APPROVAL], S.RUNNING),
])
def test_illegal_transition_raises_and_changes_nothing(journal, path_to, illegal):
    run = new_run(journal)
    for state in path_to:
        journal.runs.transition(run.id, state, actor="alice")
    before = journal.runs.get(run.id)
    count = len(journal.events())
    with pytest.raises(JournalError, match=f"cannot become {illegal.value}"):
        journal.runs.transition(run.id, illegal, actor="alice")
    assert journal.runs.get(run.id) == before
    assert len(journal.events()) == count


def test_transition_of_an_unknown_run_raises(journal):
    with pytest.raises(JournalError, match="no run"):
        journal.runs.transition("nope", S.DECIDED, actor="alice")


def test_another_process_may_not_move_an_owned_run(journal, another):
    run = new_run(journal)
    journal.runs.transition(run.id, S.DECIDED, actor="alice")
    stranger = another
    stranger.owner = "elsewhere:1:1"
    with pytest.raises(JournalError, match="owned by"):
        stranger.runs.transition(run.id, S.RUNNING, actor="mallory")
    with pytest.raises(JournalError, match="may not act for it"):
        stranger.runs.begin_step(run.id, phase="body", kind="command")
    assert journal.runs.get(run.id).status is S.DECIDED


def test_steps_are_numbered_and_only_recorded_while_stepping(journal):
    run = new_run(journal)
    with pytest.raises(JournalError, match="requested"):
        journal.runs.begin_step(run.id, phase="body", kind="command")
    journal.runs.transition(run.id, S.DECIDED, actor="alice")
    journal.runs.transition(run.id, S.RUNNING, actor="alice")
    first = journal.runs.begin_step(run.id, phase="body", kind="command", command="echo hi",
                               readonly=False)
    journal.runs.finish_step(first, status="ok", exit_code=0, stdout="hi\n",
                        data={"bytes": 3})
    second = journal.runs.begin_step(run.id, phase="body", kind="log", stdout="note")
    steps = journal.runs.steps(run.id)
    assert [(s.seq, s.status) for s in steps] == [(1, "ok"), (2, "started")]
    assert steps[0].data == {"bytes": 3} and steps[0].exit_code == 0
    assert steps[0].finished_at is not None and steps[1].finished_at is None
    assert second == steps[1].id
    journal.runs.finish_step(second, status="ok")
    journal.runs.transition(run.id, S.SUCCEEDED, actor="alice")
    with pytest.raises(JournalError):
        journal.runs.begin_step(run.id, phase="body", kind="command")


def test_halt_fence_refuses_a_step_and_writes_nothing(journal):
    run = new_run(journal)
    journal.runs.transition(run.id, S.DECIDED, actor="alice")
    journal.runs.transition(run.id, S.RUNNING, actor="alice")
    journal.flags.set(HALT_FLAG, {"by": "bob", "reason": "freeze"}, actor="bob")
    assert journal.flags.get(HALT_FLAG) == {"by": "bob", "reason": "freeze"}
    with pytest.raises(HaltedError, match="freeze"):
        journal.runs.begin_step(run.id, phase="body", kind="command", fence_halt=True)
    assert journal.runs.steps(run.id) == []
    journal.runs.begin_step(run.id, phase="body", kind="command", fence_halt=False)
    assert len(journal.runs.steps(run.id)) == 1


def test_duplicate_run_id_or_dedup_key_is_refused(journal):
    new_run(journal, "run-1", dedup_key="alert:DiskFull:web1")
    with pytest.raises(JournalError, match="not recorded"):
        new_run(journal, "run-1")
    with pytest.raises(DuplicateRunError, match="not recorded") as taken:
        new_run(journal, "run-2", dedup_key="alert:DiskFull:web1")
    assert taken.value.run_id == "run-1"  # who holds the key: a duplicate, not a failure
    assert [r.id for r in journal.runs.find()] == ["run-1"]


def test_get_run_by_unique_prefix(journal):
    new_run(journal, "20260101-000000-aaaaaa")
    new_run(journal, "20260101-000000-abbbbb")
    assert journal.runs.get("20260101-000000-aa").id == "20260101-000000-aaaaaa"
    with pytest.raises(Exception, match="more than one run"):
        journal.runs.get("20260101-000000-a")
    with pytest.raises(Exception, match="no run"):
        journal.runs.get("zzz")


# -- crash recovery ------------------------------------------------------------------

CRASHING_WRITER = """
import sys, time
from pathlib import Path
from selfdrive.journal import open_journal
from selfdrive.sdk.vocabulary import RunState

j = open_journal(Path(sys.argv[1]))
j.runs.create({"id": "run-crash", "runbook": "clean-disk", "mode": "autonomous",
              "requested_by": "alice", "params": {}}, actor="alice")
j.runs.transition("run-crash", RunState.DECIDED, actor="alice")
j.runs.transition("run-crash", RunState.RUNNING, actor="alice")
done = j.runs.begin_step("run-crash", phase="body", kind="command", command="echo one")
j.runs.finish_step(done, status="ok", exit_code=0, stdout="one")
j.runs.begin_step("run-crash", phase="body", kind="command", command="rm -rf /data/old")
print(j.owner, flush=True)
time.sleep(60)
"""


def test_recovery_marks_a_dead_processes_run_interrupted(path):
    child = subprocess.Popen([sys.executable, "-c", CRASHING_WRITER, str(path)],
                             stdout=subprocess.PIPE, text=True)
    try:
        owner = child.stdout.readline().strip()  # type: ignore[union-attr]
    finally:
        child.kill()
        child.wait()
        child.stdout.close()  # type: ignore[union-attr]
    assert owner.split(":")[1] == str(child.pid)

    journal = open_journal(path)
    try:
        run = journal.runs.get("run-crash")
        assert run.status is S.INTERRUPTED
        assert owner in (run.error or "") and "not re-run" in (run.error or "")
        steps = journal.runs.steps("run-crash")
        assert [(s.seq, s.status) for s in steps] == [(1, "ok"), (2, "unknown")]
        assert steps[0].stdout == "one" and steps[0].exit_code == 0
        assert "outcome is unknown" in (steps[1].error or "")
        last = journal.events("run-crash")[-1]
        assert last.kind == "run.interrupted"
        assert last.data == {"from": "running", "dead_owner": owner,
                             "steps_outcome_unknown": 1}
        assert chain_breaks(event_rows(path)) == []
        assert journal.runs.recover() == []  # once is enough
    finally:
        journal.close()


def test_recovery_leaves_live_pending_and_foreign_owners_alone(path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        live_owner = process_identity(sleeper.pid)
        journal = open_journal(path)
        new_run(journal, "run-live", owner=live_owner)
        new_run(journal, "run-foreign", owner="some-other-host:1:1")
        mine = new_run(journal, "run-pending")
        journal.runs.transition(mine.id, S.DECIDED, actor="alice")
        journal.runs.transition(mine.id, S.PENDING_APPROVAL, actor="alice", owner=None)
        journal.close()

        again = open_journal(path)
        assert again.runs.get("run-live").status is S.REQUESTED
        again.close()
    finally:
        sleeper.kill()
        sleeper.wait()

    after = open_journal(path)
    try:
        assert after.runs.get("run-live").status is S.INTERRUPTED
        assert after.runs.get("run-foreign").status is S.REQUESTED
        assert after.runs.get("run-pending").status is S.PENDING_APPROVAL
    finally:
        after.close()


def test_a_recycled_pid_is_not_mistaken_for_the_owner(path):
    """The owner's start time is part of its identity: same pid, other process = dead."""
    journal = open_journal(path)
    host, pid, start = process_identity().split(":")
    assert start != "?"
    new_run(journal, "run-old", owner=f"{host}:{pid}:{int(start) - 1}")
    journal.close()
    reopened = open_journal(path)
    try:
        assert reopened.runs.get("run-old").status is S.INTERRUPTED
    finally:
        reopened.close()


def test_open_without_recovery_touches_nothing(path):
    journal = open_journal(path)
    host, pid, start = process_identity().split(":")
    new_run(journal, "run-old", owner=f"{host}:{pid}:{int(start) - 1}")
    journal.close()
    quiet = open_journal(path, recover=False)
    try:
        assert quiet.runs.get("run-old").status is S.REQUESTED
    finally:
        quiet.close()
