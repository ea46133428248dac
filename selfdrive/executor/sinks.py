"""Where a context's steps go: memory while planning, the journal while running."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Protocol

from selfdrive.journal.store import Journal
from selfdrive.sdk.errors import JournalError


class StepSink(Protocol):
    def begin(self, phase: str, kind: str, **fields: Any) -> int: ...

    def finish(self, token: int, status: str, **fields: Any) -> None: ...

    def batch(self, doing: str) -> contextlib.AbstractContextManager[None]:
        """Steps recorded inside are written together (steps only: never an effect)."""
        ...


class MemorySink:
    """Collects steps while planning, before the run exists in the journal."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self._lock = threading.Lock()  # fan-out records from several threads

    def begin(self, phase: str, kind: str, **fields: Any) -> int:
        with self._lock:
            self.steps.append({"phase": phase, "kind": kind, "status": "started", **fields})
            return len(self.steps) - 1

    def finish(self, token: int, status: str, **fields: Any) -> None:
        with self._lock:
            self.steps[token].update(status=status, **fields)

    def batch(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()


class JournalSink:
    """Writes each step's intent before its effect and its result after (fenced).

    Once a write of this run has failed, every later one fails with that same error
    without trying: a step whose result was lost leaves the journal untruthful, so
    nothing more of the run may start, even if the journal takes writes again (a disk
    freed meanwhile) or the runbook caught the error and went on.
    """

    def __init__(self, journal: Journal, run_id: str, *, fence_halt: bool) -> None:
        self.journal = journal
        self.run_id = run_id
        self.fence_halt = fence_halt
        self.failed: JournalError | None = None

    def begin(self, phase: str, kind: str, **fields: Any) -> int:
        self._go_on()
        try:
            return self.journal.runs.begin_step(self.run_id, phase=phase, kind=kind,
                                           fence_halt=self.fence_halt
                                           and kind in ("command", "ansible")
                                           and not fields.get("readonly"), **fields)
        except JournalError as exc:
            self.failed = exc
            raise

    def finish(self, token: int, status: str, **fields: Any) -> None:
        self._go_on()
        try:
            self.journal.runs.finish_step(token, status=status, **fields)
        except JournalError as exc:
            self.failed = exc
            raise

    def batch(self, doing: str) -> contextlib.AbstractContextManager[None]:
        """One transaction for the steps inside: a reused read's intent and result, or a
        fan-out's worth of them, cost one commit, not two per host."""
        self._go_on()
        return self.journal.atomic(doing)

    def _go_on(self) -> None:
        if self.failed is not None:
            raise self.failed
