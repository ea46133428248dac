"""Helpers shared by the library's runbooks (skipped by the registry: leading ``_``)."""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import BeforeValidator, StringConstraints

from selfdrive import CommandResult, Context, Operand

# Names, paths and URLs are Operands first: whatever a pattern allows, they are never
# empty, never start with '-' (read as an option) and never hold a NUL byte.

#: Parameters that name a host of the team's inventory (``None``: this machine).
HostName = Annotated[Operand, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@:\[\]-]*$")]
#: An absolute, normalised path: no ``..``, no trailing slash, no doubled slashes.
AbsPath = Annotated[Operand, StringConstraints(pattern=r"^/(?:[^/\x00]+/)*[^/\x00]*$")]

T = TypeVar("T")


def _as_list(value: object) -> object:
    return [value] if isinstance(value, str) else value


#: A list parameter that also takes one value: ``-p allow=java`` (the CLI makes a list
#: only when a key repeats) and alert templates, which render one string.
OneOrMore = Annotated[list[T], BeforeValidator(_as_list)]

#: Folders a runbook must never clean or rewrite wholesale.
PROTECTED_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/opt",
    "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/usr", "/var", "/var/lib",
    "/var/log", "/tmp",  # noqa: S108 - a folder refused, not one used
})


class Runner(Protocol):
    """What ``ctx`` and ``ctx.ssh(host)`` have in common: ``run``."""

    def run(self, cmd: str, *, readonly: bool = False, timeout: float | None = None,
            check: bool = False, **variables: Any) -> CommandResult: ...


def where(ctx: Context, host: str | None) -> Runner:
    """Commands go to ``host`` over SSH when one is named, else to this machine."""
    return ctx if host is None else ctx.ssh(host)


def normalised(path: str) -> str:
    """``path`` without ``.``/``..`` segments or a trailing slash (no symlinks resolved)."""
    return posixpath.normpath(path) if path else path


def is_protected(path: str) -> bool:
    return normalised(path) in PROTECTED_DIRS


#: How the library runs a command given as a parameter (``restart_command=`` …): the value
#: is ONE quoted argument of ``sh -c``, and ``$1`` inside it is what the runbook passes.
#: Such parameters are code: set them by hand or in a wrapper runbook, never map them
#: from alert labels.
SCRIPT = "sh -c {{ script }} sh {{ arg }}"


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def sql_literal(value: str) -> str:
    """A PostgreSQL string literal (standard_conforming_strings is on since 9.1)."""
    if "\x00" in value:
        raise ValueError("a NUL byte cannot be part of a SQL literal")
    return "'" + value.replace("'", "''") + "'"


INTEGER = re.compile(r"^\d+$")
