"""The track record at work: a MEDIUM runbook earns autonomy at L4 and loses it again.

The journal is built only by real runs (in-process Executor, or the `selfdrive` CLI);
policy reads it through ``track_record`` and ``learn`` says what happened.
"""

from __future__ import annotations

from datetime import UTC, datetime

from learning_support import Team, kinds

from selfdrive import Mode, RunState
from selfdrive.executor import RunRequest
from selfdrive.learning import recommend

ROTATE = '''
@runbook(risk=Risk.MEDIUM)
def rotate_log(ctx: Context, path: str, fail: bool = False) -> None:
    """Rotate a log: keep a copy, start it empty."""
    ctx.run("cp -- {{ path }} {{ path }}.1 && : > {{ path }}")
    if fail:
        ctx.run("echo junk > {{ path }}")

@rotate_log.verify
def starts_empty(ctx: Context, path: str) -> bool:
    return ctx.run("test ! -s {{ path }}", readonly=True, check=False).ok

@rotate_log.rollback
def restore(ctx: Context, path: str) -> None:
    ctx.run("cp -- {{ path }}.1 {{ path }}")
'''


def _decide(team: Team) -> tuple[Mode, tuple[str, ...]]:
    rb = team.executor.registry.get("rotate-log")
    decision = team.executor.decide(rb, RunRequest(runbook="rotate-log", params={},
                                                   requested_by="alice"))
    return decision.mode, decision.reasons


def _learned(team: Team) -> list[dict]:
    found = recommend(team.journal, team.executor.registry, team.executor.config,
                      since=None, now=datetime.now(UTC))
    return [r.as_json() for r in found]


def test_three_verified_successes_earn_autonomy_and_one_failure_takes_it_back(team):
    log = team.root / "app.log"
    log.write_text("line\n")
    team.write(ROTATE)

    # No record yet: at L4 a MEDIUM runbook's cell is "auto", but its record must qualify.
    mode, reasons = _decide(team)
    assert mode is Mode.APPROVAL
    assert any("0 verified success(es), 3 needed" in r for r in reasons), reasons
    for i in range(3):
        outcome = team.submit("rotate-log", {"path": str(log)}, approve=True)
        assert outcome.run.mode == "approval"
        assert outcome.run.status is RunState.SUCCEEDED, outcome.message
        if i < 2:  # not yet: 3 verified successes are needed
            assert kinds(_learned(team), "rotate-log") == []

    mode, reasons = _decide(team)
    assert mode is Mode.AUTONOMOUS
    assert any("track record qualifies: 3 verified successes" in r for r in reasons), reasons
    (promote,) = [r for r in _learned(team) if r["kind"] == "promote"]
    assert promote["runbook"] == "rotate-log"
    assert promote["evidence"]["verified_successes"] == 3
    assert promote["evidence"]["approved_runs_window"] == 3
    assert promote["evidence"]["last_run_mode"] == "approval"
    assert "autonomously from its next run" in promote["suggestion"]

    # The next run goes autonomous; its verification fails and it rolls back.
    failed = team.submit("rotate-log", {"path": str(log), "fail": True})
    assert failed.run.mode == "autonomous"
    assert failed.run.status is RunState.ROLLED_BACK
    assert failed.exit_code == 5

    mode, reasons = _decide(team)
    assert mode is Mode.APPROVAL
    assert any("track record does not qualify for autonomy at MEDIUM: 1 verification "
               "failure(s) in the last 4 run(s); it must earn autonomy back" in r
               for r in reasons), reasons
    learned = _learned(team)
    assert kinds(learned, "rotate-log") == ["demote"]
    (demote,) = learned
    assert demote["evidence"]["verification_failures_recent"] == 1
    assert demote["evidence"]["mode_now"] == "approval"
    assert demote["evidence"]["last_run"] == failed.run.id
    assert "earns autonomy back after 5 more run(s)" in demote["suggestion"]


def test_the_cli_tells_the_same_story(team):
    """`run --yes` × 3, `learn` says promote, `explain` autonomous; a failed verification,
    then `explain` says approval and why, and `learn` says demote."""
    log = team.root / "app.log"
    log.write_text("line\n")
    team.write(ROTATE)
    path = f"path={log}"

    before = team.sd_json("learn")
    assert kinds(before["recommendations"], "rotate-log") == ["stale"]  # never run yet
    for _ in range(3):
        team.sd_ok("run", "rotate-log", "-p", path, "--yes")

    learned = team.sd_json("learn")
    assert kinds(learned["recommendations"], "rotate-log") == ["promote"]
    explained = team.sd_json("explain", "rotate-log")
    assert explained["mode"] == "autonomous"
    assert explained["track_record"]["verified_successes"] == 3

    run = team.sd_json("run", "rotate-log", "-p", path, "-p", "fail=true", code=5)
    assert run["run"]["mode"] == "autonomous"
    assert run["run"]["status"] == "rolled_back"

    explained = team.sd_json("explain", "rotate-log")
    assert explained["mode"] == "approval"
    assert any("1 verification failure(s)" in r for r in explained["reasons"])
    learned = team.sd_json("learn")
    assert kinds(learned["recommendations"], "rotate-log") == ["demote"]

    text = team.sd_ok("learn")
    assert "demote" in text and "rotate-log" in text
    assert f"selfdrive logs {run['run']['id']}" in text
