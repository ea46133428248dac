"""The run loop: request → decide → plan → (approve) → run → verify → roll back.

Every transition is journaled before the next effect starts. Planning happens first,
in memory, so a template or parameter mistake anywhere in the runbook is reported
before anything is written or changed; the plan's steps are then journaled with the
run, and the live run follows.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from selfdrive.config.model import TeamConfig, current_os_user
from selfdrive.executor.boundary import classify
from selfdrive.executor.clocks import REAL_CLOCK, RunClock
from selfdrive.executor.contexts import RunContext, Scope
from selfdrive.executor.endings import exit_code
from selfdrive.executor.loop import JournalRecorder, RunLoop, call_check, traceback_data
from selfdrive.executor.observe import Observer, SilentObserver, StepEvent, shielded
from selfdrive.executor.plan import CheckOutcome, Plan, PlannedStep
from selfdrive.executor.pool import TargetPool
from selfdrive.executor.reads import PlanReads, ReadLedger, ReadRecorder
from selfdrive.executor.redact import Redactor
from selfdrive.executor.sinks import JournalSink, MemorySink, StepSink
from selfdrive.journal.records import RunRecord
from selfdrive.journal.store import HALT_FLAG, Journal, flag_entries, utcnow
from selfdrive.learning.records import track_record
from selfdrive.notify.webhook import Notifier
from selfdrive.policy.decide import (
    Decision,
    Firing,
    Halt,
    Request,
    Situation,
    decide,
    reads_track_record,
    what_allows_a_run,
)
from selfdrive.registry.load import Registry
from selfdrive.sdk.command import render_text
from selfdrive.sdk.errors import (
    JournalError,
    JournalLockedError,
    JournalUnavailableError,
    RunStoppedError,
    UsageError,
)
from selfdrive.sdk.failures import Failure, describe_failure
from selfdrive.sdk.runbook import Runbook
from selfdrive.sdk.vocabulary import Mode, Phase, RunState, StepStatus
from selfdrive.targets.base import Target
from selfdrive.targets.environ import child_environ
from selfdrive.targets.local import LocalTarget

S = RunState
Approver = Callable[[RunRecord, Plan, Decision], bool]
#: Builds a run's context from its scope: :class:`RunContext`, or a subclass of it.
ContextFactory = Callable[[Scope], RunContext]


@dataclass(frozen=True)
class RunRequest:
    """Ask for one run of one runbook."""

    runbook: str
    params: Mapping[str, Any]
    requested_by: str
    os_user: str = field(default_factory=current_os_user)
    dry_run: bool = False
    firing: Firing | None = None
    dedup_key: str | None = None
    #: Journal writes that belong with the run's creation (an alert claim naming the
    #: run it started), made in the same transaction: never a run without its link.
    on_recorded: Callable[[RunRecord], None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class RunOutcome:
    """Where a run ended, with its plan and decision; ``exit_code`` as ``--help`` lists it."""

    run: RunRecord
    plan: Plan
    decision: Decision
    exit_code: int
    message: str = ""


def new_run_id(now: datetime) -> str:
    """Sortable and readable: ``20261125-213900-3f9a1c``."""
    return f"{now:%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"


def code_digest(rb: Runbook) -> str:
    """The runbook's code version: a digest of its source file."""
    try:
        data = Path(rb.source_file).read_bytes()
    except OSError:
        data = rb.location.encode()
    return hashlib.sha256(data).hexdigest()[:16]


class Executor:
    """Runs runbooks under policy, journaling everything. The in-process orchestrator."""

    def __init__(self, config: TeamConfig, registry: Registry, journal: Journal, *,
                 observer: Observer | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 target: Target | None = None, notifier: Notifier | None = None,
                 contexts: ContextFactory = RunContext,
                 run_clock: RunClock = REAL_CLOCK) -> None:
        """``target`` runs local commands; ``contexts`` builds each run's context from its
        scope (the testing kit's answers ``ctx.ansible`` from its fakes); ``run_clock``
        counts runs' deadlines and waits between verification attempts (``clock`` is
        the wall clock that decisions and records read)."""
        self.notifier = notifier
        self.contexts = contexts
        self.run_clock = run_clock
        self.config = config
        self.registry = registry
        self.journal = journal
        self.observer = shielded(observer or SilentObserver())
        self.clock = clock
        self.target = target or LocalTarget(
            cwd=str(config.root), env=child_environ(config.executor.env_allow,
                                                    deny=config.receiver.secret_envs))

    # -- deciding ----------------------------------------------------------------

    def situation(self, rb: Runbook) -> Situation:
        """What guardrails read for ``rb``: the halt switch and recent autonomous runs."""
        since = (self.clock() - self.config.guardrails.rate_window).astimezone(UTC)
        since_text = since.isoformat(timespec="microseconds")
        own, total = self.journal.runs.rate_counts(since=since_text, mode=Mode.AUTONOMOUS.value,
                                              runbook=rb.name)
        return Situation(halts=halts(self.journal), autonomous_runs_of_runbook=own,
                         autonomous_runs_total=total)

    def decide(self, rb: Runbook, request: RunRequest, *, targets: int | None = None,
               situation: Situation | None = None) -> Decision:
        # Read only when policy may look at it (decide() is the same without it).
        record = (track_record(self.journal, rb.name, self.config.policy.track_record)
                  if reads_track_record(rb, self.config) else None)
        return decide(rb, Request(requested_by=request.requested_by, firing=request.firing,
                                  dry_run=request.dry_run, targets=targets),
                      self.config, record, self.clock(),
                      situation=situation if situation is not None else self.situation(rb))

    def describe(self, rb: Runbook, exc: BaseException) -> Failure:
        """What ``rb``'s code raised, where, and the calls that led there."""
        return describe_failure(exc, source_file=rb.source_file)

    # -- planning ----------------------------------------------------------------

    def plan(self, rb: Runbook, values: Mapping[str, Any], *, run_id: str = "plan",
             observer: Observer | None = None, pool: TargetPool | None = None,
             redact: Redactor | None = None) -> Plan:
        """Compute the plan: read-only steps run for real, changes are recorded.

        Raises :class:`UsageError` for mistakes in the runbook's templates or use (naming
        the runbook's line that made them); other errors from the runbook's code come
        back as a plan note and re-raise. ``redact`` is the run's redactor, when the
        plan belongs to a run.
        """
        if pool is None:
            with self.pool() as own:
                return self.plan(rb, values, run_id=run_id, observer=observer, pool=own,
                                 redact=redact)
        redact = redact or Redactor.for_params(values)
        try:
            return self._plan(rb, values, run_id, shielded(observer or SilentObserver()), pool,
                              redact)
        except UsageError as exc:
            # A template or call the runbook's code got wrong: the message names its line.
            where = self.describe(rb, exc).where
            text = str(exc) if where is None else f"{exc} (at {where})"
            # Printed as it is by the CLI: a message quoting a secret is masked first.
            masked = redact(text) or ""
            if masked == str(exc):
                raise
            try:
                clean = type(exc)(masked)
            except TypeError:  # an error class with its own arguments
                clean = UsageError(masked)
            raise clean from None

    def _plan(self, rb: Runbook, values: Mapping[str, Any], run_id: str, observer: Observer,
              pool: TargetPool, redact: Redactor) -> Plan:
        sink = MemorySink()
        window = self.config.executor.reuse_reads.total_seconds()
        reads = ReadRecorder(window) if window > 0 else None
        ctx = self.context(run_id, Mode.DRY_RUN, values, sink, rb, pool, redact,
                           observer=observer, reads=reads)
        checks: list[CheckOutcome] = []
        notes: list[str] = []
        for hook in rb.preconditions:
            pctx = ctx.for_phase(Phase.PRECONDITION, readonly=True, hook=hook.name)
            check = call_check(rb, hook, pctx, values, "precondition", redact)
            observer.step(StepEvent(Phase.PRECONDITION, "check",
                                    StepStatus.OK if check.passed else StepStatus.FAILED,
                                    hook.name, detail=None if check.passed else check.detail))
            checks.append(CheckOutcome(hook.name, check.passed, check.detail))
        if all(c.met for c in checks):
            rb.fn(ctx.for_phase(Phase.BODY, readonly=False), **values)
            for hook in rb.rollbacks:
                try:
                    rb.call_hook(hook, ctx.for_phase(Phase.ROLLBACK, readonly=False,
                                                     hook=hook.name), values)
                except BaseException as exc:
                    if not classify(exc).fails_planning:
                        raise
                    notes.append(f"rollback {hook.name} could not be planned: "
                                 f"{self.describe(rb, exc)}")
        else:
            notes.append("preconditions unmet: a run would stop here, before any change")
        steps = tuple(_planned(s, redact) for s in sink.steps)
        return Plan(runbook=rb.name, code_digest=code_digest(rb),
                    params=rb.masked_params(values), steps=steps, preconditions=tuple(checks),
                    notes=tuple(redact(n) or "" for n in notes),
                    reads=reads.seal() if reads is not None else None)

    # -- running -----------------------------------------------------------------

    @contextlib.contextmanager
    def pool(self) -> Iterator[TargetPool]:
        """The targets of one run: connections reused by its plan and execution, then closed."""
        pool = TargetPool(self.config, self.target)
        try:
            yield pool
        finally:
            pool.close()

    def submit(self, request: RunRequest, *, approver: Approver | None = None) -> RunOutcome:
        """Run one request to wherever it rests: planned, pending, succeeded, failed …"""
        with self.pool() as pool:
            return self._submit(request, approver, pool)

    def _submit(self, request: RunRequest, approver: Approver | None,
                pool: TargetPool) -> RunOutcome:
        rb = self.registry.get(request.runbook)
        values = rb.validate_params(request.params)
        redact = Redactor.for_params(values)
        lock_key = render_text(rb.lock, values) if rb.lock else None
        run_id = new_run_id(self.clock())
        plan_failure: Failure | None = None
        planning_started = utcnow()
        try:
            # Planning is shown step by step only when the plan is what was asked for.
            plan = self.plan(rb, values, run_id=run_id, pool=pool, redact=redact,
                             observer=self.observer if request.dry_run else SilentObserver())
        except BaseException as exc:
            if not classify(exc).fails_planning:
                raise
            plan_failure = self.describe(rb, exc)  # the runbook's code failed while planning
            plan = Plan(runbook=rb.name, code_digest=code_digest(rb),
                        params=rb.masked_params(values), steps=())
        # Decided after planning: the blast radius is the plan's own target count.
        seen = self.situation(rb)
        decision = self.decide(rb, request, targets=len(plan.targets), situation=seen)
        actor = request.requested_by

        def outcome(code: int, message: str, record: RunRecord) -> RunOutcome:
            return RunOutcome(run=record, plan=plan, decision=decision, exit_code=code,
                              message=redact(message) or "")

        # The request, its decision and plan, and where it goes next when no one is asked:
        # its end, or its claim (nothing happens in between). One transaction: a run is
        # never journaled half-decided.
        start: _Start | None = None
        with self.journal.atomic(f"record run {run_id}"):
            if decision.mode is Mode.AUTONOMOUS:
                # Guardrails again, under the journal's write lock: another process may
                # have started a run (rate limit) or halted autonomy since the decision.
                # Only this re-read makes the limits exact across processes.
                fresh = self.situation(rb)
                if fresh != seen:
                    decision = self.decide(rb, request, targets=len(plan.targets),
                                           situation=fresh)
            self.journal.runs.create({
                "id": run_id, "runbook": rb.name, "mode": decision.mode.value,
                "risk": rb.risk.name, "requested_by": actor, "os_user": request.os_user,
                "params": rb.masked_params(values), "runbook_file": rb.location,
                "code_digest": plan.code_digest, "dedup_key": request.dedup_key,
                "firing": _firing_json(request.firing),
            }, actor=actor)
            run = self.journal.runs.transition(
                run_id, S.DECIDED, actor=actor, plan_hash=plan.hash,
                decision={"mode": decision.mode.value, "reasons": list(decision.reasons),
                          "rule": decision.rule.value},
                data={"mode": decision.mode.value, "reasons": list(decision.reasons),
                      "plan_hash": plan.hash, "lock": lock_key, "targets": list(plan.targets)})
            self.journal_plan(run.id, plan)
            if request.on_recorded is not None:
                request.on_recorded(run)
            tripped = bool(decision.guardrails) and decision.mode is Mode.APPROVAL
            if tripped:
                self.journal.event("guardrail.tripped", actor="selfdrive", run_id=run.id,
                                   data={"guardrails": list(decision.guardrails)})
            # Asked to run, and policy only plans it: the message says what would allow it.
            only_planned = (what_allows_a_run(rb, self.config)
                            if decision.mode is Mode.DRY_RUN and not request.dry_run else None)
            ended = self._end_unrun(run, plan, decision, plan_failure, planning_started,
                                    redact, actor, only_planned=only_planned)
            if ended is None and decision.mode is Mode.AUTONOMOUS:
                start = self._start(rb, run_id, actor, lock_key, fence_halt=True)
        self.observer.message(f"decision: {decision.mode.value}")
        for reason in decision.reasons:
            self.observer.message(f"  - {reason}")
        if tripped:  # told once it is journaled
            self.notify("guardrail.tripped", run, actor=actor, reasons=decision.reasons)
        if ended is not None:
            return outcome(*ended)
        if start is not None:
            return outcome(*self._run_started(rb, run_id, values, redact, actor, lock_key,
                                              start, pool, reads=plan.reads))
        assert decision.mode is Mode.APPROVAL
        record, approved, message = self._attended_approval(
            rb, run, plan, decision, actor, request.os_user, approver)
        if not approved:
            return outcome(exit_code(record.status), message, record)
        code, message, record = self.execute_locked(rb, run.id, values, redact, actor,
                                                    lock_key, fence_halt=False, pool=pool,
                                                    reads=plan.reads)
        return outcome(code, message, record)

    def _end_unrun(self, run: RunRecord, plan: Plan, decision: Decision,
                   plan_failure: Failure | None, planning_started: str, redact: Redactor,
                   actor: str, *,
                   only_planned: str | None) -> tuple[int, str, RunRecord] | None:
        """Where a run ends that will not run: planning failed, preconditions unmet, or
        a dry run; None for a run that goes on (to approval or to running)."""
        if plan_failure is not None:
            # The runbook's code ran (planning runs it) and failed: a failed run that
            # started, for stats, learn and reports alike.
            error = redact(planning_failed(plan_failure))
            record = self.journal.runs.transition(run.id, S.FAILED, actor=actor, error=error,
                                             started_at=planning_started,
                                             data=traceback_data(plan_failure, redact))
            return exit_code(S.FAILED), error or "", record
        if not plan.preconditions_met:
            unmet = plan.unmet
            if decision.mode is Mode.DRY_RUN:
                record = self.journal.runs.transition(run.id, S.PLANNED, actor=actor,
                                                 error=f"preconditions unmet: {unmet}")
                return exit_code(S.PLANNED, cause=S.PRECONDITION_FAILED), (
                    f"planned; preconditions unmet ({unmet}): a run would stop before any "
                    f"change"), record
            record = self.journal.runs.transition(run.id, S.PRECONDITION_FAILED, actor=actor,
                                             error=f"preconditions unmet: {unmet}")
            return exit_code(S.PRECONDITION_FAILED), f"preconditions unmet: {unmet}", record
        if decision.mode is Mode.DRY_RUN:
            record = self.journal.runs.transition(run.id, S.PLANNED, actor=actor)
            if only_planned is not None:
                return (exit_code(S.PLANNED),
                        f"planned only, not run: {only_planned}; nothing was changed", record)
            return exit_code(S.PLANNED), "planned; nothing was changed", record
        return None

    def execute_locked(self, rb: Runbook, run_id: str, values: Mapping[str, Any],
                       redact: Redactor, actor: str, lock_key: str | None, *,
                       fence_halt: bool, pool: TargetPool | None = None,
                       resumed: dict[str, Any] | None = None,
                       reads: PlanReads | None = None) -> tuple[int, str, RunRecord]:
        """Take the run's lock (or skip it, naming the holder), run it, release the lock.

        ``reads``: those of the plan just computed, which the run may take again.
        Returns the exit code, the message and the run as it ended.
        """
        if pool is None:
            with self.pool() as own:
                return self.execute_locked(rb, run_id, values, redact, actor, lock_key,
                                           fence_halt=fence_halt, pool=own, resumed=resumed,
                                           reads=reads)
        with self.journal.atomic(f"start run {run_id}"):
            start = self._start(rb, run_id, actor, lock_key, fence_halt=fence_halt,
                                resumed=resumed)
        return self._run_started(rb, run_id, values, redact, actor, lock_key, start, pool,
                                 reads=reads)

    def _start(self, rb: Runbook, run_id: str, actor: str, lock_key: str | None, *,
               fence_halt: bool, resumed: dict[str, Any] | None = None) -> _Start:
        """Take the run's lock (or skip the run, naming the holder) and claim it. Journal
        writes only: the caller holds them in one transaction."""
        if lock_key is not None:
            # Twice the timeout: the rollback gets a fresh budget of its own.
            holder = self.journal.locks.acquire(lock_key, run_id,
                                               ttl=2 * rb.timeout.total_seconds() + 60)
            if holder == run_id:
                raise JournalError(f"run {run_id} is being run by another process")
            if holder is not None:
                why = f"lock {lock_key!r} is held by run {holder}"
                record = self.journal.runs.transition(run_id, S.SKIPPED, actor=actor, error=why)
                return _Start(sink=None, skipped=(exit_code(S.SKIPPED),
                                                  f"skipped: {why}; nothing was changed",
                                                  record))
        sink = JournalSink(self.journal, run_id, fence_halt=fence_halt)
        # This transition is the claim: of two processes resuming one run, one wins here.
        self.journal.runs.transition(run_id, S.RUNNING, actor=actor, owner=self.journal.owner)
        if resumed is not None:
            self.journal.event("run.resumed", actor=actor, run_id=run_id, data=resumed)
        if rb.preconditions:
            return _Start(sink=sink)
        # The body is next: its intent row commits with the claim.
        return _Start(sink=sink, body=sink.begin(Phase.BODY, "call", name=rb.fn.__name__))

    def _run_started(self, rb: Runbook, run_id: str, values: Mapping[str, Any],
                     redact: Redactor, actor: str, lock_key: str | None, start: _Start,
                     pool: TargetPool,
                     reads: PlanReads | None = None) -> tuple[int, str, RunRecord]:
        """Run a claimed run (its claim committed), then release its lock."""
        if start.skipped is not None:
            return start.skipped
        assert start.sink is not None
        try:
            return self._execute(rb, run_id, values, redact, actor, start.sink, start.body,
                                 pool=pool, reads=reads)
        except (JournalUnavailableError, JournalLockedError) as exc:
            raise self._stopped(run_id, actor, exc) from None
        finally:
            if lock_key is not None:
                with contextlib.suppress(JournalError):
                    self.journal.locks.release(lock_key, run_id)

    def _stopped(self, run_id: str, actor: str, exc: JournalError) -> RunStoppedError:
        """The journal failed under a running run, which stopped before its next step.

        Marked ``interrupted`` now if the journal takes that write; otherwise the next
        selfdrive command does it (crash recovery: this process, its owner, will be gone).
        """
        try:
            marked = self.journal.runs.interrupt(
                run_id, actor=actor, reason=f"the journal failed under it: {exc}")
            now = ("it is marked interrupted" if marked.status is S.INTERRUPTED
                   else f"it is {marked.status.value}")
        except JournalError:
            now = ("the next selfdrive command marks it interrupted once the journal can be "
                   "written")
        return RunStoppedError(f"{exc}. Run {run_id} stopped before its next step; {now}; "
                               f"`selfdrive logs {run_id}` shows how far it got")

    def _attended_approval(self, rb: Runbook, run: RunRecord, plan: Plan, decision: Decision,
                           actor: str, os_user: str,
                           approver: Approver | None) -> tuple[RunRecord, bool, str]:
        rules = self.config.approvals
        threshold = self.config.policy.separation_of_duties
        allowed = rules.allowed(rb.risk)
        why = ""
        if approver is None:
            why = "no one is at a terminal to approve it"
            message = (f"waiting for approval as run {run.id} (plan {plan.hash[:12]}); no "
                       f"terminal to ask and no --yes")
        elif rb.risk >= threshold:
            why = f"{rb.risk.name} risk needs an approver other than the requester ({actor})"
            message = (f"{rb.risk.name} risk: someone other than {actor} must approve run "
                       f"{run.id} (separation of duties at {threshold.name} and above)")
        elif allowed is not None and actor not in allowed:
            why = f"{actor} may not approve {rb.risk.name} risk"
            message = (f"{actor} may not approve {rb.risk.name} risk; one of "
                       f"{', '.join(allowed)} must approve run {run.id}")
        elif rules.needed(rb.risk) > 1:
            why = f"{rb.risk.name} risk needs {rules.needed(rb.risk)} distinct approvers"
            message = f"{why}; run {run.id} waits for them"
        record = self.journal.runs.transition(
            run.id, S.PENDING_APPROVAL, actor=actor, owner=None,
            expires_at=(self.clock() + rules.expiry).astimezone(UTC).isoformat(),
            data={"plan_hash": plan.hash, "why": why or "asked at the terminal"})
        if why:
            self.notify("approval.requested", record, actor=actor, reasons=decision.reasons,
                        detail=why)
            return record, False, message
        assert approver is not None
        if not approver(record, plan, decision):
            record = self.journal.approvals.deny(run.id, actor=actor, os_user=os_user,
                                                reason="denied at the prompt",
                                                plan_hash=plan.hash)
            return record, False, f"denied by {actor}; nothing was changed"
        self.journal.approvals.approve(
            run.id, actor=actor, os_user=os_user, plan_hash=plan.hash,
            reason="approved at the terminal", counts=lambda _: True, needed=1,
            expires_at=(self.clock() + rules.expiry).astimezone(UTC).isoformat())
        return self.journal.runs.get(run.id), True, ""

    def notify(self, event: str, run: RunRecord, *, actor: str, reasons: Sequence[str] = (),
               detail: str = "") -> None:
        """Tell the team's webhooks; never blocks or fails the run."""
        if self.notifier is not None:
            self.notifier.send(event, run=run.as_json(), actor=actor, reasons=reasons,
                               detail=detail)

    def _execute(self, rb: Runbook, run_id: str, values: Mapping[str, Any], redact: Redactor,
                 actor: str, sink: JournalSink, body: int | None, *,
                 pool: TargetPool, reads: PlanReads | None = None) -> tuple[int, str, RunRecord]:
        """The live run, claimed: the run loop, recorded in the journal, in real time."""
        ctx = self.context(run_id, Mode.AUTONOMOUS if sink.fence_halt else Mode.APPROVAL,
                           values, sink, rb, pool, redact, reads=ReadLedger(reads))
        recorder = JournalRecorder(self.journal, run_id, sink, actor=actor)
        ending = RunLoop(rb, values, recorder, clock=self.run_clock, observer=self.observer,
                         redact=redact).run(ctx, body)
        assert recorder.record is not None  # every ending is a transition
        return ending.exit_code, ending.message, recorder.record

    # -- plumbing ----------------------------------------------------------------

    def context(self, run_id: str, mode: Mode, values: Mapping[str, Any], sink: StepSink,
                rb: Runbook, pool: TargetPool, redact: Redactor,
                observer: Observer | None = None,
                reads: ReadRecorder | ReadLedger | None = None) -> RunContext:
        """The context of one run (or plan) of ``rb``, built by the executor's context
        factory: its deadline starts now."""
        ex = self.config.executor
        return self.contexts(Scope(
            run_id=run_id, mode=mode, params=values, sink=sink, pool=pool,
            redact=redact, observer=observer or self.observer,
            deadline=self.run_clock.now() + rb.timeout.total_seconds(),
            output_limit=ex.output_limit, command_timeout=ex.command_timeout,
            clock=self.run_clock, reads=reads))

    def journal_plan(self, run_id: str, plan: Plan) -> None:
        """Record what the plan saw and would change, bound to its hash."""
        self.journal.runs.add_plan_steps(run_id, plan.hash, [
            {"phase": f"plan:{step.phase}", "kind": step.kind, "name": step.name,
             "target": step.target, "command": step.command, "readonly": step.readonly,
             "planned": step.is_change, "stdout": step.text, "data": step.data,
             "status": step.status, "exit_code": step.exit_code}
            for step in plan.steps])


@dataclass(frozen=True)
class _Start:
    """A run's start: its sink and body intent row once claimed, or where it ended."""

    sink: JournalSink | None
    body: int | None = None
    skipped: tuple[int, str, RunRecord] | None = None


#: Steps whose text belongs to the plan: a logged line, the diff of an Ansible change.
_PLAN_TEXT = ("log", "ansible-change")


def _planned(step: dict[str, Any], redact: Redactor) -> PlannedStep:
    return PlannedStep(
        phase=step["phase"], kind=step["kind"], name=step.get("name"),
        target=step.get("target"), command=step.get("command"),
        readonly=bool(step.get("readonly")), status=step["status"],
        exit_code=step.get("exit_code"),
        text=redact(step.get("stdout")) if step["kind"] in _PLAN_TEXT else None,
        data=redact.deep(step.get("data")))


def planning_failed(failure: Failure) -> str:
    """A run's error when its code failed while planning (so before any change)."""
    return f"planning failed: {failure}"


def _firing_json(firing: Firing | None) -> dict[str, Any] | None:
    if firing is None:
        return None
    return {"kind": firing.kind, "name": firing.name, "own": firing.own, "domain": firing.domain}


def halts(journal: Journal) -> tuple[Halt, ...]:
    """Every reason the halt switch is on, oldest first; empty when it is off."""
    return tuple(_halt(e) for e in flag_entries(journal.flags.get(HALT_FLAG)))


def _halt(entry: dict[str, Any]) -> Halt:
    since = entry.get("since")
    return Halt(by=entry.get("by", "?"), reason=entry.get("reason", ""),
                since=datetime.fromisoformat(since) if since else datetime.min.replace(tzinfo=UTC))


def halt(journal: Journal, *, by: str, reason: str, now: datetime) -> tuple[Halt, ...]:
    """Turn the halt switch on, or add a reason to it: no autonomous run starts, running
    ones stop at their next change. Reasons add up (two incidents, two people); returns
    them all."""
    entries = journal.flags.append(HALT_FLAG, {"by": by, "reason": reason,
                                              "since": now.isoformat()}, actor=by)
    return tuple(_halt(e) for e in entries)


def unhalt(journal: Journal, *, by: str) -> tuple[Halt, ...]:
    """Turn the halt switch off, clearing every reason; returns them (empty: it was off)."""
    if not halts(journal):
        return ()
    return tuple(_halt(e) for e in journal.flags.set(HALT_FLAG, None, actor=by))
