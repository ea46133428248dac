"""One state-machine move for every status change, and the legal-history invariant that
tests check on every journal they leave behind."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from selfdrive import RunState
from selfdrive.journal import Journal, SqliteJournal, event_digest
from selfdrive.journal.audit import verify
from selfdrive.journal.core import canonical
from selfdrive.journal.history import illegal_histories, journal_problems
from selfdrive.sdk.errors import IllegalTransitionError, JournalError, UsageError

S = RunState
PACKAGE = Path(__file__).resolve().parents[2] / "selfdrive"


def new_run(journal: SqliteJournal, run_id: str = "run-1", **fields: Any):
    return journal.runs.create({"id": run_id, "runbook": "restart-db", "mode": "approval",
                                "requested_by": "alice", **fields}, actor="alice")


def waiting(journal: SqliteJournal, run_id: str) -> None:
    new_run(journal, run_id)
    journal.runs.transition(run_id, S.DECIDED, actor="alice")
    journal.runs.transition(run_id, S.PENDING_APPROVAL, actor="alice", plan_hash="p" * 64)


def problems(journal: Journal) -> list[str]:
    """The invariant's findings on ``journal``, whichever database it is."""
    if isinstance(journal, SqliteJournal):
        return journal_problems(journal.path)
    return journal._query(illegal_histories)


def forge(outside: Any, *sql: str) -> None:
    for statement in sql:
        outside.execute(statement)


def chain_status_event(outside: Any, run_id: str, kind: str, data: dict[str, Any]) -> None:
    """Append a status event that is a perfect link of the chain, as someone holding the
    database and the code could: ``audit verify`` cannot tell it from a real one."""
    [last] = outside.rows("SELECT hash FROM events ORDER BY id DESC LIMIT 1")
    prev = last["hash"]
    at, body = "2026-01-01T00:00:00.000000+00:00", canonical(data)
    outside.execute("INSERT INTO events (at, kind, actor, run_id, data, prev_hash, hash) "
                    "VALUES (?, ?, 'mallory', ?, ?, ?, ?)", at, kind, run_id, body, prev,
                    event_digest(prev, at, kind, "mallory", run_id, body))


def test_every_kind_of_status_change_leaves_a_legal_history(journal):
    """Transitions, an approval, a denial, an interrupt and a rollback: all one move."""
    waiting(journal, "approved")
    journal.approvals.approve("approved", actor="bob", os_user="bob", plan_hash="p" * 64,
                              reason=None, counts=lambda _: True, needed=1,
                              expires_at="2999-01-01T00:00:00+00:00")
    waiting(journal, "denied")
    journal.approvals.deny("denied", actor="bob", os_user="bob", reason="not now",
                           plan_hash="p" * 64)
    new_run(journal, "stopped")
    journal.runs.transition("stopped", S.DECIDED, actor="alice")
    journal.runs.transition("stopped", S.RUNNING, actor="alice")
    journal.runs.interrupt("stopped", actor="alice", reason="SIGTERM")
    new_run(journal, "undone")
    for state in (S.DECIDED, S.RUNNING, S.FAILED, S.ROLLING_BACK, S.ROLLED_BACK):
        journal.runs.transition("undone", state, actor="alice")

    assert [journal.runs.get(r).status for r in ("approved", "denied", "stopped", "undone")] \
        == [S.APPROVED, S.DENIED, S.INTERRUPTED, S.ROLLED_BACK]
    assert problems(journal) == []


@pytest.mark.forged_journal
def test_a_row_changed_behind_selfdrives_back_breaks_the_invariant(journal, outside):
    new_run(journal)
    journal.runs.transition("run-1", S.DECIDED, actor="alice")
    assert problems(journal) == []

    forge(outside, "UPDATE runs SET status = 'succeeded' WHERE id = 'run-1'")

    assert problems(journal) == [
        "run run-1: its history ends decided (event 2), but its row says succeeded"]


@pytest.mark.forged_journal
def test_a_forged_move_that_the_audit_chain_cannot_see_breaks_the_invariant(journal, outside):
    """A status event that is a valid link, with a row to match: ``audit verify`` passes,
    but requested → succeeded is no move of the state machine."""
    new_run(journal)
    chain_status_event(outside, "run-1", "run.succeeded", {"from": "requested"})
    forge(outside, "UPDATE runs SET status = 'succeeded' WHERE id = 'run-1'")

    assert verify(journal).ok
    assert problems(journal) == [
        "run run-1: requested -> succeeded (event 2) is not a move of the run state machine"]


@pytest.mark.forged_journal
def test_a_history_that_does_not_start_requested_or_misstates_where_it_left(journal, outside):
    new_run(journal, "run-1")
    chain_status_event(outside, "run-1", "run.decided", {"from": "requested"})
    forge(outside, "DELETE FROM events WHERE id = 1",
          "UPDATE runs SET status = 'decided' WHERE id = 'run-1'")
    new_run(journal, "run-2")
    chain_status_event(outside, "run-2", "run.decided", {"from": "running"})
    forge(outside, "UPDATE runs SET status = 'decided' WHERE id = 'run-2'")
    new_run(journal, "run-3")
    forge(outside, "DELETE FROM runs WHERE id = 'run-3'")

    assert problems(journal) == [
        "run run-1: its history starts decided (event 2), not requested",
        "run run-2: event 4 says it moved from running, but the run was requested",
        "run run-3: the chain has its status history but there is no such run"]


def test_an_illegal_move_names_run_from_and_to_and_writes_nothing(journal):
    new_run(journal)
    before = (journal.runs.get("run-1"), len(journal.events()))

    with pytest.raises(IllegalTransitionError) as caught:
        journal.runs.transition("run-1", S.SUCCEEDED, actor="alice")

    assert str(caught.value) == ("run run-1 is requested; it cannot become succeeded (no such "
                                 "move in the run state machine)")
    assert (caught.value.run_id, caught.value.current, caught.value.to) == (
        "run-1", "requested", "succeeded")
    assert (journal.runs.get("run-1"), len(journal.events())) == before
    assert problems(journal) == []


def test_an_illegal_move_inside_atomic_rolls_back_the_whole(journal):
    new_run(journal)
    with pytest.raises(IllegalTransitionError), journal.atomic("two moves"):
        journal.runs.transition("run-1", S.DECIDED, actor="alice")
        journal.runs.transition("run-1", S.ROLLED_BACK, actor="alice")
    assert journal.runs.get("run-1").status is S.REQUESTED
    assert [e.kind for e in journal.events()] == ["run.requested"]


def test_a_run_is_created_requested_and_nothing_else(journal):
    with pytest.raises(IllegalTransitionError, match=re.escape(
            "run run-9 is nothing; it cannot become running (every run starts requested)")):
        new_run(journal, "run-9", status=S.RUNNING)
    assert journal.runs.find() == []


def test_a_status_event_cannot_be_written_around_the_move(journal):
    new_run(journal)
    with pytest.raises(JournalError, match=r"event run\.succeeded records a status change"):
        journal.event("run.succeeded", actor="alice", run_id="run-1")
    assert [e.kind for e in journal.events()] == ["run.requested"]


def test_a_denial_of_a_running_run_is_refused_before_anything_is_written(journal):
    new_run(journal)
    journal.runs.transition("run-1", S.DECIDED, actor="alice")
    journal.runs.transition("run-1", S.RUNNING, actor="alice")
    with pytest.raises(UsageError, match="run run-1 is running; only a run waiting"):
        journal.approvals.deny("run-1", actor="bob", os_user="bob", reason="no",
                               plan_hash="p" * 64)
    assert journal.approvals.of_run("run-1") == []
    assert problems(journal) == []


def test_only_the_move_writes_a_run_status():
    """No code but the state-machine move updates ``runs.status`` (or inserts a run in
    another state): a grep, so that a new raw UPDATE fails here and not in production."""
    writes = re.compile(r"UPDATE\s+runs\s+SET[^\"']*\bstatus\b", re.IGNORECASE)
    found = []
    for file in PACKAGE.rglob("*.py"):
        text = file.read_text()
        found.extend(f"{file.relative_to(PACKAGE)}:{text.count(chr(10), 0, m.start()) + 1}"
                     for m in writes.finditer(text))
    move = (PACKAGE / "journal" / "runs.py").read_text()
    line = move.count("\n", 0, move.index("UPDATE runs SET {sets} WHERE id = ? AND status")) + 1
    assert found == [f"journal/runs.py:{line}"]


def test_the_check_skips_files_that_are_not_journals(tmp_path):
    (tmp_path / "notes.db").write_text("not sqlite")
    sqlite3.connect(tmp_path / "other.db").execute("CREATE TABLE t (x)").connection.close()
    assert journal_problems(tmp_path / "notes.db") == []
    assert journal_problems(tmp_path / "other.db") == []
    assert not os.path.exists(tmp_path / "missing.db")
    assert journal_problems(tmp_path / "missing.db") == []
