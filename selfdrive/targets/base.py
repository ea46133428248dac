"""The narrow interface every target implements."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from selfdrive.sdk.command import Command
from selfdrive.sdk.context import CommandResult

#: How a result's ``error`` begins when the command was certainly never sent.
NOT_STARTED = "not started: "
#: How it begins when the command may have run, in part or in full.
OUTCOME_UNKNOWN = "outcome unknown: "

#: Called by a target once per command, before anything of it can happen, with the id
#: of the local process group it will run in (None when it runs elsewhere or not at
#: all). It records the command's intent; if it raises, the command does not run.
Intent = Callable[[int | None], object]


class Target(Protocol):
    """Somewhere a command runs. Opens lazily, closes deterministically."""

    name: str

    def run(self, command: Command, timeout: float, *,
            intent: Intent | None = None) -> CommandResult:
        """Run ``command``; never raise for the command's own failure or timeout.

        With ``intent``, call it exactly once before the command can have any effect
        (also when it then fails to start); when it raises, run nothing and re-raise.
        """
        ...

    def close(self) -> None: ...
