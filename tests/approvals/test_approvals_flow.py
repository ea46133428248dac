"""Two (three) people, one HIGH-risk run, the real CLI: request, refuse, approve, resume.

And an approval binds to a plan: when what the run would change moves between the
approval and the resume, nothing runs and the run waits again on the new plan.
"""

from __future__ import annotations

from pathlib import Path

from approvals_support import OS_USER, PURGE, RESTART_DB, Team, explain


def test_alice_requests_bob_approves_carol_resumes(team: Team, tmp_path: Path) -> None:
    team.config("L4")
    team.runbook("db.py", RESTART_DB)
    marker = tmp_path / "restarted"

    # alice asks; HIGH risk at L4 needs approval, and --yes cannot be alice's own.
    asked = team.request("restart-db", f"marker={marker}", who="alice", code=3)
    run_id = asked["run"]["id"]
    assert asked["run"]["status"] == "pending_approval"
    assert asked["decision"]["mode"] == "approval"
    with_yes = team.sd("run", "restart-db", "-p", f"marker={marker}", "--yes", who="alice")
    assert with_yes.returncode == 3, explain(with_yes)
    assert "separation of duties" in with_yes.stdout + with_yes.stderr
    assert not marker.exists()
    plan_hash = team.run_row(run_id)["plan_hash"]
    assert plan_hash and len(plan_hash) == 64

    # alice may not approve her own HIGH-risk run; the refusal is journaled.
    refused = team.sd("approve", run_id, who="alice")
    assert refused.returncode == 2, explain(refused)
    assert "separation of duties" in refused.stderr
    assert team.status(run_id) == "pending_approval"
    assert team.approvals(run_id) == []
    [refusal] = team.events("approval.refused", run_id)
    assert refusal["actor"] == "alice"
    assert "separation of duties" in refusal["data"]["reason"]

    # bob approves: the run is approved, bound to the plan hash, but nothing ran yet.
    approved = team.sd("approve", run_id, "--reason", "change ticket 7", who="bob")
    assert approved.returncode == 0, explain(approved)
    assert "1 of 1" in approved.stdout
    assert team.status(run_id) == "approved"
    assert not marker.exists()

    # carol resumes: it runs, once.
    resumed = team.sd_json("resume", run_id, who="carol", code=0)
    assert resumed["run"]["status"] == "succeeded"
    assert marker.read_text() == "restarted\n"

    # The journal says who did what, and when.
    run = team.run_row(run_id)
    assert (run["status"], run["requested_by"], run["os_user"]) == (
        "succeeded", "alice", OS_USER)
    [approval] = team.approvals(run_id)
    assert approval["decision"] == "approve"
    assert approval["actor"] == "bob"
    assert approval["os_user"] == OS_USER
    assert approval["plan_hash"] == plan_hash == run["plan_hash"]
    assert approval["reason"] == "change ticket 7"
    assert approval["at"]

    [requested] = team.events("run.requested", run_id)
    [granted] = team.events("approval.granted", run_id)
    [resumed_event] = team.events("run.resumed", run_id)
    assert (requested["actor"], granted["actor"], resumed_event["actor"]) == (
        "alice", "bob", "carol")
    assert granted["data"]["plan_hash"] == plan_hash
    assert resumed_event["data"]["plan_hash"] == plan_hash
    assert resumed_event["data"]["approvers"] == ["bob"]
    assert requested["at"] < refusal["at"] < granted["at"] < resumed_event["at"]
    [succeeded] = team.events("run.succeeded", run_id)
    assert succeeded["at"] > resumed_event["at"]

    logs = team.sd_json("logs", run_id)
    assert [(a["actor"], a["decision"], a["plan_hash"]) for a in logs["approvals"]] == [
        ("bob", "approve", plan_hash)]
    text = team.sd("logs", run_id)
    assert f"approved by bob (os user {OS_USER})" in text.stdout, explain(text)

    # A second resume is refused, and nothing runs twice.
    again = team.sd("resume", run_id, who="carol")
    assert again.returncode == 2, explain(again)
    assert "succeeded" in again.stderr
    assert marker.read_text() == "restarted\n"
    assert len(team.events("run.resumed", run_id)) == 1


def test_plan_changed_after_approval_waits_again(team: Team, tmp_path: Path) -> None:
    team.config("L4")
    team.runbook("purge.py", PURGE)
    folder = tmp_path / "junk"
    folder.mkdir()
    for name in ("a.tmp", "b.tmp"):
        (folder / name).write_text(name)

    asked = team.request("purge-files", f"folder={folder}", who="alice", code=3)
    run_id = asked["run"]["id"]
    old_hash = team.run_row(run_id)["plan_hash"]
    approved = team.sd("approve", run_id, who="bob")
    assert approved.returncode == 0, explain(approved)
    assert team.status(run_id) == "approved"

    # Something new appears: the same parameters now mean a bigger change.
    (folder / "c.tmp").write_text("c")
    changed = team.sd("resume", run_id, who="carol")
    assert changed.returncode == 3, explain(changed)
    assert sorted(p.name for p in folder.iterdir()) == ["a.tmp", "b.tmp", "c.tmp"]
    run = team.run_row(run_id)
    new_hash = run["plan_hash"]
    assert run["status"] == "pending_approval"
    assert new_hash != old_hash
    assert "plan changed" in run["error"]
    assert old_hash[:12] in changed.stderr and new_hash[:12] in changed.stderr
    assert "c.tmp" in changed.stderr
    assert team.events("run.resumed", run_id) == []
    # Nothing but plans was recorded: no live step ran.
    steps = team.rows("SELECT phase, command, planned, plan_hash FROM steps WHERE run_id = ?",
                      (run_id,))
    assert all(s["phase"].startswith("plan:") for s in steps), steps
    changes = {h: sorted(Path(s["command"].split()[-1]).name for s in steps
                         if s["planned"] and s["plan_hash"] == h)
               for h in (old_hash, new_hash)}
    assert changes == {old_hash: ["a.tmp", "b.tmp"], new_hash: ["a.tmp", "b.tmp", "c.tmp"]}
    [back] = [e for e in team.events("run.pending_approval", run_id)
              if e["data"].get("new_plan")]
    assert (back["data"]["approved_plan"], back["data"]["new_plan"]) == (old_hash, new_hash)
    # bob's old approval is for the old plan: it does not carry over.
    listed = team.sd_json("approvals")
    [entry] = [r for r in listed if r["id"] == run_id]
    assert entry["approvals"] == []
    assert len(entry["changes"]) == 3

    # Approve the new plan, and it runs.
    again = team.sd("approve", run_id, who="bob")
    assert again.returncode == 0, explain(again)
    done = team.sd_json("resume", run_id, who="carol", code=0)
    assert done["run"]["status"] == "succeeded"
    assert list(folder.iterdir()) == []
    assert [(a["actor"], a["plan_hash"]) for a in team.approvals(run_id)] == [
        ("bob", old_hash), ("bob", new_hash)]
    [resumed] = team.events("run.resumed", run_id)
    assert resumed["data"]["plan_hash"] == new_hash
