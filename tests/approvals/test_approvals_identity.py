"""Who the OS user is comes from the process's uid, never from USER or LOGNAME.

With ``[identity] os_user_authoritative = true`` the OS user is the only identity, so
a requester who sets USER=alice and an approver who sets USER=bob are still one
person, and separation of duties holds. Real CLI subprocesses, one journal.
"""

from __future__ import annotations

from pathlib import Path

from approvals_support import OS_USER, RESTART_DB, Team, clean_env, explain, low_runbook

ME = OS_USER


def as_env(name: str) -> dict[str, str]:
    """An environment that claims to be ``name`` in every variable getpass reads."""
    return clean_env(USER=name, LOGNAME=name, LNAME=name, USERNAME=name)


def test_user_variables_cannot_make_one_person_two(team: Team, tmp_path: Path) -> None:
    team.config("L4", "[identity]\nos_user_authoritative = true\n")
    team.runbook("db.py", RESTART_DB)
    marker = tmp_path / "marker"

    pending = team.sd_json("run", "restart-db", "-p", f"marker={marker}", code=3,
                           env=as_env("alice"))
    run_id = pending["run"]["id"]
    assert (pending["run"]["requested_by"], pending["run"]["os_user"]) == (ME, ME)

    # "bob" is the same uid: he requested the run, so he may not approve it.
    approve = team.sd("approve", run_id, env=as_env("bob"))
    assert approve.returncode == 2, explain(approve)
    assert "separation of duties" in approve.stderr
    assert team.approvals(run_id) == []
    assert team.status(run_id) == "pending_approval"

    # Nor does --as bob get past the OS user.
    forged = team.sd("approve", run_id, who="bob", env=as_env("bob"))
    assert forged.returncode == 2, explain(forged)
    assert f"you are {ME!r}, not 'bob'" in forged.stderr

    resume = team.sd("resume", run_id, env=as_env("bob"))
    assert resume.returncode == 2, explain(resume)
    assert "not approved yet" in resume.stderr
    assert not marker.exists()
    assert team.events("run.resumed", run_id) == []
    assert {e["actor"] for e in team.events(run_id=run_id)} == {ME}


def test_the_recorded_os_user_is_the_uids_name(team: Team, tmp_path: Path) -> None:
    team.config("L4")
    team.runbook("a.py", low_runbook("touch-a"))
    out = tmp_path / "out"

    ran = team.sd_json("run", "touch-a", "-p", f"path={out}", code=0, env=as_env("mallory"))

    assert (ran["run"]["requested_by"], ran["run"]["os_user"]) == (ME, ME)
    assert team.run_row(ran["run"]["id"])["os_user"] == ME
