"""How a run executes: dry-run, autonomous, approval, separation of duties, halt, track record.

Every test writes real runbook files, loads them through the registry, journals to a
real SQLite file and runs real shell commands through the local target.
"""

from __future__ import annotations

import itertools
import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from selfdrive import Mode, RunState
from selfdrive.executor import Plan, RunOutcome, halt, unhalt
from selfdrive.journal import RunRecord
from selfdrive.policy import Decision
from selfdrive.sdk.command import MASK
from selfdrive.sdk.vocabulary import TRANSITIONS

S = RunState

PURGE = '''
@runbook(risk=Risk.LOW)
def purge_logs(ctx: Context, folder: str, token: SecretStr, pattern: str = "*.log") -> None:
    """Delete old logs and tell the log service."""
    listing = ctx.run("ls {{ folder }}", readonly=True)
    ctx.note("files", listing.stdout.split())
    ctx.run("rm -f {{ folder }}/{{ pattern | safe }}")
    ctx.run("logger-notify --token {{ token }} purged")
'''

DELETE = '''
@runbook(risk=Risk.{risk}, approval="{approval}")
def delete_file(ctx: Context, target: str) -> None:
    """Delete one file."""
    ctx.run("rm -f {{{{ target }}}}")

@delete_file.verify
def file_is_gone(ctx: Context, target: str) -> bool:
    return ctx.run("test ! -e {{{{ target }}}}", readonly=True, check=False).ok
'''


def write_delete(project: Any, *, risk: str = "LOW", approval: str = "policy") -> Path:
    project.write(DELETE.format(risk=risk, approval=approval))
    victim = project.root / "victim.txt"
    victim.write_text("precious")
    return victim


def verified(project: Any, run_id: str) -> int | None:
    return project.rows("SELECT verified FROM runs WHERE id = ?", (run_id,))[0]["verified"]


# -- dry-run -------------------------------------------------------------------------


def test_dry_run_records_the_masked_rm_and_deletes_nothing(project):
    folder = project.root / "logs"
    folder.mkdir()
    for name in ("a.log", "b.log", "keep.txt"):
        (folder / name).write_text(name)
    project.write(PURGE)

    outcome = project.submit("purge-logs", {"folder": str(folder), "token": "tok-3141592"},
                             dry_run=True)

    assert sorted(p.name for p in folder.iterdir()) == ["a.log", "b.log", "keep.txt"]
    assert outcome.exit_code == 0
    assert outcome.run.status is S.PLANNED
    assert outcome.run.mode == Mode.DRY_RUN.value
    assert outcome.decision.mode is Mode.DRY_RUN
    changes = [step.command for step in outcome.plan.changes]
    assert changes == [f"rm -f {shlex.quote(str(folder))}/*.log",
                       f"logger-notify --token {MASK} purged"]
    assert all(step.status == "planned" for step in outcome.plan.changes)
    # The read-only listing really ran while planning; its result fed the body.
    (listing,) = [s for s in outcome.plan.steps if s.kind == "command" and s.readonly]
    assert listing.status == "ok" and listing.exit_code == 0
    (note,) = [s for s in outcome.plan.steps if s.kind == "note"]
    assert note.data == ["a.log", "b.log", "keep.txt"]
    assert outcome.run.params == {"folder": str(folder), "token": MASK, "pattern": "*.log"}


def test_dry_run_journals_the_plan_and_no_live_step(project):
    folder = project.root / "logs"
    folder.mkdir()
    (folder / "a.log").write_text("a")
    project.write(PURGE)

    outcome = project.submit("purge-logs", {"folder": str(folder), "token": "t"}, dry_run=True)

    steps = project.journal.runs.steps(outcome.run.id)
    assert steps, "the plan's steps are journaled with the run"
    assert {s.phase for s in steps} == {"plan:body"}
    planned = [s for s in steps if s.planned]
    assert [s.command for s in planned] == [c.command for c in outcome.plan.changes]
    assert all(s.status == "planned" and s.exit_code is None for s in planned)
    assert project.run_states(outcome.run.id) == ["requested", "decided", "planned"]
    row = project.rows("SELECT plan_hash, finished_at FROM runs WHERE id = ?",
                       (outcome.run.id,))[0]
    assert row["plan_hash"] == outcome.plan.hash
    assert row["finished_at"] is not None


def test_dry_run_with_unmet_precondition_is_planned_with_exit_4(project):
    project.write('''
        @runbook(risk=Risk.LOW)
        def guarded(ctx: Context, ready: str) -> None:
            ctx.run("echo changed")

        @guarded.precondition
        def ready_file_exists(ctx: Context, ready: str) -> bool:
            return ctx.run("test -e {{ ready }}", readonly=True, check=False).ok
    ''')
    outcome = project.submit("guarded", {"ready": str(project.root / "absent")}, dry_run=True)
    assert outcome.run.status is S.PLANNED
    assert outcome.exit_code == 4
    assert outcome.plan.changes == ()
    assert [c.met for c in outcome.plan.preconditions] == [False]
    assert "ready_file_exists" in (outcome.run.error or "")


# -- autonomous ----------------------------------------------------------------------


def test_low_risk_at_l4_runs_autonomously_and_verifies(project):
    victim = write_delete(project)

    outcome = project.submit("delete-file", {"target": str(victim)})

    assert not victim.exists()
    assert outcome.decision.mode is Mode.AUTONOMOUS
    assert outcome.run.mode == "autonomous"
    assert outcome.run.status is S.SUCCEEDED
    assert outcome.exit_code == 0
    assert verified(project, outcome.run.id) == 1
    assert project.run_states(outcome.run.id) == ["requested", "decided", "running",
                                                  "succeeded"]
    live = [s for s in project.journal.runs.steps(outcome.run.id) if s.phase == "body"
            and s.kind == "command"]
    assert [(s.command, s.status, s.exit_code) for s in live] == [
        (f"rm -f {shlex.quote(str(victim))}", "ok", 0)]
    checks = [s for s in project.journal.runs.steps(outcome.run.id) if s.phase == "verify"
              and s.kind == "check"]
    assert [(s.name, s.status, s.attempt) for s in checks] == [("file_is_gone", "ok", 1)]


def test_a_run_without_verification_succeeds_unverified(project):
    project.write('''
        @runbook(risk=Risk.LOW)
        def say(ctx: Context) -> None:
            ctx.run("echo hi")
    ''')
    outcome = project.submit("say")
    assert outcome.run.status is S.SUCCEEDED
    assert verified(project, outcome.run.id) is None
    assert "no verification" in outcome.message


# -- approval ------------------------------------------------------------------------


def test_approval_without_approver_waits_and_changes_nothing(project):
    victim = write_delete(project, approval="always")

    outcome = project.submit("delete-file", {"target": str(victim)}, approver=None)

    assert victim.read_text() == "precious"
    assert outcome.decision.mode is Mode.APPROVAL
    assert outcome.run.status is S.PENDING_APPROVAL
    assert outcome.exit_code == 3
    assert outcome.run.id in outcome.message
    # A pending run belongs to no process: whoever approves it later may pick it up.
    assert outcome.run.owner is None
    assert not [s for s in project.journal.runs.steps(outcome.run.id) if s.phase == "body"]


def test_approver_saying_yes_runs_it(project):
    victim = write_delete(project, approval="always")
    seen: list[tuple[RunRecord, Plan, Decision]] = []

    def approver(run: RunRecord, plan: Plan, decision: Decision) -> bool:
        seen.append((run, plan, decision))
        assert victim.exists(), "asked before anything changed"
        return True

    outcome = project.submit("delete-file", {"target": str(victim)}, approver=approver)

    assert not victim.exists()
    assert outcome.run.status is S.SUCCEEDED
    assert outcome.exit_code == 0
    ((run, plan, decision),) = seen
    assert run.status is S.PENDING_APPROVAL
    assert [c.command for c in plan.changes] == [f"rm -f {shlex.quote(str(victim))}"]
    assert decision.mode is Mode.APPROVAL
    assert any('approval="always"' in r for r in decision.reasons)
    assert project.run_states(outcome.run.id) == [
        "requested", "decided", "pending_approval", "approved", "running", "succeeded"]


def test_approver_saying_no_denies_and_changes_nothing(project):
    victim = write_delete(project, approval="always")

    outcome = project.submit("delete-file", {"target": str(victim)},
                             approver=lambda *_: False)

    assert victim.read_text() == "precious"
    assert outcome.run.status is S.DENIED
    assert outcome.exit_code == 1
    assert "denied" in outcome.message
    assert project.run_states(outcome.run.id)[-2:] == ["pending_approval", "denied"]
    assert not [s for s in project.journal.runs.steps(outcome.run.id) if not
                s.phase.startswith("plan:")]


def test_high_risk_never_asks_the_requester_separation_of_duties(project):
    victim = write_delete(project, risk="HIGH")
    asked: list[object] = []

    def approver(*args: object) -> bool:
        asked.append(args)
        return True

    outcome = project.submit("delete-file", {"target": str(victim)}, approver=approver)

    assert asked == []
    assert victim.read_text() == "precious"
    assert outcome.run.status is S.PENDING_APPROVAL
    assert outcome.exit_code == 3
    assert "someone other than alice" in outcome.message
    events = project.journal.events(outcome.run.id)
    pending = [e for e in events if e.kind == "run.pending_approval"]
    assert "other than the requester (alice)" in pending[0].data["why"]


def test_separation_of_duties_threshold_comes_from_config(project):
    project.policy = {"separation_of_duties": "CRITICAL"}
    victim = write_delete(project, risk="HIGH")
    asked: list[object] = []

    outcome = project.submit("delete-file", {"target": str(victim)},
                             approver=lambda *a: asked.append(a) or True)

    assert len(asked) == 1
    assert outcome.run.status is S.SUCCEEDED
    assert not victim.exists()


# -- the halt switch ---------------------------------------------------------------


def test_halt_switch_turns_an_autonomous_run_into_an_approval(project):
    victim = write_delete(project)
    halt(project.journal, by="bob", reason="incident 42", now=datetime.now(UTC))

    outcome = project.submit("delete-file", {"target": str(victim)}, approver=None)

    assert outcome.decision.mode is Mode.APPROVAL
    assert outcome.run.status is S.PENDING_APPROVAL
    assert outcome.exit_code == 3
    assert victim.exists()
    halt_reasons = [r for r in outcome.decision.reasons if "halt switch is on" in r]
    assert halt_reasons and "incident 42" in halt_reasons[0] and "bob" in halt_reasons[0]
    assert any("halt switch" in r for r in outcome.run.decision["reasons"])

    assert [(h.by, h.reason) for h in unhalt(project.journal, by="bob")] == [
        ("bob", "incident 42")]
    assert unhalt(project.journal, by="bob") == ()
    again = project.submit("delete-file", {"target": str(victim)})
    assert again.decision.mode is Mode.AUTONOMOUS
    assert again.run.status is S.SUCCEEDED
    kinds = [e.kind for e in project.journal.events() if e.run_id is None]
    assert kinds == ["halt.on", "halt.off"]


def test_halt_during_an_autonomous_run_stops_before_the_next_change(project):
    first, second = project.root / "first", project.root / "second"
    undone = project.root / "undone"
    project.write('''
        @runbook(risk=Risk.LOW)
        def two_changes(ctx: Context, first: str, second: str, journal: str,
                        undone: str) -> None:
            ctx.run("touch {{ first }}")
            if not ctx.dry_run:
                from datetime import UTC, datetime

                from selfdrive.executor import halt
                from selfdrive.journal import open_journal

                other = open_journal(Path(journal))
                try:
                    halt(other, by="oncall", reason="stop the world", now=datetime.now(UTC))
                finally:
                    other.close()
            ctx.run("touch {{ second }}")

        @two_changes.rollback
        def undo(ctx: Context, undone: str) -> None:
            ctx.run("touch {{ undone }}")
    ''')

    outcome = project.submit("two-changes", {"first": str(first), "second": str(second),
                                             "journal": str(project.journal_path),
                                             "undone": str(undone)})

    assert first.exists()
    assert not second.exists()
    assert not undone.exists(), "a halt stops the run; a human decides about rollback"
    assert outcome.run.status is S.FAILED
    assert outcome.exit_code == 1
    assert "halted" in (outcome.run.error or "")
    assert "stop the world" in (outcome.run.error or "")
    commands = [s.command or "" for s in project.journal.runs.steps(outcome.run.id)
                if s.phase == "body" and s.kind == "command"]
    assert len(commands) == 1 and "first" in commands[0]
    assert project.run_states(outcome.run.id) == ["requested", "decided", "running", "failed"]


# -- track record --------------------------------------------------------------------


def test_medium_risk_earns_autonomy_with_three_verified_successes_and_loses_it(project):
    flag = project.root / "healthy"
    flag.write_text("")
    project.write('''
        @runbook(risk=Risk.MEDIUM)
        def tidy(ctx: Context, flag: str) -> None:
            ctx.run("true")

        @tidy.verify
        def healthy(ctx: Context, flag: str) -> bool:
            return ctx.run("test -e {{ flag }}", readonly=True, check=False).ok
    ''')
    params = {"flag": str(flag)}

    def go(**kw: Any) -> RunOutcome:
        return project.submit("tidy", params, **kw)

    # Dry-runs prove nothing about the live runbook.
    for _ in range(3):
        assert go(dry_run=True).run.status is S.PLANNED
    for n in range(3):
        outcome = go(approver=lambda *_: True)
        assert outcome.decision.mode is Mode.APPROVAL, n
        assert any(f"{n} verified success(es), 3 needed" in r for r in outcome.decision.reasons)
        assert outcome.run.status is S.SUCCEEDED

    fourth = go(approver=None)
    assert fourth.decision.mode is Mode.AUTONOMOUS
    assert any("track record qualifies" in r for r in fourth.decision.reasons)
    assert fourth.run.status is S.SUCCEEDED

    flag.unlink()
    fifth = go(approver=None)
    assert fifth.decision.mode is Mode.AUTONOMOUS
    assert fifth.run.status is S.VERIFICATION_FAILED
    assert fifth.exit_code == 5

    flag.write_text("")
    sixth = go(approver=None)
    assert sixth.decision.mode is Mode.APPROVAL
    assert sixth.run.status is S.PENDING_APPROVAL
    assert any("1 verification failure(s)" in r for r in sixth.decision.reasons)


# -- the state machine -------------------------------------------------------------


def test_every_journaled_transition_is_legal(project):
    victim = write_delete(project)
    project.write('''
        @runbook(risk=Risk.LOW)
        def breaks(ctx: Context, conf: str) -> None:
            ctx.run("echo new > {{ conf }}")
            ctx.run("exit 7", check=True)

        @breaks.rollback
        def restore(ctx: Context, conf: str) -> None:
            ctx.run("echo old > {{ conf }}")
    ''', name="breaks.py")
    conf = project.root / "app.conf"
    conf.write_text("old\n")

    outcomes = [
        project.submit("delete-file", {"target": str(victim)}, dry_run=True),
        project.submit("delete-file", {"target": str(victim)}),
        project.submit("breaks", {"conf": str(conf)}),
    ]

    assert [o.run.status for o in outcomes] == [S.PLANNED, S.SUCCEEDED, S.ROLLED_BACK]
    assert conf.read_text() == "old\n"
    histories = [project.run_states(o.run.id) for o in outcomes]
    assert histories[2] == ["requested", "decided", "running", "failed", "rolling_back",
                            "rolled_back"]
    for history in histories:
        states = [RunState(s) for s in history]
        assert states[0] is S.REQUESTED
        assert states[-1].final
        for before, after in itertools.pairwise(states):
            assert after in TRANSITIONS[before], (before, after)
    project.assert_legal_histories()
