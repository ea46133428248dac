"""What a command needs, loaded on demand: config, registry, journal, identity."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

NOTIFY_FLUSH_SECONDS = 10.0

if TYPE_CHECKING:
    from selfdrive.config.model import TeamConfig
    from selfdrive.executor.engine import Executor
    from selfdrive.journal.core import Journal
    from selfdrive.notify.webhook import Notifier
    from selfdrive.registry.load import Registry


class Session:
    """One command's view of the team: built lazily, closed at the end."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self._config_path = obj.get("config_path")
        self._acting_as = obj.get("acting_as")
        self._journal: Journal | None = None

    @cached_property
    def config(self) -> TeamConfig:
        from selfdrive.config.load import load_config

        path = Path(self._config_path) if self._config_path else None
        return load_config(path)

    @cached_property
    def registry(self) -> Registry:
        from selfdrive.registry.load import load_registry

        return load_registry(self.config.runbook_dirs, entry_points=self.config.entry_points)

    @property
    def journal(self) -> Journal:
        if self._journal is None:
            self._journal = self.open_journal()
        return self._journal

    def open_journal(self, **options: Any) -> Journal:
        """A new connection to the team's journal, after crash recovery: runs of dead
        processes are marked interrupted, and what their playbooks left on disk (it may
        hold secrets) is removed."""
        from selfdrive.journal.store import open_journal
        from selfdrive.targets.private import private_root, sweep

        journal = open_journal(self.config.journal_location, **options)
        sweep(private_root(self.config.state_dir))
        return journal

    @cached_property
    def os_user(self) -> str:
        """From the uid, never from USER/LOGNAME, which anyone can set."""
        from selfdrive.config.model import current_os_user

        return current_os_user()

    @cached_property
    def actor(self) -> str:
        """Who is acting; refused when the team makes the OS user authoritative."""
        from selfdrive.sdk.errors import UsageError

        declared = self._acting_as or os.environ.get("SELFDRIVE_USER")
        if declared and not self._acting_as:  # --as was checked where it was parsed
            from selfdrive.sdk.text import not_utf8, printable

            why = not_utf8(declared)
            if why is not None:
                raise UsageError(f"$SELFDRIVE_USER '{printable(declared)}': {why}; set it to "
                                 f"UTF-8 text, or use --as NAME")
        if declared and declared != self.os_user and self.config.identity.os_user_authoritative:
            raise UsageError(f"this team makes the OS user authoritative: you are "
                             f"{self.os_user!r}, not {declared!r}; drop --as/SELFDRIVE_USER")
        return declared or self.os_user

    @cached_property
    def notifier(self) -> Notifier | None:
        if not self.config.notify.webhooks:
            return None
        from selfdrive.notify.webhook import Notifier

        def journal_failure(event: str, data: dict[str, Any]) -> None:
            from selfdrive.sdk.errors import JournalError

            try:
                self.journal.event("notification.failed", actor="selfdrive",
                                   run_id=data.get("run_id"), data={"event": event, **data})
            except JournalError as exc:  # on a delivery thread: say it, never crash there
                click.secho(f"warning: webhook {data.get('url')} failed ({data.get('error')}) "
                            f"and the journal could not record it: {exc}", fg="yellow",
                            err=True)

        return Notifier(self.config.notify.webhooks, root=self.config.root,
                        team=self.config.team, on_failure=journal_failure)

    def executor(self, *, quiet: bool = False, stdout: bool = False) -> Executor:
        from selfdrive.cli.render import TerminalObserver
        from selfdrive.executor.engine import Executor

        return Executor(self.config, self.registry, self.journal,
                        observer=TerminalObserver(quiet=quiet, stdout=stdout),
                        notifier=self.notifier)

    def warn_problems(self) -> None:
        for problem in self.registry.problems:
            click.secho(f"warning: {problem}", fg="yellow", err=True)

    def close(self) -> None:
        notifier = self.__dict__.get("notifier")
        if notifier is not None:
            notifier.flush(NOTIFY_FLUSH_SECONDS)  # bounded: the run itself is already recorded
        if self._journal is not None:
            self._journal.close()


def session() -> Session:
    ctx = click.get_current_context()
    found = ctx.meta.get("selfdrive.session")
    if found is None:
        found = Session(ctx.find_root().obj or {})
        ctx.meta["selfdrive.session"] = found
        ctx.call_on_close(found.close)
    assert isinstance(found, Session)
    return found


ENV_PREFIX = "@env:"


def parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``-p key=value`` pairs; a key given twice becomes a list.

    ``-p key=@env:NAME`` takes the value from environment variable NAME, so a secret
    never appears on a command line (where the process list would show it).
    """
    from selfdrive.sdk.errors import ParameterError
    from selfdrive.sdk.text import not_utf8

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ParameterError(f"-p {pair!r}: expected key=value")
        if value.startswith(ENV_PREFIX):
            name = value[len(ENV_PREFIX):]
            if name not in os.environ:
                raise ParameterError(f"-p {key}={value}: environment variable {name!r} is not "
                                     f"set")
            value = os.environ[name]
            if not_utf8(value) is not None:  # no detail: the value may be a secret
                raise ParameterError(f"-p {key}={ENV_PREFIX}{name}: the value of environment "
                                     f"variable {name!r} is not valid UTF-8 text")
        if key in out:
            out[key] = [*out[key], value] if isinstance(out[key], list) else [out[key], value]
        else:
            out[key] = value
    return out
