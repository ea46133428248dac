"""Numbered schema migrations. Append new ones; never edit an applied one."""

from __future__ import annotations

from typing import Any

from sqlite_utils import Migrations

migrations = Migrations("selfdrive.journal")


@migrations(name="0001_runs_steps_events_flags")
def m0001(db: Any) -> None:
    db["runs"].create({
        "id": str, "runbook": str, "mode": str, "status": str, "risk": str,
        "requested_by": str, "os_user": str, "params": str, "decision": str,
        "firing": str, "plan_hash": str, "dedup_key": str, "owner": str, "error": str,
        "runbook_file": str, "code_digest": str, "verified": int,
        "created_at": str, "started_at": str, "finished_at": str, "updated_at": str,
    }, pk="id", not_null={"runbook", "mode", "status", "requested_by", "created_at"})
    db["runs"].create_index(["runbook", "created_at"])
    db["runs"].create_index(["status"])
    db["runs"].create_index(["dedup_key"], unique=True)
    db["steps"].create({
        "id": int, "run_id": str, "seq": int, "phase": str, "kind": str, "name": str,
        "target": str, "command": str, "readonly": int, "planned": int, "status": str,
        "attempt": int, "exit_code": int, "stdout": str, "stderr": str, "truncated": int,
        "error": str, "data": str, "started_at": str, "finished_at": str, "duration": float,
    }, pk="id", not_null={"run_id", "seq", "phase", "kind", "status", "started_at"},
        foreign_keys=[("run_id", "runs", "id")])
    db["steps"].create_index(["run_id", "seq"], unique=True)
    db["events"].create({
        "id": int, "at": str, "kind": str, "actor": str, "run_id": str, "data": str,
        "prev_hash": str, "hash": str,
    }, pk="id", not_null={"at", "kind", "actor", "data", "prev_hash", "hash"})
    db["events"].create_index(["run_id"])
    db["flags"].create({"name": str, "value": str, "set_by": str, "set_at": str}, pk="name")


@migrations(name="0002_locks")
def m0002(db: Any) -> None:
    db["locks"].create({"key": str, "run_id": str, "owner": str, "acquired_at": str,
                        "expires_at": str}, pk="key")


@migrations(name="0003_approvals")
def m0003(db: Any) -> None:
    db["approvals"].create({
        "id": int, "run_id": str, "decision": str, "actor": str, "os_user": str,
        "plan_hash": str, "reason": str, "at": str,
    }, pk="id", not_null={"run_id", "decision", "actor", "plan_hash", "at"},
        foreign_keys=[("run_id", "runs", "id")])
    db["approvals"].create_index(["run_id"])
    db["runs"].add_column("expires_at", str)
    db["steps"].add_column("plan_hash", str)
    db["runs"].create_index(["mode", "created_at"])


@migrations(name="0004_alerts_schedules")
def m0004(db: Any) -> None:
    # Every alert received (and every request refused), what it matched and what it started.
    db["alerts"].create({
        "id": int, "received_at": str, "source": str, "name": str, "status": str,
        "labels": str, "annotations": str, "fingerprint": str, "starts_at": str,
        "group_key": str, "matched": str, "remote": str, "reason": str, "http_status": int,
        "brief": str,
    }, pk="id", not_null={"received_at", "source", "status"})
    db["alerts"].create_index(["received_at"])
    db["alerts"].create_index(["name", "received_at"])
    # One row per (alert, matched runbook): a claim on a run, a duplicate, or an error.
    db["alert_runs"].create({
        "id": int, "alert_id": int, "runbook": str, "fingerprint": str, "dedup_key": str,
        "run_id": str, "outcome": str, "detail": str, "diagnostic": int, "owner": str,
        "claimed_at": str, "updated_at": str,
    }, pk="id", not_null={"alert_id", "runbook", "outcome", "claimed_at"},
        foreign_keys=[("alert_id", "alerts", "id")])
    db["alert_runs"].create_index(["alert_id"])
    db["alert_runs"].create_index(["runbook", "fingerprint", "id"])
    db["alert_runs"].create_index(["dedup_key"], unique=True)
    db["alert_runs"].create_index(["run_id"])
    # The scheduler: the latest fire handled per schedule, and each fire claimed or missed.
    db["schedules"].create({"id": str, "last_fire": str, "updated_at": str}, pk="id")
    db["schedule_fires"].create({
        "id": int, "schedule_id": str, "fire_time": str, "status": str, "run_id": str,
        "owner": str, "claimed_at": str, "finished_at": str, "detail": str,
    }, pk="id", not_null={"schedule_id", "fire_time", "status", "claimed_at"})
    db["schedule_fires"].create_index(["schedule_id", "fire_time"], unique=True)
    db["schedule_fires"].create_index(["schedule_id", "status"])


@migrations(name="0005_learning_indexes")
def m0005(db: Any) -> None:
    # What selfdrive.learning reads, kept fast as the journal grows (bench/journal_scale.py).
    # A window of runs (stats, learn, weekly report) read from this index alone: every
    # column those queries touch, in time order. About a quarter of a run row's size.
    db["runs"].create_index(["created_at", "runbook", "mode", "status", "verified",
                             "started_at", "finished_at", "dedup_key", "firing", "id"],
                            index_name="idx_runs_window")
    # Policy's verified-success count per runbook, answered from the index alone.
    db["runs"].create_index(["runbook", "status", "verified", "mode"])
    # A runbook's live runs newest first (started_at is set only when a run really ran):
    # last run (stale), last 2N durations (slow).
    db["runs"].create_index(["runbook", "started_at"])
    # A runbook's record against one alert name (ranking the runbooks an alert matches).
    db.execute("CREATE INDEX idx_runs_alert_record ON runs "
               "(json_extract(firing, '$.name'), runbook, status, verified) "
               "WHERE json_extract(firing, '$.kind') = 'alert'")
    # Verifications that passed only after retries (flaky): a small partial index.
    db.execute("CREATE INDEX idx_steps_verify_retried ON steps (started_at, run_id, name, attempt) "
               "WHERE phase = 'verify' AND kind = 'check' AND attempt > 1 AND status = 'ok'")
    # Firing alerts that matched no runbook (uncovered), by time.
    db.execute("CREATE INDEX idx_alerts_uncovered ON alerts (received_at, name, fingerprint) "
               "WHERE status = 'firing' AND matched = '[]'")


@migrations(name="0006_alert_intake_replays_and_refusals")
def m0006(db: Any) -> None:
    # How many requests an alerts row stands for: refused requests are sampled (one row
    # per source address per minute), and replays of a delivery are counted on the alert
    # they repeat. NULL means one. last_at: when the latest of them arrived.
    db["alerts"].add_column("requests", int)
    db["alerts"].add_column("last_at", str)
    # Delivery ids a sender gave (PagerDuty's event id and X-Webhook-Id), remembered for
    # receiver.replay_window: a second delivery with one of them is a replay.
    db["alert_deliveries"].create({"key": str, "alert_id": int, "seen_at": str}, pk="key",
                                  not_null={"alert_id", "seen_at"})
    db["alert_deliveries"].create_index(["seen_at"])
    # The latest resolution of a fingerprint: a firing that began before it is a replay.
    db.execute("CREATE INDEX idx_alerts_resolved ON alerts (fingerprint, source, id) "
               "WHERE status = 'resolved'")


@migrations(name="0007_process_groups")
def m0007(db: Any) -> None:
    # The process group a local command runs in (``host:pgid:start`` of its leader),
    # written with the command's intent: recovery ends what is left of it before it
    # releases the run's lock.
    db["steps"].add_column("pgroup", str)
    # Set on a lock kept because such a group outlived its run: held until it is gone.
    db["locks"].add_column("pgroup", str)
