"""`selfdrive serve` end to end: real HTTP on 127.0.0.1 to a real receiver subprocess."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sense_support import Project, Server, alertmanager, clean_env, explain, raw_http, request

MARK = '''
@runbook(risk=Risk.LOW, triggers=[
    alert("DiskFull", severity=re.compile("page|critical"),
          params={{"host": "{{{{ labels.host }}}}"}}),
    alert("Disk full on web9", service="API Service",
          params={{"host": "pd-{{{{ labels.incident_number }}}}"}}),
])
def mark_host(ctx: Context, host: str) -> None:
    """Appends the host to a marker file named after it."""
    ctx.run("printf '%s\\\\n' {{{{ host }}}} >> {marks}/{{{{ host }}}}")
'''

TOKEN, PASSWORD, PD_SECRET = "s3cret-token-value", "pw-for-basic", "pd-signing-secret"
AUTH = """
[receiver]
token_env = "SELFDRIVE_RECEIVER_TOKEN"
basic_user = "alertmanager"
basic_password_env = "SELFDRIVE_RECEIVER_PASSWORD"

[receiver.pagerduty]
secret_env = "SELFDRIVE_PAGERDUTY_SECRET"
"""


def _marks(project: Project) -> Path:
    marks = project.root / "marks"
    marks.mkdir(exist_ok=True)
    return marks


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A receiver without auth (so loopback only), shared by the tests of this module."""
    project = Project(tmp_path_factory.mktemp("open") / "proj")
    project.runbook(MARK.format(marks=_marks(project)))
    server = Server(project)
    yield server
    assert server.stop() == 0, server.log
    assert "stopped" in server.log


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    project = Project(tmp_path_factory.mktemp("auth") / "proj", extra=AUTH)
    project.runbook(MARK.format(marks=_marks(project)))
    server = Server(project, env=clean_env(SELFDRIVE_RECEIVER_TOKEN=TOKEN,
                                           SELFDRIVE_RECEIVER_PASSWORD=PASSWORD,
                                           SELFDRIVE_PAGERDUTY_SECRET=PD_SECRET))
    yield server
    server.stop()


def _runs_for(project: Project, host: str) -> list[dict[str, Any]]:
    return project.rows("SELECT * FROM runs WHERE params = ?", (json.dumps({"host": host},
                                                                           separators=(",", ":")),))


def test_alertmanager_alert_runs_the_runbook_with_params_from_labels(open_server: Server) -> None:
    project = open_server.project
    body = alertmanager("DiskFull", {"host": "web1", "severity": "page"}, fingerprint="fp-web1")
    status, answer = request(f"{open_server.base}/alerts/alertmanager", body)
    assert status == 202, answer
    [accepted] = answer["accepted"]
    assert accepted["matched"] == ["mark-host"]
    assert accepted["claims"][0]["outcome"] == "queued"
    open_server.wait_idle()

    assert (project.root / "marks" / "web1").read_text() == "web1\n"
    [run] = _runs_for(project, "web1")
    assert run["status"] == "succeeded" and run["mode"] == "autonomous"
    assert run["requested_by"] == "alert"
    assert json.loads(run["firing"]) == {"kind": "alert", "name": "DiskFull", "own": True,
                                         "domain": None}
    # The journal links the alert and the run, both ways.
    [row] = project.rows("SELECT * FROM alerts WHERE id = ?", (accepted["id"],))
    assert row["source"] == "alertmanager" and row["status"] == "firing"
    assert row["fingerprint"] == "fp-web1"
    assert json.loads(row["labels"])["host"] == "web1"
    assert json.loads(row["matched"]) == ["mark-host"]
    [claim] = project.rows("SELECT * FROM alert_runs WHERE alert_id = ?", (row["id"],))
    assert claim["run_id"] == run["id"] and claim["outcome"] == "started"
    assert run["dedup_key"] == claim["dedup_key"]
    assert run["dedup_key"].startswith("alert:mark-host:fp-web1:")

    shown = project.sd("alerts", "show", str(row["id"]), "--json")
    assert shown.returncode == 0, explain(shown)
    assert json.loads(shown.stdout)["claims"][0]["run_id"] == run["id"]


def test_the_same_alert_posted_50_times_gives_one_run(open_server: Server) -> None:
    project = open_server.project
    body = alertmanager("DiskFull", {"host": "web2", "severity": "critical"},
                        fingerprint="fp-storm")
    statuses: list[int] = []
    lock = threading.Lock()

    def post(n: int) -> None:
        for _ in range(n):
            status, _ = request(f"{open_server.base}/alerts/alertmanager", body)
            with lock:
                statuses.append(status)
            time.sleep(0.01)

    started = time.monotonic()
    threads = [threading.Thread(target=post, args=(10,)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started < 10
    assert statuses == [202] * 50
    open_server.wait_idle()

    assert len(_runs_for(project, "web2")) == 1
    assert (project.root / "marks" / "web2").read_text() == "web2\n"
    alerts = project.rows("SELECT id FROM alerts WHERE fingerprint = 'fp-storm'")
    assert len(alerts) == 50  # every one journaled, for learning to count
    outcomes = [c["outcome"] for c in project.rows(
        "SELECT outcome FROM alert_runs WHERE fingerprint = 'fp-storm'")]
    assert sorted(outcomes) == ["duplicate"] * 49 + ["started"]


def test_a_resolved_alert_is_journaled_and_starts_nothing(open_server: Server) -> None:
    project = open_server.project
    body = alertmanager("DiskFull", {"host": "web3", "severity": "page"}, status="resolved")
    status, answer = request(f"{open_server.base}/alerts/alertmanager", body)
    assert status == 202, answer
    open_server.wait_idle()
    [row] = project.rows("SELECT * FROM alerts WHERE id = ?", (answer["accepted"][0]["id"],))
    assert row["status"] == "resolved"
    assert json.loads(row["matched"]) == ["mark-host"]  # what it would have fired
    assert project.rows("SELECT * FROM alert_runs WHERE alert_id = ?", (row["id"],)) == []
    assert _runs_for(project, "web3") == []
    assert not (project.root / "marks" / "web3").exists()


def test_an_alert_no_label_matches_is_journaled_without_runs(open_server: Server) -> None:
    body = alertmanager("DiskFull", {"host": "web4", "severity": "info"})
    status, answer = request(f"{open_server.base}/alerts/alertmanager", body)
    assert status == 202, answer
    assert answer["accepted"][0]["matched"] == []
    [row] = open_server.project.rows("SELECT * FROM alerts WHERE id = ?",
                                     (answer["accepted"][0]["id"],))
    assert json.loads(row["matched"]) == []  # an alert with no runbook: learning counts these


def _hostile(rng: random.Random) -> tuple[str, bytes, str]:
    """(endpoint, body, content type) that must be refused with a 4xx."""
    endpoint = rng.choice(["/alerts", "/alerts/alertmanager", "/alerts/pagerduty"])
    junk: list[Any] = [None, True, 17, -3.5, [], {}, [1, 2], {"a": {"b": []}}, ""]
    valid = {"/alerts": {"name": "DiskFull", "labels": {"host": "h"}},
             "/alerts/alertmanager": alertmanager("DiskFull", {"host": "h"}),
             "/alerts/pagerduty": {"event": {"event_type": "incident.triggered",
                                             "data": {"id": "P1", "title": "x"}}}}[endpoint]
    kind = rng.choice(["types", "huge", "utf8", "deep", "ctype", "truncated", "bytes",
                       "many"])
    ctype = "application/json"
    if kind == "types":
        body: Any = json.loads(json.dumps(valid))
        if endpoint == "/alerts":
            spoilt = rng.choice(["name", "labels", "status"])
            body[spoilt] = rng.choice([j for j in junk if (not isinstance(j, dict) or j)
                                       and (j is not None or spoilt != "labels")])
            if isinstance(body.get("labels"), dict) and body["labels"] == {"host": "h"} \
                    and isinstance(body.get("name"), str):
                body["labels"] = {"host": rng.choice([1, None, ["x"], {"y": 1}])}
        elif endpoint == "/alerts/alertmanager":
            target = rng.choice(["version", "alerts", "labels", "status", "alert"])
            if target == "version":
                body["version"] = rng.choice([4, "3", None, ["4"]])
            elif target == "alerts":
                body["alerts"] = rng.choice([None, 7, "x", {}, []])
            elif target == "labels":
                body["alerts"][0]["labels"] = rng.choice([None, 5, ["a"], {"alertname": 3}])
            elif target == "status":
                body["alerts"][0]["status"] = rng.choice([None, 1, "on fire"])
            else:
                body["alerts"][0] = rng.choice([None, 1, "x", []])
        else:
            body["event"] = rng.choice([None, 1, "x", [], {"event_type": 5}])
        raw = json.dumps(body).encode()
    elif kind == "huge":
        body = json.loads(json.dumps(valid))
        big = "x" * rng.randint(20_000, 200_000)
        if endpoint == "/alerts":
            body["labels"] = {"host": big}
        elif endpoint == "/alerts/alertmanager":
            body["alerts"][0]["labels"]["host"] = big
        else:
            body["event"]["data"]["title"] = big
        raw = json.dumps(body).encode()
    elif kind == "many":
        labels = {f"l{i}": "v" for i in range(rng.randint(100, 5000))}
        body = json.loads(json.dumps(valid))
        if endpoint == "/alerts":
            body["labels"] = labels
        elif endpoint == "/alerts/alertmanager":
            body["alerts"][0]["labels"].update(labels)
        else:
            body["event"]["data"] = "not an object"
        raw = json.dumps(body).encode()
    elif kind == "utf8":
        raw = json.dumps(valid).encode()
        cut = rng.randint(1, len(raw) - 1)
        raw = raw[:cut] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80"]) + raw[cut:]
    elif kind == "deep":
        depth = rng.randint(2_000, 100_000)
        opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
        raw = (opener * depth + "1" + closer * depth).encode()
    elif kind == "ctype":
        raw = json.dumps(valid).encode()
        ctype = rng.choice(["text/plain", "application/x-www-form-urlencoded", "",
                            "multipart/form-data; boundary=x", "application/jsonx"])
    elif kind == "truncated":
        raw = json.dumps(valid).encode()
        raw = raw[:rng.randint(0, len(raw) - 1)]
    else:
        raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 400)))
    return endpoint, raw, ctype


def test_200_hostile_bodies_leave_the_server_up_and_answering(open_server: Server) -> None:
    project = open_server.project
    before = project.last_alert_id()
    rng = random.Random(20261125)
    answers = []
    for _ in range(200):
        endpoint, raw, ctype = _hostile(rng)
        headers = {"Content-Type": ctype} if ctype else {"Content-Type": ""}
        status, body = request(f"{open_server.base}{endpoint}", raw=raw, headers=headers)
        answers.append((status, endpoint, raw[:80]))
        assert 400 <= status < 500, (status, body, endpoint, raw[:200])
        assert isinstance(body, dict) and body["error"], body
    assert open_server.alive()
    # Every refusal counted, on one row per source address per minute, with a reason …
    rows, requests = project.wait_refusals(200, since_id=before)
    assert requests == 200 and rows <= 2
    reasons = project.rows("SELECT reason, http_status FROM alerts WHERE status = 'refused' "
                           "AND id > ?", (before,))
    assert all(r["reason"] and len(r["reason"]) < 400 for r in reasons)  # … never the body
    assert {r["http_status"] for r in reasons} <= {400, 413, 415}

    status, health = request(f"{open_server.base}/healthz", method="GET")
    assert status == 200 and health["status"] == "ok"
    body = alertmanager("DiskFull", {"host": "after-fuzz", "severity": "page"})
    status, answer = request(f"{open_server.base}/alerts/alertmanager", body)
    assert status == 202, answer
    open_server.wait_idle()
    assert (project.root / "marks" / "after-fuzz").read_text() == "after-fuzz\n"


def test_an_oversized_body_gets_413_and_a_journal_row_without_the_body(
        open_server: Server) -> None:
    project = open_server.project
    body = json.dumps({"name": "DiskFull", "labels": {"host": "y" * (1024 * 1024)}}).encode()
    head = (f"POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    # From an address of its own: refusals are counted on one row per address per minute.
    status, answer = raw_http(open_server.base, head + body, source="127.0.0.2")
    assert status == 413, answer
    assert "max_body" in answer["error"]
    deadline = time.monotonic() + 10
    while not (rows := project.rows("SELECT * FROM alerts WHERE remote = '127.0.0.2'")):
        assert time.monotonic() < deadline, "the refusal was not journaled"
        time.sleep(0.05)
    [row] = rows
    assert row["status"] == "refused" and row["http_status"] == 413
    assert row["requests"] == 1 and "max_body" in row["reason"]
    assert "yyyy" not in row["reason"] and row["labels"] is None


def test_unknown_paths_and_methods_get_json_errors(open_server: Server) -> None:
    status, body = request(f"{open_server.base}/nope", method="GET")
    assert status == 404 and "POST to" in body["error"]
    status, body = request(f"{open_server.base}/alerts", method="GET")
    assert status == 405 and body["error"]


def test_without_auth_it_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    project = Project(tmp_path / "proj")
    proc = project.sd("serve", "--host", "0.0.0.0", "--port", "0", timeout=15)
    assert proc.returncode == 2, explain(proc)
    assert "refusing to listen on 0.0.0.0 without authentication" in proc.stderr
    assert "receiver.token_env" in proc.stderr


def test_a_named_but_unset_secret_variable_is_an_error(tmp_path: Path) -> None:
    project = Project(tmp_path / "proj", extra=AUTH)
    proc = project.sd("serve", "--port", "0", timeout=15)
    assert proc.returncode == 2, explain(proc)
    assert "SELFDRIVE_RECEIVER_TOKEN" in proc.stderr and "not set" in proc.stderr


def test_a_secret_variable_that_is_not_utf8_is_compared_byte_for_byte(tmp_path: Path) -> None:
    # The variable holds the bytes b"tok-\xff"; a sender puts exactly those in its header.
    project = Project(tmp_path / "proj", extra=AUTH)
    project.runbook(MARK.format(marks=_marks(project)))
    server = Server(project, env=clean_env(SELFDRIVE_RECEIVER_TOKEN="tok-\udcff",
                                           SELFDRIVE_RECEIVER_PASSWORD=PASSWORD,
                                           SELFDRIVE_PAGERDUTY_SECRET=PD_SECRET))
    try:
        url = f"{server.base}/alerts/alertmanager"
        body = alertmanager("DiskFull", {"host": "bytes1", "severity": "page"})
        # http.client sends header text as latin-1: "\xff" is the byte 0xff.
        for wrong in ("Bearer tok-", "Bearer tok-\xfe", "Bearer tok-\xc3\xbf"):
            assert request(url, body, headers={"Authorization": wrong})[0] == 401, wrong
        status, answer = request(url, body, headers={"Authorization": "Bearer tok-\xff"})
        assert status == 202, answer
        server.wait_idle()
        assert len(_runs_for(project, "bytes1")) == 1
    finally:
        assert server.stop() == 0, server.log
    assert "Traceback" not in server.log


# -- with auth ---------------------------------------------------------------------


def test_a_wrong_token_gets_401_and_no_run(auth_server: Server) -> None:
    project = auth_server.project
    url = f"{auth_server.base}/alerts/alertmanager"
    body = alertmanager("DiskFull", {"host": "auth1", "severity": "page"})
    for headers in ({}, {"Authorization": "Bearer wrong"},
                    {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN},
                    {"Authorization": "Basic YWxlcnRtYW5hZ2VyOm5vcGU="}):  # alertmanager:nope
        status, answer = request(url, body, headers=headers)
        assert status == 401, (headers, answer)
        assert "credentials" in answer["error"]
    auth_server.wait_idle()
    assert _runs_for(project, "auth1") == []
    assert project.wait_refusals(5)[1] >= 5
    refused = project.rows("SELECT * FROM alerts WHERE status = 'refused'")
    assert all(r["http_status"] == 401 for r in refused)
    dump = "\n".join(line for line in sqlite3.connect(project.journal_path).iterdump())
    assert TOKEN not in dump and "Bearer" not in dump

    status, answer = request(url, body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 202, answer
    import base64

    basic = base64.b64encode(f"alertmanager:{PASSWORD}".encode()).decode()
    body2 = alertmanager("DiskFull", {"host": "auth2", "severity": "page"})
    status, answer = request(url, body2, headers={"Authorization": f"Basic {basic}"})
    assert status == 202, answer
    auth_server.wait_idle()
    assert len(_runs_for(project, "auth1")) == 1 and len(_runs_for(project, "auth2")) == 1
    # Health needs no credentials.
    assert request(f"{auth_server.base}/healthz", method="GET")[0] == 200


def _pagerduty(event_type: str = "incident.triggered", number: int = 7) -> bytes:
    return json.dumps({"event": {
        "id": f"01DEN3UU4GM5D3R0T7ML5YQ{number:03d}", "event_type": event_type,
        "resource_type": "incident", "occurred_at": _now(),
        "agent": None, "client": None,
        "data": {"id": "PGR0VU2", "type": "incident", "number": number,
                 "title": "Disk full on web9", "status": "triggered", "urgency": "high",
                 "html_url": "https://acme.pagerduty.com/incidents/PGR0VU2",
                 "service": {"id": "PF9KMXH", "summary": "API Service",
                             "type": "service_reference"},
                 "priority": {"id": "PSO75BM", "summary": "P1"},
                 "escalation_policy": {"id": "PUS0KTE", "summary": "Default"}}}}).encode()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _sign(body: bytes, secret: str = PD_SECRET) -> str:
    return "v1=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_pagerduty_signatures_bad_rejected_good_accepted(auth_server: Server) -> None:
    project = auth_server.project
    url = f"{auth_server.base}/alerts/pagerduty"
    body = _pagerduty(number=7)
    for signature in (None, "v1=00", _sign(body, "another-secret"), _sign(body + b" "),
                      "v0=" + _sign(body)[3:]):
        headers = {"X-PagerDuty-Signature": signature} if signature else {}
        status, answer = request(url, raw=body, headers=headers)
        assert status == 401, (signature, answer)
        assert "X-PagerDuty-Signature" in answer["error"]
    assert _runs_for(project, "pd-7") == []

    # During a secret rotation PagerDuty sends several signatures; any may match.
    rotating = f"{_sign(body, 'old-secret')}, {_sign(body)}"
    status, answer = request(url, raw=body, headers={"X-PagerDuty-Signature": rotating})
    assert status == 202, answer
    [accepted] = answer["accepted"]
    assert accepted["name"] == "Disk full on web9" and accepted["fingerprint"] == "PGR0VU2"
    auth_server.wait_idle()
    [run] = _runs_for(project, "pd-7")
    assert run["status"] == "succeeded"
    [row] = project.rows("SELECT labels FROM alerts WHERE id = ?", (accepted["id"],))
    labels = json.loads(row["labels"])
    assert labels["service"] == "API Service" and labels["urgency"] == "high"
    assert labels["priority"] == "P1" and labels["incident_number"] == "7"

    ack = _pagerduty("incident.acknowledged", number=8)
    status, answer = request(url, raw=ack, headers={"X-PagerDuty-Signature": _sign(ack)})
    assert status == 202 and answer["accepted"][0]["status"] == "ignored"
    auth_server.wait_idle()
    assert _runs_for(project, "pd-8") == []


# -- a journal that cannot take the alert -------------------------------------------


def test_a_locked_journal_answers_503_so_the_sender_retries(tmp_path: Path) -> None:
    project = Project(tmp_path / "proj", extra="[receiver]\njournal_timeout = 0.3\n")
    project.runbook(MARK.format(marks=_marks(project)))
    server = Server(project)
    try:
        body = alertmanager("DiskFull", {"host": "locked", "severity": "page"})
        holder = sqlite3.connect(project.journal_path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            status, answer = request(f"{server.base}/alerts/alertmanager", body)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert status == 503, answer
        assert "retry" in answer["error"]
        assert project.rows("SELECT COUNT(*) AS n FROM alerts")[0]["n"] == 0
        assert server.alive()

        status, answer = request(f"{server.base}/alerts/alertmanager", body)
        assert status == 202, answer
        server.wait_idle()
        assert (project.root / "marks" / "locked").read_text() == "locked\n"
    finally:
        server.stop()


# -- what nobody should be able to do without credentials ----------------------------


def test_refused_requests_are_counted_on_one_row_not_one_row_each(tmp_path: Path) -> None:
    project = Project(tmp_path / "proj", extra=AUTH)
    project.runbook(MARK.format(marks=_marks(project)))
    server = Server(project, env=clean_env(SELFDRIVE_RECEIVER_TOKEN=TOKEN,
                                           SELFDRIVE_RECEIVER_PASSWORD=PASSWORD,
                                           SELFDRIVE_PAGERDUTY_SECRET=PD_SECRET))
    try:
        url = f"{server.base}/alerts/alertmanager"
        body = alertmanager("DiskFull", {"host": "nope", "severity": "page"})
        good = {"Authorization": f"Bearer {TOKEN}"}
        statuses = [request(url, body, headers={"Authorization": "Bearer wrong"})[0]
                    for _ in range(50)]  # a misconfigured Alertmanager, retrying
        statuses += [request(f"{server.base}/alerts/pagerduty", raw=_pagerduty(),
                             headers={"X-PagerDuty-Signature": "v1=00"})[0]
                     for _ in range(10)]
        statuses += [request(url, raw=b"{not json", headers=good)[0] for _ in range(10)]
        statuses += [request(url, raw=b"x" * (2 * 1024 * 1024), headers=good)[0]
                     for _ in range(3)]
        assert statuses == [401] * 60 + [400] * 10 + [413] * 3
        rows, requests = project.wait_refusals(73)
        assert requests == 73 and rows <= 2  # one row per address per minute
        assert "refused a request" in server.log
        assert server.log.count("refused a request") <= 2  # the log is sampled too
        server.wait_idle()
        assert _runs_for(project, "nope") == []
        listed = project.sd("alerts", "--json")
        assert sum(a["requests"] for a in json.loads(listed.stdout)) == 73, explain(listed)
    finally:
        server.stop()


def test_hostile_bytes_get_a_json_4xx_never_a_500_or_a_reset(open_server: Server) -> None:
    project = open_server.project
    base = open_server.base
    before = project.last_alert_id()
    counted = project.wait_refusals(1)[1]  # what earlier tests refused is journaled by now
    surrogate = '"x\\ud800y"'
    for endpoint, text, where in (
            ("/alerts", '{"name": ' + surrogate + '}', "body.name"),
            ("/alerts", '{"name": "DiskFull", "labels": {' + surrogate + ': "v"}}',
             "body.labels.x\\ud800y (the key)"),
            ("/alerts/alertmanager", json.dumps(alertmanager("DiskFull", {"host": "h"}))
             .replace('"host": "h"', '"host": ' + surrogate),
             "body.alerts[0].labels.host"),
            ("/alerts/pagerduty", _pagerduty().decode().replace('"Disk full on web9"',
                                                                  surrogate),
             "body.event.data.title")):
        status, answer = request(f"{base}{endpoint}", raw=text.encode())
        assert status == 400, (endpoint, answer)
        assert answer["error"].startswith(where) and "surrogate" in answer["error"], answer

    for endpoint, raw, headers, why in (
            ("/alerts", b'{"name": 1e999999}', {}, "name: expected a string, got a number"),
            ("/alerts", b'{"name": "D", "labels": {"n": ' + b"9" * 5000 + b"}}", {},
             "not acceptable JSON"),
            ("/alerts/pagerduty", _pagerduty(), {"X-Webhook-Id": "a b"}, "X-Webhook-Id"),
            ("/alerts", b"[" * 100_000, {}, "nested too deeply")):
        status, answer = request(f"{base}{endpoint}", raw=raw, headers=headers)
        assert status == 400 and why in answer["error"], (endpoint, answer)

    # Bigger than waitress reads (4 x max_body and more): a JSON 413, not a reset.
    status, answer = request(f"{base}/alerts", raw=b"x" * (5 * 1024 * 1024))
    assert status == 413 and "receiver.max_body" in answer["error"], answer
    chunked = (b"POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n"
               + b"".join(b"10000\r\n" + b"y" * 0x10000 + b"\r\n" for _ in range(40))
               + b"0\r\n\r\n")
    assert raw_http(base, chunked, shut_write=True)[0] == 413
    # A Content-Length that promises more than the client sends before closing its side.
    lie = (b"POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: 100\r\n\r\n{\"name\": \"D")
    status, answer = raw_http(base, lie, shut_write=True)
    assert status == 400 and "stopped sending" in answer["error"], answer
    for odd in (b"POST /alerts HTTP/1.1\r\nHost: x\r\nX-Odd: a\x00b\r\n\r\n",
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
                b"POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 12, 13\r\n\r\n",
                b"POST /alerts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
                b"GET /" + b"a" * 300_000 + b" HTTP/1.1\r\n\r\n"):
        status, answer = raw_http(base, odd, shut_write=True)
        assert 400 <= status < 500 and answer["error"], (odd[:60], status, answer)

    assert open_server.alive() and "Traceback" not in open_server.log
    _, requests = project.wait_refusals(counted + 16)
    assert requests == counted + 16  # each counted, on sampled rows
    assert project.rows("SELECT id FROM alerts WHERE id > ? AND status != 'refused'",
                        (before,)) == []


def _more_hostile(rng: random.Random, base: str) -> tuple[int, Any]:
    """One hostile request of any kind, sent; its (status, answer)."""
    kind = rng.choice(["body", "body", "body", "token", "surrogate", "huge", "raw"])
    good = {"Authorization": f"Bearer {TOKEN}"}
    if kind == "token":  # no or wrong credentials, or a wrong PagerDuty signature
        endpoint = rng.choice(["/alerts", "/alerts/alertmanager", "/alerts/pagerduty"])
        headers = rng.choice([{}, {"Authorization": "Bearer nope"},
                              {"Authorization": "Basic \u00ff\u00fe"},
                              {"X-PagerDuty-Signature": "v1=" + "0" * 64}])
        return request(f"{base}{endpoint}", alertmanager("DiskFull"), headers=headers)
    if kind == "surrogate":
        endpoint, text = rng.choice([
            ("/alerts", '{"name": "D\\udc00"}'),
            ("/alerts/alertmanager", json.dumps(alertmanager("DiskFull", {"host": "h"}))
             .replace('"h"', '"\\ud800"')),
            ("/alerts/pagerduty", _pagerduty().decode().replace('"high"', '"\\udfff"'))])
        raw = text.encode()
        headers = {**good, "X-PagerDuty-Signature": _sign(raw)}
        return request(f"{base}{endpoint}", raw=raw, headers=headers)
    if kind == "huge":
        return request(f"{base}/alerts", raw=b"[" * rng.randint(1, 5 * 1024 * 1024),
                       headers=good)
    if kind == "raw":
        return raw_http(base, rng.choice([
            b"POST /alerts HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"na",
            b"POST /alerts HTTP/1.1\r\nHost: x\r\nX-Bad: \x01\x02\r\n\r\n",
            b"\x80\x81\x82 / HTTP/1.1\r\n\r\n",
            b"POST /alerts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]),
            shut_write=True)
    endpoint, raw, ctype = _hostile(rng)
    headers = {**good, "Content-Type": ctype, "X-PagerDuty-Signature": _sign(raw)}
    return request(f"{base}{endpoint}", raw=raw, headers=headers)


@pytest.mark.slow
def test_1000_hostile_requests_get_json_4xx_while_it_stays_healthy(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    project = Project(tmp_path / "proj", extra=AUTH)
    project.runbook(MARK.format(marks=_marks(project)))
    server = Server(project, env=clean_env(SELFDRIVE_RECEIVER_TOKEN=TOKEN,
                                           SELFDRIVE_RECEIVER_PASSWORD=PASSWORD,
                                           SELFDRIVE_PAGERDUTY_SECRET=PD_SECRET))
    health: list[tuple[int, float]] = []
    done = threading.Event()

    def probe() -> None:
        while not done.is_set():
            began = time.monotonic()
            status, _ = request(f"{server.base}/healthz", method="GET", timeout=10)
            health.append((status, time.monotonic() - began))
            done.wait(0.05)

    prober = threading.Thread(target=probe)
    prober.start()
    started = time.monotonic()
    try:
        try:
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(
                    lambda n: _more_hostile(random.Random(n), server.base), range(1000)))
            elapsed = time.monotonic() - started
        finally:
            done.set()
            prober.join()
        bad = [(n, a) for n, a in enumerate(answers)
               if not (400 <= a[0] < 500 and isinstance(a[1], dict) and a[1].get("error"))]
        assert bad == [], bad[:5]
        assert elapsed < 60, elapsed
        assert len(health) > 10 and {s for s, _ in health} == {200}
        assert max(t for _, t in health) < 5, sorted(t for _, t in health)[-5:]
        rows, requests = project.wait_refusals(1000)
        assert requests == 1000 and rows <= 3  # one row per address per minute
        assert project.rows("SELECT id FROM alerts WHERE status != 'refused'") == []
        body = alertmanager("DiskFull", {"host": "after", "severity": "page"})
        status, answer = request(f"{server.base}/alerts/alertmanager", body,
                                 headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 202, answer
        server.wait_idle()
        assert (project.root / "marks" / "after").read_text() == "after\n"
        assert "Traceback" not in server.log and "internal error" not in server.log
    finally:
        server.stop()


ENV_DUMP = '''
@runbook(risk=Risk.READ_ONLY, triggers=[alert("WhatEnv")])
def what_env(ctx: Context) -> None:
    """Dumps its environment, as a careless diagnostic would."""
    ctx.run("env | sort", readonly=True)
'''


@pytest.mark.parametrize("allow", [None, ["*"]], ids=["default-allow-list", "allow-all"])
def test_an_alert_fired_runbook_never_sees_the_receivers_credentials(
        tmp_path: Path, allow: list[str] | None) -> None:
    """Its commands get the team's allow-list, and never the receiver's own secrets, not
    even when the team allows every variable."""
    extra = AUTH + ("" if allow is None else f"\n[executor]\nenv_allow = {json.dumps(allow)}\n")
    project = Project(tmp_path / "proj", extra=extra)
    project.runbook(ENV_DUMP)
    server = Server(project, env=clean_env(SELFDRIVE_RECEIVER_TOKEN=TOKEN,
                                           SELFDRIVE_RECEIVER_PASSWORD=PASSWORD,
                                           SELFDRIVE_PAGERDUTY_SECRET=PD_SECRET,
                                           LC_TIME="C"))
    try:
        status, answer = request(f"{server.base}/alerts/alertmanager", alertmanager("WhatEnv"),
                                 headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 202, answer
        server.wait_idle()
    finally:
        assert server.stop() == 0, server.log
    [step] = project.rows("SELECT s.stdout FROM steps s JOIN runs r ON r.id = s.run_id WHERE "
                          "r.runbook = 'what-env' AND s.phase = 'body' AND s.kind = 'command'")
    shown = step["stdout"]
    assert "PATH=" in shown and "LC_TIME=C" in shown
    for secret in (TOKEN, PASSWORD, PD_SECRET):
        assert secret not in shown
    assert ("SELFDRIVE_USER=alice" in shown) is (allow is not None)
