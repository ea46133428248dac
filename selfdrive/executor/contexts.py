"""The executor's contexts: planning, live and read-only faces of one recorder."""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from selfdrive.executor.clocks import REAL_CLOCK, RunClock
from selfdrive.executor.observe import Observer, StepEvent
from selfdrive.executor.pool import TargetPool
from selfdrive.executor.reads import EVERY_TARGET, Reads, Reuse
from selfdrive.executor.redact import Redactor, bound
from selfdrive.executor.sinks import StepSink
from selfdrive.sdk.command import Command, render_command, with_env
from selfdrive.sdk.context import (
    AnsibleResult,
    CommandResult,
    Context,
    HostGroup,
    HostsResult,
    RemoteHost,
)
from selfdrive.sdk.errors import (
    CommandFailedError,
    ReadOnlyViolationError,
    RunTimeoutError,
    UsageError,
)
from selfdrive.sdk.vocabulary import Mode, Outcome, StepStatus
from selfdrive.targets.base import Target

if TYPE_CHECKING:
    from selfdrive.targets.inventory import HostSpec


@dataclass(frozen=True)
class Scope:
    """Everything a context needs; phases share it and differ only in phase and read-only."""

    run_id: str
    mode: Mode
    params: Mapping[str, Any]
    sink: StepSink
    pool: TargetPool
    redact: Redactor
    observer: Observer
    deadline: float
    output_limit: int
    command_timeout: float
    phase: str = "body"
    readonly: bool = False
    hook: str | None = None
    #: What ``deadline`` is counted on (the testing kit's skips the time it simulates).
    clock: RunClock = REAL_CLOCK
    #: The planning pass's reads: recorded while planning, taken again by the live run.
    reads: Reads | None = None


class RunContext(Context):
    """One context class for every face; the scope says which face it shows.

    - planning (``mode`` dry-run): read-only commands run, changes are recorded;
    - live: every command runs, its intent journaled first;
    - read-only (``readonly``): a mutating command is a :class:`ReadOnlyViolationError`.
    """

    def __init__(self, scope: Scope) -> None:
        self._scope = scope

    @property
    def scope(self) -> Scope:
        """What this context runs in: for a context factory's subclass (the testing
        kit's) to build its phases and record its own steps."""
        return self._scope

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
        return self._scope.deadline - self._scope.clock.now()

    def check_deadline(self) -> float:
        """The seconds left before the runbook's timeout; raises once it has passed."""
        left = self.remaining()
        if left <= 0:
            raise RunTimeoutError(f"the runbook's timeout passed during {self._scope.phase}")
        return left

    _check_deadline = check_deadline

    def run(self, cmd: str | Command, *, readonly: bool = False, timeout: float | None = None,
            check: bool = True, env: Mapping[str, Any] | None = None,
            **variables: Any) -> CommandResult:
        command = self._render(cmd, variables, readonly=readonly, env=env)
        return self._command(self._scope.pool.local, command, readonly=readonly,
                             timeout=timeout, check=check, idempotent=False)

    def ssh(self, host: str, *, user: str | None = None, port: int | None = None) -> RemoteHost:
        return _Remote(self, self._scope.pool.host(host, user=user, port=port))

    def hosts(self, names_or_group: str | list[str], *, max_concurrency: int = 10,
              max_errors: int = 1) -> HostGroup:
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise UsageError(f"ctx.hosts(max_concurrency={max_concurrency!r}): must be >= 1")
        if not isinstance(max_errors, int) or max_errors < 1:
            raise UsageError(f"ctx.hosts(max_errors={max_errors!r}): must be >= 1")
        specs = self._scope.pool.hosts(names_or_group)
        return _Group(self, specs, max_concurrency=max_concurrency, max_errors=max_errors,
                      asked=names_or_group)

    def ansible(self, playbook: str | list[dict[str, Any]], *, hosts: str | list[str],
                extravars: Mapping[str, Any] | None = None, readonly: bool = False,
                timeout: float | None = None, check: bool = True) -> AnsibleResult:
        from selfdrive.executor.ansible import raise_if_failed, run_ansible

        self._changing(EVERY_TARGET, readonly=readonly)
        return raise_if_failed(run_ansible(self, playbook, hosts=hosts,
                                           extravars=extravars or {}, readonly=readonly,
                                           timeout=timeout), check=check)

    # -- shared by every kind of command -------------------------------------------

    def _render(self, cmd: str | Command, variables: Mapping[str, Any], *,
                readonly: bool, env: Mapping[str, Any] | None = None) -> Command:
        s = self._scope
        self._check_deadline()
        s.redact.learn(variables.values())
        # Every secret the run knows is masked, not only SecretStr values: a runbook may
        # pass one unwrapped (token.get_secret_value()).
        if isinstance(env, Mapping):  # anything else is refused by with_env, below
            s.redact.learn(env.values())
        command = with_env(render_command(cmd, {**s.params, **variables},
                                          secrets=s.redact.secrets), env)
        if not readonly and s.readonly:
            raise ReadOnlyViolationError(
                f"{s.phase} {s.hook or ''} tried a mutating command: {command}; a {s.phase} "
                f"may only read (pass readonly=True if this command changes nothing)"
                .replace("  ", " "))
        return command

    def _planned(self, target: str, command: Command) -> CommandResult:
        """Dry-run: record the change with its rendered command and target; run nothing."""
        s = self._scope
        self._changing(target, readonly=False)
        token = s.sink.begin(s.phase, "command", target=target, command=str(command),
                             readonly=False, planned=True, **self._env_fields(command))
        s.sink.finish(token, "planned")
        s.observer.step(StepEvent(s.phase, "command", "planned", str(command), target))
        return CommandResult(command=command, target=target, exit_code=None, planned=True)

    def _command(self, target: Target, command: Command, *, readonly: bool,
                 timeout: float | None, check: bool, idempotent: bool) -> CommandResult:
        s = self._scope
        if not readonly and s.mode is Mode.DRY_RUN:
            return self._planned(target.name, command)
        reuse = (s.reads.take(s.phase, target, command) if s.reads is not None and readonly
                 else None)
        if reuse is not None:
            return self._reused(target, command, reuse)
        self._changing(target.name, readonly=readonly)
        attempts = 2 if idempotent else 1
        for attempt in range(1, attempts + 1):
            limit = min(timeout or s.command_timeout, self._check_deadline())
            # The target writes the intent (begin) once the command's process group exists
            # and before anything of the command can happen.
            tokens: list[int] = []
            intent = functools.partial(self._intent, tokens, target.name, command,
                                       readonly, attempt)
            result = target.run(command, limit, intent=intent)
            status = self.finish(tokens[0], result)
            retry = status in ("unknown", "error") and attempt < attempts
            if retry:
                s.observer.message(f"  retrying {command} on {target.name}: the runbook "
                                   f"declares it idempotent")
                continue
            break
        if readonly and s.reads is not None:
            s.reads.record(s.phase, target, command, result, status, tokens[0])
        if result.timed_out and self.remaining() <= 0:
            raise RunTimeoutError(f"the runbook's timeout passed while running: {command}")
        if check and not result.ok:
            raise CommandFailedError(f"{command} failed on {target.name}: "
                                     f"{s.redact(failure_reason(result))}")
        return result

    def _changing(self, target: str, *, readonly: bool) -> None:
        """A change starts (or is planned) on ``target``: reads there run again after it."""
        if not readonly and self._scope.reads is not None:
            self._scope.reads.changed(target)

    def _reused(self, target: Target, command: Command, reuse: Reuse) -> CommandResult:
        """A read the plan ran moments ago, journaled as this run's step and not run again."""
        s = self._scope
        fields = self._env_fields(command)
        fields["data"] = {**fields.get("data", {}), **reuse.marker}
        with s.sink.batch(f"record a read taken from the plan: {command}"):
            token = s.sink.begin(s.phase, "command", target=target.name,
                                 command=str(command), readonly=True, planned=False, **fields)
            # Nothing ran now: the step took no time of this run's.
            self.finish(token, replace(reuse.read.result, duration=0.0), reused=True)
        return reuse.read.result

    def _intent(self, tokens: list[int], target: str, command: Command, readonly: bool,
                attempt: int, pgid: int | None) -> None:
        tokens.append(self.begin(target, command, readonly=readonly, attempt=attempt, pgid=pgid))

    def begin(self, target: str, command: Command, *, readonly: bool,
              attempt: int | None = None, pgid: int | None = None) -> int:
        """The intent row, written (fenced) before the command leaves; for a local
        command, it names the process group the command runs in, for crash recovery."""
        s = self._scope
        fields = self._env_fields(command)
        if pgid is not None:
            from selfdrive.journal.store import process_identity

            fields["pgroup"] = process_identity(pgid)
        token = s.sink.begin(s.phase, "command", target=target, command=str(command),
                             readonly=readonly, planned=False, attempt=attempt, **fields)
        s.observer.step(StepEvent(s.phase, "command", "started", str(command), target))
        return token

    def _env_fields(self, command: Command) -> dict[str, Any]:
        """The step's record of the variables a command gets (masked, then redacted)."""
        if not command.masked_env:
            return {}
        return {"data": {"env": self._scope.redact.deep(dict(command.masked_env))}}

    def finish(self, token: int, result: CommandResult, *, reused: bool = False) -> str:
        """The result row: output redacted and bounded; returns the step's status."""
        s = self._scope
        stdout, cut_out = bound(s.redact(result.stdout) or "", s.output_limit)
        stderr, cut_err = bound(s.redact(result.stderr) or "", s.output_limit)
        status = step_status(result)
        s.sink.finish(token, status, exit_code=result.exit_code, stdout=stdout, stderr=stderr,
                      truncated=cut_out or cut_err, duration=round(result.duration, 6),
                      error=s.redact(result.error))
        # Redact before cutting the tail, so that no part of a secret survives the cut.
        detail = (s.redact(result.error or result.stderr) or "")[-500:] or None
        s.observer.step(StepEvent(s.phase, "command", status,
                                  str(result.command) + (REUSED if reused else ""),
                                  result.target, duration=result.duration,
                                  exit_code=result.exit_code, detail=detail))
        return status

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


#: How a reused read is shown, after its command.
REUSED = " (reused from the plan)"


def failure_reason(result: CommandResult) -> str:
    """Why a command failed, in a few words: its error (never started, timed out, dropped)
    or its exit code."""
    return result.error or ("timed out" if result.timed_out else f"exit code {result.exit_code}")


class _Ended(Protocol):
    @property
    def ok(self) -> bool: ...

    @property
    def outcome(self) -> Outcome: ...


def step_status(result: _Ended) -> StepStatus:
    """ok, failed (it ran and said no), error (it never started) or unknown (it may have
    run: timed out, or the connection dropped after it was sent), from the outcome its
    target set."""
    if result.ok:
        return StepStatus.OK
    return _STEP_STATUS[result.outcome]


_STEP_STATUS = {Outcome.FINISHED: StepStatus.FAILED, Outcome.NOT_STARTED: StepStatus.ERROR,
                Outcome.UNKNOWN: StepStatus.UNKNOWN}


class _Remote(RemoteHost):
    def __init__(self, ctx: RunContext, spec: HostSpec) -> None:
        self._ctx = ctx
        self._spec = spec

    @property
    def name(self) -> str:
        return self._spec.name

    def run(self, cmd: str | Command, *, readonly: bool = False, timeout: float | None = None,
            check: bool = True, idempotent: bool = False,
            env: Mapping[str, Any] | None = None, **variables: Any) -> CommandResult:
        ctx = self._ctx
        command = ctx._render(cmd, variables, readonly=readonly, env=env)
        if not readonly and ctx.mode is Mode.DRY_RUN:
            return ctx._planned(self._spec.name, command)
        target = ctx._scope.pool.ssh(self._spec)
        return ctx._command(target, command, readonly=readonly, timeout=timeout, check=check,
                            idempotent=idempotent)


class _Group(HostGroup):
    def __init__(self, ctx: RunContext, specs: list[HostSpec], *, max_concurrency: int,
                 max_errors: int, asked: object) -> None:
        self._ctx = ctx
        self._specs = specs
        self._max_concurrency = max_concurrency
        self._max_errors = max_errors
        self._asked = asked

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(spec.name for spec in self._specs)

    def run(self, cmd: str | Command, *, readonly: bool = False, timeout: float | None = None,
            check: bool = True, env: Mapping[str, Any] | None = None,
            **variables: Any) -> HostsResult:
        from selfdrive.targets.fanout import fan_out

        ctx, s = self._ctx, self._ctx._scope
        command = ctx._render(cmd, variables, readonly=readonly, env=env)
        if not self._specs:
            ctx.log(f"warning: {self._asked!r} matched no host; nothing ran")
            return HostsResult(results={})
        if not readonly and ctx.mode is Mode.DRY_RUN:
            return HostsResult(results={spec.name: ctx._planned(spec.name, command)
                                        for spec in self._specs})
        targets = [s.pool.ssh(spec) for spec in self._specs]
        progress = _Progress(s.observer, len(targets))
        for target in targets:
            ctx._changing(target.name, readonly=readonly)
        takes = [(t, r) for t in targets if readonly and s.reads is not None
                 and (r := s.reads.take(s.phase, t, command)) is not None]
        reused: dict[str, CommandResult] = {}
        if takes:
            with s.sink.batch(f"record the reads taken from the plan: {command}"):
                reused = {t.name: ctx._reused(t, command, r) for t, r in takes}

        def on_start(target: Target, cmd: Command) -> int:
            token = ctx.begin(target.name, cmd, readonly=readonly)
            progress.started()
            return token

        def on_finish(target: Target, cmd: Command, result: CommandResult, token: object) -> None:
            assert isinstance(token, int)
            status = ctx.finish(token, result)
            if readonly and s.reads is not None:
                s.reads.record(s.phase, target, cmd, result, status, token)
            progress.finished(status == "ok")

        limit = min(timeout or s.command_timeout, ctx._check_deadline())
        fan = fan_out([t for t in targets if t.name not in reused], lambda _target: command,
                      timeout=limit, max_concurrency=self._max_concurrency,
                      max_errors=self._max_errors, on_start=on_start, on_finish=on_finish)
        if fan.skipped:
            ctx.log(f"fan-out stopped after {len(fan.failed)} failure(s) (max_errors "
                    f"{self._max_errors}): {len(fan.skipped)} host(s) not started: "
                    f"{', '.join(fan.skipped)}")
        ran = fan.results
        result = HostsResult(results={t.name: reused.get(t.name) or ran[t.name]
                                      for t in targets if t.name in reused or t.name in ran},
                             skipped=tuple(fan.skipped))
        if check and not result.ok:
            failed = ", ".join(f"{host} ({failure_reason(result[host])})"
                               for host in result.failed)
            skipped = (f"; not started: {', '.join(result.skipped)} (max_errors "
                       f"{self._max_errors})" if result.skipped else "")
            raise CommandFailedError(s.redact(
                f"{command} failed on {len(result.failed)} of {len(self._specs)} host(s): "
                f"{failed or 'none'}{skipped}") or "")
        return result


class _Progress:
    """Live fan-out counts for the terminal: done / failed / running."""

    def __init__(self, observer: Observer, total: int) -> None:
        self._observer = observer
        self._total = total
        self._running = self._done = self._failed = 0
        self._lock = threading.Lock()

    def started(self) -> None:
        with self._lock:
            self._running += 1

    def finished(self, ok: bool) -> None:
        with self._lock:
            self._running -= 1
            self._done += 1
            self._failed += 0 if ok else 1
            text = (f"  hosts: {self._done}/{self._total} done, {self._failed} failed, "
                    f"{self._running} running")
        self._observer.message(text)
