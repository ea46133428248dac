"""Alerts as selfdrive sees them, and the three wire forms they arrive in.

Every payload is untrusted: each parser checks types, sizes and counts and raises
:class:`PayloadError` naming the offending field, so the receiver can answer 400 with
a reason instead of failing somewhere deeper. Nothing here touches the journal.

The generic form (``POST /alerts``)::

    {"name": "DiskFull",                      # required, a non-empty string
     "labels": {"host": "web1"},              # optional, string → string
     "annotations": {"summary": "…"},         # optional, string → string
     "status": "firing",                      # optional: "firing" (default) or "resolved"
     "fingerprint": "web1-disk"}              # optional; default: a hash of name and labels
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

FIRING, RESOLVED, IGNORED = "firing", "resolved", "ignored"
MAX_NAME_CHARS = 256
MAX_FINGERPRINT_CHARS = 256


class PayloadError(ValueError):
    """The body is not an alert selfdrive accepts; the message says which field and why."""


@dataclass(frozen=True)
class Limits:
    """Caps on what one alert may carry (from ``[receiver]``)."""

    max_alerts: int = 1000
    max_labels: int = 64
    max_label_chars: int = 1024
    max_annotation_chars: int = 16384


@dataclass(frozen=True)
class Alert:
    """One alert, normalised: what matching, dedup and the journal work on.

    ``status`` is firing, resolved, or ignored (a PagerDuty event that starts
    nothing, e.g. an acknowledgement); only firing alerts start runs.
    """

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    status: str = FIRING
    fingerprint: str = ""
    source: str = "generic"
    starts_at: str | None = None
    group_key: str | None = None
    note: str | None = None

    def __post_init__(self) -> None:
        if not self.fingerprint:
            object.__setattr__(self, "fingerprint", fingerprint(self.name, self.labels))

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "labels": dict(self.labels),
                "annotations": dict(self.annotations), "status": self.status,
                "fingerprint": self.fingerprint, "source": self.source,
                "starts_at": self.starts_at, "group_key": self.group_key, "note": self.note}


def fingerprint(name: str, labels: Mapping[str, str]) -> str:
    """A stable identity for an alert that brings none: its name and sorted labels."""
    text = json.dumps([name, sorted(labels.items())], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# -- field checks ---------------------------------------------------------------


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "…"


def _object(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{where}: expected a JSON object, got {_json_type(value)}")
    return value


def _string(value: object, where: str, *, limit: int, required: bool = True,
            empty: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise PayloadError(f"{where}: expected a string, got {_json_type(value)}")
    if not empty and not value.strip():
        raise PayloadError(f"{where}: must not be empty")
    if len(value) > limit:
        raise PayloadError(f"{where}: {len(value)} characters, at most {limit} allowed")
    return value


def _string_map(value: object, where: str, *, limits: Limits, value_chars: int) -> dict[str, str]:
    if value is None:
        return {}
    data = _object(value, where)
    if len(data) > limits.max_labels:
        raise PayloadError(f"{where}: {len(data)} entries, at most {limits.max_labels} allowed")
    out: dict[str, str] = {}
    for key, item in data.items():
        if not key or len(key) > limits.max_label_chars:
            raise PayloadError(f"{where}: key {_short(key)} must have 1 to "
                               f"{limits.max_label_chars} characters")
        if not isinstance(item, str):
            raise PayloadError(f"{where}[{_short(key)}]: expected a string, got "
                               f"{_json_type(item)}")
        if len(item) > value_chars:
            raise PayloadError(f"{where}[{_short(key)}]: {len(item)} characters, at most "
                               f"{value_chars} allowed")
        out[key] = item
    return out


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _labels(value: object, where: str, limits: Limits) -> dict[str, str]:
    return _string_map(value, where, limits=limits, value_chars=limits.max_label_chars)


def _annotations(value: object, where: str, limits: Limits) -> dict[str, str]:
    return _string_map(value, where, limits=limits, value_chars=limits.max_annotation_chars)


def _status(value: object, where: str) -> str:
    if value not in (FIRING, RESOLVED):
        raise PayloadError(f"{where}: expected \"firing\" or \"resolved\", got {_short(value)}")
    return str(value)


# -- the three forms ------------------------------------------------------------


def parse_generic(data: object, limits: Limits) -> list[Alert]:
    """The documented generic form: one alert per request (see the module docstring)."""
    body = _object(data, "body")
    unknown = sorted(set(body) - {"name", "labels", "annotations", "status", "fingerprint"})
    if unknown:
        raise PayloadError(f"body: unknown field(s) {', '.join(map(_short, unknown))}; "
                           f"expected name, labels, annotations, status, fingerprint")
    name = _string(body.get("name"), "name", limit=MAX_NAME_CHARS)
    assert name is not None
    return [Alert(name=name, labels=_labels(body.get("labels"), "labels", limits),
                  annotations=_annotations(body.get("annotations"), "annotations", limits),
                  status=_status(body.get("status", FIRING), "status"),
                  fingerprint=_string(body.get("fingerprint"), "fingerprint",
                                      limit=MAX_FINGERPRINT_CHARS, required=False) or "",
                  source="generic")]


def parse_alertmanager(data: object, limits: Limits) -> list[Alert]:
    """Prometheus Alertmanager's webhook, payload version "4"; one Alert per entry."""
    body = _object(data, "body")
    if body.get("version") != "4":
        raise PayloadError(f"version: expected \"4\" (Alertmanager webhook), got "
                           f"{_short(body.get('version'))}")
    group_key = _string(body.get("groupKey"), "groupKey", limit=limits.max_annotation_chars,
                        required=False, empty=True)
    entries = body.get("alerts")
    if not isinstance(entries, list):
        raise PayloadError(f"alerts: expected an array, got {_json_type(entries)}")
    if not entries:
        raise PayloadError("alerts: empty; nothing to receive")
    if len(entries) > limits.max_alerts:
        raise PayloadError(f"alerts: {len(entries)} alerts, at most {limits.max_alerts} "
                           f"in one request")
    out = []
    for i, entry in enumerate(entries):
        where = f"alerts[{i}]"
        item = _object(entry, where)
        labels = _labels(item.get("labels"), f"{where}.labels", limits)
        if not labels.get("alertname", "").strip():
            raise PayloadError(f"{where}.labels.alertname: missing; every Alertmanager alert "
                               f"has one")
        out.append(Alert(
            name=labels["alertname"][:MAX_NAME_CHARS], labels=labels,
            annotations=_annotations(item.get("annotations"), f"{where}.annotations", limits),
            status=_status(item.get("status"), f"{where}.status"),
            fingerprint=_string(item.get("fingerprint"), f"{where}.fingerprint",
                                limit=MAX_FINGERPRINT_CHARS, required=False) or "",
            starts_at=_string(item.get("startsAt"), f"{where}.startsAt", limit=64,
                              required=False),
            group_key=group_key, source="alertmanager"))
    return out


#: PagerDuty v3 event types that start runs, and the one that resolves.
PD_FIRING = ("incident.triggered", "incident.reopened")
PD_RESOLVED = "incident.resolved"


def parse_pagerduty(data: object, limits: Limits, *, name_field: str = "title") -> list[Alert]:
    """A PagerDuty v3 webhook event about an incident, as one alert.

    The name is ``event.data.<name_field>`` (default: the incident title); labels are
    the incident's service, urgency, priority, status, number, id, escalation policy
    and the event type; the fingerprint is the incident id, so every event about one
    incident deduplicates together. Events other than triggered, reopened and resolved
    (acknowledged, annotated, pings …) are journaled as ``ignored``.
    """
    body = _object(data, "body")
    event = _object(body.get("event"), "event")
    event_type = _string(event.get("event_type"), "event.event_type", limit=128)
    assert event_type is not None
    incident = event.get("data")
    if event_type == "pagey.ping" or incident is None:
        return [Alert(name=event_type, status=IGNORED, source="pagerduty",
                      fingerprint=str(event.get("id") or event_type)[:MAX_FINGERPRINT_CHARS],
                      note=f"PagerDuty {event_type} event: starts nothing")]
    incident = _object(incident, "event.data")
    value: object = incident
    for part in name_field.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    name = _string(value, f"event.data.{name_field}", limit=MAX_NAME_CHARS)
    assert name is not None
    incident_id = _string(incident.get("id"), "event.data.id", limit=MAX_FINGERPRINT_CHARS)
    assert incident_id is not None
    labels: dict[str, str] = {"event_type": event_type, "incident_id": incident_id}
    for label, path in (("service", ("service", "summary")), ("service_id", ("service", "id")),
                        ("urgency", ("urgency",)), ("priority", ("priority", "summary")),
                        ("status", ("status",)), ("incident_number", ("number",)),
                        ("escalation_policy", ("escalation_policy", "summary"))):
        found: object = incident
        for part in path:
            found = found.get(part) if isinstance(found, dict) else None
        if isinstance(found, str | int) and not isinstance(found, bool) and str(found):
            labels[label] = str(found)
    annotations: dict[str, str] = {"title": str(incident.get("title") or name)}
    for key in ("html_url", "incident_key"):
        if isinstance(incident.get(key), str):
            annotations[key] = incident[key]
    labels = _labels(labels, "labels (from event.data)", limits)
    annotations = _annotations(annotations, "annotations (from event.data)", limits)
    if event_type in PD_FIRING:
        status, note = FIRING, None
    elif event_type == PD_RESOLVED:
        status, note = RESOLVED, None
    else:
        status, note = IGNORED, f"PagerDuty {event_type} event: starts nothing"
    occurred = event.get("occurred_at")
    return [Alert(name=name, labels=labels, annotations=annotations, status=status,
                  fingerprint=incident_id, source="pagerduty", note=note,
                  starts_at=occurred[:64] if isinstance(occurred, str) else None)]


PARSERS = {"generic": parse_generic, "alertmanager": parse_alertmanager}


def decode_json(body: bytes) -> Any:
    """Strict UTF-8 JSON; every way it can fail becomes a :class:`PayloadError`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {exc.msg} at line {exc.lineno} column "
                           f"{exc.colno}") from None
    except RecursionError:
        raise PayloadError("body is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with too many digits
        raise PayloadError(f"body is not acceptable JSON: {str(exc)[:120]}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
