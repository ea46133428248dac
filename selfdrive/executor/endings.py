"""Where a run ends, as an exit code: the one table the CLI, the executor and the
testing kit read (the README's "Exit codes" paragraph says the same)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from selfdrive.sdk.vocabulary import RunState

S = RunState

#: The exit code of each state a request can rest in. A rollback (``rolled_back``,
#: ``rollback_failed``) has no code of its own: it takes its cause's (see :func:`exit_code`).
EXIT_CODES: Mapping[RunState, int] = MappingProxyType({
    S.SUCCEEDED: 0,
    S.PLANNED: 0,
    S.FAILED: 1,
    S.DENIED: 1,
    S.EXPIRED: 1,
    S.SKIPPED: 1,
    S.INTERRUPTED: 1,
    S.PENDING_APPROVAL: 3,
    S.PRECONDITION_FAILED: 4,
    S.VERIFICATION_FAILED: 5,
})

_BY_CAUSE = frozenset({S.ROLLED_BACK, S.ROLLBACK_FAILED, S.ROLLING_BACK})


def exit_code(state: RunState, *, cause: RunState | None = None) -> int:
    """The exit code of a run resting in ``state``.

    ``cause`` is what ended the run before it rested: a rollback exits with the code of
    what it undid (``failed`` 1, ``verification_failed`` 5), and a dry run whose
    preconditions are unmet (``planned``, cause ``precondition_failed``) exits 4.
    """
    if cause is not None and (state in _BY_CAUSE or state is S.PLANNED):
        return EXIT_CODES[cause]
    if state in _BY_CAUSE:
        raise ValueError(f"a run that is {state.value} exits with its cause's code; "
                         f"none given")
    try:
        return EXIT_CODES[state]
    except KeyError:
        raise ValueError(f"a run that is {state.value} has not ended") from None
