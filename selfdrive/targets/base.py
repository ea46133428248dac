"""The narrow interface every target implements."""

from __future__ import annotations

from typing import Protocol

from selfdrive.sdk.command import Command
from selfdrive.sdk.context import CommandResult


class Target(Protocol):
    """Somewhere a command runs. Opens lazily, closes deterministically."""

    name: str

    def run(self, command: Command, timeout: float) -> CommandResult:
        """Run ``command``; never raise for the command's own failure or timeout."""
        ...

    def close(self) -> None: ...
