"""The hash-chained audit trail: tampering with a copied journal is caught by the CLI.

One journal of 10,000 events is built once through the library; each test copies the
closed file, tampers with the copy through raw sqlite3 (as someone with write access
to the file would), and runs ``selfdrive audit verify`` on it in a subprocess.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from approvals_support import HEADER, SELFDRIVE, Team, clean_env, explain

from selfdrive.journal import SqliteJournal, event_digest
from selfdrive.journal.store import GENESIS

EVENTS = 10_000
BROKEN = re.compile(r"^BROKEN: event (\d+) ", re.MULTILINE)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed journal file holding exactly 10,000 chained events."""
    path = tmp_path_factory.mktemp("audit") / "journal.db"
    journal = SqliteJournal(path)
    journal.conn.execute("PRAGMA synchronous=OFF")  # durability is not under test here
    for i in range(EVENTS):
        journal.event("test.tick", actor=f"user{i % 7}", run_id=f"run-{i // 100}",
                      data={"i": i, "note": f"tick {i}"})
    journal.close()
    assert not Path(f"{path}-wal").exists() or Path(f"{path}-wal").stat().st_size == 0
    return path


def copy_of(pristine: Path, root: Path) -> Team:
    """A team folder whose journal is a copy of ``pristine`` (and its -wal, if any)."""
    team = Team(root)
    (root / "selfdrive.toml").write_text(f'{HEADER}journal = "journal.db"\n', encoding="utf-8")
    for suffix in ("", "-wal"):
        source = Path(f"{pristine}{suffix}")
        if source.exists():
            shutil.copyfile(source, root / f"journal.db{suffix}")
    return team


def tamper(team: Team, sql: Callable[[sqlite3.Connection], None]) -> None:
    conn = sqlite3.connect(team.root / "journal.db")
    try:
        with conn:
            sql(conn)
    finally:
        conn.close()


def verify(team: Team, *args: str) -> tuple[int, str]:
    proc = team.sd("audit", "verify", *args)
    assert proc.returncode in (0, 1), explain(proc)
    return proc.returncode, proc.stdout


def first_bad(team: Team) -> int:
    code, out = verify(team)
    assert code == 1, out
    found = BROKEN.search(out)
    assert found, out
    return int(found.group(1))


# -- the tampering -------------------------------------------------------------

def alter(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE events SET data = ? WHERE id = 5000", ('{"i":5000,"note":"benign"}',))


def delete(conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM events WHERE id = 5000")


def insert(conn: sqlite3.Connection) -> None:
    """Make room at id 5000 and insert a forged event that links to 4999 and whose
    digest is computed exactly as the journal computes it."""
    conn.execute("UPDATE events SET id = -(id + 1) WHERE id >= 5000")
    conn.execute("UPDATE events SET id = -id WHERE id < 0")
    prev, at = conn.execute("SELECT hash, at FROM events WHERE id = 4999").fetchone()
    data = '{"i":-1,"note":"forged"}'
    digest = event_digest(prev, at, "test.tick", "mallory", None, data)
    conn.execute("INSERT INTO events (id, at, kind, actor, run_id, data, prev_hash, hash) "
                 "VALUES (5000, ?, 'test.tick', 'mallory', NULL, ?, ?, ?)",
                 (at, data, prev, digest))


def append_forged(conn: sqlite3.Connection) -> None:
    """A forged event at the end: right link, plausible (well-formed) but wrong digest."""
    prev, at = conn.execute("SELECT hash, at FROM events ORDER BY id DESC LIMIT 1").fetchone()
    conn.execute("INSERT INTO events (at, kind, actor, run_id, data, prev_hash, hash) "
                 "VALUES (?, 'halt.off', 'mallory', NULL, '{}', ?, ?)", (at, prev, "ab" * 32))


def swap(conn: sqlite3.Connection) -> None:
    cols = "at, kind, actor, run_id, data, prev_hash, hash"
    a = conn.execute(f"SELECT {cols} FROM events WHERE id = 3000").fetchone()
    b = conn.execute(f"SELECT {cols} FROM events WHERE id = 7000").fetchone()
    sets = ", ".join(f"{c.strip()} = ?" for c in cols.split(","))
    conn.execute(f"UPDATE events SET {sets} WHERE id = 3000", b)
    conn.execute(f"UPDATE events SET {sets} WHERE id = 7000", a)


@pytest.mark.parametrize(("how", "bad", "checked"), [
    (alter, 5000, 4999),     # its digest no longer matches its content
    (delete, 5001, 4999),    # the next event links to one that is gone
    (insert, 5001, 5000),    # the forged event links fine, the real one after it does not
    (append_forged, EVENTS + 1, EVENTS),
    (swap, 3000, 2999),      # the first swapped row no longer links to 2999
], ids=["altered", "deleted", "inserted", "forged-tail", "swapped"])
def test_tampering_is_found_at_the_first_bad_event(pristine: Path, tmp_path: Path,
                                                   how: Callable[[sqlite3.Connection], None],
                                                   bad: int, checked: int) -> None:
    team = copy_of(pristine, tmp_path / "copy")
    tamper(team, how)
    assert first_bad(team) == bad
    report = team.sd_json("audit", "verify", code=1)
    assert report["ok"] is False
    assert report["broken"].startswith(f"event {bad} ")
    assert report["checked"] == checked


def test_untouched_copy_verifies_clean(pristine: Path, tmp_path: Path) -> None:
    team = copy_of(pristine, tmp_path / "copy")
    code, out = verify(team)
    assert code == 0
    assert out.startswith(f"ok: {EVENTS} event(s), chain intact")
    head = team.sd_json("audit", "head")
    assert head["head_id"] == EVENTS
    assert f"head {head['head']}" in out


def test_truncated_tail_is_caught_only_against_an_anchored_head(pristine: Path,
                                                                tmp_path: Path) -> None:
    team = copy_of(pristine, tmp_path / "copy")
    printed = team.sd("audit", "head")
    assert printed.returncode == 0, explain(printed)
    digest, label = printed.stdout.split(maxsplit=1)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert label.strip() == f"(event {EVENTS})"
    assert verify(team, "--head", digest)[0] == 0

    tamper(team, lambda conn: conn.execute("DELETE FROM events WHERE id > ?",
                                           (EVENTS - 10,)))
    code, out = verify(team)
    assert code == 0, out  # the shorter chain is internally consistent
    assert out.startswith(f"ok: {EVENTS - 10} event(s)")
    code, out = verify(team, "--head", digest)
    assert code == 1
    assert f"the anchored head {digest} is not in the chain" in out


def test_head_of_an_empty_journal_anchors_too(tmp_path: Path) -> None:
    """`audit head` on a new journal prints the genesis digest; anchoring it must hold."""
    team = Team(tmp_path / "team")
    team.config("L4")
    head = team.sd_json("audit", "head")
    assert (head["head_id"], head["head"]) == (None, GENESIS)
    assert verify(team, "--head", GENESIS)[0] == 0
    halted = team.sd("halt", "--reason", "drill", who="oncall")
    assert halted.returncode == 0, explain(halted)
    code, out = verify(team, "--head", GENESIS)
    assert code == 0, out
    assert out.startswith("ok: 1 event(s)")


def test_cli_runs_verify_against_the_configured_journal(pristine: Path, tmp_path: Path
                                                        ) -> None:
    """--config picks the team (and so the journal) even from another folder."""
    team = copy_of(pristine, tmp_path / "copy")
    tamper(team, delete)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([SELFDRIVE, "--config", str(team.root / "selfdrive.toml"), "audit",
                           "verify"], cwd=elsewhere, env=clean_env(), capture_output=True,
                          text=True, timeout=60, check=False)
    assert proc.returncode == 1, explain(proc)
    assert "BROKEN: event 5001 " in proc.stdout
