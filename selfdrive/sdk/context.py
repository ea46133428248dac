"""The context: the only door a runbook has to side effects."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from selfdrive.sdk.command import Command
from selfdrive.sdk.vocabulary import Mode, Outcome


@dataclass(frozen=True)
class CommandResult:
    """What one command did on one target.

    ``planned`` results come from dry-run: the command was recorded, not run; they
    report ``ok`` so that a plan follows the runbook's success path. ``exit_code`` is
    ``None`` when the command did not finish: ``outcome`` then says, as the target that
    ran it knows, whether it certainly never started (``not_started``) or may have run
    (``unknown``, the default: erring towards unknown is deliberate). A result with an
    exit code is ``finished``; a planned one ``not_started``.
    """

    command: Command
    target: str
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    planned: bool = False
    timed_out: bool = False
    error: str | None = field(default=None)
    outcome: Outcome = Outcome.UNKNOWN

    def __post_init__(self) -> None:
        if self.planned:
            object.__setattr__(self, "outcome", Outcome.NOT_STARTED)
        elif self.exit_code is not None:
            object.__setattr__(self, "outcome", Outcome.FINISHED)
        elif self.outcome is Outcome.FINISHED:
            raise ValueError(f"{self.command}: a finished command has an exit code")
        elif self.timed_out:
            object.__setattr__(self, "outcome", Outcome.UNKNOWN)

    @property
    def ok(self) -> bool:
        return self.planned or self.exit_code == 0


@dataclass(frozen=True)
class HostsResult:
    """One command on many hosts: each host's result, in the order the hosts were given.

    Hosts that never started (because ``max_errors`` hosts had already failed, or the
    run was halted) are listed in ``skipped`` and have no result.
    """

    results: Mapping[str, CommandResult]
    skipped: tuple[str, ...] = ()

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(name for name, r in self.results.items() if not r.ok)

    @property
    def succeeded(self) -> tuple[str, ...]:
        return tuple(name for name, r in self.results.items() if r.ok)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped

    def __getitem__(self, host: str) -> CommandResult:
        return self.results[host]


@dataclass(frozen=True)
class AnsibleChange:
    """A change Ansible made, or predicted in check mode, on one host.

    ``unpredictable``: check mode skipped the task (``shell``, ``command`` …), so it may
    change the host in ways no diff shows; ``diff`` then says what it would run.
    """

    host: str
    task: str
    diff: str = ""
    unpredictable: bool = False


@dataclass(frozen=True)
class AnsibleResult:
    """What a playbook did (or, in check mode, would do) on each host."""

    playbook: str
    rc: int | None
    check: bool
    changes: tuple[AnsibleChange, ...] = ()
    failures: Mapping[str, str] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.failures and self.error is None


class RemoteHost(abc.ABC):
    """``ctx.ssh(host)``: a cheap handle; the connection opens on first use."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The host's inventory name (or its raw address when the team allows those)."""

    @abc.abstractmethod
    def run(self, cmd: str | Command, *, readonly: bool = False, timeout: float | None = None,
            check: bool = True, idempotent: bool = False,
            env: Mapping[str, Any] | None = None, **variables: Any) -> CommandResult:
        """Run a command on the host, as :meth:`Context.run` does locally.

        A command whose outcome is unknown (it timed out, or the connection dropped
        after it was sent) is retried once only when ``idempotent=True``. A command
        that failed, or never started (host key unknown, connection refused), raises
        :class:`~selfdrive.sdk.errors.CommandFailedError` unless ``check=False``.
        ``env`` variables are exported in the command's own shell (no ``AcceptEnv``
        needed).
        """


class HostGroup(abc.ABC):
    """``ctx.hosts(...)``: one command on many hosts in parallel."""

    @property
    @abc.abstractmethod
    def names(self) -> tuple[str, ...]:
        """The resolved host names, in order; empty means nothing will run."""

    @abc.abstractmethod
    def run(self, cmd: str | Command, *, readonly: bool = False, timeout: float | None = None,
            check: bool = True, env: Mapping[str, Any] | None = None,
            **variables: Any) -> HostsResult:
        """Run on every host, at most ``max_concurrency`` at once; once ``max_errors``
        hosts have failed, no new host starts.

        When any host failed or was not started, raises
        :class:`~selfdrive.sdk.errors.CommandFailedError` naming them, unless
        ``check=False`` (then read ``.failed`` and ``.skipped``).
        """


class Context(abc.ABC):
    """What a runbook, its preconditions, verifications and rollback receive.

    The executor provides a live, a planning and a read-only implementation; the
    testing kit provides a fake. A runbook never reaches a target any other way, which
    is what keeps dry-run honest.
    """

    @property
    @abc.abstractmethod
    def run_id(self) -> str:
        """The journal id of the run this context belongs to."""

    @property
    @abc.abstractmethod
    def mode(self) -> Mode:
        """How the run executes; ``Mode.DRY_RUN`` while planning."""

    @property
    def dry_run(self) -> bool:
        return self.mode is Mode.DRY_RUN

    @property
    @abc.abstractmethod
    def params(self) -> Mapping[str, Any]:
        """The run's validated parameters (``SecretStr`` values stay wrapped)."""

    @abc.abstractmethod
    def run(self, cmd: str | Command, *, readonly: bool = False, timeout: float | None = None,
            check: bool = True, env: Mapping[str, Any] | None = None,
            **variables: Any) -> CommandResult:
        """Run a local shell command rendered from the template ``cmd``.

        Variables come from the run's parameters and ``variables``; every value is
        shell-quoted unless marked safe. A mutating command (``readonly=False``) is
        only recorded during dry-run and refused in a read-only context. ``timeout``
        (seconds) is capped by what is left of the runbook's timeout.

        As in Invoke and Fabric, a command that fails (a non-zero exit, a timeout, or
        it never started) raises :class:`~selfdrive.sdk.errors.CommandFailedError`, so
        a body cannot go on past it by accident; ``check=False`` returns the result
        instead, for commands whose failure is an answer (``test -f``, ``grep -q``).

        The command's environment is the team's allow-list (``[executor] env_allow``)
        plus ``env``, for this command alone: ``{"NAME": value}``, where a ``SecretStr``
        value reaches the command and is masked everywhere it is recorded or shown.
        """

    @abc.abstractmethod
    def ssh(self, host: str, *, user: str | None = None, port: int | None = None) -> RemoteHost:
        """A handle on one host of the team's inventory; host keys are checked strictly."""

    @abc.abstractmethod
    def hosts(self, names_or_group: str | list[str], *, max_concurrency: int = 10,
              max_errors: int = 1) -> HostGroup:
        """Many hosts (names or a group of the inventory) for one command in parallel."""

    @abc.abstractmethod
    def ansible(self, playbook: str | list[dict[str, Any]], *, hosts: str | list[str],
                extravars: Mapping[str, Any] | None = None, readonly: bool = False,
                timeout: float | None = None, check: bool = True) -> AnsibleResult:
        """Run a playbook (a file relative to the team's folder, or tasks as data).

        In dry-run it runs in check mode with diff: the plan carries Ansible's own
        predicted changes with their diffs, and each task check mode skips (``shell``,
        ``command`` …) as a possible change on its hosts. ``readonly=True`` declares
        that it changes nothing. A failed playbook (a host failed or was unreachable)
        raises :class:`~selfdrive.sdk.errors.CommandFailedError` unless ``check=False``
        (which has nothing to do with Ansible's check mode: the run's mode decides that).
        """

    @abc.abstractmethod
    def log(self, message: str) -> None:
        """Record a line of text on the run (shown by ``logs`` and reports)."""

    @abc.abstractmethod
    def note(self, key: str, value: Any) -> None:
        """Record a fact on the run (JSON-serialisable), e.g. bytes freed."""
