"""PagerDuty v3 webhooks end to end: every documented event type, replays, restarts.

The payloads are PagerDuty's documented shapes (``pagerduty_events/``), signed with the
subscription's secret and posted to a real ``selfdrive serve`` on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sense_support import Project, Server, clean_env, request

from selfdrive.triggers.payloads import Limits, PayloadError, parse_pagerduty

EVENTS = Path(__file__).parent / "pagerduty_events"
SECRET = "pd-signing-secret"
BOOK = '''
@runbook(risk=Risk.LOW, triggers=[
    alert("A little bump in the road", service="API Service",
          params={"incident": "{{ labels.incident_id }}"}),
])
def note_incident(ctx: Context, incident: str) -> None:
    """Appends the incident id to a marker file named after it."""
    ctx.run("printf '%s\\\\n' {{ incident }} >> MARKS/{{ incident }}", check=True)
'''
CONFIG = """
[receiver]
dedup_window = "0s"

[receiver.pagerduty]
secret_env = "SELFDRIVE_PAGERDUTY_SECRET"
"""
#: What each documented event type does here: only these two start runs, one resolves.
FIRING = {"incident.triggered", "incident.reopened"}
RESOLVED = {"incident.resolved"}


def documented() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(EVENTS.glob("*.json"))}


def _project(root: Path) -> Project:
    project = Project(root, extra=CONFIG)
    marks = root / "marks"
    marks.mkdir()
    project.runbook(BOOK.replace("MARKS", str(marks)))
    return project


def _server(project: Project) -> Server:
    return Server(project, env=clean_env(SELFDRIVE_PAGERDUTY_SECRET=SECRET))


def _at(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _event(event_type: str, occurred: datetime, event_id: str | None = None) -> bytes:
    payload = documented()[event_type]
    payload["event"]["occurred_at"] = _at(occurred)
    if event_id is not None:
        payload["event"]["id"] = event_id
    return json.dumps(payload).encode()


def deliver(server: Server, body: bytes, webhook_id: str | None = None) -> tuple[int, Any]:
    """One delivery as PagerDuty makes it: signed, with its X-Webhook-Id."""
    signature = "v1=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return request(f"{server.base}/alerts/pagerduty", raw=body,
                   headers={"X-PagerDuty-Signature": signature,
                            "X-Webhook-Id": webhook_id or str(uuid.uuid4())})


def _runs(project: Project) -> list[dict[str, Any]]:
    return project.rows("SELECT * FROM runs ORDER BY created_at")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = _server(_project(tmp_path / "proj"))
    yield running
    assert running.stop() == 0, running.log


@pytest.mark.parametrize("event_type", sorted(documented()))
def test_each_documented_event_parses_into_one_alert(event_type: str) -> None:
    [alert] = parse_pagerduty(documented()[event_type], Limits())
    expected = "firing" if event_type in FIRING else \
        "resolved" if event_type in RESOLVED else "ignored"
    assert alert.status == expected
    assert alert.labels["event_type"] == event_type
    assert alert.name and alert.fingerprint and alert.source == "pagerduty"
    assert alert.deliveries == (f"pagerduty:event:{documented()[event_type]['event']['id']}",)
    data = documented()[event_type]["event"]["data"]
    incident = data if data.get("type") == "incident" else data.get("incident") \
        or (data.get("incident_role_assignments") or [{}])[0].get("incident")
    if incident:  # every event about an incident deduplicates on the incident id
        assert alert.fingerprint == incident["id"]
        assert alert.labels["incident_id"] == incident["id"]
    if data.get("type") == "incident":
        assert alert.name == "A little bump in the road"
        assert alert.labels["service"] == "API Service"


def test_a_firing_event_without_its_incident_is_refused_naming_the_field() -> None:
    for broken, why in ((None, "event.data.title: expected a string, got null"),
                        ({"type": "incident", "title": "x"}, "event.data.id: expected a "
                                                             "string, got null")):
        payload = documented()["incident.triggered"]
        payload["event"]["data"] = broken
        with pytest.raises(PayloadError, match=why.replace(".", r"\.")):
            parse_pagerduty(payload, Limits())


def test_a_subscription_sending_every_event_type_and_replays_gets_2xx_and_the_right_runs(
        server: Server) -> None:
    project = server.project
    start = datetime.now(UTC) - timedelta(minutes=10)
    others = sorted(set(documented()) - FIRING - RESOLVED)
    sent: dict[str, tuple[bytes, str]] = {}

    def first(event_type: str, offset: float, expected: str) -> int:
        body = _event(event_type, start + timedelta(seconds=offset))
        webhook = str(uuid.uuid4())
        status, answer = deliver(server, body, webhook)
        assert status == 202, (event_type, answer)
        [accepted] = answer["accepted"]
        assert accepted["status"] == expected and not accepted.get("replay"), (event_type,
                                                                         accepted)
        sent[event_type] = (body, webhook)
        return int(accepted["id"])

    ids = {"incident.triggered": first("incident.triggered", 0, "firing")}
    for n, event_type in enumerate(others, start=1):
        ids[event_type] = first(event_type, n, "ignored")
    server.wait_idle()
    assert [r["status"] for r in _runs(project)] == ["succeeded"]

    # PagerDuty retries a delivery (the same X-Webhook-Id) and anyone may replay a
    # captured one (the same signed body, any header): 200, and nothing new happens.
    rows_before = project.last_alert_id()
    for event_type, (body, webhook) in sent.items():
        for again in (webhook, str(uuid.uuid4())):
            status, answer = deliver(server, body, again)
            assert status == 200, (event_type, answer)
            [replay] = answer["accepted"]
            assert replay["replay"] and replay["id"] == ids[event_type]
    assert project.last_alert_id() == rows_before
    counts = {r["id"]: r["requests"] for r in project.rows("SELECT id, requests FROM alerts")}
    assert all(counts[ids[t]] == 3 for t in sent)

    resolved = first("incident.resolved", 100, "resolved")
    # The trigger, replayed after the resolution under an id never seen (a copy from
    # elsewhere): it began before the incident resolved, so it starts nothing.
    copy = _event("incident.triggered", start, event_id="01COPYOFTHETRIGGER0000000")
    status, answer = deliver(server, copy)
    assert status == 202 and answer["accepted"][0]["status"] == "ignored", answer
    assert f"alert #{resolved} resolved" in answer["accepted"][0]["note"]
    # Reopened after the resolution: the incident is back, and that starts a run.
    reopened = first("incident.reopened", 200, "firing")
    status, answer = deliver(server, *sent["incident.reopened"])
    assert status == 200 and answer["accepted"][0]["id"] == reopened
    server.wait_idle()

    assert [r["status"] for r in _runs(project)] == ["succeeded", "succeeded"]
    assert (project.root / "marks" / "PGR0VU2").read_text() == "PGR0VU2\nPGR0VU2\n"
    statuses = {r["id"]: r["status"] for r in project.rows("SELECT id, status FROM alerts")}
    assert [statuses[ids[t]] for t in others] == ["ignored"] * len(others)
    assert project.refusals() == (0, 0)
    assert "Traceback" not in server.log


def test_a_replay_is_refused_by_every_receiver_on_the_journal_even_after_a_restart(
        tmp_path: Path) -> None:
    project = _project(tmp_path / "proj")
    body = _event("incident.triggered", datetime.now(UTC))
    first, second = _server(project), _server(project)
    try:
        answers: list[tuple[int, Any]] = []
        threads = [threading.Thread(target=lambda s=s: answers.append(deliver(s, body)))
                   for s in (first, second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(status for status, _ in answers) == [200, 202], answers
        first.wait_idle()
        second.wait_idle()
    finally:
        assert first.stop() == 0 and second.stop() == 0
    third = _server(project)
    try:
        status, answer = deliver(third, body)
        assert status == 200 and answer["accepted"][0]["replay"], answer
        third.wait_idle()
    finally:
        third.stop()
    assert len(project.rows("SELECT id FROM alerts")) == 1
    assert [r["status"] for r in _runs(project)] == ["succeeded"]
    [row] = project.rows("SELECT requests FROM alerts")
    assert row["requests"] == 3


def test_an_event_older_than_the_replay_window_starts_nothing(server: Server) -> None:
    old = _event("incident.triggered", datetime.now(UTC) - timedelta(hours=49))
    status, answer = deliver(server, old)
    assert status == 202, answer
    [accepted] = answer["accepted"]
    assert accepted["status"] == "ignored" and "replay_window" in accepted["note"]
    server.wait_idle()
    assert _runs(server.project) == []
