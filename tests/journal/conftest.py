"""The journal under test, on each backend: a SQLite file in a tmp folder, and a fresh
database on a real PostgreSQL server (tests/pg_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pg_support
import pytest

from selfdrive.config.location import JournalUrl
from selfdrive.journal import Journal, open_journal
from selfdrive.journal.pg import open_postgres


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
