"""The user-code boundary: whose fault an exception is, decided in one place.

A runbook's body, hooks and templates are code its author wrote; whatever they raise is
the runbook's failure, recorded with the file and line in the runbook and a short
traceback (:func:`~selfdrive.sdk.failures.describe_failure`). Some exceptions that
cross the same boundary are not the runbook's to record: the journal failing under the
run, the operator's Ctrl-C, a fake target with no script. The run loop, planning and
the testing kit ask :func:`classify` which kind an exception is and act on the answer
(the loop's table says how, phase by phase), instead of each holding its own ``except``
tuple that drifts from the others.
"""

from __future__ import annotations

import enum

from selfdrive.sdk.errors import (
    HaltedError,
    JournalError,
    ReadOnlyViolationError,
    RunTimeoutError,
    UsageError,
)


class Fault(enum.StrEnum):
    """What an exception that reached the run loop means."""

    #: The runbook's code raised, or a command it ran failed: the run's own failure.
    RUNBOOK = "runbook"
    #: A read-only phase tried a change: a bug in the runbook, never worth a retry.
    READ_ONLY = "read-only"
    #: A template, parameter or definition mistake: the caller is told (exit 2).
    USAGE = "usage"
    #: The runbook's timeout passed.
    TIMEOUT = "timeout"
    #: Autonomy was halted under the run: it stops where it is, a human decides.
    HALT = "halt"
    #: Not the run's to record: the journal failed, the operator interrupted, a fake
    #: target had no script. It propagates untouched.
    FRAMEWORK = "framework"

    @property
    def propagates(self) -> bool:
        """The run loop lets it through instead of ending the run on it."""
        return self is Fault.FRAMEWORK

    @property
    def fails_planning(self) -> bool:
        """Raised while planning, it is the runbook's failure (journaled as "planning
        failed", counted like any failed run); otherwise it goes to the caller."""
        return self not in (Fault.USAGE, Fault.FRAMEWORK)


def classify(exc: BaseException) -> Fault:
    """Whose fault ``exc`` is. Anything that is not an ``Exception`` (KeyboardInterrupt,
    SystemExit, a fake's ``UnscriptedCommand``) and every journal error is selfdrive's."""
    if not isinstance(exc, Exception) or isinstance(exc, JournalError):
        return Fault.FRAMEWORK
    if isinstance(exc, HaltedError):
        return Fault.HALT
    if isinstance(exc, RunTimeoutError):
        return Fault.TIMEOUT
    if isinstance(exc, ReadOnlyViolationError):
        return Fault.READ_ONLY
    if isinstance(exc, UsageError):
        return Fault.USAGE
    return Fault.RUNBOOK
