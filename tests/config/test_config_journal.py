"""`journal = ...`: a SQLite file, or a PostgreSQL address that holds no password."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfdrive.config import CONFIG_NAME, load_config
from selfdrive.config.location import JournalUrl
from selfdrive.sdk.errors import ConfigError


def _config(folder: Path, journal: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_NAME
    path.write_text(f'team = "t"\njournal = "{journal}"\n', encoding="utf-8")
    return path


def test_a_postgresql_address_is_the_journal_and_working_files_stay_in_the_project(
        tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, "postgresql://sre@db.example:5433/selfdrive"))

    location = config.journal_location
    assert isinstance(location, JournalUrl)
    assert (location.user, location.host, location.port, location.database) == (
        "sre", "db.example", 5433, "selfdrive")
    assert config.state_dir == tmp_path.resolve() / ".selfdrive"
    with pytest.raises(ConfigError, match="is a PostgreSQL database, not a file"):
        _ = config.journal_path


def test_a_sqlite_journal_keeps_its_working_files_beside_it(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, "state/j.db"))

    assert config.journal_location == tmp_path.resolve() / "state" / "j.db"
    assert config.state_dir == tmp_path.resolve() / "state"


@pytest.mark.parametrize(("journal", "why"), [
    ("postgresql://sre:hunter2@db/selfdrive",
     "postgresql://sre:***@db/selfdrive holds a password; a password never goes in "
     "selfdrive.toml"),
    ("postgresql://sre@db", "names no database"),
    ("postgresql://sre@db:99999/x", "Port out of range"),
    ("mysql://sre@db/x", "'mysql' is not a journal scheme"),
])
def test_a_bad_address_is_refused_naming_the_file_and_key_and_never_the_password(
        tmp_path: Path, journal: str, why: str) -> None:
    path = _config(tmp_path, journal)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    message = str(caught.value)
    assert str(path) in message and "journal" in message and why in message, message
    assert "hunter2" not in message
