"""Each target says what became of its command as a value: a step's status follows it,
whatever the error's text says."""

from __future__ import annotations

from pathlib import Path

from selfdrive.executor.contexts import step_status
from selfdrive.sdk.command import Command
from selfdrive.sdk.context import CommandResult
from selfdrive.sdk.vocabulary import Outcome, StepStatus
from selfdrive.targets.ansible import PlaybookResult, run_playbook
from selfdrive.targets.inventory import HostSpec


def test_a_playbook_that_is_not_there_never_started(tmp_path: Path) -> None:
    host = HostSpec(name="web1", address="127.0.0.1", port=1, user="nobody")
    r = run_playbook(str(tmp_path / "missing.yml"), [host],
                     known_hosts=tmp_path / "known_hosts", private_root=tmp_path, timeout=30)
    assert r.outcome is Outcome.NOT_STARTED and not r.ok
    assert step_status(r) is StepStatus.ERROR


def test_a_playbook_that_timed_out_may_have_run_whatever_its_rc() -> None:
    r = PlaybookResult(rc=254, status="timeout", check=False)
    assert r.outcome is Outcome.UNKNOWN and step_status(r) is StepStatus.UNKNOWN
    assert PlaybookResult(rc=2, status="failed", check=False).outcome is Outcome.FINISHED


def test_the_status_of_a_step_reads_the_outcome_not_the_error() -> None:
    c = Command(masked="x", raw="x")
    assert step_status(CommandResult(command=c, target="t", exit_code=0)) is StepStatus.OK
    assert step_status(CommandResult(command=c, target="t", exit_code=1)) is StepStatus.FAILED
    looks_unsent = CommandResult(command=c, target="t", exit_code=None, error="not started: x")
    assert step_status(looks_unsent) is StepStatus.UNKNOWN
    unsent = CommandResult(command=c, target="t", exit_code=None, error="refused",
                           outcome=Outcome.NOT_STARTED)
    assert step_status(unsent) is StepStatus.ERROR
