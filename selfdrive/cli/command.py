"""What every selfdrive command shares: ``--as`` before or after the command name, and
arguments that are text.

Every command and group is built with ``cls=Command`` / ``cls=Group`` (a group's own
subcommands get them by default), so neither can be forgotten on one command.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

AS_HELP = "Who is acting (default: $SELFDRIVE_USER, else the OS user)."


def check_text(ctx: click.Context, param: click.Parameter, value: str) -> None:
    """Refuse a value whose bytes are not UTF-8, naming the option and showing the bytes.

    The journal records what people type (parameters, reasons, names), and it holds
    text: such a value would otherwise fail deep inside a write, with a traceback.
    """
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        from selfdrive.sdk.text import not_utf8, printable  # not before it is needed: --help

        raise click.BadParameter(f"'{printable(value)}': {not_utf8(value)}; give it as UTF-8 "
                                 f"text", ctx=ctx, param=param) from None


def utf8_folder(folder: Path, what: str) -> Path:
    """``folder`` (resolved), refused when its path is not UTF-8 (a project could not
    record its files; ``selfdrive.toml`` is refused there for the same reason)."""
    from selfdrive.sdk.text import not_utf8, printable

    resolved = folder.resolve()
    why = not_utf8(str(resolved))
    if why is not None:
        from selfdrive.sdk.errors import UsageError

        raise UsageError(f"{what} {printable(str(resolved))}: {why}; selfdrive records the "
                         f"paths of a project's files in its journal, which holds text: "
                         f"choose a folder whose path is UTF-8; nothing was written")
    return resolved


def _acting_as(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """Record ``--as`` on the root context, where the session reads it, wherever given."""
    if value is None:
        return
    check_text(ctx, param, value)
    root = ctx.find_root()
    if root.obj is None:
        root.obj = {}
    before = root.obj.get("acting_as")
    if before is not None and before != value:
        raise click.UsageError(f"--as {value!r} after the command name differs from --as "
                               f"{before!r} before it; give one", ctx=ctx)
    root.obj["acting_as"] = value


def _as_option() -> click.Option:
    return click.Option(["--as", "acting_as"], metavar="NAME", help=AS_HELP,
                        expose_value=False, callback=_acting_as)


class _Checked(click.Command):
    """Checks every parsed text value once parsing is done, file paths too: a project's
    paths are recorded in the journal, and a folder is no use to selfdrive if they
    cannot be."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.params.append(_as_option())

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        rest = super().parse_args(ctx, args)
        for param in self.get_params(ctx):
            if param.name is None or param.name not in ctx.params:
                continue
            value = ctx.params[param.name]
            for item in value if isinstance(value, tuple | list) else (value,):
                text = os.fspath(item) if isinstance(item, os.PathLike) else item
                if isinstance(text, str):
                    check_text(ctx, param, text)
        return rest


class Command(_Checked):
    """A selfdrive command: takes ``--as``; refuses text that is not UTF-8."""


class Group(_Checked, click.Group):
    """A selfdrive group: as :class:`Command`, and its subcommands are too."""

    command_class = Command
    group_class = type  # subgroups are of this group's class
