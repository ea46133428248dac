"""``selfdrive journal copy``: move a team's history to another journal."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from selfdrive.cli.command import Command, Group
from selfdrive.cli.render import emit_json

if TYPE_CHECKING:
    from selfdrive.config.location import JournalUrl


@click.group(cls=Group)
def journal() -> None:
    """The journal itself: copy it to another database."""


def _location(value: str, what: str, *, must_exist: bool) -> Path | JournalUrl:
    from selfdrive.config.location import JournalUrl, is_url
    from selfdrive.sdk.errors import UsageError

    if is_url(value):
        return JournalUrl.parse(value, key=what)
    path = Path(value).expanduser().resolve()
    if must_exist and not path.is_file():
        raise UsageError(f"{what}: no journal file {path}")
    return path


@journal.command("copy", cls=Command)
@click.argument("source")
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
def copy(source: str, target: str, as_json: bool) -> None:
    """Copy every row of the journal SOURCE into the empty journal TARGET, the audit chain
    intact, then audit the copy.

    Each is a SQLite file or a postgresql://user@host/db address (the password from
    PGPASSWORD or a password file). Writers of SOURCE wait while it is copied. Point
    the team's `journal =` at TARGET once this says ok.
    """
    from selfdrive.journal.copy import copy_journal
    from selfdrive.journal.store import open_journal

    src = open_journal(_location(source, "SOURCE", must_exist=True), recover=False)
    try:
        dst = open_journal(_location(target, "TARGET", must_exist=False), recover=False)
        try:
            report = copy_journal(src, dst)
        finally:
            dst.close()
    finally:
        src.close()
    audit = report.audit
    assert audit is not None
    if as_json:
        emit_json({"ok": report.ok, "rows": report.rows, "head": audit.head,
                   "source_head": report.source_head, "events": audit.checked,
                   "broken": audit.broken,
                   "disagreements": [str(d) for d in audit.disagreements]})
    else:
        for table, count in report.rows.items():
            click.echo(f"{table:<17} {count:>9} row(s)")
        verdict = "ok" if report.ok else "FAILED"
        click.echo(f"{verdict}: {audit.checked} event(s) copied, chain intact on the copy: "
                   f"{audit.ok}; head {audit.head} (source: {report.source_head})")
    if not report.ok:
        raise SystemExit(1)
