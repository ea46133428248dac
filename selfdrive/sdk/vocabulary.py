"""Enums shared by every layer: risk classes, autonomy levels, run modes and states, the
phases and statuses of a run's steps, and what became of a command."""

from __future__ import annotations

import enum
import math
import re
from datetime import timedelta


class Risk(enum.IntEnum):
    """How much harm a runbook can do; ordered so that comparisons read naturally."""

    READ_ONLY = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, value: str | Risk) -> Risk:
        if isinstance(value, Risk):
            return value
        try:
            return cls[value.strip().upper().replace("-", "_")]
        except KeyError:
            names = ", ".join(r.name for r in cls)
            raise ValueError(f"unknown risk {value!r}; expected one of {names}") from None


class Level(enum.IntEnum):
    """The team's autonomy level, L0 (manual) to L5 (bounded autonomy)."""

    L0 = 0
    L1 = 1
    L2 = 2
    L3 = 3
    L4 = 4
    L5 = 5

    @property
    def title(self) -> str:
        return _LEVEL_TITLES[self]


_LEVEL_TITLES = {
    Level.L0: "manual",
    Level.L1: "rules-based",
    Level.L2: "summarization",
    Level.L3: "single-domain",
    Level.L4: "cross-environment",
    Level.L5: "bounded autonomy",
}


class Mode(enum.StrEnum):
    """How a run executes. Ordered by autonomy through ``rank``."""

    DRY_RUN = "dry-run"
    APPROVAL = "approval"
    AUTONOMOUS = "autonomous"

    @property
    def rank(self) -> int:
        return _MODE_RANK[self]


_MODE_RANK = {Mode.DRY_RUN: 0, Mode.APPROVAL: 1, Mode.AUTONOMOUS: 2}


class Phase(enum.StrEnum):
    """Where in a run a step happened. Str-valued: the journal and ``--json`` hold the text."""

    PRECONDITION = "precondition"
    BODY = "body"
    VERIFY = "verify"
    ROLLBACK = "rollback"


class StepStatus(enum.StrEnum):
    """How a step ended (``started`` until it has).

    ``failed``: it ran and said no; ``error``: it never started, or selfdrive stopped it
    (the journal failed, the run was interrupted); ``unknown``: it may have run (timed
    out, or the connection dropped after it was sent); ``planned``: recorded, not run.
    """

    STARTED = "started"
    OK = "ok"
    FAILED = "failed"
    ERROR = "error"
    UNKNOWN = "unknown"
    PLANNED = "planned"


class Outcome(enum.StrEnum):
    """What became of one command, as the target that ran it knows it.

    Set by each target on its result, never guessed from error text: a command that
    ``not_started`` certainly changed nothing; an ``unknown`` one may have run in part
    or in full; a ``finished`` one has an exit code.
    """

    NOT_STARTED = "not_started"
    FINISHED = "finished"
    UNKNOWN = "unknown"


class RunState(enum.StrEnum):
    """A run's life, as the README draws it. ``TRANSITIONS`` is the only legal graph."""

    REQUESTED = "requested"
    DECIDED = "decided"
    PLANNED = "planned"
    PENDING_APPROVAL = "pending_approval"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    RUNNING = "running"
    PRECONDITION_FAILED = "precondition_failed"
    FAILED = "failed"
    VERIFICATION_FAILED = "verification_failed"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    SUCCEEDED = "succeeded"
    SKIPPED = "skipped"
    INTERRUPTED = "interrupted"

    @property
    def terminal(self) -> bool:
        """Nothing can follow this state."""
        return not TRANSITIONS[self]

    @property
    def final(self) -> bool:
        """A run may rest here as its outcome (failed runs may still roll back)."""
        return self in _FINAL

    def can_become(self, other: RunState) -> bool:
        return other in TRANSITIONS[self]


_S = RunState
# INTERRUPTED is written by crash recovery for states a live process owns; a run
# waiting for a human (pending_approval) belongs to no process and is never interrupted.
TRANSITIONS: dict[RunState, frozenset[RunState]] = {
    _S.REQUESTED: frozenset({_S.DECIDED, _S.SKIPPED, _S.INTERRUPTED}),
    _S.DECIDED: frozenset({_S.PLANNED, _S.PENDING_APPROVAL, _S.RUNNING, _S.SKIPPED, _S.FAILED,
                           _S.PRECONDITION_FAILED, _S.INTERRUPTED}),
    _S.PENDING_APPROVAL: frozenset({_S.APPROVED, _S.DENIED, _S.EXPIRED}),
    _S.APPROVED: frozenset({_S.RUNNING, _S.PENDING_APPROVAL, _S.EXPIRED, _S.SKIPPED,
                            _S.DENIED, _S.INTERRUPTED}),
    _S.RUNNING: frozenset({_S.PRECONDITION_FAILED, _S.FAILED, _S.VERIFICATION_FAILED,
                           _S.SUCCEEDED, _S.INTERRUPTED}),
    _S.FAILED: frozenset({_S.ROLLING_BACK}),
    _S.VERIFICATION_FAILED: frozenset({_S.ROLLING_BACK}),
    _S.ROLLING_BACK: frozenset({_S.ROLLED_BACK, _S.ROLLBACK_FAILED, _S.INTERRUPTED}),
    _S.PLANNED: frozenset(),
    _S.DENIED: frozenset(),
    _S.EXPIRED: frozenset(),
    _S.PRECONDITION_FAILED: frozenset(),
    _S.ROLLED_BACK: frozenset(),
    _S.ROLLBACK_FAILED: frozenset(),
    _S.SUCCEEDED: frozenset(),
    _S.SKIPPED: frozenset(),
    _S.INTERRUPTED: frozenset(),
}

_FINAL = frozenset({_S.PLANNED, _S.DENIED, _S.EXPIRED, _S.PRECONDITION_FAILED, _S.FAILED,
                    _S.VERIFICATION_FAILED, _S.ROLLED_BACK, _S.ROLLBACK_FAILED, _S.SUCCEEDED,
                    _S.SKIPPED, _S.INTERRUPTED})

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: The longest duration anything takes: ten years. A window, timeout or expiry past it is
#: a typo, and bounding it keeps every ``now ± duration`` inside what datetime can hold.
MAX_DURATION = timedelta(days=3650)


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Parse ``"90s"``, ``"5m"``, ``"1h30m"`` or a number of seconds into a timedelta.

    Raises ``ValueError`` naming the value for anything that is not a duration between
    zero and :data:`MAX_DURATION` (negative, NaN, infinite or absurdly long).
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float):
        seconds = float(value) if isinstance(value, float) or abs(value) < 2**64 else math.inf
        if math.isnan(seconds):
            raise ValueError(f"not a duration: {value!r}")
    elif isinstance(value, str):
        seconds = _parse_text(value)
    else:
        raise ValueError(f"not a duration: {value!r} (use e.g. '30s', '5m', '1h30m')")
    shown = _seconds_text(seconds) if isinstance(value, timedelta) else short_repr(value)
    if seconds < 0:
        raise ValueError(f"duration must not be negative: {shown}")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"duration {shown} is too long (at most {MAX_DURATION.days}d, "
                         f"ten years)")
    return value if isinstance(value, timedelta) else timedelta(seconds=seconds)


def _parse_text(value: str) -> float:
    text = value.strip().replace(" ", "")
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]  # inf past 1e308
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {short_repr(value)} (use e.g. '30s', '5m', '1h30m')")
    return total


def _seconds_text(seconds: float) -> str:
    if seconds and seconds % 86400 == 0:
        return f"{seconds / 86400:.0f}d"
    return f"{seconds:.0f}s" if seconds == int(seconds) else f"{seconds}s"


def short_repr(value: object, limit: int = 40) -> str:
    """``value``'s repr, cut short: an error message must not repeat a megabyte of input."""
    try:
        text = repr(value)
    except ValueError:  # an int past Python's digit limit for str()
        return "a number too large to show"
    return text if len(text) <= limit else text[:limit - 1] + "…"
