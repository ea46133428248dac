"""Enums shared by every layer: risk classes, autonomy levels, run modes and states."""

from __future__ import annotations

import enum
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


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Parse ``"90s"``, ``"5m"``, ``"1h30m"`` or a number of seconds into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must not be negative: {value!r}")
        return timedelta(seconds=value)
    text = value.strip().replace(" ", "")
    pos, total = 0, 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(f"not a duration: {value!r} (use e.g. '30s', '5m', '1h30m')")
    return timedelta(seconds=total)
