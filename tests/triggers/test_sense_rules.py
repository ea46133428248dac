"""The triggers' rules (alert dedup, schedule overlap) and the journal's claim that asks
them: the rule decides, the journal's claim only asks it inside its transaction."""

from __future__ import annotations

import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from selfdrive.journal import open_journal, process_identity
from selfdrive.triggers.rules import AlertDedup, ScheduleOverlap

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="microseconds")


def prior(status: str | None, run_id: str | None = "run-1") -> dict[str, Any]:
    return {"alert_id": 7, "claimed_at": at(0), "run_id": run_id, "status": status}


def test_an_alert_is_a_duplicate_within_the_window_or_while_its_run_goes_on():
    rule = AlertDedup(window=300)
    assert rule(prior("succeeded"), at(10)) == (
        "run run-1 was started for this alert fingerprint by alert #7 10s ago, within the "
        "300s dedup window")
    assert rule(prior(None, run_id=None), at(10)).startswith("a queued run was started")
    assert rule(prior("succeeded"), at(300)) is None
    assert rule(prior("running"), at(3600)) == (
        "run run-1 for this alert fingerprint is still running (claimed by alert #7)")
    assert rule(prior("pending_approval"), at(3600)) is not None
    assert rule(prior("failed"), at(3600)) is None


def dead_identity() -> str:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    identity = process_identity(child.pid)
    child.wait()
    return identity


def test_a_fire_overlaps_while_its_scheduler_lives_or_cannot_be_checked_yet():
    rule = ScheduleOverlap(stale_after=120)
    mine = {"fire_time": at(0), "owner": process_identity(), "claimed_at": at(0)}
    assert rule(mine, at(3600)) == (
        f"the run for fire {at(0)} is still in progress (scheduler {process_identity()}); "
        f"schedules never overlap")
    assert rule({**mine, "owner": dead_identity()}, at(1)) is None
    elsewhere = {**mine, "owner": f"not-{socket.gethostname()}:4242:1"}
    assert rule(elsewhere, at(119)) is not None
    assert rule(elsewhere, at(120)) is None


def test_the_journal_claims_what_the_rule_allows_and_records_its_words(tmp_path):
    journal = open_journal(tmp_path / "journal.db")
    asked: list[tuple[dict[str, Any], str]] = []

    def never_twice(claim: dict[str, Any], now: str) -> str | None:
        asked.append((claim, now))
        return "one is enough"

    def alert(fingerprint: str, n: int) -> dict[str, Any]:
        return {"source": "test", "status": "firing", "name": "DiskFull",
                "fingerprint": fingerprint, "received_at": at(5),
                "claims": [{"runbook": "clean-disk", "outcome": "claim",
                            "dedup_key": f"alert:clean-disk:{fingerprint}:{n}"}]}

    try:
        [first] = journal.alerts.record([alert("f1", 1)], duplicate=never_twice)
        [second] = journal.alerts.record([alert("f1", 2)], duplicate=never_twice)
        [other] = journal.alerts.record([alert("f2", 3)], duplicate=never_twice)
    finally:
        journal.close()

    assert [c["outcome"] for c in (*first["claims"], *second["claims"], *other["claims"])] \
        == ["queued", "duplicate", "queued"]
    assert second["claims"][0]["detail"] == "one is enough"
    assert [(c["alert_id"], now) for c, now in asked] == [(first["id"], at(5))]
