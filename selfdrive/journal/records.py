"""Plain values read back from the journal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from selfdrive.sdk.vocabulary import RunState


@dataclass(frozen=True)
class RunRecord:
    """One run as the journal holds it (parameters already masked)."""

    id: str
    runbook: str
    mode: str
    status: RunState
    risk: str
    requested_by: str
    os_user: str
    params: dict[str, Any]
    decision: dict[str, Any]
    firing: dict[str, Any] | None
    plan_hash: str | None
    owner: str | None
    error: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    updated_at: str | None
    expires_at: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RunRecord:
        return cls(
            id=row["id"], runbook=row["runbook"], mode=row["mode"],
            status=RunState(row["status"]), risk=row["risk"] or "",
            requested_by=row["requested_by"], os_user=row["os_user"] or "",
            params=json.loads(row["params"] or "{}"),
            decision=json.loads(row["decision"] or "{}"),
            firing=json.loads(row["firing"]) if row["firing"] else None,
            plan_hash=row["plan_hash"], owner=row["owner"], error=row["error"],
            created_at=row["created_at"], started_at=row["started_at"],
            finished_at=row["finished_at"], updated_at=row["updated_at"],
            expires_at=row.get("expires_at"),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "runbook": self.runbook, "mode": self.mode,
            "status": self.status.value, "risk": self.risk, "requested_by": self.requested_by,
            "os_user": self.os_user, "params": self.params, "decision": self.decision,
            "firing": self.firing, "plan_hash": self.plan_hash, "error": self.error,
            "created_at": self.created_at, "started_at": self.started_at,
            "finished_at": self.finished_at, "expires_at": self.expires_at,
        }


@dataclass(frozen=True)
class StepRecord:
    """One step of a run: a command, a check, a log line or a note."""

    id: int
    run_id: str
    seq: int
    phase: str
    kind: str
    name: str | None
    target: str | None
    command: str | None
    readonly: bool
    planned: bool
    status: str
    attempt: int | None
    exit_code: int | None
    stdout: str | None
    stderr: str | None
    truncated: bool
    error: str | None
    data: Any
    started_at: str
    finished_at: str | None
    duration: float | None
    plan_hash: str | None = None
    #: For a local command: its process group (``host:pgid:start`` of the leader).
    pgroup: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> StepRecord:
        return cls(
            id=row["id"], run_id=row["run_id"], seq=row["seq"], phase=row["phase"],
            kind=row["kind"], name=row["name"], target=row["target"], command=row["command"],
            readonly=bool(row["readonly"]), planned=bool(row["planned"]), status=row["status"],
            attempt=row["attempt"], exit_code=row["exit_code"], stdout=row["stdout"],
            stderr=row["stderr"], truncated=bool(row["truncated"]), error=row["error"],
            data=json.loads(row["data"]) if row["data"] else None,
            started_at=row["started_at"], finished_at=row["finished_at"],
            duration=row["duration"], plan_hash=row.get("plan_hash"),
            pgroup=row.get("pgroup"),
        )

    def as_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class ApprovalRecord:
    """One approval or denial, bound to the plan hash it was given for."""

    id: int
    run_id: str
    decision: str
    actor: str
    os_user: str
    plan_hash: str
    reason: str | None
    at: str

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ApprovalRecord:
        return cls(id=row["id"], run_id=row["run_id"], decision=row["decision"],
                   actor=row["actor"], os_user=row["os_user"] or "",
                   plan_hash=row["plan_hash"], reason=row["reason"], at=row["at"])

    def as_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}
