"""A journal file in a tmp folder, and the journal opened on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from selfdrive.journal import SqliteJournal, open_journal


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "journal.db"


@pytest.fixture
def journal(path: Path) -> Iterator[SqliteJournal]:
    j = open_journal(path)
    yield j
    j.close()
