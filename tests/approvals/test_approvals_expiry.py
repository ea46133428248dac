"""Approval windows: past ``[approvals] expiry`` a run ends as ``expired`` and never runs."""

from __future__ import annotations

from pathlib import Path

from approvals_support import RESTART_DB, Team, explain

EXPIRY = '[approvals]\nexpiry = "2s"\n'


def test_expired_approval_and_expired_request_never_run(team: Team, tmp_path: Path) -> None:
    team.config("L4", EXPIRY)
    team.runbook("db.py", RESTART_DB)
    approved_marker, pending_marker = tmp_path / "approved", tmp_path / "pending"

    approved = team.request("restart-db", f"marker={approved_marker}", who="alice",
                            code=3)["run"]["id"]
    ok = team.sd("approve", approved, who="bob")
    assert ok.returncode == 0, explain(ok)
    assert team.status(approved) == "approved"
    pending = team.request("restart-db", f"marker={pending_marker}", who="alice",
                           code=3)["run"]["id"]
    assert team.status(pending) == "pending_approval"

    team.wait_until_expired(approved)
    team.wait_until_expired(pending)

    # Approved, but not resumed in time: resume refuses, and the run ends as expired.
    late = team.sd("resume", approved, who="carol")
    assert late.returncode == 2, explain(late)
    assert "expired" in late.stderr
    run = team.run_row(approved)
    assert run["status"] == "expired"
    assert run["started_at"] is None
    assert not approved_marker.exists()
    assert team.events("run.resumed", approved) == []
    assert [e["actor"] for e in team.events("run.expired", approved)] == ["selfdrive"]

    # Never approved: it no longer waits, history shows it expired, and no one can approve it.
    waiting = team.sd_json("approvals")
    assert [r["id"] for r in waiting] == []
    history = {r["id"]: r["status"] for r in team.sd_json("history")}
    assert history == {approved: "expired", pending: "expired"}
    refused = team.sd("approve", pending, who="bob")
    assert refused.returncode == 2, explain(refused)
    assert "expired" in refused.stderr
    assert team.status(pending) == "expired"
    assert team.approvals(pending) == []
    resumed = team.sd("resume", pending, who="bob")
    assert resumed.returncode == 2, explain(resumed)
    assert not pending_marker.exists()


def test_fresh_approval_within_window_still_runs(team: Team, tmp_path: Path) -> None:
    """The control: the same short window does not stop a run resumed in time."""
    team.config("L4", '[approvals]\nexpiry = "30s"\n')
    team.runbook("db.py", RESTART_DB)
    marker = tmp_path / "m"
    run_id = team.request("restart-db", f"marker={marker}", who="alice", code=3)["run"]["id"]
    assert team.sd("approve", run_id, who="bob").returncode == 0
    done = team.sd_json("resume", run_id, who="carol", code=0)
    assert done["run"]["status"] == "succeeded"
    assert marker.exists()


def test_history_alone_shows_a_stale_pending_run_as_expired(team: Team, tmp_path: Path
                                                            ) -> None:
    team.config("L4", EXPIRY)
    team.runbook("db.py", RESTART_DB)
    run_id = team.request("restart-db", f"marker={tmp_path / 'm'}", who="alice",
                          code=3)["run"]["id"]
    team.wait_until_expired(run_id)
    history = {r["id"]: r["status"] for r in team.sd_json("history")}
    assert history == {run_id: "expired"}
