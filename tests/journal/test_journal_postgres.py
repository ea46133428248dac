"""What only the PostgreSQL journal has to prove: reaching the server, its write lock
across processes, migrations raced by first opens, and `journal copy` both ways with
the audit chain intact. (Everything else runs on both backends: see conftest.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pg_support
import psycopg
import pytest

from selfdrive import RunState
from selfdrive.config.location import JournalUrl
from selfdrive.journal import SqliteJournal, open_journal
from selfdrive.journal.audit import head, verify
from selfdrive.journal.copy import TABLES, copy_journal
from selfdrive.journal.pg import WRITE_LOCK_KEY, PostgresJournal, open_postgres
from selfdrive.sdk.errors import JournalLockedError, JournalUnavailableError, UsageError

S = RunState
SELFDRIVE = str(Path(sys.executable).parent / "selfdrive")


@pytest.fixture
def url(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PGPASSWORD", pg_support.PASSWORD)
    return pg_support.server().url(pg_support.fresh_database())


def fill(journal: SqliteJournal | PostgresJournal, runs: int = 3) -> None:
    """Runs, steps, an approval, an alert with its claim, a halt: every table used."""
    for n in range(runs):
        run_id = f"run-{n}"
        journal.runs.create({"id": run_id, "runbook": "restart", "mode": "approval",
                             "requested_by": "alice", "params": {"n": n}}, actor="alice")
        journal.runs.transition(run_id, S.DECIDED, actor="alice", plan_hash="p" * 64)
        journal.runs.transition(run_id, S.PENDING_APPROVAL, actor="alice", owner=None,
                                data={"plan_hash": "p" * 64})
        journal.approvals.approve(run_id, actor="bob", os_user="bob", plan_hash="p" * 64,
                                  reason=None, counts=lambda _: True, needed=1,
                                  expires_at="2999-01-01T00:00:00+00:00")
        journal.runs.transition(run_id, S.RUNNING, actor="bob", owner=journal.owner)
        step = journal.runs.begin_step(run_id, phase="body", kind="command", target="local",
                                       command="true")
        journal.runs.finish_step(step, status="ok", exit_code=0, stdout="")
        journal.runs.transition(run_id, S.SUCCEEDED, actor="bob", verified=True)
    journal.alerts.record_refusals([{"source": "alertmanager", "reason": "no token",
                                     "http_status": 401, "remote": "127.0.0.1"}])
    journal.flags.set("halt", {"reason": "drill"}, actor="carol")


def counts(journal: SqliteJournal | PostgresJournal) -> dict[str, int]:
    return {t: int(journal._read(f"SELECT COUNT(*) AS n FROM {t}")[0]["n"]) for t in TABLES}


# -- reaching it ---------------------------------------------------------------------


def test_a_wrong_password_or_a_dead_server_is_named_with_the_journal_never_the_password(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "wrong-" + pg_support.PASSWORD)
    with pytest.raises(JournalUnavailableError) as wrong:
        open_postgres(JournalUrl.parse(url))
    assert str(wrong.value).startswith(f"journal {url}: cannot connect: ")
    assert "password authentication failed" in str(wrong.value)
    assert pg_support.PASSWORD not in str(wrong.value)
    dead = f"postgresql://journal@127.0.0.1:{pg_support.free_port()}/nothing"
    with pytest.raises(JournalUnavailableError, match="Connection refused"):
        open_postgres(JournalUrl.parse(dead), busy_timeout=2)


def test_the_cli_refuses_to_run_anything_on_an_unreachable_journal(tmp_path: Path,
                                                                    url: str) -> None:
    (tmp_path / "runbooks").mkdir()
    (tmp_path / "runbooks" / "touch.py").write_text(
        "from selfdrive import Context, Risk, runbook\n\n\n"
        "@runbook(risk=Risk.LOW)\n"
        "def touch(ctx: Context, path: str) -> None:\n"
        '    """Touches a file."""\n'
        '    ctx.run("touch -- {{ path }}")\n')
    (tmp_path / "selfdrive.toml").write_text(
        f'team = "t"\nlevel = "L4"\nentry_points = false\njournal = "{url}"\n')
    marker = tmp_path / "touched"
    env = {**os.environ, "PGPASSWORD": "not-it", "SELFDRIVE_USER": "alice"}
    done = subprocess.run([SELFDRIVE, "run", "touch", "-p", f"path={marker}", "--yes"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"journal {url}: cannot connect" in done.stderr and "not-it" not in done.stderr
    assert not marker.exists()  # nothing runs unjournaled


# -- one writer at a time ------------------------------------------------------------


def test_a_held_write_lock_gives_a_clear_error_and_writes_nothing(url: str) -> None:
    journal = open_postgres(JournalUrl.parse(url), busy_timeout=0.3)
    holder = psycopg.connect(url, password=pg_support.PASSWORD, autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (WRITE_LOCK_KEY,))
        began = time.monotonic()
        with pytest.raises(JournalLockedError) as info:
            journal.flags.set("halt", {"reason": "x"}, actor="alice")
        assert time.monotonic() - began < 5
        assert str(info.value).startswith(f"journal {url}")
        assert "nothing was written" in str(info.value)
    finally:
        holder.close()
        journal.flags.get("halt")
    assert journal.flags.get("halt") is None
    journal.flags.set("halt", {"reason": "x"}, actor="alice")  # free again: it writes
    assert journal.flags.get("halt") == {"reason": "x"}
    journal.close()


HOLD = """
import sys, time
from selfdrive.config.location import JournalUrl
from selfdrive.journal.pg import open_postgres
journal = open_postgres(JournalUrl.parse(sys.argv[1]))
with journal.atomic("hold"):
    journal.flags.set("held", {"by": "holder"}, actor="holder")
    print("holding", flush=True)
    time.sleep(60)
"""


def test_a_writer_killed_inside_a_transaction_does_not_wedge_the_journal(url: str) -> None:
    journal = open_postgres(JournalUrl.parse(url), busy_timeout=15)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, url], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    try:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        journal.flags.set("after", {"ok": True}, actor="alice")  # the server ended its hold
        assert journal.flags.get("held") is None  # the killed transaction left nothing
        assert verify(journal).ok
    finally:
        holder.stdout.close()
        journal.close()


def test_concurrent_first_opens_migrate_once_and_writers_keep_one_chain(url: str) -> None:
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            journal = open_postgres(JournalUrl.parse(url), busy_timeout=30)
            for i in range(10):
                journal.event("note.custom", actor=f"w{n}", data={"i": i})
            journal.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    journal = open_postgres(JournalUrl.parse(url))
    try:
        applied = journal._read("SELECT name FROM selfdrive_migrations ORDER BY name")
        assert [r["name"][:4] for r in applied] == [f"{n:04d}" for n in range(1, 8)]
        report = verify(journal)
        assert report.ok and report.checked == 60
    finally:
        journal.close()


# -- journal copy --------------------------------------------------------------------


def test_copy_moves_every_row_with_the_chain_intact_and_back_again(tmp_path: Path,
                                                                    url: str) -> None:
    source = open_journal(tmp_path / "team.db")
    fill(source)
    before = counts(source)
    target = open_postgres(JournalUrl.parse(url), recover=False)
    report = copy_journal(source, target)
    assert report.ok and report.rows == before and counts(target) == before
    assert head(target) == head(source)
    assert verify(target).ok and verify(target).runs == 3
    assert target.runs.get("run-1").status is S.SUCCEEDED
    assert target.approvals.granted("run-1", "p" * 64) == ["bob"]
    # New rows on the copy take ids after the copied ones, and the chain goes on.
    target.flags.set("halt", None, actor="carol")
    target.runs.create({"id": "run-new", "runbook": "restart", "mode": "autonomous",
                        "requested_by": "alice"}, actor="alice")
    assert verify(target).ok
    last = target._read("SELECT MAX(id) AS id FROM events")[0]["id"]
    assert last == before["events"] + 2
    # A copy goes into an empty journal only.
    with pytest.raises(UsageError, match="is not empty"):
        copy_journal(source, target)
    # And back to SQLite: the same chain.
    back = open_journal(tmp_path / "back.db")
    assert copy_journal(target, back).ok
    assert head(back) == head(target)
    for journal in (source, target, back):
        journal.close()


def test_journal_copy_on_the_command_line(tmp_path: Path, url: str) -> None:
    source = open_journal(tmp_path / "team.db")
    fill(source)
    digest = head(source)[1]
    source.close()
    env = {**os.environ, "PGPASSWORD": pg_support.PASSWORD}
    done = subprocess.run([SELFDRIVE, "journal", "copy", str(tmp_path / "team.db"), url,
                           "--json"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and report["head"] == report["source_head"] == digest
    assert report["rows"]["runs"] == 3 and report["disagreements"] == []
    missing = subprocess.run([SELFDRIVE, "journal", "copy", str(tmp_path / "nope.db"), url],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no journal file" in missing.stderr
    assert not (tmp_path / "nope.db").exists()
