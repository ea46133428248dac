"""FakeContext: scripted targets behind the executor's own context.

A runbook test scripts what each command returns on each target; the fake answers
from those scripts and records every call. Everything between the runbook and the
target is the executor's :class:`~selfdrive.executor.contexts.RunContext`: templates
render and mask the same way, a mutating command is refused in a read-only phase and
only recorded in dry-run, host names resolve through the same inventory rules. That
is what keeps a fake plan's hash equal to a real one.

An unscripted command raises :class:`UnscriptedCommand`, a ``BaseException`` so that
a runbook's own ``except Exception`` cannot turn a missing script into a pass.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from selfdrive.executor.clocks import RecordingClock
from selfdrive.executor.contexts import RunContext, Scope
from selfdrive.executor.observe import SilentObserver
from selfdrive.executor.pool import TargetPool
from selfdrive.executor.redact import Redactor
from selfdrive.executor.sinks import MemorySink, StepSink
from selfdrive.sdk.command import Command, render_command
from selfdrive.sdk.context import (
    AnsibleChange,
    AnsibleResult,
    CommandResult,
    Context,
    HostGroup,
    RemoteHost,
)
from selfdrive.sdk.errors import ReadOnlyViolationError, UsageError
from selfdrive.sdk.vocabulary import Mode, Outcome
from selfdrive.targets.base import Intent

if TYPE_CHECKING:
    from selfdrive.config.model import TeamConfig
    from selfdrive.sdk.runbook import Runbook
    from selfdrive.targets.inventory import HostSpec

Pattern = str | re.Pattern[str]
ANY = None


class UnscriptedCommand(BaseException):
    """A command reached a fake target and no script answers it.

    A ``BaseException`` on purpose: ``except Exception`` in a runbook, or the
    executor's treatment of a failing check as "unmet", must not hide it.
    """


@dataclass
class _Script:
    command: Pattern
    targets: frozenset[str] | None
    stdout: str
    stderr: str
    exit_code: int | None
    error: str | None
    timed_out: bool
    times: int | None
    outcome: Outcome
    used: int = 0

    def matches(self, target: str, masked: str) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        if self.targets is not None and target not in self.targets:
            return False
        if isinstance(self.command, re.Pattern):
            return self.command.search(masked) is not None
        return masked == self.command

    def describe(self) -> str:
        what = (f"re.compile({self.command.pattern!r})" if isinstance(self.command, re.Pattern)
                else repr(self.command))
        where = "any target" if self.targets is None else ", ".join(sorted(self.targets))
        return f"{what} on {where}"


@dataclass
class _AnsibleScript:
    playbook: str | None
    hosts: frozenset[str] | None
    check: bool | None
    changed: tuple[str, ...]
    failed: Mapping[str, str]
    diff: str | Mapping[str | tuple[str, str], str]
    unpredictable: tuple[str, ...]

    def diff_of(self, task: str, host: str) -> str:
        if isinstance(self.diff, str):
            return self.diff
        return self.diff.get((task, host), self.diff.get(task, ""))
    rc: int | None
    error: str | None
    times: int | None
    used: int = 0

    def matches(self, name: str, hosts: Sequence[str], check: bool) -> bool:
        if self.times is not None and self.used >= self.times:
            return False
        if self.playbook is not None and self.playbook != name:
            return False
        if self.check is not None and self.check != check:
            return False
        return self.hosts is None or set(hosts) <= self.hosts


@dataclass(frozen=True)
class FakeCall:
    """One command that reached a fake target, and what the fake answered."""

    target: str
    command: str
    phase: str | None
    readonly: bool | None
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    scripted: bool = True
    #: The variables the command was given (``env=``), secret values masked.
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FakeAnsibleCall:
    """One ``ctx.ansible`` call: the playbook's name, its hosts, check mode, extravars (masked)."""

    playbook: str
    hosts: tuple[str, ...]
    check: bool
    readonly: bool
    phase: str | None
    extravars: Mapping[str, Any] = field(default_factory=dict)


class _Tap:
    """Passes steps to the real sink and tells the fake which step a command belongs to."""

    def __init__(self, sink: StepSink, local: threading.local) -> None:
        self.sink = sink
        self._local = local

    def begin(self, phase: str, kind: str, **fields: Any) -> int:
        if kind == "command" and not fields.get("planned"):
            self._local.step = (phase, bool(fields.get("readonly")), fields.get("target"),
                                fields.get("command"))
        return self.sink.begin(phase, kind, **fields)

    def finish(self, token: int, status: str, **fields: Any) -> None:
        self.sink.finish(token, status, **fields)

    def batch(self, doing: str) -> contextlib.AbstractContextManager[None]:
        return self.sink.batch(doing)


class FakeTarget:
    """A target that answers from the fake's scripts (``Target`` protocol).

    A script that times out took the command's whole time limit: on ``clock``, the
    simulated time moves on by that limit, so the run's deadline passes where a real
    run's would.
    """

    def __init__(self, fake: FakeContext, name: str,
                 clock: RecordingClock | None = None) -> None:
        self._fake = fake
        self.name = name
        self._clock = clock

    def run(self, command: Command, timeout: float, *,
            intent: Intent | None = None) -> CommandResult:
        if intent is not None:
            intent(None)
        result = self._fake._answer(self.name, command)
        if result.timed_out and self._clock is not None:
            self._clock.advance(timeout)
        return result

    def close(self) -> None:
        return None


class FakePool(TargetPool):
    """The executor's target pool with every target (local and SSH) a :class:`FakeTarget`."""

    def __init__(self, config: TeamConfig, fake: FakeContext,
                 clock: RecordingClock | None = None) -> None:
        super().__init__(config, FakeTarget(fake, "local", clock))
        self._fake = fake
        self._clock = clock

    def ssh(self, spec: HostSpec) -> FakeTarget:
        return FakeTarget(self._fake, spec.name, self._clock)

    def close(self) -> None:
        return None


class FakeRunContext(RunContext):
    """The executor's RunContext, except that ``ctx.ansible`` answers from the fake."""

    def __init__(self, scope: Scope, fake: FakeContext) -> None:
        super().__init__(scope)
        self._fake = fake

    def for_phase(self, phase: str, *, readonly: bool, hook: str | None = None) -> RunContext:
        return FakeRunContext(replace(self.scope, phase=phase, readonly=readonly, hook=hook),
                              self._fake)

    def with_deadline(self, deadline: float) -> RunContext:
        return FakeRunContext(replace(self.scope, deadline=deadline), self._fake)

    def ansible(self, playbook: str | list[dict[str, Any]], *, hosts: str | list[str],
                extravars: Mapping[str, Any] | None = None, readonly: bool = False,
                timeout: float | None = None, check: bool = True) -> AnsibleResult:
        from selfdrive.executor.ansible import raise_if_failed
        from selfdrive.executor.reads import EVERY_TARGET

        self._changing(EVERY_TARGET, readonly=readonly)
        return raise_if_failed(self._fake._ansible(self, playbook, hosts=hosts,
                                                   extravars=extravars or {},
                                                   readonly=readonly), check=check)


def fake_config(groups: Mapping[str, Sequence[str]] | None = None) -> TeamConfig:
    """A team config for fakes: the hosts of ``groups`` in the inventory, and any other
    name accepted as a raw address (a fake has nowhere to connect to anyway)."""
    from selfdrive.config.model import TeamConfig

    groups = {g: list(hosts) for g, hosts in (groups or {}).items()}
    hosts = {h: {"address": "127.0.0.1"} for members in groups.values() for h in members}
    return TeamConfig.model_validate({"team": "fake", "ssh": {"allow_raw_addresses": True},
                                      "inventory": {"hosts": hosts, "groups": groups}})


class FakeContext(Context):
    """A context whose targets answer from scripts. Use it three ways:

    * ``plan_of(rb, fake, **params)`` and ``simulate(rb, fake, **params)`` (the usual);
    * directly, as the ``ctx`` of a runbook or hook: ``fake.call(rb, **params)``;
    * as the source of scripts for the executor (``fake.pool()``).

    ``fake.on(command, stdout=…, exit_code=…, target="local")`` scripts a command:
    ``command`` is the rendered, masked command, exactly (a string) or searched (a
    compiled pattern); ``target`` is ``"local"``, a host name, several, or ``None``
    for any. Scripts are tried in the order they were added; one with ``times=N``
    answers N times, then steps aside for the next. ``live=True`` makes the direct
    context run its changes against the fakes (else they are only planned);
    ``default_ok=True`` answers an unscripted *change* with exit 0 — never a read.
    """

    def __init__(self, *, live: bool = False, default_ok: bool = False,
                 config: TeamConfig | None = None,
                 groups: Mapping[str, Sequence[str]] | None = None,
                 params: Mapping[str, Any] | None = None) -> None:
        if config is not None and groups:
            raise ValueError("FakeContext: give config= or groups=, not both")
        self.live = live
        self.default_ok = default_ok
        self.config = config if config is not None else fake_config(groups)
        self.calls: list[FakeCall] = []
        self.ansible_calls: list[FakeAnsibleCall] = []
        self.unscripted: list[str] = []
        self._scripts: list[_Script] = []
        self._ansible_scripts: list[_AnsibleScript] = []
        self._lock = threading.Lock()
        self._local = threading.local()
        self._params: dict[str, Any] = dict(params or {})
        self._sink = MemorySink()
        self._ctx: FakeRunContext | None = None

    # -- scripting -------------------------------------------------------------------

    def on(self, command: Pattern, *, stdout: str = "", stderr: str = "",
           exit_code: int | None = 0, target: str | Sequence[str] | None = "local",
           times: int | None = None, error: str | None = None,
           timed_out: bool = False, outcome: Outcome | str = Outcome.UNKNOWN) -> FakeContext:
        """Script what ``command`` returns on ``target``; returns the fake, for chaining.

        ``exit_code=None`` makes a command that did not finish: ``timed_out=True`` (it
        took its whole time limit), or an ``error`` with ``outcome="not_started"`` (it
        was certainly never sent) or ``"unknown"`` (the default: it may have run), as a
        real target reports them.
        """
        outcome = Outcome(outcome)
        if exit_code is not None and outcome is not Outcome.UNKNOWN:
            raise ValueError("fake.on(outcome=) is for a command without an exit code")
        if not isinstance(command, str | re.Pattern):
            raise TypeError(f"fake.on(): command must be a string or re.compile(...), "
                            f"not {type(command).__name__}")
        if times is not None and times < 1:
            raise ValueError("fake.on(times=) must be at least 1")
        targets = None if target is None else (
            frozenset([target]) if isinstance(target, str) else frozenset(target))
        with self._lock:
            self._scripts.append(_Script(command, targets, stdout, stderr, exit_code, error,
                                         timed_out, times, outcome))
        return self

    def on_ansible(self, playbook: str | None = None, *,
                   hosts: str | Sequence[str] | None = None, check: bool | None = None,
                   changed: Sequence[str] = (), failed: Mapping[str, str] | None = None,
                   diff: str | Mapping[str | tuple[str, str], str] = "",
                   unpredictable: Sequence[str] = (),
                   rc: int | None = None, error: str | None = None,
                   times: int | None = None) -> FakeContext:
        """Script ``ctx.ansible``: on each host of the call, the tasks in ``changed`` report a
        change (predicted, in check mode) unless the host is in ``failed`` (host → message).

        ``playbook`` is the file name or ``"inline playbook"`` (``None``: any); ``hosts``
        limits the script to calls whose hosts are all among them; ``check`` to check
        mode (True) or real runs (False). ``diff`` is every change's diff, or one per
        task name or per ``(task, host)``. ``unpredictable`` names those of the
        ``changed`` tasks that check mode skips (``shell`` …): in a plan, a possible
        change on each host, whose ``diff`` says what it would run. ``rc`` defaults to 2
        when a host failed, else 0.
        """
        stray = [t for t in unpredictable if t not in changed]
        if stray:
            raise UsageError(f"on_ansible(unpredictable=…): {', '.join(map(repr, stray))} "
                             f"not among the changed tasks {list(changed)!r}")
        names = None if hosts is None else (
            frozenset([hosts]) if isinstance(hosts, str) else frozenset(hosts))
        with self._lock:
            self._ansible_scripts.append(_AnsibleScript(
                playbook, names, check, tuple(changed), dict(failed or {}),
                diff if isinstance(diff, str) else dict(diff), tuple(unpredictable), rc,
                error, times))
        return self

    # -- what happened ---------------------------------------------------------------

    def commands(self, target: str | None = None, *, phase: str | None = None) -> list[str]:
        """Masked commands that reached the fakes, in order; ``target``/``phase`` filter."""
        return [c.command for c in self.calls
                if (target is None or c.target == target) and (phase is None or c.phase == phase)]

    @property
    def planned(self) -> list[tuple[str, str]]:
        """Changes the direct context recorded without running them: (target, command)."""
        return [(s.get("target") or "", s.get("command") or "") for s in self._sink.steps
                if s["kind"] in ("command", "ansible-change") and s.get("planned")]

    @property
    def logs(self) -> list[str]:
        """What the direct context's ``ctx.log`` recorded (redacted)."""
        return [s.get("stdout") or "" for s in self._sink.steps if s["kind"] == "log"]

    @property
    def notes(self) -> dict[str, Any]:
        """What the direct context's ``ctx.note`` recorded (redacted); the last value wins."""
        return {s["name"]: s.get("data") for s in self._sink.steps if s["kind"] == "note"}

    def unused(self) -> list[str]:
        """Scripts that never answered: stale scripts hide what a test thinks it checks."""
        return [s.describe() for s in self._scripts if s.used == 0]

    def check_scripted(self) -> None:
        """Raise :class:`UnscriptedCommand` if any command went unanswered, even one that
        the runbook's own code caught and swallowed."""
        if self.unscripted:
            raise UnscriptedCommand("commands with no script:\n  " + "\n  ".join(self.unscripted))

    # -- the targets -----------------------------------------------------------------

    def pool(self, clock: RecordingClock | None = None) -> FakePool:
        """A target pool for the executor whose every target is this fake; a command
        scripted to time out moves ``clock`` on by its time limit."""
        return FakePool(self.config, self, clock)

    def tap(self, sink: StepSink) -> StepSink:
        """Wrap a step sink so the fake knows each command's phase and whether it changes things."""
        return _Tap(sink, self._local)

    def context(self, scope: Scope) -> FakeRunContext:
        """The executor's context over ``scope``, with ``ctx.ansible`` answered by this fake."""
        return FakeRunContext(scope, self)

    def _answer(self, target: str, command: Command) -> CommandResult:
        masked = command.masked
        phase: str | None = None
        readonly: bool | None = None
        step = getattr(self._local, "step", None)
        if step is not None and step[2] == target and step[3] == masked:
            phase, readonly = step[0], step[1]
        with self._lock:
            script = next((s for s in self._scripts if s.matches(target, masked)), None)
            if script is not None:
                script.used += 1
        if script is None:
            if self.default_ok and readonly is False:
                with self._lock:
                    self.calls.append(FakeCall(target, masked, phase, readonly, 0,
                                               scripted=False, env=dict(command.masked_env)))
                return CommandResult(command=command, target=target, exit_code=0)
            hint = "" if readonly is False or not self.default_ok else \
                " (default_ok answers changes only, never reads)"
            message = (f"no script answers {masked!r} on {target!r}"
                       f"{f' in {phase}' if phase else ''}{hint}; add "
                       f"fake.on({masked!r}, target={target!r}, stdout=...)")
            near = [s.describe() for s in self._scripts
                    if s.targets is None or target in s.targets][:5]
            if near:
                message += "\n  scripts for this target: " + "; ".join(near)
            with self._lock:
                self.unscripted.append(message)
            raise UnscriptedCommand(message)
        with self._lock:
            self.calls.append(FakeCall(target, masked, phase, readonly, script.exit_code,
                                       script.stdout, script.stderr,
                                       env=dict(command.masked_env)))
        return CommandResult(command=command, target=target, exit_code=script.exit_code,
                             stdout=script.stdout, stderr=script.stderr,
                             timed_out=script.timed_out, error=script.error,
                             outcome=script.outcome)

    def _ansible(self, ctx: RunContext, playbook: str | list[dict[str, Any]], *,
                 hosts: str | list[str], extravars: Mapping[str, Any],
                 readonly: bool) -> AnsibleResult:
        """``ctx.ansible`` as :func:`selfdrive.executor.ansible.run_ansible` records it,
        answered by a script instead of ansible-runner."""
        s = ctx.scope
        ctx.check_deadline()
        if not readonly and s.readonly:
            raise ReadOnlyViolationError(f"{s.phase} {s.hook or ''} tried to run a playbook "
                                         f"that changes things; pass readonly=True if it "
                                         f"only reads")
        from selfdrive.executor.ansible import playbook_name, record_change

        name = s.redact(playbook_name(playbook)) or ""
        specs = s.pool.hosts(hosts)
        check = s.mode is Mode.DRY_RUN and not readonly
        if not specs:
            ctx.log(f"warning: {hosts!r} matched no host; playbook {name} did not run")
            return AnsibleResult(playbook=name, rc=0, check=check)
        names = [spec.name for spec in specs]
        s.redact.learn(extravars.values())
        self.ansible_calls.append(FakeAnsibleCall(
            name, tuple(names), check, readonly, s.phase, s.redact.deep(dict(extravars))))
        with self._lock:
            script = next((a for a in self._ansible_scripts if a.matches(name, names, check)),
                          None)
            if script is not None:
                script.used += 1
        if script is None:
            message = (f"no script answers ansible {name!r} on {', '.join(names)} "
                       f"({'check mode' if check else 'not in check mode'}) in {s.phase}; add "
                       f"fake.on_ansible({name!r}, ...)")
            with self._lock:
                self.unscripted.append(message)
            raise UnscriptedCommand(message)
        label = (f"ansible-playbook {name} on {', '.join(names)}"
                 + (" --check --diff" if check else ""))
        token = s.sink.begin(s.phase, "ansible", target=",".join(names), command=label,
                             readonly=readonly or check, planned=False)
        failures = {h: s.redact(m) or "" for h, m in script.failed.items() if h in names}
        rc: int | None = script.rc if script.rc is not None else (2 if failures else 0)
        if script.error is not None:
            rc = script.rc
        ok = rc == 0 and not failures and script.error is None
        s.sink.finish(token, "ok" if ok else "failed", exit_code=rc,
                      error=s.redact(script.error) if script.error else
                      ("; ".join(f"{h}: {m}" for h, m in failures.items()) or None),
                      data={"check": check, "fake": True})
        changes = []
        # Task by task, each on every host, as Ansible's linear strategy reports them.
        for task in script.changed:
            unknown = check and task in script.unpredictable
            for host in (h for h in names if h not in failures):
                changes.append(record_change(ctx, name, AnsibleChange(
                    host=host, task=s.redact(task) or "",
                    diff=s.redact(script.diff_of(task, host)) or "", unpredictable=unknown),
                    check=check))
        return AnsibleResult(playbook=name, rc=rc, check=check, changes=tuple(changes),
                             failures=failures, error=s.redact(script.error))

    # -- the direct context ----------------------------------------------------------

    def _direct(self) -> FakeRunContext:
        if self._ctx is None:
            ex = self.config.executor
            self._ctx = FakeRunContext(Scope(
                run_id="fake", mode=Mode.APPROVAL if self.live else Mode.DRY_RUN,
                params=self._params, sink=self.tap(self._sink), pool=self.pool(),
                redact=Redactor.for_params(self._params), observer=SilentObserver(),
                deadline=time.monotonic() + 365 * 86400, output_limit=ex.output_limit,
                command_timeout=ex.command_timeout), self)
        return self._ctx

    def phase(self, phase: str, *, readonly: bool) -> Context:
        """This context as a given phase sees it, e.g. ``fake.phase("verify", readonly=True)``."""
        return self._direct().for_phase(phase, readonly=readonly)

    def call(self, rb: Runbook, **params: Any) -> Any:
        """Validate ``params`` and call the runbook's body with this context (no hooks)."""
        values = rb.validate_params(params)
        self._params = dict(values)
        self._ctx = None
        try:
            return rb.fn(self._direct(), **values)
        finally:
            self.check_scripted()

    @property
    def run_id(self) -> str:
        return "fake"

    @property
    def mode(self) -> Mode:
        return self._direct().mode

    @property
    def params(self) -> Mapping[str, Any]:
        return self._params

    def run(self, cmd: str | Command, *, readonly: bool = False, timeout: float | None = None,
            check: bool = True, env: Mapping[str, Any] | None = None,
            **variables: Any) -> CommandResult:
        return self._direct().run(cmd, readonly=readonly, timeout=timeout, check=check,
                                  env=env, **variables)

    def ssh(self, host: str, *, user: str | None = None, port: int | None = None) -> RemoteHost:
        return self._direct().ssh(host, user=user, port=port)

    def hosts(self, names_or_group: str | list[str], *, max_concurrency: int = 10,
              max_errors: int = 1) -> HostGroup:
        return self._direct().hosts(names_or_group, max_concurrency=max_concurrency,
                                    max_errors=max_errors)

    def ansible(self, playbook: str | list[dict[str, Any]], *, hosts: str | list[str],
                extravars: Mapping[str, Any] | None = None, readonly: bool = False,
                timeout: float | None = None, check: bool = True) -> AnsibleResult:
        return self._direct().ansible(playbook, hosts=hosts, extravars=extravars,
                                      readonly=readonly, timeout=timeout, check=check)

    def log(self, message: str) -> None:
        self._direct().log(message)

    def note(self, key: str, value: Any) -> None:
        self._direct().note(key, value)


def render(template: str, **variables: Any) -> str:
    """The masked command a template renders to: what ``fake.on`` must match exactly."""
    return render_command(template, variables).masked
