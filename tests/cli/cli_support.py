"""Helpers for the end-to-end CLI tests: tmp projects and the real ``selfdrive`` executable.

Every test runs the installed console script as a subprocess, in a tmp project, with
no terminal (stdin is /dev/null), so what is checked is what a user or a cron job gets:
exit codes, stdout, stderr, and the journal on disk.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

SELFDRIVE = str(Path(sys.executable).parent / "selfdrive")
USER = "alice"
TIMEOUT = 30


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without SELFDRIVE_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFDRIVE_")}
    env.update({"SELFDRIVE_USER": USER, "PYTHONDONTWRITEBYTECODE": "1"})
    env.update(extra)
    return env


class Project:
    """A tmp folder with a selfdrive.toml and runbook files, and a way to run the CLI in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)

    # -- building ----------------------------------------------------------------

    def config(self, text: str) -> Path:
        path = self.root / "selfdrive.toml"
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path

    def runbook(self, filename: str, source: str) -> Path:
        path = self.root / "runbooks" / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
        return path

    # -- running -----------------------------------------------------------------

    def sd(self, *args: str, env: dict[str, str] | None = None,
           timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SELFDRIVE, *args], cwd=self.root, env=env or clean_env(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def sd_json(self, *args: str, code: int | None = 0, **kwargs: Any) -> Any:
        """Run with ``--json``; assert the exit code (unless None) and parse stdout."""
        proc = self.sd(*args, "--json", **kwargs)
        if code is not None:
            assert proc.returncode == code, explain(proc)
        return json.loads(proc.stdout)

    # -- the journal -------------------------------------------------------------

    @property
    def journal(self) -> Path:
        return self.root / ".selfdrive" / "journal.db"

    def run_rows(self) -> int | None:
        """Rows in the journal's runs table; None when there is no journal file at all."""
        if not self.journal.exists():
            return None
        conn = sqlite3.connect(self.journal)
        try:
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "runs" not in tables:
                return 0
            return int(conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
        finally:
            conn.close()

    def assert_nothing_written(self) -> None:
        rows = self.run_rows()
        assert rows in (None, 0), f"{rows} run(s) were written to {self.journal}"


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    """What a failed assertion shows: the command, its exit code and both streams."""
    return (f"\n$ {' '.join(map(str, proc.args))}\nexit {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")


def team_config(level: str = "L4", extra: str = "") -> str:
    """A selfdrive.toml that ignores installed entry points, so only our runbooks load."""
    return f'team = "cli-tests"\nlevel = "{level}"\nentry_points = false\n{extra}'
