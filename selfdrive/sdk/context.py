"""The context: the only door a runbook has to side effects."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from selfdrive.sdk.command import Command
from selfdrive.sdk.vocabulary import Mode


@dataclass(frozen=True)
class CommandResult:
    """What one command did on one target.

    ``planned`` results come from dry-run: the command was recorded, not run; they
    report ``ok`` so that a plan follows the runbook's success path. ``exit_code`` is
    ``None`` when the outcome is unknown (the command timed out or never started).
    """

    command: Command
    target: str
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    planned: bool = False
    timed_out: bool = False
    error: str | None = field(default=None)

    @property
    def ok(self) -> bool:
        return self.planned or self.exit_code == 0


class Context(abc.ABC):
    """What a runbook, its preconditions, verifications and rollback receive.

    The executor provides a live, a planning and a read-only implementation; the
    testing kit provides a fake. A runbook never reaches a target any other way, which
    is what keeps dry-run honest.
    """

    @property
    @abc.abstractmethod
    def run_id(self) -> str:
        """The journal id of the run this context belongs to."""

    @property
    @abc.abstractmethod
    def mode(self) -> Mode:
        """How the run executes; ``Mode.DRY_RUN`` while planning."""

    @property
    def dry_run(self) -> bool:
        return self.mode is Mode.DRY_RUN

    @property
    @abc.abstractmethod
    def params(self) -> Mapping[str, Any]:
        """The run's validated parameters (``SecretStr`` values stay wrapped)."""

    @abc.abstractmethod
    def run(self, cmd: str | Command, *, readonly: bool = False, timeout: float | None = None,
            check: bool = False, **variables: Any) -> CommandResult:
        """Run a local shell command rendered from the template ``cmd``.

        Variables come from the run's parameters and ``variables``; every value is
        shell-quoted unless marked safe. A mutating command (``readonly=False``) is
        only recorded during dry-run and refused in a read-only context. ``timeout``
        (seconds) is capped by what is left of the runbook's timeout. ``check=True``
        raises :class:`~selfdrive.sdk.errors.CommandFailedError` on failure.
        """

    @abc.abstractmethod
    def log(self, message: str) -> None:
        """Record a line of text on the run (shown by ``logs`` and reports)."""

    @abc.abstractmethod
    def note(self, key: str, value: Any) -> None:
        """Record a fact on the run (JSON-serialisable), e.g. bytes freed."""
