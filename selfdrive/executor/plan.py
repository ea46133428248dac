"""Plans: what a run would do, as immutable data with a stable hash."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from selfdrive.executor.reads import PlanReads


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
    def unpredictable(self) -> bool:
        """A change no one can see in advance (a task Ansible's check mode skipped)."""
        return isinstance(self.data, dict) and bool(self.data.get("unpredictable"))

    @property
    def binding(self) -> list[Any]:
        """What an approval of this change binds: where, what runs, and, for a change
        that writes content (an Ansible task's diff), a digest of all of it."""
        data = self.data if isinstance(self.data, dict) else {}
        digest, env = data.get("diff_sha256"), data.get("env")
        # Each part only when present, so a plan without it hashes as it always did.
        return [self.phase, self.target, self.command, *([env] if env else []),
                *([digest] if digest else [])]


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
    and every planned change in order (with the variables it passes its command and
    what it would write, see :attr:`PlannedStep.binding`); an approval binds to it.
    """

    runbook: str
    code_digest: str
    params: dict[str, Any]
    steps: tuple[PlannedStep, ...]
    preconditions: tuple[CheckOutcome, ...] = ()
    notes: tuple[str, ...] = field(default=())
    #: The reads planning ran, for the live run that follows (in memory only; not
    #: part of the hash or the JSON: their real output may hold a secret).
    reads: PlanReads | None = field(default=None, compare=False, repr=False)

    @property
    def changes(self) -> tuple[PlannedStep, ...]:
        return tuple(s for s in self.steps if s.is_change)

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(sorted({s.target for s in self.changes if s.target}))

    @property
    def unpredictable(self) -> tuple[PlannedStep, ...]:
        return tuple(s for s in self.changes if s.unpredictable)

    @property
    def preconditions_met(self) -> bool:
        return all(c.met for c in self.preconditions)

    @property
    def unmet(self) -> str:
        """The unmet preconditions and why, as a run that stops on them says it."""
        return "; ".join(f"{c.name}: {c.detail}" for c in self.preconditions if not c.met)

    @cached_property
    def hash(self) -> str:
        body = {
            "runbook": self.runbook,
            "code": self.code_digest,
            "params": self.params,
            "targets": list(self.targets),
            "changes": [s.binding for s in self.changes],
        }
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    @property
    def reusable(self) -> tuple[int, ...]:
        """The plan's steps (1-based) that a live run may take instead of running them."""
        return tuple(r.step for r in self.reads.reusable) if self.reads is not None else ()

    def as_json(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook,
            "hash": self.hash,
            "code_digest": self.code_digest,
            "params": self.params,
            "targets": list(self.targets),
            "unpredictable": len(self.unpredictable),
            "preconditions": [asdict(c) for c in self.preconditions],
            "changes": [asdict(s) for s in self.changes],
            "steps": [asdict(s) for s in self.steps],
            "notes": list(self.notes),
            "reuse": {"window": self.reads.window if self.reads is not None else 0.0,
                      "steps": list(self.reusable)},
        }
