"""``plan_of`` and ``simulate``: a runbook's plan and its run, with fakes for targets.

``plan_of`` is :meth:`Executor.plan` itself, handed a pool of fake targets, so its
plan (and hash) is the one ``selfdrive plan`` computes when the read-only commands
answer the same. ``simulate`` runs the executor's own run loop
(:class:`~selfdrive.executor.loop.RunLoop`: preconditions, body, verifications with
attempts, rollback) with the executor's own contexts; what it does not do is journal
(steps and transitions are kept in memory), take locks, decide policy, or sleep
between verification attempts (the pauses are recorded in ``Simulation.waited``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, cast

from selfdrive.executor.boundary import classify
from selfdrive.executor.clocks import RecordingClock
from selfdrive.executor.contexts import RunContext, Scope
from selfdrive.executor.endings import exit_code
from selfdrive.executor.engine import Executor, planning_failed
from selfdrive.executor.loop import MemoryRecorder, RunLoop, Step
from selfdrive.executor.observe import SilentObserver
from selfdrive.executor.plan import Plan
from selfdrive.executor.reads import ReadLedger
from selfdrive.executor.redact import Redactor
from selfdrive.registry.load import Registry
from selfdrive.sdk.runbook import Runbook
from selfdrive.sdk.vocabulary import Mode, Phase, RunState
from selfdrive.testing.fake import FakeContext, FakeTarget

if TYPE_CHECKING:
    from selfdrive.journal.store import Journal

S = RunState

#: One step of a simulated run, as the journal would hold it.
SimStep = Step


def _kit_executor(fake: FakeContext, clock: RecordingClock) -> Executor:
    """The executor, with the fake's targets and its ``ctx.ansible``, on a clock that
    does not sleep; planning and the run loop touch neither its registry nor its journal."""

    def contexts(scope: Scope) -> RunContext:
        return fake.context(replace(scope, sink=fake.tap(scope.sink)))

    return Executor(fake.config, Registry(), cast("Journal", None),
                    target=FakeTarget(fake, "local", clock), contexts=contexts, run_clock=clock)


def plan_of(runbook: Runbook, fake: FakeContext | None = None, /, **params: Any) -> Plan:
    """The plan ``selfdrive plan NAME -p …`` would show, with ``fake`` answering the reads.

    Raises what planning raises (a :class:`UsageError` for a template or parameter
    mistake) and :class:`UnscriptedCommand` for a read no script answers.
    """
    fake = fake if fake is not None else FakeContext()
    values = runbook.validate_params(params)
    try:
        clock = RecordingClock()
        return _kit_executor(fake, clock).plan(runbook, values, pool=fake.pool(clock))
    finally:
        fake.check_scripted()


@dataclass(frozen=True)
class Simulation:
    """Where a simulated run ended (``status``, ``exit_code`` as the CLI's) and every step.

    ``plan`` is the plan computed first, as a real run computes it; ``steps`` are the
    live run's steps; ``waited`` the pauses between verification attempts;
    ``traceback`` the last frames of runbook code when that code raised (the file and
    line are in ``message`` too); ``states`` the states the live run moved through
    after ``running``, as the journal would record them (``verification_failed``,
    ``rolling_back``, ``rolled_back`` …).
    """

    runbook: str
    status: RunState
    exit_code: int
    message: str
    plan: Plan | None
    steps: tuple[SimStep, ...] = ()
    waited: tuple[float, ...] = field(default=())
    traceback: str | None = None
    states: tuple[RunState, ...] = ()

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
        return tuple(s for s in self.steps if s.phase == Phase.ROLLBACK)

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
        return sum(1 for s in self.steps if s.phase == Phase.VERIFY and s.name == hook)


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
    clock = RecordingClock()
    executor = _kit_executor(fake, clock)
    try:
        plan = executor.plan(runbook, values, pool=fake.pool(clock))
    except BaseException as exc:
        fake.check_scripted()
        if not classify(exc).fails_planning:
            raise
        failure = executor.describe(runbook, exc)
        return Simulation(runbook.name, S.FAILED, exit_code(S.FAILED),
                          redact(planning_failed(failure)) or "", None,
                          traceback=redact(failure.traceback))
    fake.check_scripted()
    if not plan.preconditions_met:
        return Simulation(runbook.name, S.PRECONDITION_FAILED, exit_code(S.PRECONDITION_FAILED),
                          f"preconditions unmet: {plan.unmet}", plan)
    recorder = MemoryRecorder()
    clock.paused.clear()  # the run's pauses, not the plan's (planning never pauses)
    ctx = executor.context("simulated", Mode.APPROVAL, values, recorder.sink, runbook,
                           fake.pool(clock), redact, observer=SilentObserver(),
                           reads=ReadLedger(plan.reads))
    loop = RunLoop(runbook, values, recorder, clock=clock, observer=SilentObserver(),
                   redact=redact)
    try:
        ending = loop.run(ctx)
    finally:
        fake.check_scripted()
    return Simulation(runbook.name, ending.state, ending.exit_code, ending.message, plan,
                      recorder.steps, tuple(clock.paused),
                      redact(ending.failure.traceback) if ending.failure is not None else None,
                      tuple(state for state, _ in recorder.transitions))
