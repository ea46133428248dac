"""The executor's contexts: planning, live and read-only faces of one recorder."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from selfdrive.executor.observe import Observer, StepEvent
from selfdrive.executor.redact import Redactor, bound
from selfdrive.executor.sinks import StepSink
from selfdrive.sdk.command import Command, render_command
from selfdrive.sdk.context import CommandResult, Context
from selfdrive.sdk.errors import CommandFailedError, ReadOnlyViolationError, RunTimeoutError
from selfdrive.sdk.vocabulary import Mode
from selfdrive.targets.base import Target


@dataclass(frozen=True)
class Scope:
    """Everything a context needs; phases share it and differ only in phase and read-only."""

    run_id: str
    mode: Mode
    params: Mapping[str, Any]
    sink: StepSink
    target: Target
    redact: Redactor
    observer: Observer
    deadline: float
    output_limit: int
    command_timeout: float
    phase: str = "body"
    readonly: bool = False
    hook: str | None = None


class RunContext(Context):
    """One context class for every face; the scope says which face it shows.

    - planning (``mode`` dry-run): read-only commands run, changes are recorded;
    - live: every command runs, its intent journaled first;
    - read-only (``readonly``): a mutating command is a :class:`ReadOnlyViolationError`.
    """

    def __init__(self, scope: Scope) -> None:
        self._scope = scope

    def for_phase(self, phase: str, *, readonly: bool, hook: str | None = None) -> RunContext:
        return RunContext(replace(self._scope, phase=phase, readonly=readonly, hook=hook))

    def with_deadline(self, deadline: float) -> RunContext:
        return RunContext(replace(self._scope, deadline=deadline))

    @property
    def run_id(self) -> str:
        return self._scope.run_id

    @property
    def mode(self) -> Mode:
        return self._scope.mode

    @property
    def params(self) -> Mapping[str, Any]:
        return self._scope.params

    @property
    def phase(self) -> str:
        return self._scope.phase

    def remaining(self) -> float:
        return self._scope.deadline - time.monotonic()

    def _check_deadline(self) -> float:
        left = self.remaining()
        if left <= 0:
            raise RunTimeoutError(f"the runbook's timeout passed during {self._scope.phase}")
        return left

    def run(self, cmd: str | Command, *, readonly: bool = False, timeout: float | None = None,
            check: bool = False, **variables: Any) -> CommandResult:
        s = self._scope
        left = self._check_deadline()
        command = render_command(cmd, {**s.params, **variables})
        if not readonly and s.readonly:
            raise ReadOnlyViolationError(
                f"{s.phase} {s.hook or ''} tried a mutating command: {command}; a {s.phase} "
                f"may only read (pass readonly=True if this command changes nothing)"
                .replace("  ", " "))
        target = s.target.name
        if not readonly and s.mode is Mode.DRY_RUN:
            token = s.sink.begin(s.phase, "command", target=target, command=str(command),
                                 readonly=False, planned=True)
            s.sink.finish(token, "planned")
            s.observer.step(StepEvent(s.phase, "command", "planned", str(command), target))
            return CommandResult(command=command, target=target, exit_code=None, planned=True)
        limit = min(timeout or s.command_timeout, left)
        token = s.sink.begin(s.phase, "command", target=target, command=str(command),
                             readonly=readonly, planned=False)
        s.observer.step(StepEvent(s.phase, "command", "started", str(command), target))
        result = s.target.run(command, limit)
        stdout, cut_out = bound(s.redact(result.stdout) or "", s.output_limit)
        stderr, cut_err = bound(s.redact(result.stderr) or "", s.output_limit)
        status = "ok" if result.ok else ("timed_out" if result.timed_out else "failed")
        if result.exit_code is None and not result.timed_out:
            status = "error"
        s.sink.finish(token, status, exit_code=result.exit_code, stdout=stdout, stderr=stderr,
                      truncated=cut_out or cut_err, duration=round(result.duration, 6),
                      error=s.redact(result.error))
        # Redact before cutting the tail, so that no part of a secret survives the cut.
        detail = (s.redact(result.error or result.stderr) or "")[-500:] or None
        s.observer.step(StepEvent(s.phase, "command", status, str(command), target,
                                  duration=result.duration, exit_code=result.exit_code,
                                  detail=detail))
        if result.timed_out and self.remaining() <= 0:
            raise RunTimeoutError(f"the runbook's timeout passed while running: {command}")
        if check and not result.ok:
            why = result.error or f"exit code {result.exit_code}"
            raise CommandFailedError(f"{command} failed on {target}: {s.redact(why)}")
        return result

    def log(self, message: str) -> None:
        s = self._scope
        text = s.redact(str(message)) or ""
        token = s.sink.begin(s.phase, "log", name=s.hook, stdout=text)
        s.sink.finish(token, "ok")
        s.observer.step(StepEvent(s.phase, "log", "ok", text))

    def note(self, key: str, value: Any) -> None:
        s = self._scope
        data = s.redact.deep(value)
        token = s.sink.begin(s.phase, "note", name=str(key), data=data)
        s.sink.finish(token, "ok")
        s.observer.step(StepEvent(s.phase, "note", "ok", f"{key} = {data!r}"))
