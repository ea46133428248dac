"""`selfdrive stats`: each runbook's record, and its record per alert that fired it.

Runs are real: some in-process through the Executor, one started by an alert through
`selfdrive trigger` (the receiver's own path), so time to resolve is measured from the
journaled alert to the verified success.
"""

from __future__ import annotations

from learning_support import Team

from selfdrive import RunState
from selfdrive.executor import RunRequest

BOOKS = '''
@runbook(risk=Risk.LOW, triggers=[alert("DiskFull")])
def free_disk(ctx: Context, marker: str = "marker", broken: bool = False) -> None:
    """Free disk space."""
    ctx.run("sleep 0.1; echo {{ 'no' if broken else 'freed' }} > {{ marker }}")

@free_disk.verify
def freed(ctx: Context, marker: str) -> bool:
    return ctx.run("grep -q '^freed$' {{ marker }}", readonly=True, check=False).ok

@free_disk.rollback
def undo(ctx: Context, marker: str) -> None:
    ctx.run("rm -f -- {{ marker }}")

@runbook(risk=Risk.MEDIUM)
def resize_volume(ctx: Context) -> None:
    """Grow the volume (needs a human until it has a record)."""
    ctx.run("true")

@resize_volume.verify
def grown(ctx: Context) -> bool:
    return True
'''


def _build(team: Team) -> None:
    team.write(BOOKS)
    marker = str(team.root / "marker")
    for broken in (False, False, True):
        outcome = team.submit("free-disk", {"marker": marker, "broken": broken})
        assert outcome.run.status is (RunState.ROLLED_BACK if broken else RunState.SUCCEEDED)
    planned = team.executor.submit(RunRequest(runbook="free-disk", params={"marker": marker},
                                              requested_by="alice", dry_run=True))
    assert planned.run.status is RunState.PLANNED
    waiting = team.submit("resize-volume")
    assert waiting.run.status is RunState.PENDING_APPROVAL
    # The alert's run: marker defaults to "marker" in the team folder (the CLI's cwd).
    fired = team.sd_json("trigger", "DiskFull", "-l", "host=web1")
    assert [r["run"]["status"] for r in fired["runs"]] == ["succeeded"]


def test_stats_counts_outcomes_durations_and_time_to_resolve(team):
    _build(team)
    data = team.sd_json("stats")
    assert data["since"] is not None  # 30 days by default
    by_name = {r["runbook"]: r for r in data["runbooks"]}
    assert sorted(by_name) == ["free-disk", "resize-volume"]

    free = by_name["free-disk"]
    assert {k: free[k] for k in ("requests", "runs", "succeeded", "verified_successes",
                                 "verification_failures", "rollbacks", "failures",
                                 "planned", "resolved")} == {
        "requests": 5, "runs": 4, "succeeded": 3, "verified_successes": 3,
        "verification_failures": 1, "rollbacks": 1, "failures": 1, "planned": 1,
        "resolved": 1}
    assert 0.1 <= free["median_seconds"] <= free["p90_seconds"] < 10
    assert free["last_outcome"] == "succeeded"  # the alert's run came last
    (disk,) = free["by_alert"]
    assert disk["alert"] == "DiskFull"
    assert (disk["runs"], disk["verified_successes"], disk["resolved"]) == (1, 1, 1)
    # From the alert's arrival to the verified success: at least the body's sleep.
    assert 0.1 <= disk["median_resolve_seconds"] < 10
    assert disk["last_run"] == fired_run(team)

    resize = by_name["resize-volume"]
    assert (resize["requests"], resize["runs"], resize["waiting"]) == (1, 0, 1)
    assert resize["median_seconds"] is None and resize["last_outcome"] is None

    text = team.sd_ok("stats")
    lines = text.splitlines()
    assert "runbook(s) with runs since" in lines[0]
    assert lines[1].split()[:4] == ["RUNBOOK", "FIRED", "BY", "RUNS"]
    assert any(line.split()[:4] == ["free-disk", "(all)", "4", "3"] for line in lines), text
    assert any(line.split()[:3] == ["alert", "DiskFull", "1"] for line in lines), text
    assert "rolled_back" not in lines[2]


def fired_run(team: Team) -> str:
    (row,) = team.rows("SELECT run_id FROM alert_runs WHERE outcome = 'started'")
    return str(row["run_id"])


def test_stats_for_one_runbook_a_window_and_bad_input(team):
    _build(team)
    one = team.sd_json("stats", "free-disk", "--since", "all")
    assert [r["runbook"] for r in one["runbooks"]] == ["free-disk"]
    assert one["since"] is None
    assert team.sd_json("stats", "resize-volume", "--since", "2w")["runbooks"][0]["waiting"] == 1
    nothing = team.sd_json("stats", "no-such-runbook")
    assert nothing["runbooks"][0]["requests"] == 0
    bad = team.sd("stats", "--since", "fortnight")
    assert bad.returncode == 2
    assert "--since 'fortnight'" in bad.stderr
