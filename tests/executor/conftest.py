"""A real project under tmp_path: runbook files, selfdrive.toml config, SQLite journal."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from selfdrive.config import TeamConfig, parse_config
from selfdrive.executor import Approver, Executor, RunOutcome, RunRequest
from selfdrive.journal import SqliteJournal, open_journal
from selfdrive.registry import Registry, load_registry
from selfdrive.sdk import RunState

PRELUDE = """\
from __future__ import annotations

from pathlib import Path

from selfdrive import Context, Risk, SecretStr, runbook
"""


class Project:
    """One team's folder: write runbooks, then submit requests through a real Executor."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runbooks = root / "runbooks"
        self.runbooks.mkdir()
        self.journal_path = root / ".selfdrive" / "journal.db"
        self._journals: list[SqliteJournal] = []
        self._executor: Executor | None = None
        self.level = "L4"
        self.policy: dict[str, Any] = {}
        self.executor_options: dict[str, Any] = {}
        self.guardrails: dict[str, Any] = {}

    # -- building ----------------------------------------------------------------

    def write(self, source: str, name: str = "book.py") -> Path:
        path = self.runbooks / name
        path.write_text(PRELUDE + "\n" + textwrap.dedent(source))
        self._executor = None
        return path

    def config(self) -> TeamConfig:
        data: dict[str, Any] = {"team": "payments-sre", "level": self.level}
        if self.policy:
            data["policy"] = self.policy
        if self.executor_options:
            data["executor"] = self.executor_options
        if self.guardrails:
            data["guardrails"] = self.guardrails
        return parse_config(data, self.root / "selfdrive.toml")

    def registry(self) -> Registry:
        registry = load_registry([self.runbooks], entry_points=False)
        assert registry.problems == (), registry.problems
        return registry

    def open_journal(self) -> SqliteJournal:
        journal = open_journal(self.journal_path)
        self._journals.append(journal)
        return journal

    @property
    def executor(self) -> Executor:
        if self._executor is None:
            self._executor = Executor(self.config(), self.registry(), self.open_journal())
        return self._executor

    @property
    def journal(self) -> SqliteJournal:
        journal = self.executor.journal
        assert isinstance(journal, SqliteJournal)
        return journal

    def submit(self, runbook: str, params: dict[str, Any] | None = None, *,
               approver: Approver | None = None, dry_run: bool = False,
               requested_by: str = "alice") -> RunOutcome:
        request = RunRequest(runbook=runbook, params=params or {}, requested_by=requested_by,
                             dry_run=dry_run)
        return self.executor.submit(request, approver=approver)

    # -- reading back ------------------------------------------------------------

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        """Read the journal file through a separate, raw SQLite connection."""
        conn = sqlite3.connect(self.journal_path)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute(sql, params)]
        finally:
            conn.close()

    def run_states(self, run_id: str) -> list[str]:
        """The run's states in order, as its run.* events in the journal say."""
        events = self.rows("SELECT kind FROM events WHERE run_id = ? AND kind LIKE 'run.%' "
                           "ORDER BY id", (run_id,))
        return [e["kind"].removeprefix("run.") for e in events]

    def assert_legal_histories(self) -> None:
        """Every run's journaled states follow RunState.TRANSITIONS, from ``requested``."""
        if not self.journal_path.exists():
            return
        events = self.rows("SELECT run_id, kind, data FROM events WHERE kind LIKE 'run.%' "
                           "ORDER BY id")
        last: dict[str, RunState] = {}
        for event in events:
            state = RunState(event["kind"].removeprefix("run."))
            run_id = event["run_id"]
            if run_id not in last:
                assert state is RunState.REQUESTED, (run_id, state)
            else:
                previous = last[run_id]
                assert previous.can_become(state), f"{run_id}: {previous} -> {state}"
                assert json.loads(event["data"])["from"] == previous.value
            last[run_id] = state
        for run in self.rows("SELECT id, status FROM runs"):
            assert last[run["id"]].value == run["status"], run

    def close(self) -> None:
        for journal in self._journals:
            journal.close()


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = Project(tmp_path)
    yield p
    p.close()
    p.assert_legal_histories()
