"""The one exception tree of selfdrive.

Exit codes belong to the error classes; only the CLI turns them into a process
exit status::

    SelfdriveError                  1  something failed
    ├── UsageError                  2  the caller's input is wrong; nothing was written
    │   ├── ConfigError                selfdrive.toml is malformed
    │   ├── DefinitionError            a runbook is defined wrongly
    │   ├── RunbookLoadError           runbook files failed to import
    │   ├── UnknownRunbookError        no runbook by that name
    │   ├── ParameterError             parameters do not validate
    │   └── TemplateError              a command template cannot render
    ├── CommandFailedError             a command failed (unless run with check=False)
    ├── ReadOnlyViolationError         a mutating action inside a read-only context
    ├── RunTimeoutError                the runbook ran past its timeout
    ├── HaltedError                    autonomy was halted while a run was going
    ├── UserCodeError                  the runbook's own code raised
    └── JournalError                   the journal cannot take a record
        ├── JournalLockedError         another writer held the journal too long
        ├── DuplicateRunError          a run with this dedup key is already recorded
        ├── JournalUnavailableError 2  the journal's file cannot be written (disk full,
        │                              read-only, I/O error) or opened; nothing was written
        ├── RunStoppedError            a run stopped mid-way: the journal failed under it
        ├── AuditMismatchError         a row disagrees with the audit chain; not acted on
        └── IllegalTransitionError     a run was asked to move where its state machine
                                       has no edge; nothing was written
"""

from __future__ import annotations


class SelfdriveError(Exception):
    """Root of every error selfdrive raises on purpose."""

    exit_code: int = 1


class UsageError(SelfdriveError):
    """The caller asked for something that cannot be done as asked."""

    exit_code = 2


class ConfigError(UsageError):
    """The team configuration is malformed; the message names file, key and reason."""


class DefinitionError(UsageError):
    """A runbook definition is wrong: caught at decoration or load time."""


class RunbookLoadError(UsageError):
    """One or more runbook sources failed to load; ``problems`` lists each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("runbooks failed to load:\n  " + "\n  ".join(problems))


class UnknownRunbookError(UsageError):
    """No runbook has the requested name."""


class ParameterError(UsageError):
    """Parameters failed validation; every bad field is in the message."""


class TemplateError(UsageError):
    """A command template cannot be rendered (syntax, undefined variable, unsafe access)."""


class CommandFailedError(SelfdriveError):
    """A command, fan-out or playbook failed (or never started) and the call did not
    pass ``check=False``."""


class ReadOnlyViolationError(SelfdriveError):
    """A precondition or verification tried to mutate something."""


class RunTimeoutError(SelfdriveError):
    """The runbook's declared timeout passed."""


class HaltedError(SelfdriveError):
    """The halt switch was turned on while an autonomous run was going."""


class UserCodeError(SelfdriveError):
    """The runbook's own code raised; ``original`` is what it raised."""

    def __init__(self, where: str, original: BaseException) -> None:
        self.where = where
        self.original = original
        super().__init__(f"{where} raised {type(original).__name__}: {original}")


class JournalError(SelfdriveError):
    """The journal cannot take or give a record."""


class JournalLockedError(JournalError):
    """Another writer held the journal longer than the busy timeout."""


class DuplicateRunError(JournalError):
    """A run was asked for under a dedup key another run already holds.

    Another process got there first (an orphaned worker, a second receiver): that is
    not a failure of this request, and ``run_id`` names the run that holds the key.
    """

    def __init__(self, message: str, run_id: str) -> None:
        super().__init__(message)
        self.run_id = run_id


class JournalUnavailableError(JournalError):
    """The journal's file cannot be opened, read or written: the disk is full, it is
    read-only, an I/O error. The failed write left nothing behind; the message names
    the file and the cause."""

    exit_code = 2


class RunStoppedError(JournalError):
    """A journal write failed while a run was going: the run stopped before its next
    step (no effect starts without its recorded intent) and ends ``interrupted``."""


class AuditMismatchError(JournalError):
    """A journal row disagrees with the hash-chained audit trail (it was changed outside
    selfdrive), so nothing acts on it; ``selfdrive audit verify`` names every such row."""


class IllegalTransitionError(JournalError):
    """A run was asked to move from one status to another that ``RunState``'s table does
    not allow. Refused inside the write, so the run and its history stay as they were."""

    def __init__(self, message: str, *, run_id: str = "", current: str = "",
                 to: str = "") -> None:
        super().__init__(message)
        self.run_id, self.current, self.to = run_id, current, to
