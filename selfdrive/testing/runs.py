"""``plan_of`` and ``simulate``: a runbook's plan and its run, with fakes for targets.

``plan_of`` is :meth:`Executor.plan` itself, handed a pool of fake targets, so its
plan (and hash) is the one ``selfdrive plan`` computes when the read-only commands
answer the same. ``simulate`` follows the executor's run loop step for step
(preconditions, body, verifications with attempts, rollback) with the executor's own
contexts; what it does not do is journal, take locks, decide policy, or sleep
between verification attempts (the pauses are recorded in ``Simulation.waited``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from selfdrive.executor.contexts import RunContext, Scope
from selfdrive.executor.engine import Executor, _truth, planning_failed, traceback_data
from selfdrive.executor.observe import Observer, SilentObserver
from selfdrive.executor.plan import Plan
from selfdrive.executor.pool import TargetPool
from selfdrive.executor.reads import ReadLedger, ReadRecorder
from selfdrive.executor.redact import Redactor
from selfdrive.executor.sinks import MemorySink, StepSink
from selfdrive.registry.load import Registry
from selfdrive.sdk.errors import ReadOnlyViolationError, UsageError
from selfdrive.sdk.failures import Failure
from selfdrive.sdk.runbook import Hook, Runbook
from selfdrive.sdk.vocabulary import Mode, RunState
from selfdrive.testing.fake import FakeContext, FakeTarget

if TYPE_CHECKING:
    from selfdrive.journal.store import Journal

S = RunState


class _KitExecutor(Executor):
    """The executor, planning against the fake: its targets and its ``ctx.ansible``."""

    def __init__(self, fake: FakeContext) -> None:
        # Planning touches neither the registry nor the journal.
        super().__init__(fake.config, Registry(), cast("Journal", None),
                         target=FakeTarget(fake, "local"))
        self._fake = fake

    def _context(self, run_id: str, mode: Mode, values: Mapping[str, Any], sink: StepSink,
                 rb: Runbook, pool: TargetPool, redact: Redactor,
                 observer: Observer | None = None,
                 reads: ReadRecorder | ReadLedger | None = None) -> RunContext:
        ctx = super()._context(run_id, mode, values, self._fake.tap(sink), rb, pool, redact,
                               observer=observer, reads=reads)
        return self._fake.context(ctx._scope)


def plan_of(runbook: Runbook, fake: FakeContext | None = None, /, **params: Any) -> Plan:
    """The plan ``selfdrive plan NAME -p …`` would show, with ``fake`` answering the reads.

    Raises what planning raises (a :class:`UsageError` for a template or parameter
    mistake) and :class:`UnscriptedCommand` for a read no script answers.
    """
    fake = fake if fake is not None else FakeContext()
    values = runbook.validate_params(params)
    try:
        return _KitExecutor(fake).plan(runbook, values, pool=fake.pool())
    finally:
        fake.check_scripted()


@dataclass(frozen=True)
class SimStep:
    """One step of a simulated run, as the journal would hold it."""

    phase: str
    kind: str
    status: str
    name: str | None = None
    target: str | None = None
    command: str | None = None
    readonly: bool = False
    exit_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None
    error: str | None = None
    attempt: int | None = None
    data: Any = None

    @property
    def is_change(self) -> bool:
        return self.kind in ("command", "ansible-change") and not self.readonly


@dataclass(frozen=True)
class Simulation:
    """Where a simulated run ended (``status``, ``exit_code`` as the CLI's) and every step.

    ``plan`` is the plan computed first, as a real run computes it; ``steps`` are the
    live run's steps; ``waited`` the pauses between verification attempts;
    ``traceback`` the last frames of runbook code when that code raised (the file and
    line are in ``message`` too).
    """

    runbook: str
    status: RunState
    exit_code: int
    message: str
    plan: Plan | None
    steps: tuple[SimStep, ...] = ()
    waited: tuple[float, ...] = field(default=())
    traceback: str | None = None

    def __repr__(self) -> str:
        return (f"<Simulation {self.runbook}: {self.status.value} (exit {self.exit_code}), "
                f"{len(self.steps)} steps: {self.message}>")

    @property
    def ok(self) -> bool:
        return self.status is S.SUCCEEDED

    @property
    def rolled_back(self) -> bool:
        return self.status is S.ROLLED_BACK

    @property
    def rollback_steps(self) -> tuple[SimStep, ...]:
        return tuple(s for s in self.steps if s.phase == "rollback")

    def commands(self, phase: str | None = None, *, target: str | None = None,
                 changes: bool = False) -> list[str]:
        """Masked commands of the live run, in order; ``changes=True``: only mutating ones."""
        return [s.command or "" for s in self.steps
                if s.kind in ("command", "ansible-change")
                and (phase is None or s.phase == phase)
                and (target is None or s.target == target)
                and (not changes or s.is_change)]

    @property
    def changes(self) -> list[str]:
        return self.commands(changes=True)

    @property
    def notes(self) -> dict[str, Any]:
        return {s.name or "": s.data for s in self.steps if s.kind == "note"}

    @property
    def logs(self) -> list[str]:
        return [s.stdout or "" for s in self.steps if s.kind == "log"]

    def attempts(self, hook: str) -> int:
        """How many times verification ``hook`` was tried."""
        return sum(1 for s in self.steps if s.phase == "verify" and s.name == hook)


def simulate(runbook: Runbook, fake: FakeContext | None = None, /, **params: Any) -> Simulation:
    """Run ``runbook`` against ``fake`` as the executor would run an approved request.

    The plan comes first, then preconditions, body, verifications (``attempts`` tries
    each) and, on failure, the rollback. As in a real run, a read the plan ran is taken
    from the plan instead of asked again (same target, command and phase, in order,
    until a change on that target; ``[executor] reuse_reads`` of the fake's config, ``0s``: never),
    so ``fake.calls`` lists it once; its live step carries ``data["reused"]``. Mutating
    commands go to the fakes and need scripts (or ``FakeContext(default_ok=True)``).
    """
    fake = fake if fake is not None else FakeContext()
    values = runbook.validate_params(params)
    redact = Redactor.for_params(values)
    executor = _KitExecutor(fake)
    try:
        plan = executor.plan(runbook, values, pool=fake.pool())
    except UsageError:
        fake.check_scripted()
        raise
    except Exception as exc:
        fake.check_scripted()
        failure = executor.describe(runbook, exc)
        return Simulation(runbook.name, S.FAILED, 1, redact(planning_failed(failure)) or "",
                          None, traceback=redact(failure.traceback))
    fake.check_scripted()
    if not plan.preconditions_met:
        unmet = "; ".join(f"{c.name}: {c.detail}" for c in plan.preconditions if not c.met)
        return Simulation(runbook.name, S.PRECONDITION_FAILED, 4,
                          f"preconditions unmet: {unmet}", plan)
    sink = MemorySink()
    ex = fake.config.executor
    ctx = fake.context(Scope(
        run_id="simulated", mode=Mode.APPROVAL, params=values, sink=fake.tap(sink),
        pool=fake.pool(), redact=redact, observer=SilentObserver(),
        deadline=time.monotonic() + runbook.timeout.total_seconds(),
        output_limit=ex.output_limit, command_timeout=ex.command_timeout,
        reads=ReadLedger(plan.reads)))
    loop = _Loop(runbook, values, redact, sink, lambda exc: executor.describe(runbook, exc))
    try:
        status, code, message = loop.execute(ctx)
    finally:
        fake.check_scripted()
    steps = tuple(SimStep(phase=s["phase"], kind=s["kind"], status=s["status"],
                          name=s.get("name"), target=s.get("target"), command=s.get("command"),
                          readonly=bool(s.get("readonly")), exit_code=s.get("exit_code"),
                          stdout=s.get("stdout"), stderr=s.get("stderr"), error=s.get("error"),
                          attempt=s.get("attempt"), data=s.get("data"))
                  for s in sink.steps)
    return Simulation(runbook.name, status, code, message, plan, steps, tuple(loop.waited),
                      loop.traceback)


class _Loop:
    """Executor._execute, without the journal: the same order, outcomes and messages."""

    def __init__(self, rb: Runbook, values: Mapping[str, Any], redact: Redactor,
                 sink: MemorySink, describe: Callable[[BaseException], Failure]) -> None:
        self.rb = rb
        self.values = values
        self.redact = redact
        self.sink = sink
        self.describe = describe
        self.waited: list[float] = []
        self.traceback: str | None = None  # of the failure the run ended with

    def _failed(self, exc: BaseException) -> tuple[str, dict[str, Any] | None]:
        """The error and step data of what runbook code raised; its traceback is kept."""
        failure = self.describe(exc)
        self.traceback = self.redact(failure.traceback)
        return self.redact(str(failure)) or "", traceback_data(failure, self.redact)

    def execute(self, ctx: RunContext) -> tuple[RunState, int, str]:
        rb, values = self.rb, self.values
        body_started = False
        try:
            for hook in rb.preconditions:
                met, detail = self._check(hook, ctx.for_phase("precondition", readonly=True,
                                                              hook=hook.name))
                if not met:
                    return (S.PRECONDITION_FAILED, 4,
                            self.redact(f"precondition {hook.name} unmet: {detail}") or "")
            body_started = True
            token = self.sink.begin("body", "call", name=rb.fn.__name__)
            try:
                rb.fn(ctx.for_phase("body", readonly=False), **values)
            except Exception as exc:
                error, data = self._failed(exc)
                self.sink.finish(token, "failed", error=error, data=data)
                raise
            self.sink.finish(token, "ok")
        except Exception as exc:
            error, _ = self._failed(exc)
            if not body_started:
                return S.FAILED, 1, f"{error}; the body never ran, so nothing was rolled back"
            return self._rollback(ctx, S.FAILED, cause=error, code=1)
        for hook in rb.verifications:
            passed, detail = self._verify(hook, ctx.for_phase("verify", readonly=True,
                                                              hook=hook.name))
            if not passed:
                error = self.redact(f"verification failed: {hook.name}: {detail}") or ""
                return self._rollback(ctx, S.VERIFICATION_FAILED, cause=error, code=5)
        verified = bool(rb.verifications)
        return S.SUCCEEDED, 0, "succeeded" + (" and verified" if verified
                                              else " (no verification declared)")

    def _check(self, hook: Hook, ctx: RunContext) -> tuple[bool, str]:
        token = self.sink.begin("precondition", "check", name=hook.name)
        try:
            result = self.rb.call_hook(hook, ctx, self.values)
        except UsageError:
            self.sink.finish(token, "error")
            raise
        except Exception as exc:
            failure: Failure | None = self.describe(exc)
            met, detail = False, failure.error if failure else ""
        else:
            failure = None
            met, detail = _truth(result, "precondition")
        detail = self.redact(detail) or ""
        self.sink.finish(token, "ok" if met else "failed", error=None if met else detail,
                         data=traceback_data(failure, self.redact))
        return met, detail

    def _verify(self, hook: Hook, ctx: RunContext) -> tuple[bool, str]:
        detail = ""
        for attempt in range(1, hook.attempts + 1):
            token = self.sink.begin("verify", "check", name=hook.name, attempt=attempt)
            try:
                result = self.rb.call_hook(hook, ctx, self.values)
            except (ReadOnlyViolationError, UsageError) as exc:  # a definition bug: no retry
                detail = self.redact(str(exc)) or ""
                self.sink.finish(token, "failed", error=detail)
                return False, detail
            except Exception as exc:
                failure: Failure | None = self.describe(exc)
                passed, detail = False, failure.error if failure else ""
            else:
                failure = None
                passed, detail = _truth(result, "verification")
            detail = self.redact(detail) or ""
            self.sink.finish(token, "ok" if passed else "failed",
                             error=None if passed else detail,
                             data=traceback_data(failure, self.redact))
            if passed:
                return True, ""
            if attempt < hook.attempts:
                pause = hook.interval.total_seconds()
                if ctx.remaining() - sum(self.waited) < pause:
                    return False, f"{detail} (no time left for attempt {attempt + 1})"
                self.waited.append(pause)
        return False, f"{detail} (after {hook.attempts} attempt(s))"

    def _rollback(self, ctx: RunContext, failed: RunState, *, cause: str,
                  code: int) -> tuple[RunState, int, str]:
        if not self.rb.rollbacks:
            return failed, code, f"{cause}; no rollback declared"
        hook = self.rb.rollbacks[0]
        rctx = ctx.with_deadline(time.monotonic() + self.rb.timeout.total_seconds()).for_phase(
            "rollback", readonly=False, hook=hook.name)
        token = self.sink.begin("rollback", "call", name=hook.name)
        try:
            self.rb.call_hook(hook, rctx, self.values)
        except Exception as exc:
            error, data = self._failed(exc)
            self.sink.finish(token, "failed", error=error, data=data)
            return S.ROLLBACK_FAILED, code, f"{cause}; rollback {hook.name} FAILED: {error}"
        self.sink.finish(token, "ok")
        return S.ROLLED_BACK, code, f"{cause}; rolled back with {hook.name}"
