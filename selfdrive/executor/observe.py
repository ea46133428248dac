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
