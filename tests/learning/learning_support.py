"""A real team folder for the learning tests: selfdrive.toml, runbook files, a journal.

The journal is built the way production builds it: by submitting requests to a real
Executor in-process (real commands through the local target), or by running the
installed ``selfdrive`` console script as a subprocess (no terminal: stdin is
/dev/null). Both write the same ``.selfdrive/journal.db``, so a test may mix them.
Nothing is inserted into the journal by hand.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Any

from selfdrive.config import TeamConfig, parse_config
from selfdrive.executor import Executor, RunOutcome, RunRequest
from selfdrive.journal import SqliteJournal, open_journal
from selfdrive.policy import Firing
from selfdrive.registry import Registry, load_registry

SELFDRIVE = str(Path(sys.executable).parent / "selfdrive")
TIMEOUT = 30
PRELUDE = """\
from __future__ import annotations

from pathlib import Path

from selfdrive import Context, Risk, SecretStr, alert, runbook
"""


def _approve(*_: Any) -> bool:
    return True


class Team:
    """One team's folder, driven in-process (``submit``) or through the CLI (``sd``)."""

    def __init__(self, root: Path, *, level: str = "L4", extra: str = "") -> None:
        self.root = root
        (root / "runbooks").mkdir(parents=True)
        self.journal_path = root / ".selfdrive" / "journal.db"
        self._journals: list[SqliteJournal] = []
        self._executor: Executor | None = None
        self.configure(level=level, extra=extra)

    # -- building ----------------------------------------------------------------

    def configure(self, *, level: str = "L4", extra: str = "") -> None:
        text = (f'team = "learning-tests"\nlevel = "{level}"\nentry_points = false\n'
                + textwrap.dedent(extra))
        (self.root / "selfdrive.toml").write_text(text, encoding="utf-8")
        self._executor = None

    def write(self, source: str, name: str = "book.py") -> Path:
        path = self.root / "runbooks" / name
        path.write_text(PRELUDE + "\n" + textwrap.dedent(source), encoding="utf-8")
        self._executor = None
        return path

    def config(self) -> TeamConfig:
        path = self.root / "selfdrive.toml"
        return parse_config(tomllib.loads(path.read_text()), path)

    def registry(self) -> Registry:
        registry = load_registry([self.root / "runbooks"], entry_points=False)
        assert registry.problems == (), registry.problems
        return registry

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            journal = open_journal(self.journal_path)
            self._journals.append(journal)
            self._executor = Executor(self.config(), self.registry(), journal)
        return self._executor

    @property
    def journal(self) -> SqliteJournal:
        journal = self.executor.journal
        assert isinstance(journal, SqliteJournal)
        return journal

    def submit(self, runbook: str, params: dict[str, Any] | None = None, *,
               approve: bool = False, alert: str | None = None,
               requested_by: str = "alice") -> RunOutcome:
        """One request through the real Executor; ``alert`` fires it as that alert would."""
        firing = Firing(kind="alert", name=alert, own=True) if alert else None
        request = RunRequest(runbook=runbook, params=params or {}, requested_by=requested_by,
                             firing=firing)
        return self.executor.submit(request, approver=_approve if approve else None)

    # -- the CLI -------------------------------------------------------------------

    def sd(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SELFDRIVE_")}
        env.update({"SELFDRIVE_USER": "alice", "PYTHONDONTWRITEBYTECODE": "1"})
        return subprocess.run([SELFDRIVE, *args], cwd=self.root, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=TIMEOUT, check=False)

    def sd_ok(self, *args: str, code: int = 0) -> str:
        proc = self.sd(*args)
        assert proc.returncode == code, explain(proc)
        return proc.stdout

    def sd_json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self.sd_ok(*args, "--json", code=code))

    # -- reading back --------------------------------------------------------------

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Read the journal through a separate, raw SQLite connection."""
        conn = sqlite3.connect(self.journal_path)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, params)]
        finally:
            conn.close()

    def close(self) -> None:
        for journal in self._journals:
            journal.close()


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return (f"\n$ {' '.join(map(str, proc.args))}\nexit {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")


def kinds(recommendations: list[dict[str, Any]], subject: str) -> list[str]:
    """The kinds of recommendation made about one runbook or alert (JSON form)."""
    return [r["kind"] for r in recommendations if subject in (r["runbook"], r["alert"])]
