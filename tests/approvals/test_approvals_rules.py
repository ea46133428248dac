"""Who may approve, how many must, and whose word counts for who is acting."""

from __future__ import annotations

from pathlib import Path

from approvals_support import OS_USER, RESTART_DB, Team, clean_env, explain, low_runbook


def test_only_listed_approvers_may_approve(team: Team, tmp_path: Path) -> None:
    team.config("L4", '[approvals.approvers]\nHIGH = ["bob"]\n')
    team.runbook("db.py", RESTART_DB)
    run_id = team.request("restart-db", f"marker={tmp_path / 'm'}", who="alice",
                          code=3)["run"]["id"]

    refused = team.sd("approve", run_id, who="carol")
    assert refused.returncode == 2, explain(refused)
    assert "carol may not approve HIGH risk (approvers: bob)" in refused.stderr
    assert team.status(run_id) == "pending_approval"
    assert team.approvals(run_id) == []
    [event] = team.events("approval.refused", run_id)
    assert event["actor"] == "carol"
    assert "approvers: bob" in event["data"]["reason"]

    ok = team.sd("approve", run_id, who="bob")
    assert ok.returncode == 0, explain(ok)
    assert team.status(run_id) == "approved"
    assert [a["actor"] for a in team.approvals(run_id)] == ["bob"]


def test_two_distinct_approvers_and_one_removed_before_resume(team: Team,
                                                               tmp_path: Path) -> None:
    rules = '[approvals]\napprovers = {{ HIGH = [{}] }}\nmin_approvers = {{ HIGH = 2 }}\n'
    team.config("L4", rules.format('"bob", "dave"'))
    team.runbook("db.py", RESTART_DB)
    marker = tmp_path / "m"
    run_id = team.request("restart-db", f"marker={marker}", who="alice", code=3)["run"]["id"]

    for _ in range(2):  # bob twice is still one person
        once = team.sd("approve", run_id, who="bob")
        assert once.returncode == 0, explain(once)
        assert "(1 of 2)" in once.stdout
        assert team.status(run_id) == "pending_approval"
    assert [a["actor"] for a in team.approvals(run_id)] == ["bob"]
    [waiting] = team.sd_json("approvals")
    assert waiting["id"] == run_id
    assert waiting["approvals_needed"] == 2
    assert [a["actor"] for a in waiting["approvals"]] == ["bob"]
    early = team.sd("resume", run_id, who="carol")
    assert early.returncode == 2, explain(early)
    assert "1 of 2" in early.stderr

    second = team.sd("approve", run_id, who="dave")
    assert second.returncode == 0, explain(second)
    assert "(2 of 2)" in second.stdout
    assert team.status(run_id) == "approved"
    [approved] = team.events("run.approved", run_id)
    assert approved["data"]["approvers"] == ["bob", "dave"]

    # dave leaves the approvers before anyone resumes: his approval no longer counts.
    team.config("L4", rules.format('"bob", "carol"'))
    back = team.sd("resume", run_id, who="carol")
    assert back.returncode == 3, explain(back)
    assert "dave" in back.stdout and "no longer count" in back.stdout
    assert "1 of 2" in back.stdout
    assert team.status(run_id) == "pending_approval"
    assert not marker.exists()
    assert team.events("run.resumed", run_id) == []

    # Under today's rules carol is the second approver; bob's approval still stands.
    third = team.sd("approve", run_id, who="carol")
    assert third.returncode == 0, explain(third)
    assert "(2 of 2)" in third.stdout
    done = team.sd_json("resume", run_id, who="carol", code=0)
    assert done["run"]["status"] == "succeeded"
    assert marker.read_text() == "restarted\n"
    [resumed] = team.events("run.resumed", run_id)
    assert resumed["data"]["approvers"] == ["bob", "carol"]


def test_os_user_authoritative_refuses_another_name(team: Team, tmp_path: Path) -> None:
    team.config("L4", "[identity]\nos_user_authoritative = true\n")
    team.runbook("a.py", low_runbook("touch-a"))
    team.runbook("db.py", RESTART_DB)
    me = OS_USER
    out = tmp_path / "out"

    for refused in (team.sd("run", "touch-a", "-p", f"path={out}", who="mallory"),
                    team.sd("run", "touch-a", "-p", f"path={out}",
                            env=clean_env(SELFDRIVE_USER="mallory"))):
        assert refused.returncode == 2, explain(refused)
        assert "OS user authoritative" in refused.stderr
        assert repr(me) in refused.stderr and "'mallory'" in refused.stderr
    assert not out.exists()
    assert team.rows("SELECT * FROM runs") == []
    assert team.rows("SELECT * FROM events") == []

    ran = team.request("touch-a", f"path={out}", who=None, code=0)  # the OS user
    assert (ran["run"]["requested_by"], ran["run"]["os_user"]) == (me, me)
    assert out.exists()
    same = team.request("touch-a", f"path={out}", who=me, code=0)
    assert same["run"]["requested_by"] == me

    # Approving under someone else's name is refused the same way, and leaves no trace.
    pending = team.request("restart-db", f"marker={tmp_path / 'm'}", who=me,
                           code=3)["run"]["id"]
    events = len(team.events())
    forged = team.sd("approve", pending, who="bob")
    assert forged.returncode == 2, explain(forged)
    assert "OS user authoritative" in forged.stderr
    assert team.status(pending) == "pending_approval"
    assert team.approvals(pending) == []
    assert len(team.events()) == events
