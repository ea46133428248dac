"""Grouped writes (``Journal.atomic``), records returned as written, and the rate counts.

These are what let a run take few transactions: all of a group or none of it, the
chain still linear, and no second read for what a write just wrote.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from selfdrive import RunState
from selfdrive.journal import SqliteJournal, open_journal
from selfdrive.journal.audit import verify
from selfdrive.sdk.errors import JournalError, JournalLockedError

S = RunState


def new_run(journal: SqliteJournal, run_id: str = "run-1", **fields: Any):
    return journal.runs.create({"id": run_id, "runbook": "clean-disk", "mode": "autonomous",
                               "requested_by": "alice", "params": {"host": "web1"},
                               **fields}, actor="alice")


class Statements:
    """The SQL the journal's connection runs, while counting."""

    def __init__(self, journal: SqliteJournal) -> None:
        self.journal = journal
        self.sql: list[str] = []

    def __enter__(self) -> Statements:
        self.journal.conn.set_trace_callback(self.sql.append)
        return self

    def __exit__(self, *exc: object) -> None:
        self.journal.conn.set_trace_callback(None)

    def count(self, prefix: str) -> int:
        return sum(1 for s in self.sql if s.lstrip().upper().startswith(prefix))


# -- atomic() ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])  # counts statements with SQLite's trace
def test_atomic_commits_its_writes_once_and_together(journal, outside):
    with Statements(journal) as sql, journal.atomic("record and start run-1"):
        new_run(journal)
        journal.runs.transition("run-1", S.DECIDED, actor="alice", plan_hash="p" * 64)
        journal.runs.add_plan_steps("run-1", "p" * 64, [{"phase": "plan:body", "kind": "command",
                                                    "command": "true", "status": "planned"}])
        journal.runs.transition("run-1", S.RUNNING, actor="alice")
        step = journal.runs.begin_step("run-1", phase="body", kind="call", name="tidy")
        # Nothing is visible to other connections until the group commits.
        assert outside.rows("SELECT * FROM runs") == []
        assert outside.rows("SELECT * FROM events") == []
    assert sql.count("BEGIN") == 1 and sql.count("COMMIT") == 1
    assert [r["status"] for r in outside.rows("SELECT status FROM runs")] == ["running"]
    assert [e.kind for e in journal.events("run-1")] == ["run.requested", "run.decided",
                                                         "run.running"]
    assert [(s.phase, s.status, s.id == step) for s in journal.runs.steps("run-1")] == [
        ("plan:body", "planned", False), ("body", "started", True)]
    assert verify(journal).ok


def test_an_error_inside_atomic_writes_nothing_and_the_chain_goes_on(journal, outside):
    new_run(journal, "run-0")
    with pytest.raises(RuntimeError, match="boom"), journal.atomic("record run-1"):
        new_run(journal)
        journal.runs.transition("run-1", S.DECIDED, actor="alice")
        journal.event("guardrail.tripped", actor="selfdrive", run_id="run-1")
        raise RuntimeError("boom")
    assert [r["id"] for r in outside.rows("SELECT id FROM runs")] == ["run-0"]
    assert [e.kind for e in journal.events()] == ["run.requested"]
    new_run(journal)  # the journal is usable, and the chain links on from run-0
    assert len(journal.events()) == 2
    assert verify(journal).ok


def test_a_failed_write_inside_atomic_fails_the_whole_even_if_caught(journal, outside):
    with pytest.raises(JournalError) as info, journal.atomic("record run-1"):
        new_run(journal)
        try:
            journal.runs.transition("run-1", S.SUCCEEDED, actor="alice")  # illegal
        except JournalError:
            pass
        journal.event("after", actor="alice", run_id="run-1")
    assert journal.name in str(info.value)
    assert "none of it was recorded" in str(info.value)
    assert outside.rows("SELECT * FROM runs") == []
    assert outside.rows("SELECT * FROM events") == []
    new_run(journal)  # a failure does not stick to the next group
    assert journal.runs.get("run-1").status is S.REQUESTED


def test_atomic_gives_the_locked_error_naming_the_file(path):
    open_journal(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    journal = SqliteJournal(path, busy_timeout=0.2)
    try:
        with pytest.raises(JournalLockedError) as info, journal.atomic("record run-1"):
            new_run(journal)
        assert str(path) in str(info.value) and "record run-1" in str(info.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        journal.close()
    assert sqlite3.connect(path).execute("SELECT * FROM runs").fetchall() == []


def test_other_threads_wait_for_the_group_and_never_see_half_of_it(journal):
    seen: list[list[str]] = []
    with journal.atomic("record run-1"):
        new_run(journal)
        reader = threading.Thread(target=lambda: seen.append(
            [r.status.value for r in journal.runs.find()]))
        reader.start()
        reader.join(0.3)
        assert reader.is_alive(), "a reader on the shared connection waits for the commit"
        journal.runs.transition("run-1", S.DECIDED, actor="alice")
    reader.join(5)
    assert seen == [["decided"]]


# -- records returned by writes ----------------------------------------------------


def test_writes_return_the_run_as_stored(journal):
    created = new_run(journal, firing={"kind": "alert", "name": "DiskFull", "own": True,
                                       "domain": None}, dedup_key="alert:x")
    assert created == journal.runs.get("run-1")
    moves: list[tuple[RunState, dict[str, Any]]] = [
        (S.DECIDED, {"plan_hash": "a" * 64, "decision": {"mode": "approval",
                                                        "reasons": ["why", "not"]}}),
        (S.PENDING_APPROVAL, {"owner": None, "expires_at": "2030-01-01T00:00:00+00:00",
                              "error": None}),
        (S.APPROVED, {"owner": None}),
        (S.RUNNING, {"owner": journal.owner}),
        (S.VERIFICATION_FAILED, {"error": "verification failed: x", "verified": False}),
        (S.ROLLING_BACK, {}),
        (S.ROLLED_BACK, {"error": "rolled back"}),
    ]
    for state, fields in moves:
        record = journal.runs.transition("run-1", state, actor="alice", data={"k": 1}, **fields)
        assert record == journal.runs.get("run-1"), state
    assert record.finished_at is not None and record.started_at is not None
    with journal.atomic("deny run-2"):
        new_run(journal, "run-2")
        journal.runs.transition("run-2", S.DECIDED, actor="alice", plan_hash="b" * 64)
        pending = journal.runs.transition("run-2", S.PENDING_APPROVAL, actor="alice", owner=None)
    assert pending == journal.runs.get("run-2")
    denied = journal.approvals.deny("run-2", actor="bob", os_user="bob", reason="no",
                                   plan_hash="b" * 64)
    assert denied == journal.runs.get("run-2") and denied.status is S.DENIED


# -- rate counts -------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite"])  # SQLite's index hint and statement trace
def test_rate_counts_match_count_runs_from_one_index_scan(journal):
    now = datetime.now(UTC)
    ages = {"a1": ("a", "autonomous", 10), "a2": ("a", "autonomous", 50),
            "a3": ("a", "autonomous", 200), "a4": ("a", "approval", 5),
            "b1": ("b", "autonomous", 20), "b2": ("b", "dry-run", 20)}
    for run_id, (runbook, mode, minutes) in ages.items():
        at = (now - timedelta(minutes=minutes)).isoformat(timespec="microseconds")
        journal.runs.create({"id": run_id, "runbook": runbook, "mode": mode,
                            "requested_by": "alice", "created_at": at}, actor="alice")
    since = (now - timedelta(hours=1)).isoformat(timespec="microseconds")
    for runbook in ("a", "b", "c"):
        own, total = journal.runs.rate_counts(since=since, mode="autonomous", runbook=runbook)
        assert own == journal.runs.count(since=since, mode="autonomous", runbook=runbook)
        assert total == journal.runs.count(since=since, mode="autonomous")
    assert journal.runs.rate_counts(since=since, mode="autonomous", runbook="a") == (2, 3)
    assert journal.runs.rate_counts(since=since, mode="approval", runbook="c") == (0, 1)
    with Statements(journal) as sql:
        journal.runs.rate_counts(since=since, mode="autonomous", runbook="a")
    plan = [r[3] for r in journal.conn.execute("EXPLAIN QUERY PLAN " + sql.sql[0])]
    assert plan == ["SEARCH runs USING COVERING INDEX idx_runs_window (created_at>?)"]
