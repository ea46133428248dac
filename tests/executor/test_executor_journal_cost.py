"""What a run costs the journal, and that grouping its writes keeps the journal's promises.

A one-step autonomous run takes four write transactions: the request, decision, plan
and claim (with the body's intent) together; the command's intent; its result; the
body's result with the run's end. Each intent is still committed before its effect.
"""

from __future__ import annotations

import itertools
import json
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import pytest

from selfdrive import Context, Level, Mode, Risk, Runbook, RunState, alert, runbook
from selfdrive.config import Rule, parse_config
from selfdrive.executor import RunRequest
from selfdrive.journal.audit import verify
from selfdrive.policy import Firing, Request, TrackRecord, decide, reads_track_record
from selfdrive.sdk.errors import JournalError

S = RunState

ONE_STEP = '''
@runbook(risk=Risk.{risk})
def one_step(ctx: Context, cmd: str = "true") -> None:
    """Run one command."""
    ctx.run("{{{{ cmd | safe }}}}")
'''

PROBE = '''
import json, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
run_id, status = conn.execute("SELECT id, status FROM runs ORDER BY created_at DESC "
                              "LIMIT 1").fetchone()
steps = conn.execute("SELECT phase, kind, status FROM steps WHERE run_id = ? ORDER BY seq",
                     (run_id,)).fetchall()
print(json.dumps({"run": status, "steps": steps}))
'''


@contextmanager
def statements(project: Any) -> Iterator[list[str]]:
    """Every statement the executor's journal connection runs inside the block."""
    seen: list[str] = []
    journal = project.journal
    journal.conn.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        journal.conn.set_trace_callback(None)


def transactions_and_reads(seen: list[str]) -> tuple[int, list[str]]:
    """Write transactions begun, and the reads made outside any of them."""
    begun, inside, reads = 0, False, []
    for sql in seen:
        word = sql.lstrip().split(None, 1)[0].upper()
        if word == "BEGIN":
            begun, inside = begun + 1, True
        elif word in ("COMMIT", "ROLLBACK"):
            inside = False
        elif word == "SELECT" and not inside:
            reads.append(sql)
    return begun, reads


def test_a_one_step_autonomous_run_takes_four_transactions_and_two_reads(project):
    project.write(ONE_STEP.format(risk="LOW"))
    assert project.journal is not None  # opened (and migrated) before counting

    with statements(project) as seen:
        outcome = project.submit("one-step")

    assert outcome.run.status is S.SUCCEEDED and outcome.decision.mode is Mode.AUTONOMOUS
    begun, reads = transactions_and_reads(seen)
    assert begun == 4
    assert sum(1 for s in seen if s.startswith("COMMIT")) == 4
    assert len(reads) == 2, reads  # the halt switch and the rate counts
    assert any("flags" in r for r in reads) and any("idx_runs_window" in r for r in reads)
    # The outcome carries the run as the journal holds it, without reading it back.
    assert outcome.run == project.journal.runs.get(outcome.run.id)
    assert project.run_states(outcome.run.id) == ["requested", "decided", "running",
                                                  "succeeded"]
    steps = project.journal.runs.steps(outcome.run.id)
    assert [(s.seq, s.phase, s.kind, s.status) for s in steps] == [
        (1, "plan:body", "command", "planned"), (2, "body", "call", "ok"),
        (3, "body", "command", "ok")]
    assert verify(project.journal).ok


def test_each_intent_is_committed_before_its_command_starts(project):
    probe = project.root / "probe.py"
    probe.write_text(textwrap.dedent(PROBE))
    project.write(ONE_STEP.format(risk="LOW"))
    cmd = f"{sys.executable} {probe} {project.journal_path}"

    outcome = project.submit("one-step", {"cmd": cmd})

    assert outcome.run.status is S.SUCCEEDED, outcome.message
    command = next(s for s in project.journal.runs.steps(outcome.run.id)
                   if s.kind == "command" and s.phase == "body")
    # What another process saw in the journal while the command ran: the run claimed,
    # the body's intent and the command's own intent committed, neither finished.
    seen = json.loads(command.stdout or "")
    assert seen == {"run": "running", "steps": [["plan:body", "command", "planned"],
                                                ["body", "call", "started"],
                                                ["body", "command", "started"]]}


def test_a_failure_while_recording_a_run_leaves_no_trace_of_it(project, monkeypatch):
    project.write(ONE_STEP.format(risk="LOW"))
    journal = project.journal
    project.submit("one-step")  # a run before: the chain must stay whole after the failure

    def broken(*args: Any, **kwargs: Any) -> None:
        raise JournalError("disk full")

    monkeypatch.setattr(journal.runs, "add_plan_steps", broken)
    with pytest.raises(JournalError, match="disk full"):
        project.submit("one-step")
    monkeypatch.undo()

    assert len(project.rows("SELECT id FROM runs")) == 1
    assert {e["run_id"] for e in project.rows("SELECT run_id FROM events")} == {
        project.rows("SELECT id FROM runs")[0]["id"]}
    assert project.submit("one-step").run.status is S.SUCCEEDED
    assert verify(journal).ok


def test_a_dry_run_is_recorded_in_one_transaction(project):
    project.write(ONE_STEP.format(risk="LOW"))
    assert project.journal is not None

    with statements(project) as seen:
        outcome = project.submit("one-step", dry_run=True)

    assert outcome.run.status is S.PLANNED
    assert transactions_and_reads(seen)[0] == 1
    assert project.run_states(outcome.run.id) == ["requested", "decided", "planned"]


@pytest.mark.parametrize(("risk", "reads"), [("LOW", False), ("MEDIUM", True)])
def test_the_track_record_is_read_only_when_policy_may_use_it(project, risk, reads):
    project.write(ONE_STEP.format(risk=risk))
    executor = project.executor
    rb = executor.registry.get("one-step")

    with statements(project) as seen:
        executor.decide(rb, RunRequest(runbook="one-step", params={}, requested_by="alice"))

    track = [s for s in seen if "verified" in s or "recent" in s or "status IN" in s]
    assert bool(track) is reads, seen


# -- policy: what reads_track_record promises decide() ------------------------------


RECORDS = (None, TrackRecord(), TrackRecord(verified_successes=9, recent=("succeeded",) * 5),
           TrackRecord(verified_successes=9, recent=("verification_failed",)))
REQUESTS = (Request(requested_by="alice"),
            Request(requested_by="am", firing=Firing("alert", "DiskFull", own=True,
                                                     domain="web")),
            Request(requested_by="am", firing=Firing("alert", "Other", own=False,
                                                     domain="db")),
            Request(requested_by="alice", dry_run=True))


def _runbook(risk: Risk, approval: Literal["policy", "always"]) -> Runbook:
    @runbook(risk=risk, domain="web", approval=approval, triggers=[alert("DiskFull")])
    def clean(ctx: Context) -> None:
        """Clean."""

    return clean


def test_decide_ignores_a_track_record_it_says_it_does_not_read():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    books = {(risk, approval): _runbook(risk, approval) for risk in Risk
             for approval in ("policy", "always")}
    skipped = read = 0
    for level, risk, rule, applies_from in itertools.product(
            Level, Risk, (None, *Rule), (Risk.LOW, Risk.MEDIUM, Risk.CRITICAL)):
        policy: dict[str, Any] = {"track_record": {"applies_from": applies_from.name}}
        if rule is not None:
            policy["matrix"] = {level.name: {risk.name: rule.value}}
        config = parse_config({"team": "t", "level": level.name, "policy": policy},
                              Path("/teams/t/selfdrive.toml"))
        for approval in ("policy", "always"):
            rb = books[risk, approval]
            if reads_track_record(rb, config):
                read += 1
                continue
            skipped += 1
            for request in REQUESTS:
                decisions = {decide(rb, request, config, record, now) for record in RECORDS}
                assert len(decisions) == 1, (level, risk, rule, applies_from, approval,
                                             request, decisions)
    assert skipped and read
