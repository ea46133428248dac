"""Rows and the audit chain: every status change and approval is chained with its row,
and a row changed behind the journal's back is neither acted on nor left unnamed."""

from __future__ import annotations

from typing import Any

import pytest

from selfdrive import RunState
from selfdrive.journal import SqliteJournal
from selfdrive.journal.audit import verify
from selfdrive.sdk.errors import AuditMismatchError

S = RunState
PLAN = "p" * 64


def new_run(journal: SqliteJournal, run_id: str) -> Any:
    return journal.runs.create({"id": run_id, "runbook": "restart-db", "mode": "approval",
                               "risk": "HIGH", "requested_by": "alice"}, actor="alice")


def pending(journal: SqliteJournal, run_id: str) -> None:
    new_run(journal, run_id)
    journal.runs.transition(run_id, S.DECIDED, actor="alice", plan_hash=PLAN)
    journal.runs.transition(run_id, S.PENDING_APPROVAL, actor="alice", owner=None,
                       data={"plan_hash": PLAN})


def approve(journal: SqliteJournal, run_id: str, actor: str, needed: int = 1
            ) -> tuple[int, bool]:
    return journal.approvals.approve(run_id, actor=actor, os_user=actor, plan_hash=PLAN,
                                   reason=None, counts=lambda _: True, needed=needed,
                                   expires_at="2999-01-01T00:00:00+00:00")


def test_every_status_change_and_approval_is_chained_with_its_row(journal, outside):
    pending(journal, "approved-then-run")
    assert approve(journal, "approved-then-run", "bob") == (1, True)
    journal.runs.transition("approved-then-run", S.RUNNING, actor="carol", owner=journal.owner)
    journal.runs.transition("approved-then-run", S.SUCCEEDED, actor="carol")
    pending(journal, "denied")
    journal.approvals.deny("denied", actor="bob", os_user="bob", reason="no", plan_hash=PLAN)
    pending(journal, "two-approvers")
    assert approve(journal, "two-approvers", "bob", needed=2) == (1, False)
    assert approve(journal, "two-approvers", "bob", needed=2) == (1, False)  # once each
    assert approve(journal, "two-approvers", "carol", needed=2) == (2, True)
    journal.runs.transition("two-approvers", S.EXPIRED, actor="selfdrive")
    new_run(journal, "interrupted")
    journal.runs.transition("interrupted", S.DECIDED, actor="alice")
    journal.runs.interrupt("interrupted", actor="alice", reason="stopped")

    assert journal.disagreements() == []
    report = verify(journal)
    assert report.ok and (report.runs, report.approvals) == (4, 4)
    assert journal.approvals.granted("two-approvers", PLAN) == ["bob", "carol"]


@pytest.mark.forged_journal
def test_a_row_status_the_chain_does_not_say_is_not_acted_on(journal, outside):
    pending(journal, "run-1")
    outside.execute("UPDATE runs SET status = 'approved' WHERE id = 'run-1'")
    events = len(journal.events())

    with pytest.raises(AuditMismatchError, match=(
            "run run-1: status approved, but its last status event in the audit chain "
            r"\(event \d+, run.pending_approval\) says pending_approval: the row was changed "
            "outside selfdrive")):
        journal.runs.transition("run-1", S.RUNNING, actor="carol", owner=journal.owner)

    assert journal.runs.get("run-1").status is S.APPROVED  # as forged: nothing moved it
    assert len(journal.events()) == events
    [found] = journal.disagreements("run-1")
    assert (found.table, found.row) == ("runs", "run-1")


def test_approvals_are_counted_from_the_chain_not_from_rows(journal, outside):
    pending(journal, "run-1")
    outside.execute("INSERT INTO approvals (run_id, decision, actor, os_user, plan_hash, "
                          "at) VALUES ('run-1', 'approve', 'bob', 'bob', ?, 'now')", PLAN)

    assert approve(journal, "run-1", "carol", needed=2) == (1, False)
    assert approve(journal, "run-1", "bob", needed=2) == (2, True)  # bob's own counts
    assert journal.approvals.granted("run-1", PLAN) == ["bob", "carol"]
    [forged] = journal.disagreements("run-1")
    assert (forged.table, forged.row) == ("approvals", "1")
    assert "approval of run run-1 by bob" in forged.what


def test_an_approval_window_or_plan_changed_in_the_row_is_named(journal, outside):
    pending(journal, "run-1")
    approve(journal, "run-1", "bob")
    assert journal.disagreements("run-1") == []
    outside.execute("UPDATE runs SET expires_at = '3999-01-01T00:00:00+00:00', "
                          "plan_hash = ? WHERE id = 'run-1'", "q" * 64)

    found = [d.what for d in journal.disagreements("run-1")]

    assert found == [
        f"plan {'q' * 12}, but the audit chain approved plan {'p' * 12} (event 5)",
        "approved until 3999-01-01T00:00:00+00:00, but the audit chain says until "
        "2999-01-01T00:00:00+00:00 (event 5)"]
