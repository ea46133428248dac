"""Helpers for the approval, guardrail, lock, notification and audit tests.

A :class:`Team` is a tmp project (selfdrive.toml, runbooks/, a journal under
.selfdrive/) driven through the installed ``selfdrive`` console script in real
subprocesses, with no terminal, and read back through a raw SQLite connection.
Who acts is always explicit: ``who="alice"`` becomes ``--as alice``.
"""

from __future__ import annotations

import json
import os
import pwd
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SELFDRIVE = str(Path(sys.executable).parent / "selfdrive")
TIMEOUT = 60

HEADER = 'team = "approvals-tests"\nentry_points = false\n'
#: Who selfdrive records as the OS user: the uid's name, whatever USER/LOGNAME say.
OS_USER = pwd.getpwuid(os.getuid()).pw_name


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any SELFDRIVE_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFDRIVE_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    """What a failed assertion shows: the command, its exit code and both streams."""
    return (f"\n$ {' '.join(map(str, proc.args))}\nexit {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")


class Team:
    """One team's folder, its CLI, and its journal on disk."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    # -- building ----------------------------------------------------------------

    def config(self, level: str = "L4", extra: str = "") -> Path:
        path = self.root / "selfdrive.toml"
        path.write_text(f'{HEADER}level = "{level}"\n' + textwrap.dedent(extra),
                        encoding="utf-8")
        return path

    def runbook(self, filename: str, source: str) -> Path:
        path = self.root / "runbooks" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
        return path

    # -- the CLI -----------------------------------------------------------------

    def command(self, *args: str, who: str | None = None) -> list[str]:
        return [SELFDRIVE, *(["--as", who] if who else []), *args]

    def sd(self, *args: str, who: str | None = None, env: dict[str, str] | None = None,
           timeout: float = TIMEOUT, cwd: Path | None = None
           ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(*args, who=who), cwd=cwd or self.root,
                              env=env or clean_env(), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout, check=False)

    def sd_json(self, *args: str, who: str | None = None, code: int | None = 0,
                env: dict[str, str] | None = None) -> Any:
        """Run with ``--json``; assert the exit code (unless None) and parse stdout."""
        proc = self.sd(*args, "--json", who=who, env=env)
        if code is not None:
            assert proc.returncode == code, explain(proc)
        return json.loads(proc.stdout)

    def request(self, runbook: str, *params: str, who: str | None, code: int
                ) -> dict[str, Any]:
        """``selfdrive --as WHO run RUNBOOK -p … --json``: the outcome, exit code checked."""
        flags = [f for p in params for f in ("-p", p)]
        out = self.sd_json("run", runbook, *flags, who=who, code=code)
        assert isinstance(out, dict)
        return out

    # -- the journal -------------------------------------------------------------

    @property
    def journal(self) -> Path:
        return self.root / ".selfdrive" / "journal.db"

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Read the journal through a separate raw SQLite connection ([] if no journal)."""
        if not self.journal.exists():
            return []
        conn = sqlite3.connect(self.journal)
        conn.row_factory = sqlite3.Row
        try:
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "runs" not in tables:
                return []
            return [dict(r) for r in conn.execute(sql, params)]
        finally:
            conn.close()

    def run_row(self, run_id: str) -> dict[str, Any]:
        found = self.rows("SELECT * FROM runs WHERE id = ?", (run_id,))
        assert len(found) == 1, run_id
        return found[0]

    def status(self, run_id: str) -> str:
        return str(self.run_row(run_id)["status"])

    def events(self, kind: str | None = None, run_id: str | None = None
               ) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM events WHERE 1 = 1", []
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        if run_id is not None:
            sql += " AND run_id = ?"
            params.append(run_id)
        rows = self.rows(sql + " ORDER BY id", tuple(params))
        for row in rows:
            row["data"] = json.loads(row["data"])
        return rows

    def approvals(self, run_id: str) -> list[dict[str, Any]]:
        return self.rows("SELECT * FROM approvals WHERE run_id = ? ORDER BY id", (run_id,))

    def wait_until_expired(self, run_id: str, limit: float = 10.0) -> None:
        """Poll the clock until the run's approval window (expires_at) has passed."""
        expires = datetime.fromisoformat(self.run_row(run_id)["expires_at"])
        deadline = time.monotonic() + limit
        while datetime.now(UTC) <= expires:
            assert time.monotonic() < deadline, f"{run_id} never reached {expires}"
            time.sleep(0.05)


# -- runbooks ------------------------------------------------------------------

RESTART_DB = '''
"""A HIGH-risk change: at L4 it always needs a human other than the requester."""
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.HIGH)
def restart_db(ctx: Context, marker: str) -> None:
    """Restart the database (here: append one line to a marker file)."""
    ctx.run("echo restarted >> {{ marker }}")


@restart_db.verify()
def marker_written(ctx: Context, marker: str) -> bool:
    return ctx.run("test -s {{ marker }}", readonly=True, check=False).ok
'''

PURGE = '''
"""A HIGH-risk change whose plan depends on what a read-only `find` lists."""
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.HIGH)
def purge_files(ctx: Context, folder: str) -> None:
    """Delete every file in a folder."""
    found = ctx.run("find {{ folder }} -type f -print", readonly=True, check=True)
    for name in sorted(found.stdout.splitlines()):
        ctx.run("rm -f -- {{ name }}", name=name)


@purge_files.verify()
def folder_empty(ctx: Context, folder: str) -> bool:
    r = ctx.run("find {{ folder }} -type f -print -quit", readonly=True, check=False)
    return r.ok and not r.stdout.strip()
'''


def low_runbook(name: str) -> str:
    """A LOW-risk, verified runbook called ``name``: autonomous at L4 unless a guardrail trips."""
    fn = name.replace("-", "_")
    return f'''
"""A LOW-risk change, verified."""
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW)
def {fn}(ctx: Context, path: str) -> None:
    """Append a line to a file."""
    ctx.run("echo {fn} >> {{{{ path }}}}")


@{fn}.verify()
def written(ctx: Context, path: str) -> bool:
    return ctx.run("test -s {{{{ path }}}}", readonly=True, check=False).ok
'''
