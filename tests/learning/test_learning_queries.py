"""Learning's queries stay on their indexes (migration 0005), so they stay fast as the
journal grows; bench/journal_scale.py measures them on a million runs.

SQLite plans a query the same on a small file as on a big one here (the journal is
never ANALYZEd, so the planner works from its default estimates): checking the
plans on a small journal built by real runs guards what the bench measured.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from selfdrive.executor import RunRequest
from selfdrive.learning import rank_matches, recommend, runbook_stats
from selfdrive.learning.queries import since_of
from selfdrive.learning.report import render_summary

BOOK = '''
@runbook(risk=Risk.MEDIUM, triggers=[alert("DiskFull")])
def free_disk(ctx: Context) -> None:
    """Free disk space."""
    ctx.run("true")

@free_disk.verify(attempts=2)
def freed(ctx: Context) -> bool:
    return True
'''
INDEXES = {"idx_runs_window", "idx_runs_runbook_status_verified_mode",
           "idx_runs_runbook_started_at", "idx_runs_alert_record", "idx_steps_verify_retried",
           "idx_alerts_uncovered"}


def test_the_learning_indexes_exist(team):
    team.write(BOOK)
    assert team.journal is not None  # opening the journal creates and migrates it
    names = {r["name"] for r in team.rows("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert names >= INDEXES
    applied = [r["name"] for r in team.rows("SELECT name FROM _sqlite_migrations")]
    assert "0005_learning_indexes" in applied  # later migrations may follow it


def test_no_learning_query_reads_a_whole_table(team):
    team.write(BOOK)
    team.submit("free-disk", approve=True, alert="DiskFull")
    team.sd_ok("trigger", "Unmatched", "-l", "host=a")
    journal, executor = team.journal, team.executor
    statements: list[str] = []
    journal.conn.set_trace_callback(statements.append)
    try:
        now = datetime.now(UTC)
        since = since_of("30d", now)
        runbook_stats(journal, since=since)
        runbook_stats(journal, since=since, runbook="free-disk")
        recommend(journal, executor.registry, executor.config, since=since, now=now)
        rank_matches(["free-disk"], "DiskFull", journal)
        render_summary(journal, since=since_of("7d", now), now=now)
        rb = executor.registry.get("free-disk")
        executor.decide(rb, RunRequest(runbook="free-disk", params={}, requested_by="alice"))
    finally:
        journal.conn.set_trace_callback(None)
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) > 10
    used: set[str] = set()
    for sql in selects:
        plan = [row[3] for row in journal.conn.execute(f"EXPLAIN QUERY PLAN {sql}")]
        scans = [p for p in plan if p.startswith("SCAN") and "CONSTANT ROW" not in p]
        assert not scans, f"{sql}\n→ {plan}"
        assert not any("idx_runs_status" in p for p in plan), f"{sql}\n→ {plan}"
        used.update(name for name in INDEXES if any(name in p for p in plan))
    assert used == INDEXES


def test_since_of():
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert since_of("7d", now) == (now - timedelta(days=7)).isoformat(timespec="microseconds")
    assert since_of("2w", now) == (now - timedelta(days=14)).isoformat(timespec="microseconds")
    assert since_of("36h", now) == "2026-11-24T00:00:00.000000+00:00"
    assert since_of("all", now) is None
