"""Checks every test suite shares: the journals tests leave behind hold only legal run
histories (see :mod:`selfdrive.journal.history`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest

from selfdrive.journal.history import journal_problems

#: tmp_path folders already checked after their test, or left alone (forged on purpose).
_SEEN: set[Path] = set()
_FORGED: set[Path] = set()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "forged_journal: the test writes journal rows behind selfdrive's back on "
                   "purpose (a forgery, synthetic data), so its journals' run histories "
                   "are not checked")


def _problems(folder: Path, skip: Collection[Path] = ()) -> list[str]:
    return [f"{db.relative_to(folder)}: {problem}"
            for db in sorted(folder.rglob("*.db"))
            if db.is_file() and not any(db.is_relative_to(s) for s in skip)
            for problem in journal_problems(db)]


def _fail(problems: list[str], where: str) -> None:
    if problems:
        pytest.fail(f"illegal run histories in the journals {where}:\n  "
                    + "\n  ".join(problems), pytrace=False)


@pytest.fixture(autouse=True, scope="session")
def _legal_run_histories_everywhere(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """At the end of the session, the journals no single test owned (those of module- and
    session-scoped fixtures) get the same check."""
    yield
    _fail(_problems(tmp_path_factory.getbasetemp(), _SEEN | _FORGED),
          "fixtures shared by several tests left")


@pytest.fixture(autouse=True)
def _legal_run_histories(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test, every journal under its ``tmp_path`` (the CLI's, a server's, one
    the test opened) must hold, for every run, a status history that is a legal path
    through the run state machine ending at the run's status. Torn down after the
    test's other fixtures, so servers and workers it started have stopped writing."""
    databases = _pg_databases()
    yield
    forged = request.node.get_closest_marker("forged_journal") is not None
    # PostgreSQL journals the test made (tests/pg_support.py), checked the same way.
    if not forged:
        _fail(_pg_problems(_pg_databases()[len(databases):]), "this test left on PostgreSQL")
    tmp = request.node.funcargs.get("tmp_path")
    if not isinstance(tmp, Path):
        return
    if forged:
        _FORGED.add(tmp)
        return
    _SEEN.add(tmp)
    _fail(_problems(tmp), "this test left")


def _pg_databases() -> list[str]:
    """The PostgreSQL databases made so far (none unless a test asked for the server)."""
    support = sys.modules.get("pg_support")
    return list(support.created) if support is not None else []


def _pg_problems(names: list[str]) -> list[str]:
    if not names:
        return []
    import pg_support

    from selfdrive.config.location import JournalUrl
    from selfdrive.journal.history import illegal_histories
    from selfdrive.journal.pg import Connection

    problems = []
    for name in names:
        os.environ.setdefault("PGPASSWORD", pg_support.PASSWORD)
        conn = Connection(JournalUrl.parse(pg_support.server().url(name)), connect_timeout=10,
                          lock_timeout=10)
        try:
            found = conn.execute("SELECT to_regclass('events')").fetchone()
            if found is None or found[0] is None:
                continue  # never opened as a journal
            conn.raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")  # one snapshot
            problems.extend(f"{name}: {p}" for p in illegal_histories(conn))
        finally:
            conn.rollback()
            conn.close()
    return problems
