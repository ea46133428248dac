"""Ranking the runbooks one alert matches by their record against that alert.

Records come from real runs through the Executor, fired as the alert receiver fires
them: ``RunRequest(firing=Firing(kind="alert", name=X, own=True))``.
"""

from __future__ import annotations

import math

import pytest

from selfdrive import RunState
from selfdrive.executor import RunRequest
from selfdrive.learning import alert_records, rank_matches, wilson_lower_bound

TWO_CLEANERS = '''
@runbook(risk=Risk.LOW, triggers=[alert("DiskFull")])
def clean_tmp(ctx: Context, marker: str, broken: bool = False) -> None:
    """Clean /tmp (declared first)."""
    ctx.run("echo {{ 'no' if broken else 'clean' }} > {{ marker }}")

@clean_tmp.verify
def tmp_clean(ctx: Context, marker: str) -> bool:
    return ctx.run("grep -q '^clean$' {{ marker }}", readonly=True, check=False).ok

@runbook(risk=Risk.LOW, triggers=[alert("DiskFull")])
def clean_logs(ctx: Context, marker: str) -> None:
    """Clean old logs (declared second)."""
    ctx.run("echo clean > {{ marker }}")

@clean_logs.verify
def logs_clean(ctx: Context, marker: str) -> bool:
    return ctx.run("grep -q '^clean$' {{ marker }}", readonly=True, check=False).ok
'''
DECLARED = ["clean-tmp", "clean-logs"]


def test_with_no_record_the_declared_order_decides(team):
    team.write(TWO_CLEANERS)
    assert list(team.registry().runbooks) == DECLARED
    assert rank_matches(DECLARED, "DiskFull", team.journal) == DECLARED
    assert rank_matches(list(reversed(DECLARED)), "DiskFull", team.journal) == \
        list(reversed(DECLARED))


def test_the_runbook_with_the_better_record_for_that_alert_goes_first(team):
    team.write(TWO_CLEANERS)
    marker = str(team.root / "marker")
    # clean-tmp: one verified success and two verification failures against DiskFull.
    for broken in (False, True, True):
        run = team.submit("clean-tmp", {"marker": marker, "broken": broken}, alert="DiskFull")
        assert run.run.status is (RunState.VERIFICATION_FAILED if broken
                                  else RunState.SUCCEEDED)
    # clean-logs: three verified successes against DiskFull.
    for _ in range(3):
        run = team.submit("clean-logs", {"marker": marker}, alert="DiskFull")
        assert run.run.status is RunState.SUCCEEDED and run.run.mode == "autonomous"

    records = alert_records(team.journal, DECLARED, "DiskFull")
    assert (records["clean-tmp"].trials, records["clean-tmp"].verified_successes) == (3, 1)
    assert (records["clean-logs"].trials, records["clean-logs"].verified_successes) == (3, 3)
    assert rank_matches(DECLARED, "DiskFull", team.journal) == ["clean-logs", "clean-tmp"]


def test_only_runs_fired_by_that_alert_name_count(team):
    team.write(TWO_CLEANERS)
    marker = str(team.root / "marker")
    # clean-logs succeeds a lot, but by hand and for another alert; for DiskFull it failed
    # nothing and succeeded nothing, while clean-tmp has one verified success there.
    for _ in range(3):
        team.submit("clean-logs", {"marker": marker})
        team.submit("clean-logs", {"marker": marker}, alert="InodesLow")
    team.submit("clean-tmp", {"marker": marker}, alert="DiskFull")
    # A planned run is not a trial either.
    planned = team.executor.submit(RunRequest(runbook="clean-logs", params={"marker": marker},
                                              requested_by="alice", dry_run=True))
    assert planned.run.status is RunState.PLANNED

    records = alert_records(team.journal, DECLARED, "DiskFull")
    assert records["clean-logs"].trials == 0
    assert records["clean-tmp"].verified_successes == 1
    assert rank_matches(DECLARED[::-1], "DiskFull", team.journal) == ["clean-tmp", "clean-logs"]
    assert rank_matches(DECLARED, "InodesLow", team.journal) == ["clean-logs", "clean-tmp"]
    assert rank_matches([], "DiskFull", team.journal) == []


@pytest.mark.parametrize(("successes", "trials", "expected"), [
    (0, 0, 0.0), (0, 5, 0.0), (3, 3, 0.4385), (1, 1, 0.2065), (90, 100, 0.8256),
])
def test_wilson_lower_bound(successes, trials, expected):
    assert math.isclose(wilson_lower_bound(successes, trials), expected, abs_tol=1e-4)


def test_a_long_good_record_beats_a_short_perfect_one():
    assert wilson_lower_bound(18, 20) > wilson_lower_bound(3, 3)
    assert wilson_lower_bound(3, 3) > wilson_lower_bound(2, 3)
