"""One table for exit codes and one classifier for whose fault an exception is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from selfdrive.executor.boundary import Fault, classify
from selfdrive.executor.endings import EXIT_CODES, exit_code
from selfdrive.sdk.errors import (
    CommandFailedError,
    HaltedError,
    JournalUnavailableError,
    ReadOnlyViolationError,
    RunTimeoutError,
    TemplateError,
)
from selfdrive.sdk.vocabulary import RunState
from selfdrive.testing import UnscriptedCommand

S = RunState
README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_state_a_run_rests_in_has_an_exit_code() -> None:
    resting = {s for s in S if s.final} | {S.PLANNED, S.PENDING_APPROVAL}
    assert resting - {S.ROLLED_BACK, S.ROLLBACK_FAILED} == set(EXIT_CODES)
    for state in (S.ROLLED_BACK, S.ROLLBACK_FAILED):
        assert exit_code(state, cause=S.FAILED) == 1
        assert exit_code(state, cause=S.VERIFICATION_FAILED) == 5
        with pytest.raises(ValueError, match="exits with its cause's code; none given"):
            exit_code(state)
    assert exit_code(S.PLANNED, cause=S.PRECONDITION_FAILED) == 4
    with pytest.raises(ValueError, match="a run that is running has not ended"):
        exit_code(S.RUNNING)


def test_the_readme_lists_the_same_exit_codes() -> None:
    text = README.read_text()
    paragraph = text[text.index("**Exit codes**"):].split("\n\n")[0]
    listed = {int(n) for n in re.findall(r"(?:^|· )(\d) ", paragraph.replace(
        "**Exit codes**: ", ""), flags=re.M)}
    assert set(EXIT_CODES.values()) | {2} == listed


@pytest.mark.parametrize(("exc", "fault"), [
    (ZeroDivisionError("division by zero"), Fault.RUNBOOK),
    (CommandFailedError("false failed on local: exit code 1"), Fault.RUNBOOK),
    (ReadOnlyViolationError("a verify may only read"), Fault.READ_ONLY),
    (TemplateError("template 'x': 'y' is undefined"), Fault.USAGE),
    (RunTimeoutError("the runbook's timeout passed"), Fault.TIMEOUT),
    (HaltedError("autonomy is halted"), Fault.HALT),
    (JournalUnavailableError("disk full"), Fault.FRAMEWORK),
    (KeyboardInterrupt(), Fault.FRAMEWORK),
    (UnscriptedCommand("no script answers 'x'"), Fault.FRAMEWORK),
])
def test_whose_fault_an_exception_is(exc: BaseException, fault: Fault) -> None:
    assert classify(exc) is fault
    assert fault.propagates is (fault is Fault.FRAMEWORK)
    assert fault.fails_planning is (fault not in (Fault.USAGE, Fault.FRAMEWORK))
