"""Rows changed outside selfdrive are not acted on, and `audit verify` names them.

Someone with write access to the journal file inserts an approval row and sets a run
`approved` with sqlite3, leaving the hash-chained events alone. The executor takes a
run's status and approvals from the chain before it acts, so `resume` refuses (exit 1)
and runs nothing; `audit verify` names each row the chain does not back (exit 1).
Real CLI subprocesses, a real journal file, raw sqlite3 for the forgery.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from approvals_support import RESTART_DB, Team, explain

from selfdrive.journal import event_digest
from selfdrive.journal.store import canonical


def forge(team: Team, change: Callable[[sqlite3.Connection], None]) -> None:
    conn = sqlite3.connect(team.journal)
    try:
        with conn:
            change(conn)
    finally:
        conn.close()


def approve_behind_selfdrive(run_id: str, plan_hash: str, *, status: bool = True
                             ) -> Callable[[sqlite3.Connection], int]:
    """Insert bob's approval row (and, with ``status``, mark the run approved)."""

    def change(conn: sqlite3.Connection) -> int:
        now = datetime.now(UTC)
        cur = conn.execute(
            "INSERT INTO approvals (run_id, decision, actor, os_user, plan_hash, reason, at) "
            "VALUES (?, 'approve', 'bob', 'bob', ?, 'lgtm', ?)",
            (run_id, plan_hash, now.isoformat()))
        if status:
            conn.execute("UPDATE runs SET status = 'approved', expires_at = ? WHERE id = ?",
                         ((now + timedelta(hours=1)).isoformat(), run_id))
        return int(cur.lastrowid or 0)

    return change


def requested(team: Team, marker: Path) -> tuple[str, str]:
    out = team.request("restart-db", f"marker={marker}", who="alice", code=3)
    return out["run"]["id"], out["run"]["plan_hash"]


@pytest.mark.forged_journal
def test_a_forged_approval_is_refused_and_named(team: Team, tmp_path: Path) -> None:
    team.config("L4")
    team.runbook("db.py", RESTART_DB)
    # One honest run first: the check must name the forged rows and only those.
    honest, _ = requested(team, tmp_path / "honest")
    assert team.sd("approve", honest, who="bob").returncode == 0
    assert team.sd_json("resume", honest, who="carol", code=0)["run"]["status"] == "succeeded"
    clean = team.sd("audit", "verify")
    assert clean.returncode == 0, explain(clean)
    assert "1 run(s) and 1 approval(s) agree with it" in clean.stdout

    marker = tmp_path / "marker"
    run_id, plan_hash = requested(team, marker)
    forge(team, approve_behind_selfdrive(run_id, plan_hash))
    [row] = [a["id"] for a in team.approvals(run_id)]

    resume = team.sd("resume", run_id, who="carol")
    assert resume.returncode == 1, explain(resume)
    assert "Traceback" not in resume.stderr
    assert f"run {run_id} is not resumed, and nothing of it ran" in resume.stderr
    assert f"approvals row {row}: approval of run {run_id} by bob" in resume.stderr
    assert (f"runs row {run_id}: status approved, but its last status event in the audit "
            f"chain") in resume.stderr
    assert "says pending_approval" in resume.stderr
    assert not marker.exists()
    assert team.events("run.resumed", run_id) == []
    assert team.events("run.running", run_id) == []
    assert team.rows("SELECT * FROM steps WHERE run_id = ? AND phase NOT LIKE 'plan:%'",
                     (run_id,)) == []
    [refused] = team.events("resume.refused", run_id)
    assert refused["actor"] == "carol"
    assert len(refused["data"]["disagreements"]) == 2

    audit = team.sd("audit", "verify")
    assert audit.returncode == 1, explain(audit)
    assert "BROKEN" not in audit.stdout  # the chain itself is intact …
    lines = [line for line in audit.stdout.splitlines() if line.startswith("DISAGREES: ")]
    assert len(lines) == 2, audit.stdout  # … but these two rows are not backed by it
    assert lines[0].startswith(f"DISAGREES: runs row {run_id}: status approved")
    assert lines[1].startswith(f"DISAGREES: approvals row {row}: approval of run {run_id} "
                               f"by bob for plan {plan_hash[:12]} has no approval.granted "
                               f"event in the audit chain")
    report = team.sd_json("audit", "verify", code=1)
    assert report["ok"] is False and report["broken"] is None
    assert [(d["table"], d["row"]) for d in report["disagreements"]] == [
        ("runs", run_id), ("approvals", str(row))]

    logs = team.sd("logs", run_id)
    assert logs.returncode == 0, explain(logs)
    assert f"NOT IN THE AUDIT CHAIN: approvals row {row}" in logs.stdout


def test_a_forged_approval_row_never_counts_toward_the_approvers_needed(
        team: Team, tmp_path: Path) -> None:
    team.config("L4", "[approvals]\nmin_approvers = { HIGH = 2 }\n")
    team.runbook("db.py", RESTART_DB)
    marker = tmp_path / "marker"
    run_id, plan_hash = requested(team, marker)
    forge(team, approve_behind_selfdrive(run_id, plan_hash, status=False))
    [waiting] = team.sd_json("approvals")
    assert (waiting["id"], waiting["approvals"]) == (run_id, [])  # the forged row is no vote

    carol = team.sd("approve", run_id, who="carol")
    assert carol.returncode == 0, explain(carol)
    assert "(1 of 2)" in carol.stdout
    assert team.status(run_id) == "pending_approval"
    resume = team.sd("resume", run_id, who="carol")
    assert resume.returncode == 2, explain(resume)
    assert "not approved yet (1 of 2 approval(s)" in resume.stderr
    assert not marker.exists()

    # bob's own approval is recorded and chained, though a row in his name was there.
    bob = team.sd("approve", run_id, who="bob")
    assert bob.returncode == 0, explain(bob)
    assert "(2 of 2)" in bob.stdout
    assert [e["actor"] for e in team.events("approval.granted", run_id)] == ["carol", "bob"]
    audit = team.sd_json("audit", "verify", code=1)
    assert [(d["table"], d["row"]) for d in audit["disagreements"]] == [
        ("approvals", str(team.approvals(run_id)[0]["id"]))]


def test_forged_events_that_are_not_links_of_the_chain_are_refused(
        team: Team, tmp_path: Path) -> None:
    team.config("L4")
    team.runbook("db.py", RESTART_DB)
    marker = tmp_path / "marker"
    run_id, plan_hash = requested(team, marker)

    def with_events(conn: sqlite3.Connection) -> None:
        approve_behind_selfdrive(run_id, plan_hash)(conn)
        expires = conn.execute("SELECT expires_at FROM runs WHERE id = ?",
                               (run_id,)).fetchone()[0]
        prev, at = conn.execute("SELECT hash, at FROM events ORDER BY id DESC "
                                "LIMIT 1").fetchone()
        for kind, fields in (
                ("approval.granted", {"os_user": "bob", "plan_hash": plan_hash,
                                      "reason": "lgtm"}),
                ("run.approved", {"approvers": ["bob"], "expires_at": expires,
                                  "from": "pending_approval", "plan_hash": plan_hash})):
            data = canonical(fields)
            wrong = event_digest(prev, at, kind, "mallory", run_id, data)  # not bob's
            conn.execute("INSERT INTO events (at, kind, actor, run_id, data, prev_hash, hash) "
                         "VALUES (?, ?, 'bob', ?, ?, ?, ?)", (at, kind, run_id, data, prev,
                                                              wrong))
            prev = wrong

    forge(team, with_events)
    resume = team.sd("resume", run_id, who="carol")
    assert resume.returncode == 1, explain(resume)
    assert "its content does not match its digest" in resume.stderr
    assert not marker.exists()
    assert team.events("run.resumed", run_id) == []
    audit = team.sd("audit", "verify")
    assert audit.returncode == 1 and "BROKEN: event" in audit.stdout, explain(audit)


@pytest.mark.forged_journal
def test_a_denied_run_set_back_to_pending_cannot_be_approved(team: Team, tmp_path: Path
                                                            ) -> None:
    team.config("L4")
    team.runbook("db.py", RESTART_DB)
    marker = tmp_path / "marker"
    run_id, _ = requested(team, marker)
    denied = team.sd("deny", run_id, "--reason", "not now", who="bob")
    assert denied.returncode == 0, explain(denied)
    forge(team, lambda conn: conn.execute(
        "UPDATE runs SET status = 'pending_approval', finished_at = NULL WHERE id = ?",
        (run_id,)))

    approve = team.sd("approve", run_id, who="carol")
    assert approve.returncode == 1, explain(approve)
    assert "Traceback" not in approve.stderr
    assert "says denied" in approve.stderr and "changed outside selfdrive" in approve.stderr
    assert team.events("approval.granted", run_id) == []
    assert [a["decision"] for a in team.approvals(run_id)] == ["deny"]
    assert team.status(run_id) == "pending_approval"
    assert not marker.exists()
