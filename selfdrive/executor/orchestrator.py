"""The seam where a durable-execution engine can replace the in-process run loop."""

from __future__ import annotations

from typing import Protocol

from selfdrive.executor.engine import Approver, RunOutcome, RunRequest


class Orchestrator(Protocol):
    """Start runs and stop autonomy. :class:`~selfdrive.executor.Executor` is the
    in-process implementation; a distributed one must keep the same journal semantics."""

    def submit(self, request: RunRequest, *, approver: Approver | None = None) -> RunOutcome:
        ...
