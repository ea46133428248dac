"""The live run of a runbook, in one place: preconditions → body → verifications (with
attempts) → rollback.

The executor runs this loop against the journal and the real clock; the testing kit
(:func:`selfdrive.testing.simulate`) runs the very same loop against memory and a clock
that records its pauses instead of sleeping. Both therefore end every run the same way,
with the same message and the same steps: the kit cannot drift from the executor.

What the loop does with an exception is decided by :func:`~selfdrive.executor.boundary.classify`
and the phase it came from, here and nowhere else:

=============  ==================  ====================  ==================  ===============
fault          precondition        body                  verification        rollback
=============  ==================  ====================  ==================  ===============
runbook        unmet               failed, roll back     attempt failed      rollback_failed
read-only      unmet               failed, roll back     failed, no retry    rollback_failed
usage          failed              failed, roll back     failed, no retry    rollback_failed
timeout        failed (no undo)    failed, roll back     attempt failed      rollback_failed
halt           failed (no undo)    failed, no rollback   attempt failed      rollback_failed
framework      propagates          propagates            propagates          propagates
=============  ==================  ====================  ==================  ===============

A rollback gets a fresh budget of the runbook's timeout: the run's own may be what ran out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from selfdrive.executor.boundary import Fault, classify
from selfdrive.executor.clocks import RunClock
from selfdrive.executor.contexts import RunContext
from selfdrive.executor.endings import exit_code
from selfdrive.executor.observe import Observer, StepEvent
from selfdrive.executor.redact import Redactor
from selfdrive.executor.sinks import MemorySink, StepSink
from selfdrive.journal.records import RunRecord
from selfdrive.journal.store import Journal
from selfdrive.sdk.failures import Failure, describe_failure
from selfdrive.sdk.runbook import Hook, Runbook
from selfdrive.sdk.vocabulary import Phase, RunState, StepStatus

S = RunState


# -- where the run's record goes ------------------------------------------------------


class Recorder(Protocol):
    """Where the loop records a run: its steps (``sink``) and its state transitions."""

    @property
    def sink(self) -> StepSink: ...

    def transition(self, state: RunState, *, data: dict[str, Any] | None = None,
                   **fields: Any) -> None: ...

    def together(self, doing: str) -> contextlib.AbstractContextManager[None]:
        """Writes inside belong together: all of them or none (``doing``, followed by the
        run's id, names them in errors)."""
        ...


class JournalRecorder:
    """The journal's record of a claimed run: transitions and steps, each written before
    the next effect. ``record`` is the run as its last transition left it."""

    def __init__(self, journal: Journal, run_id: str, sink: StepSink, *, actor: str) -> None:
        self.journal = journal
        self.run_id = run_id
        self.actor = actor
        self._sink = sink
        self.record: RunRecord | None = None

    @property
    def sink(self) -> StepSink:
        return self._sink

    def transition(self, state: RunState, *, data: dict[str, Any] | None = None,
                   **fields: Any) -> None:
        self.record = self.journal.runs.transition(self.run_id, state, actor=self.actor, data=data,
                                              **fields)

    def together(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return self.journal.atomic(f"{doing} {self.run_id}")


@dataclass(frozen=True)
class Step:
    """One step of a run as the journal holds it (the live run's, not the plan's)."""

    phase: Phase | str
    kind: str
    status: StepStatus | str
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

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Step:
        """A step from a sink's row; phase and status typed where they are known values."""
        phase, status = row["phase"], row["status"]
        return cls(phase=Phase(phase) if phase in _PHASES else phase, kind=row["kind"],
                   status=StepStatus(status) if status in _STATUSES else status,
                   name=row.get("name"), target=row.get("target"), command=row.get("command"),
                   readonly=bool(row.get("readonly")), exit_code=row.get("exit_code"),
                   stdout=row.get("stdout"), stderr=row.get("stderr"), error=row.get("error"),
                   attempt=row.get("attempt"), data=row.get("data"))


_PHASES = frozenset(p.value for p in Phase)
_STATUSES = frozenset(s.value for s in StepStatus)


class MemoryRecorder:
    """A run recorded in memory: what the journal would hold, for the testing kit."""

    def __init__(self) -> None:
        self.memory = MemorySink()
        self.transitions: list[tuple[RunState, dict[str, Any]]] = []

    @property
    def sink(self) -> StepSink:
        return self.memory

    def transition(self, state: RunState, *, data: dict[str, Any] | None = None,
                   **fields: Any) -> None:
        self.transitions.append((state, {**fields, "data": data}))

    @contextlib.contextmanager
    def together(self, doing: str) -> Iterator[None]:
        yield

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(Step.of(row) for row in self.memory.steps)


# -- the loop ------------------------------------------------------------------------


@dataclass(frozen=True)
class Ending:
    """Where a live run rested, why, and what runbook code raised to get it there.

    ``cause`` is the ending that gives the exit code (a rollback exits with its
    cause's); ``failure`` the last runbook failure that ended the run or its rollback.
    """

    state: RunState
    message: str
    cause: RunState
    failure: Failure | None = None

    @property
    def exit_code(self) -> int:
        return exit_code(self.state, cause=self.cause)


def truth(result: object, what: str) -> tuple[bool, str]:
    """Whether a check's return value passes, and why not: True, False, or a command result."""
    if result is True:
        return True, ""
    if result is False:
        return False, "returned False"
    if hasattr(result, "ok") and isinstance(getattr(result, "ok", None), bool):
        return bool(result.ok), "" if result.ok else "the command it returned failed"
    return False, f"returned {result!r}; a {what} must return True or False"


def traceback_data(failure: Failure | None,
                   redact: Callable[[str | None], str | None]) -> dict[str, Any] | None:
    """A step's or transition's ``data``: the failure's traceback, redacted; None without."""
    if failure is None or failure.traceback is None:
        return None
    return {"traceback": redact(failure.traceback)}


@dataclass(frozen=True)
class Check:
    """What one call of a precondition or verification said."""

    passed: bool
    detail: str
    failure: Failure | None = None
    #: The hook's own code is broken (a read-only breach, a usage error): trying again
    #: cannot help.
    final: bool = False


def call_check(rb: Runbook, hook: Hook, ctx: RunContext, values: Mapping[str, Any],
               what: str, redact: Redactor) -> Check:
    """Call a precondition or verification and judge its answer.

    A failed check, unless the fault stops the run (a timeout, a halt or a usage error
    in a precondition propagates, as do framework errors).
    Planning and the live run both check through here.
    """
    try:
        result = rb.call_hook(hook, ctx, values)
    except BaseException as exc:
        fault = classify(exc)
        if fault.propagates:
            raise
        if fault is Fault.RUNBOOK or fault is Fault.READ_ONLY or what == "verification":
            failure = describe_failure(exc, source_file=rb.source_file)
            final = fault in (Fault.READ_ONLY, Fault.USAGE)
            return Check(False, redact(str(failure)) or "", failure, final=final)
        raise
    passed, detail = truth(result, what)
    return Check(passed, redact(detail) or "")


class RunLoop:
    """One live run of ``rb`` with ``values``: recorded by ``recorder``, timed and paused
    by ``clock`` (the clock of its contexts), shown to ``observer``. :meth:`run` returns
    its :class:`Ending`; errors that are not the run's to record (see the module's
    table) propagate."""

    def __init__(self, rb: Runbook, values: Mapping[str, Any], recorder: Recorder, *,
                 clock: RunClock, observer: Observer, redact: Redactor) -> None:
        self.rb = rb
        self.values = values
        self.recorder = recorder
        self.sink = recorder.sink
        self.clock = clock
        self.observer = observer
        self.redact = redact

    def describe(self, exc: BaseException) -> Failure:
        return describe_failure(exc, source_file=self.rb.source_file)

    def _redacted(self, text: str) -> str:
        return self.redact(text) or ""

    def run(self, ctx: RunContext, body_token: int | None = None) -> Ending:
        """Run the claimed run; ``body_token`` is the body's intent row when it was
        written with the claim."""
        rb = self.rb
        body_started = False
        try:
            for hook in rb.preconditions:
                pctx = ctx.for_phase(Phase.PRECONDITION, readonly=True, hook=hook.name)
                check = self._precondition(hook, pctx)
                if not check.passed:
                    error = self._redacted(f"precondition {hook.name} unmet: {check.detail}")
                    self.recorder.transition(S.PRECONDITION_FAILED, error=error)
                    return Ending(S.PRECONDITION_FAILED, error, S.PRECONDITION_FAILED)
            body_started = True
            body_token = self._body(ctx, body_token)
        except BaseException as cause:
            fault = classify(cause)
            if fault.propagates:
                raise
            if fault is Fault.HALT:
                error = str(cause)
                self.recorder.transition(S.FAILED, error=error)
                return Ending(S.FAILED, f"{error}; stopped without rollback (a human decides)",
                              S.FAILED)
            failure = self.describe(cause)
            error = self._redacted(str(failure))
            self.recorder.transition(S.FAILED, error=error,
                                     data=traceback_data(failure, self.redact))
            if not body_started:  # e.g. the timeout passed in a precondition: nothing to undo
                return Ending(S.FAILED,
                              f"{error}; the body never ran, so nothing was rolled back",
                              S.FAILED, failure)
            return self._rollback(ctx, S.FAILED, error, failure)
        if not rb.verifications:
            # Nothing runs between the body's end and the run's: one record for both.
            with self.recorder.together("record the end of run"):
                self.sink.finish(body_token, StepStatus.OK)
                self.recorder.transition(S.SUCCEEDED, verified=None)
            return Ending(S.SUCCEEDED, "succeeded (no verification declared)", S.SUCCEEDED)
        self.sink.finish(body_token, StepStatus.OK)
        for hook in rb.verifications:
            vctx = ctx.for_phase(Phase.VERIFY, readonly=True, hook=hook.name)
            passed, detail = self._verify(hook, vctx)
            if not passed:
                error = self._redacted(f"verification failed: {hook.name}: {detail}")
                self.recorder.transition(S.VERIFICATION_FAILED, error=error, verified=False)
                return self._rollback(ctx, S.VERIFICATION_FAILED, error, None)
        self.recorder.transition(S.SUCCEEDED, verified=True)
        return Ending(S.SUCCEEDED, "succeeded and verified", S.SUCCEEDED)

    def _body(self, ctx: RunContext, token: int | None) -> int:
        """Call the body under its intent row. A failure is recorded here; success is
        left to the caller, to record with what follows."""
        if token is None:
            token = self.sink.begin(Phase.BODY, "call", name=self.rb.fn.__name__)
        try:
            self.rb.fn(ctx.for_phase(Phase.BODY, readonly=False), **self.values)
        except BaseException as exc:
            failure = self.describe(exc)
            self.sink.finish(token, StepStatus.FAILED, error=self._redacted(str(failure)),
                             data=traceback_data(failure, self.redact))
            raise
        return token

    def _precondition(self, hook: Hook, ctx: RunContext) -> Check:
        token = self.sink.begin(Phase.PRECONDITION, "check", name=hook.name)
        try:
            check = call_check(self.rb, hook, ctx, self.values, "precondition", self.redact)
        except BaseException:
            self.sink.finish(token, StepStatus.ERROR)
            raise
        status = StepStatus.OK if check.passed else StepStatus.FAILED
        self.sink.finish(token, status, error=None if check.passed else check.detail,
                         data=traceback_data(check.failure, self.redact))
        self.observer.step(StepEvent(Phase.PRECONDITION, "check", status, hook.name,
                                     detail=None if check.passed else check.detail))
        return check

    def _verify(self, hook: Hook, ctx: RunContext) -> tuple[bool, str]:
        detail = ""
        for attempt in range(1, hook.attempts + 1):
            token = self.sink.begin(Phase.VERIFY, "check", name=hook.name, attempt=attempt)
            try:
                check = call_check(self.rb, hook, ctx, self.values, "verification",
                                   self.redact)
            except BaseException:
                self.sink.finish(token, StepStatus.ERROR)
                raise
            detail = check.detail
            status = StepStatus.OK if check.passed else StepStatus.FAILED
            self.sink.finish(token, status, error=None if check.passed else detail,
                             data=traceback_data(check.failure, self.redact))
            if check.final:
                return False, detail
            self.observer.step(StepEvent(Phase.VERIFY, "check", status,
                                         f"{hook.name} (attempt {attempt}/{hook.attempts})",
                                         detail=None if check.passed else detail))
            if check.passed:
                return True, ""
            if attempt < hook.attempts:
                pause = hook.interval.total_seconds()
                if ctx.remaining() < pause:
                    return False, f"{detail} (no time left for attempt {attempt + 1})"
                self.clock.pause(pause)
        return False, f"{detail} (after {hook.attempts} attempt(s))"

    def _rollback(self, ctx: RunContext, failed: RunState, cause: str,
                  failure: Failure | None) -> Ending:
        if not self.rb.rollbacks:
            return Ending(failed, f"{cause}; no rollback declared", failed, failure)
        hook = self.rb.rollbacks[0]
        self.recorder.transition(S.ROLLING_BACK, data={"cause": cause})
        rctx = ctx.with_deadline(self.clock.now() + self.rb.timeout.total_seconds()).for_phase(
            Phase.ROLLBACK, readonly=False, hook=hook.name)
        token = self.sink.begin(Phase.ROLLBACK, "call", name=hook.name)
        try:
            self.rb.call_hook(hook, rctx, self.values)
        except BaseException as exc:
            if classify(exc).propagates:
                raise
            failure = self.describe(exc)
            error = self._redacted(str(failure))
            data = traceback_data(failure, self.redact)
            self.sink.finish(token, StepStatus.FAILED, error=error, data=data)
            self.recorder.transition(S.ROLLBACK_FAILED,
                                     error=f"{cause}; rollback {hook.name} failed: {error}",
                                     data=data)
            return Ending(S.ROLLBACK_FAILED, f"{cause}; rollback {hook.name} FAILED: {error}",
                          failed, failure)
        self.sink.finish(token, StepStatus.OK)
        self.recorder.transition(S.ROLLED_BACK, error=cause)
        return Ending(S.ROLLED_BACK, f"{cause}; rolled back with {hook.name}", failed, failure)
