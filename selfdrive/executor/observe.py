"""How the executor tells a driver (the CLI, a test) what is happening, as it happens."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class StepEvent:
    """A step starting or ending; text is already masked and redacted."""

    phase: str
    kind: str
    status: str
    text: str
    target: str | None = None
    duration: float | None = None
    exit_code: int | None = None
    detail: str | None = None


class Observer(Protocol):
    def step(self, event: StepEvent) -> None: ...

    def message(self, text: str) -> None: ...


class SilentObserver:
    """Observes nothing: for library use and tests."""

    def step(self, event: StepEvent) -> None:
        return None

    def message(self, text: str) -> None:
        return None


class ShieldedObserver:
    """An observer whose failures never reach the run: after its first error it goes quiet.

    Output is never part of a run. A reader that went away (a closed pipe, a hung-up
    terminal) or a driver's own bug must not fail, interrupt or roll back what the run
    does; the journal, not the observer, is the record.
    """

    def __init__(self, inner: Observer) -> None:
        self.inner = inner
        self.error: Exception | None = None

    def step(self, event: StepEvent) -> None:
        if self.error is None:
            try:
                self.inner.step(event)
            except Exception as exc:
                self.error = exc

    def message(self, text: str) -> None:
        if self.error is None:
            try:
                self.inner.message(text)
            except Exception as exc:
                self.error = exc


def shielded(observer: Observer) -> Observer:
    """``observer`` behind a :class:`ShieldedObserver` (once)."""
    return observer if isinstance(observer, ShieldedObserver | SilentObserver) \
        else ShieldedObserver(observer)
