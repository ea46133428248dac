"""Matching alerts to runbooks, the wire forms, and the receiver's credential checks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest

from selfdrive import Context, Risk, alert, runbook
from selfdrive.journal import open_journal
from selfdrive.registry import Registry
from selfdrive.triggers.match import match_alert, order_matches
from selfdrive.triggers.payloads import (
    Alert,
    Limits,
    PayloadError,
    decode_json,
    fingerprint,
    parse_alertmanager,
    parse_generic,
    parse_pagerduty,
)
from selfdrive.triggers.receiver import (
    Credentials,
    check_authorization,
    check_pagerduty_signature,
    is_loopback,
)


@runbook(risk=Risk.LOW, triggers=[
    alert("DiskFull", env="prod", host=re.compile(r"web-\d+"),
          params={"host": "{{ labels.host }}", "why": "{{ alert }}: {{ annotations.summary }}"}),
])
def web_disk(ctx: Context, host: str, why: str) -> None:
    """Web hosts' disks."""


@runbook(risk=Risk.LOW, triggers=[alert("DiskFull", host=re.compile("db.*"),
                                        params={"host": "{{ labels.host }}"}),
                                  alert("DiskFull", params={"host": "any"})])
def any_disk(ctx: Context, host: str) -> None:
    """Any disk, through a second trigger."""


@runbook(risk=Risk.READ_ONLY, triggers=[alert("DiskFull", team="")])
def no_team(ctx: Context) -> None:
    """Alerts without a team label (a missing label reads as "")."""


REGISTRY = Registry.of(web_disk, any_disk, no_team)


def names(found: list[Any]) -> list[str]:
    return [m.runbook.name for m in found]


def test_equality_regex_full_match_and_declared_order() -> None:
    a = Alert("DiskFull", {"env": "prod", "host": "web-12"}, {"summary": "97%"})
    found = match_alert(a, REGISTRY)
    assert names(found) == ["web-disk", "any-disk", "no-team"]
    assert dict(found[0].params) == {"host": "web-12", "why": "DiskFull: 97%"}
    assert dict(found[1].params) == {"host": "any"}  # its first trigger did not match
    with tempfile.TemporaryDirectory() as folder:  # no record yet: declared order decides
        journal = open_journal(Path(folder) / "journal.db")
        assert order_matches(found, journal) == found
        journal.close()
    # A regex must match the whole value; equality is exact; other names never match.
    assert names(match_alert(Alert("DiskFull", {"env": "prod", "host": "web-12x"}),
                             REGISTRY)) == ["any-disk", "no-team"]
    assert names(match_alert(Alert("DiskFull", {"env": "Prod", "host": "web-1"}),
                             REGISTRY)) == ["any-disk", "no-team"]
    assert names(match_alert(Alert("DiskFull", {"team": "x"}), REGISTRY)) == ["any-disk"]
    assert match_alert(Alert("DiskFul", {}), REGISTRY) == []
    db = match_alert(Alert("DiskFull", {"host": "db7"}), REGISTRY)
    assert dict(db[0].params) == {"host": "db7"}


def test_a_template_over_a_missing_annotation_is_an_error_naming_it() -> None:
    [web, *_] = match_alert(Alert("DiskFull", {"env": "prod", "host": "web-1"}), REGISTRY)
    assert web.error is not None
    assert "runbook 'web-disk'" in web.error and "params['why']" in web.error
    assert "summary" in web.error


def test_params_are_rendered_unquoted_in_the_sandbox() -> None:
    a = Alert("DiskFull", {"env": "prod", "host": "web-1"},
              {"summary": "x; rm -rf / {{ 7*7 }}"})
    [web, *_] = match_alert(a, REGISTRY)
    assert web.params["why"] == "DiskFull: x; rm -rf / {{ 7*7 }}"  # data, never a template


LIMITS = Limits(max_alerts=3, max_labels=4, max_label_chars=20, max_annotation_chars=40)


def test_generic_form() -> None:
    [a] = parse_generic({"name": "X", "labels": {"a": "1"}}, LIMITS)
    assert (a.name, a.status, a.source) == ("X", "firing", "generic")
    assert a.fingerprint == fingerprint("X", {"a": "1"})
    [b] = parse_generic({"name": "X", "labels": {"a": "1"}, "status": "resolved",
                         "fingerprint": "f"}, LIMITS)
    assert (b.status, b.fingerprint) == ("resolved", "f")
    for bad, why in [({"labels": {}}, "name: expected a string, got null"),
                     ({"name": " "}, "name: must not be empty"),
                     ({"name": "X", "labels": {"a": 1}}, "labels['a']: expected a string, "
                                                          "got a number"),
                     ({"name": "X", "labels": [1]}, "labels: expected a JSON object, got an "
                                                    "array"),
                     ({"name": "X", "status": "on"}, 'status: expected "firing" or '
                                                     '"resolved"'),
                     ({"name": "X", "labels": {f"k{i}": "v" for i in range(5)}},
                      "labels: 5 entries, at most 4 allowed"),
                     ({"name": "X", "labels": {"a": "v" * 21}}, "21 characters, at most 20"),
                     ({"name": "X", "extra": 1}, "unknown field(s) 'extra'"),
                     ([], "body: expected a JSON object, got an array")]:
        with pytest.raises(PayloadError) as info:
            parse_generic(bad, LIMITS)
        assert why in str(info.value), (bad, str(info.value))


def test_alertmanager_form() -> None:
    body = {"version": "4", "groupKey": "g", "status": "firing", "alerts": [
        {"status": "firing", "labels": {"alertname": "A", "x": "1"}, "annotations": {},
         "startsAt": "2026-11-25T10:00:00Z", "fingerprint": "abc"},
        {"status": "resolved", "labels": {"alertname": "B"}}]}
    a, b = parse_alertmanager(body, LIMITS)
    assert (a.name, a.fingerprint, a.starts_at, a.group_key) == ("A", "abc",
                                                                  "2026-11-25T10:00:00Z", "g")
    assert (b.name, b.status) == ("B", "resolved")
    for mutate, why in [(lambda d: d.update(version="3"), 'version: expected "4"'),
                        (lambda d: d.update(alerts=[]), "alerts: empty"),
                        (lambda d: d.update(alerts=[{}] * 4), "4 alerts, at most 3"),
                        (lambda d: d["alerts"][0]["labels"].pop("alertname"),
                         "alerts[0].labels.alertname: missing"),
                        (lambda d: d["alerts"][1].update(status=None),
                         "alerts[1].status: expected")]:
        data = json.loads(json.dumps(body))
        mutate(data)
        with pytest.raises(PayloadError) as info:
            parse_alertmanager(data, LIMITS)
        assert why in str(info.value)


def test_pagerduty_form() -> None:
    event = {"event": {"id": "E1", "event_type": "incident.triggered",
                       "occurred_at": "2026-11-25T10:00:00Z",
                       "data": {"id": "P1", "number": 3, "title": "Disk full",
                                "status": "triggered", "urgency": "high",
                                "service": {"id": "S1", "summary": "API"},
                                "priority": None, "custom": {"name": "by-field"}}}}
    [a] = parse_pagerduty(event, Limits())
    assert (a.name, a.status, a.fingerprint, a.source) == ("Disk full", "firing", "P1",
                                                           "pagerduty")
    assert a.labels == {"event_type": "incident.triggered", "incident_id": "P1",
                        "service": "API", "service_id": "S1", "urgency": "high",
                        "status": "triggered", "incident_number": "3"}
    [named] = parse_pagerduty(event, Limits(), name_field="custom.name")
    assert named.name == "by-field"
    event["event"]["event_type"] = "incident.resolved"
    assert parse_pagerduty(event, Limits())[0].status == "resolved"
    event["event"]["event_type"] = "incident.acknowledged"
    assert parse_pagerduty(event, Limits())[0].status == "ignored"
    [ping] = parse_pagerduty({"event": {"event_type": "pagey.ping", "id": "x"}}, Limits())
    assert ping.status == "ignored"
    with pytest.raises(PayloadError, match=r"event.data.title: expected a string"):
        parse_pagerduty({"event": {"event_type": "incident.triggered", "data": {"id": "P"}}},
                        Limits())


@pytest.mark.parametrize(("raw", "why"), [
    (b"\xff{}", "not valid UTF-8"), (b"{", "not valid JSON"), (b"[" * 100_000, "nested too"),
    (b"NaN", "not valid JSON"), (b"1" * 5000, "not acceptable JSON"),
])
def test_decoding_refuses_what_is_not_plain_json(raw: bytes, why: str) -> None:
    with pytest.raises(PayloadError, match=why):
        decode_json(raw)


def test_credentials_and_signatures() -> None:
    creds = Credentials(token=b"tok", basic_user=b"am", basic_password=b"pw")
    basic = "Basic " + base64.b64encode(b"am:pw").decode()
    assert check_authorization("Bearer tok", creds)
    assert check_authorization("bearer  tok ", creds)
    assert check_authorization(basic, creds)
    for bad in (None, "", "Bearer", "Bearer tok2", "Bearer to", "tok", "Basic !!!",
                "Basic " + base64.b64encode(b"am:px").decode(),
                "Basic " + base64.b64encode(b"ampw").decode(), "Bearer tök"):
        assert not check_authorization(bad, creds), bad
    assert not check_authorization("Bearer tok", Credentials(basic_user=b"a",
                                                             basic_password=b"b"))
    body = b'{"event": {}}'
    good = hmac.new(b"sec", body, hashlib.sha256).hexdigest()
    assert check_pagerduty_signature(body, f"v1={good}", b"sec")
    assert check_pagerduty_signature(body, f"v1=00,v1={good.upper()}", b"sec")
    for bad in (None, "", good, f"v2={good}", "v1=", f"v1={good[:-1]}"):
        assert not check_pagerduty_signature(body, bad, b"sec"), bad
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert is_loopback("127.8.9.10")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1")
    assert not is_loopback("example.com") and not is_loopback("::")
