"""AlertIntake in-process, on a real journal: dedup, storms, policy, briefs, restarts."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sense_support import Project

from selfdrive.notify.webhook import Notifier
from selfdrive.sdk.errors import JournalLockedError
from selfdrive.triggers.intake import AlertIntake
from selfdrive.triggers.payloads import Alert
from selfdrive.triggers.receiver import OTHER_ADDRESSES, Credentials, ReceiverApp, RefusalLedger

BOOKS = '''
@runbook(risk=Risk.LOW, domain="storage",
         triggers=[alert("DiskFull", params={"host": "{{ labels.host }}"})])
def clean_disk(ctx: Context, host: str) -> None:
    """Cleans a disk."""
    ctx.run("true {{ host }}")


@runbook(risk=Risk.MEDIUM, domain="storage",
         triggers=[alert("DiskFull", team="db", params={"host": "{{ labels.host }}"})])
def grow_volume(ctx: Context, host: str) -> None:
    """Grows a volume."""
    ctx.run("true grow {{ host }}")


@runbook(risk=Risk.READ_ONLY, triggers=[alert("DiskFull")])
def disk_report(ctx: Context) -> None:
    """What is using the disk."""
    ctx.run("printf 'Filesystem Use%%\\\\n/dev/vda 97%%\\\\n'", readonly=True)
    ctx.note("biggest", "/var/log")
    ctx.log("looked at /")


@runbook(risk=Risk.LOW, triggers=[alert("Needs", params={"count": "{{ labels.count }}"})])
def needs_int(ctx: Context, count: int) -> None:
    """Needs an integer."""
    ctx.run("true {{ count }}")
'''


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Project]:
    p = Project(tmp_path / "proj")
    p.runbook(BOOKS)
    yield p
    p.close()


def intake(project: Project, *, clock: Clock | None = None, notifier: Any = None,
           **journal_options: Any) -> AlertIntake:
    journal = project.journal(**journal_options)
    executor = project.executor(journal, notifier=notifier)
    kwargs: dict[str, Any] = {"clock": clock} if clock else {}
    return AlertIntake(project.config(), project.registry(), journal, executor, **kwargs)


def fire(take: AlertIntake, alert: Alert) -> list[Any]:
    """Receive one alert and run its jobs inline; the claims as the journal has them."""
    [received] = take.receive([alert])
    for job in received.jobs:
        take.run(job)
    row = take.journal.alerts.get(received.alert_id)
    assert row is not None
    return row["claims"]


def test_several_runbooks_match_in_declared_order_with_policy_per_runbook(
        project: Project) -> None:
    project.set_config(level="L3", extra="[policy.track_record]\nmin_verified_successes = 0\n")
    take = intake(project)
    alert = Alert("DiskFull", {"host": "db1", "team": "db", "domain": "storage"})
    claims = fire(take, alert)
    assert [c["runbook"] for c in claims] == ["clean-disk", "grow-volume", "disk-report"]
    runs = {c["runbook"]: take.journal.runs.get(c["run_id"]) for c in claims}
    # L3: LOW auto; MEDIUM auto inside the alert's domain (from the "domain" label).
    assert runs["clean-disk"].mode == "autonomous"
    assert runs["grow-volume"].mode == "autonomous"
    assert any("in the runbook's domain 'storage'" in r
               for r in runs["grow-volume"].decision["reasons"])
    assert runs["grow-volume"].firing == {"kind": "alert", "name": "DiskFull", "own": True,
                                          "domain": "storage"}
    other = fire(take, Alert("DiskFull", {"host": "db2", "team": "db", "domain": "net"}))
    grow = take.journal.runs.get(next(c for c in other if c["runbook"] == "grow-volume")
                                ["run_id"])
    assert grow.status.value == "pending_approval"  # outside its domain: a human approves


def test_dedup_holds_within_the_window_and_releases_after_it(project: Project) -> None:
    clock = Clock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))
    take = intake(project, clock=clock)
    alert = Alert("DiskFull", {"host": "web1"}, fingerprint="fp1")
    first = fire(take, alert)
    assert {c["outcome"] for c in first} == {"started"}
    clock.now += timedelta(minutes=9, seconds=59)
    second = fire(take, alert)
    assert {c["outcome"] for c in second} == {"duplicate"}
    assert [c["run_id"] for c in second] == [c["run_id"] for c in first]
    assert "within the 600s dedup window" in second[0]["detail"]
    other = fire(take, Alert("DiskFull", {"host": "web2"}, fingerprint="fp2"))
    assert {c["outcome"] for c in other} == {"started"}  # another fingerprint: its own runs
    clock.now += timedelta(seconds=2)
    third = fire(take, alert)
    assert {c["outcome"] for c in third} == {"started"}
    assert not {c["run_id"] for c in third} & {c["run_id"] for c in first}


def test_a_run_still_in_flight_dedups_beyond_the_window(project: Project) -> None:
    project.set_config(level="L1")  # MEDIUM needs approval: grow-volume waits
    clock = Clock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))
    take = intake(project, clock=clock)
    alert = Alert("DiskFull", {"host": "db1", "team": "db"}, fingerprint="fp-db1")
    first = {c["runbook"]: c for c in fire(take, alert)}
    pending = take.journal.runs.get(first["grow-volume"]["run_id"])
    assert pending.status.value == "pending_approval"
    clock.now += timedelta(hours=3)
    again = {c["runbook"]: c for c in fire(take, alert)}
    assert again["grow-volume"]["outcome"] == "duplicate"
    assert "still pending_approval" in again["grow-volume"]["detail"]
    assert again["clean-disk"]["outcome"] == "started"  # that one had finished long ago


def test_a_storm_of_distinct_alerts_is_bounded_by_the_rate_limit(project: Project) -> None:
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        project.set_config(extra=f"""
            [guardrails]
            rate_limit_per_runbook = 3
            rate_limit_total = 100

            [[notify.webhooks]]
            url = "{url}"
            """)
        config = project.config()
        notifier = Notifier(config.notify.webhooks, root=project.root, team=config.team)
        take = intake(project, notifier=notifier)
        statuses = []
        for i in range(8):
            claims = fire(take, Alert("DiskFull", {"host": f"web{i}"}))
            [claim] = [c for c in claims if c["runbook"] == "clean-disk"]
            statuses.append(take.journal.runs.get(claim["run_id"]).status.value)
        notifier.flush(10)
    finally:
        server.shutdown()
    assert statuses == ["succeeded"] * 3 + ["pending_approval"] * 5
    events = [r.get("event") or r.get("text", "") for r in received]
    assert len(received) >= 5, received
    assert any("rate limit" in json.dumps(r) for r in received), events


def test_parameters_that_do_not_render_or_validate_are_journaled_errors(
        project: Project) -> None:
    take = intake(project)
    [claim] = fire(take, Alert("Needs", {"count": "many"}))
    assert claim["outcome"] == "error" and claim["run_id"] is None
    assert "parameter 'count'" in claim["detail"]
    [claim] = fire(take, Alert("Needs", {}))
    assert claim["outcome"] == "error"
    assert "params['count']" in claim["detail"] and "labels" in claim["detail"]
    [claim] = fire(take, Alert("Needs", {"count": "3"}))
    assert claim["outcome"] == "started"


def test_at_l2_read_only_matches_are_diagnostics_with_a_brief(project: Project) -> None:
    project.set_config(level="L2")
    take = intake(project)
    claims = fire(take, Alert("DiskFull", {"host": "web1"},
                              annotations={"summary": "disk at 97%"}))
    diag = next(c for c in claims if c["runbook"] == "disk-report")
    assert diag["diagnostic"] and diag["outcome"] == "started"
    assert not next(c for c in claims if c["runbook"] == "clean-disk")["diagnostic"]
    row = take.journal.alerts.get(diag["alert_id"])
    assert row is not None
    brief = row["brief"]
    assert brief.startswith("# DiskFull — alert #")
    assert "Labels: host=web1" in brief and "Summary: disk at 97%" in brief
    assert f"## disk-report — run {diag['run_id']}: succeeded" in brief
    assert "/dev/vda 97%" in brief and "note biggest = /var/log" in brief
    assert "log: looked at /" in brief
    project.set_config(level="L1")
    below = intake(project)
    claims = fire(below, Alert("DiskFull", {"host": "web9"}))
    assert not any(c["diagnostic"] for c in claims)
    row = below.journal.alerts.get(claims[0]["alert_id"])
    assert row is not None and row["brief"] is None


def test_the_receiver_answers_503_when_the_journal_is_locked(project: Project) -> None:
    import sqlite3

    take = intake(project, busy_timeout=0.2)
    jobs: list[Any] = []
    app = ReceiverApp(take, credentials=Credentials(), dispatch=jobs.append)
    body = json.dumps({"name": "DiskFull", "labels": {"host": "w"}}).encode()

    def call() -> tuple[str, dict[str, Any], dict[str, str]]:
        import io

        seen: dict[str, Any] = {}

        def start_response(status: str, headers: list[tuple[str, str]]) -> None:
            seen["status"], seen["headers"] = status, dict(headers)

        environ = {"PATH_INFO": "/alerts", "REQUEST_METHOD": "POST",
                   "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
                   "wsgi.input": io.BytesIO(body), "REMOTE_ADDR": "127.0.0.1"}
        out = b"".join(app(environ, start_response))  # type: ignore[arg-type]
        return seen["status"], json.loads(out), seen["headers"]

    holder = sqlite3.connect(project.journal_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(JournalLockedError):
            take.journal.event("probe", actor="test")
        status, answer, headers = call()
        assert "retry" in answer["error"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert status.startswith("503") and headers["Retry-After"] == "5"
    assert jobs == []
    status, _, _ = call()
    assert status.startswith("202") and len(jobs) == 2


def test_claims_a_dead_receiver_queued_are_started_again_or_abandoned(
        project: Project) -> None:
    clock = Clock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))
    take = intake(project, clock=clock)
    [fresh] = take.receive([Alert("DiskFull", {"host": "fresh"})])
    [old] = take.receive([Alert("DiskFull", {"host": "old"})])
    # Pretend the receiver that queued them died (another pid) before running them.
    dead = take.journal.owner.rsplit(":", 2)[0] + ":999999999:1"
    with take.journal._write("test") as conn:
        conn.execute("UPDATE alert_runs SET owner = ?", (dead,))
        conn.execute("UPDATE alert_runs SET claimed_at = '2026-11-25T09:30:00+00:00' "
                     "WHERE alert_id = ?", (old.alert_id,))
    clock.now += timedelta(minutes=5)
    jobs = take.orphaned_jobs()
    assert sorted((j.alert_id, j.runbook) for j in jobs) == sorted(
        (fresh.alert_id, j.runbook) for j in fresh.jobs)
    assert {j.params.get("host") for j in jobs} <= {"fresh", None}
    abandoned = take.journal.alerts.claims(alert_id=old.alert_id)
    assert {c["outcome"] for c in abandoned} == {"abandoned"}
    for job in jobs:
        take.run(job)
    assert {c["outcome"] for c in take.journal.alerts.claims(alert_id=fresh.alert_id)} == \
        {"started"}


def test_a_resolved_alert_replayed_as_firing_starts_nothing_but_a_new_firing_does(
        project: Project) -> None:
    clock = Clock(datetime(2026, 11, 25, 10, 0, tzinfo=UTC))
    take = intake(project, clock=clock)

    def am(status: str, began: str) -> Alert:  # as Alertmanager sends it
        return Alert("Needs", {"count": "3"}, status=status, fingerprint="am-needs",
                     source="alertmanager", starts_at=began)

    assert [c["outcome"] for c in fire(take, am("firing", "2026-11-25T09:58:00Z"))] == \
        ["started"]
    clock.now += timedelta(minutes=1)
    [resolved] = take.receive([am("resolved", "2026-11-25T09:58:00Z")])
    # Past the dedup window, the firing notification arrives again (a retry delivered
    # late, or a captured request replayed): it began before the resolution.
    clock.now += timedelta(minutes=11)
    [again] = take.receive([am("firing", "2026-11-25T09:58:00.000000000Z")])
    assert again.jobs == () and again.claims == ()
    row = take.journal.alerts.get(again.alert_id)
    assert row is not None and row["status"] == "ignored"
    assert f"not after alert #{resolved.alert_id} resolved" in row["reason"]
    # The same alert firing anew begins after the resolution: that starts a run.
    assert [c["outcome"] for c in fire(take, am("firing", "2026-11-25T10:11:30Z"))] == \
        ["started"]
    assert len(take.journal.runs.find(runbook="needs-int")) == 2


def test_a_claim_whose_run_an_orphaned_worker_recorded_is_a_linked_duplicate(
        project: Project) -> None:
    dead_receiver = intake(project)
    [received] = dead_receiver.receive([Alert("Needs", {"count": "7"})])
    [job] = received.jobs
    # Its receiver died with the job handed to a worker that has not recorded the run
    # yet; a new receiver finds the claim queued by a dead owner and queues it again.
    dead = dead_receiver.journal.owner.rsplit(":", 2)[0] + ":999999999:1"
    with dead_receiver.journal._write("test") as conn:
        conn.execute("UPDATE alert_runs SET owner = ?", (dead,))
    new_receiver = intake(project)
    [again] = new_receiver.orphaned_jobs()
    assert again.claim_id == job.claim_id
    # Meanwhile the orphaned worker records and finishes the run …
    orphan = dead_receiver.run(job)
    assert orphan.run is not None and orphan.run.status.value == "succeeded"
    # … so the new receiver's attempt is a duplicate of it, linked, and nothing runs twice.
    result = new_receiver.run(again)
    assert result.error is None and result.run is not None and result.run.id == orphan.run.id
    [claim] = new_receiver.journal.alerts.claims(alert_id=received.alert_id)
    assert claim["outcome"] == "duplicate" and claim["run_id"] == orphan.run.id
    assert f"a duplicate of run {orphan.run.id}" in claim["detail"]
    assert "succeeded" in claim["detail"] and "UNIQUE" not in claim["detail"]
    assert [r.id for r in new_receiver.journal.runs.find(runbook="needs-int")] == [orphan.run.id]


def test_refusals_are_counted_on_one_row_per_address_per_minute(project: Project) -> None:
    now = [1_800_000_000.0]  # the first second of a minute
    logged: list[str] = []
    ledger = RefusalLedger(project.journal(), log=logged.append, clock=lambda: now[0],
                           flush_every=3600)

    def refuse(remote: str, times: int) -> None:
        for _ in range(times):
            ledger.refuse(source="alertmanager", reason="missing or wrong credentials",
                          status=401, remote=remote)

    def rows() -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for r in project.rows("SELECT remote, requests FROM alerts WHERE status = 'refused' "
                              "ORDER BY id"):
            found.setdefault(r["remote"], []).append(r["requests"])
        return found

    refuse("10.0.0.1", 50)  # a misconfigured sender retrying …
    for i in range(40):  # … and many addresses at once: 16 rows a minute, then one
        refuse(f"10.1.0.{i}", 1)
    ledger.flush()
    first = rows()
    assert first["10.0.0.1"] == [50]
    assert len(first) == 17 and first[OTHER_ADDRESSES] == [40 - 15]
    refuse("10.0.0.1", 10)
    ledger.flush()
    assert rows()["10.0.0.1"] == [60] and len(rows()) == 17  # the same row, counted on
    now[0] += 60
    refuse("10.0.0.1", 1)
    ledger.close()
    assert rows()["10.0.0.1"] == [60, 1]  # a new minute: a new row
    assert len(logged) <= 2 * 18  # the log, too: lines per row, not per request
