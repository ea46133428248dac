"""Plans: what a run would do, as immutable data with a stable hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any


@dataclass(frozen=True)
class PlannedStep:
    """One step seen while planning: a read-only command that really ran, or a change."""

    phase: str
    kind: str
    name: str | None = None
    target: str | None = None
    command: str | None = None
    readonly: bool = False
    status: str = "planned"
    exit_code: int | None = None
    text: str | None = None
    data: object = None

    @property
    def is_change(self) -> bool:
        return self.kind in ("command", "ansible-change") and not self.readonly

    @property
    def env_part(self) -> list[object]:
        """The (masked) variables a change passes its command, as the plan hash covers
        them; empty without any, so such a plan's hash is what it always was."""
        env = self.data.get("env") if isinstance(self.data, dict) else None
        return [env] if env else []


@dataclass(frozen=True)
class CheckOutcome:
    """A precondition as evaluated while planning."""

    name: str
    met: bool
    detail: str = ""


@dataclass(frozen=True)
class Plan:
    """What a run would change, for whom, with which code.

    ``hash`` covers the runbook, its code digest, the masked parameters, the targets
    and every planned change in order (with the variables it passes its command); an
    approval binds to it.
    """

    runbook: str
    code_digest: str
    params: dict[str, Any]
    steps: tuple[PlannedStep, ...]
    preconditions: tuple[CheckOutcome, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def changes(self) -> tuple[PlannedStep, ...]:
        return tuple(s for s in self.steps if s.is_change)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(sorted({s.target for s in self.changes if s.target}))

    @property
    def preconditions_met(self) -> bool:
        return all(c.met for c in self.preconditions)

    @cached_property
    def hash(self) -> str:
        body = {
            "runbook": self.runbook,
            "code": self.code_digest,
            "params": self.params,
            "targets": list(self.targets),
            "changes": [[s.phase, s.target, s.command, *s.env_part] for s in self.changes],
        }
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def as_json(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook,
            "hash": self.hash,
            "code_digest": self.code_digest,
            "params": self.params,
            "targets": list(self.targets),
            "preconditions": [asdict(c) for c in self.preconditions],
            "changes": [asdict(s) for s in self.changes],
            "steps": [asdict(s) for s in self.steps],
            "notes": list(self.notes),
        }
