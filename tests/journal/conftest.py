"""The journal under test, on each backend: a SQLite file in a tmp folder, and a fresh
database on a real PostgreSQL server (tests/pg_support.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pg_support
import psycopg
import psycopg.rows
import pytest

from selfdrive.config.location import JournalUrl
from selfdrive.journal import Journal, SqliteJournal, open_journal
from selfdrive.journal.pg import open_postgres, translate


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.db"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def journal(backend: str, path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Journal]:
    if backend == "sqlite":
        j: Journal = open_journal(path)
    else:
        monkeypatch.setenv("PGPASSWORD", pg_support.PASSWORD)
        url = pg_support.server().url(pg_support.fresh_database())
        j = open_postgres(JournalUrl.parse(url))
    yield j
    j.close()


class Outside:
    """A second connection to the journal's database, beside selfdrive's: it sees only
    what was committed, and writes behind the journal's back (a forger's view)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def _connect(self) -> Any:
        if isinstance(self.journal, SqliteJournal):
            conn = sqlite3.connect(self.journal.path, timeout=10)
            conn.row_factory = sqlite3.Row
            return conn
        return psycopg.connect(self.journal.name, password=pg_support.PASSWORD,
                               row_factory=psycopg.rows.dict_row)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        conn = self._connect()
        try:
            return [dict(r) for r in conn.execute(self._sql(sql), params).fetchall()]
        finally:
            conn.close()

    def execute(self, sql: str, *params: Any) -> None:
        conn = self._connect()
        try:
            with conn:
                conn.execute(self._sql(sql), params)
        finally:
            conn.close()

    def _sql(self, sql: str) -> str:
        return sql if isinstance(self.journal, SqliteJournal) else translate(sql)


@pytest.fixture
def outside(journal: Journal) -> Outside:
    return Outside(journal)



@pytest.fixture
def another(journal: Journal) -> Iterator[Journal]:
    """A second journal object on the same database, as another process would open it."""
    if isinstance(journal, SqliteJournal):
        second: Journal = SqliteJournal(journal.path)
    else:
        second = open_postgres(JournalUrl.parse(journal.name), recover=False)
    yield second
    second.close()
