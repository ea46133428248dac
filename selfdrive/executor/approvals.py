"""Approving, denying and resuming runs that wait for a human.

An approval binds to one plan hash. At resume the plan is computed again and the
approvers are checked again against today's rules; a changed plan or an approver
who no longer counts sends the run back to pending. Approvals expire.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from selfdrive.executor.endings import exit_code
from selfdrive.executor.engine import Executor, RunOutcome
from selfdrive.executor.plan import Plan
from selfdrive.executor.redact import Redactor
from selfdrive.journal.records import ApprovalRecord, RunRecord
from selfdrive.policy.decide import Decision
from selfdrive.sdk.command import render_text
from selfdrive.sdk.errors import AuditMismatchError, JournalError, UsageError
from selfdrive.sdk.vocabulary import Mode, Risk, RunState

S = RunState


class ApprovalRefusedError(UsageError):
    """The person may not approve (or resume) this run; the message says why."""


@dataclass(frozen=True)
class ApprovalResult:
    """Where an approval left the run: how many approvals count, of how many needed."""

    run: RunRecord
    counted: int
    needed: int

    @property
    def approved(self) -> bool:
        return self.run.status is S.APPROVED


def _now(executor: Executor) -> datetime:
    return executor.clock().astimezone(UTC)


def sweep_expired(executor: Executor) -> list[str]:
    """End every pending or approved run whose window passed as ``expired``."""
    now = _now(executor)
    expired = []
    for run in executor.journal.runs.find(status=[S.PENDING_APPROVAL.value, S.APPROVED.value],
                                     limit=100_000):
        if run.expires_at and datetime.fromisoformat(run.expires_at) <= now:
            try:
                record = executor.journal.runs.transition(
                    run.id, S.EXPIRED, actor="selfdrive",
                    error=f"the approval window closed at {run.expires_at}",
                    data={"expires_at": run.expires_at})
            except JournalError:  # another process moved it first; it is no longer ours
                continue
            executor.notify("approval.expired", record, actor="selfdrive",
                            reasons=run.decision.get("reasons", []))
            expired.append(run.id)
    return expired


def counts_as_approver(executor: Executor, run: RunRecord, actor: str) -> tuple[bool, str]:
    """Whether ``actor`` may approve ``run`` under today's rules, and why not."""
    risk = Risk.parse(run.risk)
    threshold = executor.config.policy.separation_of_duties
    if risk >= threshold and actor == run.requested_by:
        return False, (f"{actor} requested this {risk.name}-risk run and may not approve it "
                       f"(separation of duties at {threshold.name} and above)")
    allowed = executor.config.approvals.allowed(risk)
    if allowed is not None and actor not in allowed:
        return False, (f"{actor} may not approve {risk.name} risk (approvers: "
                       f"{', '.join(allowed) or 'none'})")
    return True, ""


def approve(executor: Executor, run_id: str, *, actor: str, os_user: str,
            reason: str | None = None) -> ApprovalResult:
    """Record ``actor``'s approval of the run's current plan."""
    sweep_expired(executor)
    run = executor.journal.runs.get(run_id)
    _must_wait(run, "approved")
    ok, why = counts_as_approver(executor, run, actor)
    if not ok:
        executor.journal.event("approval.refused", actor=actor, run_id=run.id,
                               data={"reason": why, "os_user": os_user})
        raise ApprovalRefusedError(why)
    risk = Risk.parse(run.risk)
    needed = executor.config.approvals.needed(risk)
    expires = (_now(executor) + executor.config.approvals.expiry).isoformat()
    counted, approved = executor.journal.approvals.approve(
        run.id, actor=actor, os_user=os_user, plan_hash=run.plan_hash or "", reason=reason,
        counts=lambda who: counts_as_approver(executor, run, who)[0], needed=needed,
        expires_at=expires)
    record = executor.journal.runs.get(run.id)
    executor.notify("approval.granted", record, actor=actor,
                    detail=f"{counted} of {needed} approval(s)"
                           + ("; ready to resume" if approved else ""))
    return ApprovalResult(run=record, counted=counted, needed=needed)


def deny(executor: Executor, run_id: str, *, actor: str, os_user: str,
         reason: str) -> RunRecord:
    """End a waiting run as ``denied``; nothing of it runs."""
    sweep_expired(executor)
    run = executor.journal.runs.get(run_id)
    _must_wait(run, "denied")
    record = executor.journal.approvals.deny(run.id, actor=actor, os_user=os_user,
                                            reason=reason, plan_hash=run.plan_hash or "")
    executor.notify("approval.denied", record, actor=actor, detail=reason)
    return record


def resume(executor: Executor, run_id: str, *, actor: str,
           secrets: Mapping[str, Any] | None = None) -> RunOutcome:
    """Run an approved run, after checking its approvals and its plan once more."""
    sweep_expired(executor)
    run = executor.journal.runs.get(run_id)
    if run.status is not S.APPROVED:
        raise ApprovalRefusedError(_why_not_resumable(executor, run))
    _backed_by_the_chain(executor, run, actor)
    rb = executor.registry.get(run.runbook)
    values = _values_for(rb, run, secrets or {})
    redact = Redactor.for_params(values)
    decision = Decision(mode=Mode(run.mode), reasons=tuple(run.decision.get("reasons", [])),
                        rule=executor_rule(run))

    risk = Risk.parse(run.risk)
    needed = executor.config.approvals.needed(risk)
    approvers = executor.journal.approvals.granted(run.id, run.plan_hash or "")
    still = [a for a in approvers if counts_as_approver(executor, run, a)[0]]
    if len(still) < needed:
        gone = sorted(set(approvers) - set(still))
        why = (f"approver(s) {', '.join(gone)} no longer count under the current rules; "
               f"{len(still)} of {needed} approval(s) remain")
        record = executor.journal.runs.transition(
            run.id, S.PENDING_APPROVAL, actor=actor, owner=None, error=why,
            expires_at=(_now(executor) + executor.config.approvals.expiry).isoformat(),
            data={"why": why})
        executor.notify("approval.requested", record, actor=actor, detail=why)
        return RunOutcome(run=record, plan=_empty_plan(rb.name, run), decision=decision,
                          exit_code=exit_code(record.status), message=why)

    plan = executor.plan(rb, values, run_id=run.id, redact=redact)
    if plan.hash != run.plan_hash:
        why = (f"the plan changed since it was approved ({(run.plan_hash or '')[:12]} → "
               f"{plan.hash[:12]}); it needs approving again")
        record = executor.journal.runs.transition(
            run.id, S.PENDING_APPROVAL, actor=actor, owner=None, plan_hash=plan.hash,
            error=why,
            expires_at=(_now(executor) + executor.config.approvals.expiry).isoformat(),
            data={"why": why, "approved_plan": run.plan_hash, "new_plan": plan.hash})
        executor.journal_plan(run.id, plan)
        executor.notify("approval.requested", record, actor=actor, detail=why)
        return RunOutcome(run=record, plan=plan, decision=decision,
                          exit_code=exit_code(record.status), message=why)

    lock_key = render_text(rb.lock, values) if rb.lock else None
    try:
        code, message, record = executor.execute_locked(
            rb, run.id, values, redact, actor, lock_key, fence_halt=False,
            resumed={"plan_hash": plan.hash, "approvers": still}, reads=plan.reads)
    except JournalError:
        now = executor.journal.runs.get(run.id)
        if now.status is not S.APPROVED or now.owner not in (None, executor.journal.owner):
            raise ApprovalRefusedError(f"run {run.id} was resumed by someone else first; it "
                                       f"is {now.status.value}") from None
        raise
    return RunOutcome(run=record, plan=plan, decision=decision, exit_code=code,
                      message=redact(message) or "")


def pending(executor: Executor) -> list[tuple[RunRecord, list[ApprovalRecord], int]]:
    """Runs waiting for a human (after expiring stale ones), oldest first."""
    sweep_expired(executor)
    runs = executor.journal.runs.find(status=[S.PENDING_APPROVAL.value, S.APPROVED.value],
                                 limit=100_000)
    out = []
    for run in sorted(runs, key=lambda r: r.created_at):
        chained = set(executor.journal.approvals.granted(run.id, run.plan_hash or ""))
        approvals = [a for a in executor.journal.approvals.of_run(run.id)  # those the chain backs
                     if a.plan_hash == run.plan_hash and a.decision == "approve"
                     and a.actor in chained]
        out.append((run, approvals, executor.config.approvals.needed(Risk.parse(run.risk))))
    return out


def _backed_by_the_chain(executor: Executor, run: RunRecord, actor: str) -> None:
    """Refuse a run whose rows (its status, plan, window, approvals) the audit chain does
    not back: they were changed outside selfdrive. The refusal is itself chained."""
    problems = [str(d) for d in executor.journal.disagreements(run.id)]
    if not problems:
        return
    executor.journal.event("resume.refused", actor=actor, run_id=run.id,
                           data={"disagreements": problems})
    raise AuditMismatchError(
        f"run {run.id} is not resumed, and nothing of it ran: its journal rows disagree "
        f"with the audit chain, so they were changed outside selfdrive: "
        + "; ".join(problems) + ". `selfdrive audit verify` names every such row")


def _must_wait(run: RunRecord, verb: str) -> None:
    if run.status in (S.PENDING_APPROVAL, S.APPROVED) and verb == "denied":
        return
    if run.status is not S.PENDING_APPROVAL:
        raise ApprovalRefusedError(f"run {run.id} is {run.status.value}; only a run pending "
                                   f"approval can be {verb}")


def _why_not_resumable(executor: Executor, run: RunRecord) -> str:
    if run.status is S.PENDING_APPROVAL:
        needed = executor.config.approvals.needed(Risk.parse(run.risk))
        have = len(executor.journal.approvals.granted(run.id, run.plan_hash or ""))
        return (f"run {run.id} is not approved yet ({have} of {needed} approval(s) for plan "
                f"{(run.plan_hash or '')[:12]}); `selfdrive approve {run.id}`")
    if run.status is S.DENIED:
        return f"run {run.id} was denied: {run.error}"
    if run.status is S.EXPIRED:
        return f"run {run.id} expired: {run.error}; request it again"
    return f"run {run.id} is {run.status.value}; it has already been decided or run"


def _values_for(rb: Any, run: RunRecord, secrets: Mapping[str, Any]) -> dict[str, Any]:
    """Stored (masked) parameters plus secrets given again: secrets are never stored."""
    raw = {k: v for k, v in run.params.items() if k not in rb.secret_params}
    missing = [name for name in sorted(rb.secret_params)
               if name in run.params and name not in secrets]
    if missing:
        flags = " ".join(f"-p {m}=…" for m in missing)
        raise UsageError(f"run {run.id} has secret parameter(s) {', '.join(missing)}, which "
                         f"are never stored; give them again: selfdrive resume {run.id} "
                         f"{flags}")
    unknown = sorted(set(secrets) - set(rb.secret_params))
    if unknown:
        raise UsageError(f"resume takes only the run's secret parameters again, not "
                         f"{', '.join(unknown)}")
    raw.update(secrets)
    return rb.validate_params(raw)  # type: ignore[no-any-return]


def executor_rule(run: RunRecord) -> Any:
    from selfdrive.config.model import Rule

    return Rule(run.decision.get("rule", Rule.APPROVAL.value))


def _empty_plan(name: str, run: RunRecord) -> Plan:
    return Plan(runbook=name, code_digest="", params=run.params, steps=())
