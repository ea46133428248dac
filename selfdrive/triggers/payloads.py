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
import re
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
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
    nothing, e.g. an acknowledgement); only firing alerts start runs. ``starts_at`` is
    the ISO 8601 time the sender gave (when the alert began, when the event occurred).
    ``deliveries`` are the sender's ids for this delivery (PagerDuty's event id and
    X-Webhook-Id): a second delivery with one of them is a replay.
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
    deliveries: tuple[str, ...] = ()

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


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 40
_REPR.maxlevel = 2


def _short(value: object) -> str:
    """A bounded look at a value for a message: never the whole of a huge or deep one."""
    text = _REPR.repr(value)
    return text if len(text) <= 40 else text[:37] + "…"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


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


def _timestamp(value: object, where: str) -> str | None:
    """An ISO 8601 time, kept as sent; checked here so that replays can be told from
    new events by comparing times (a time without a zone counts as UTC)."""
    if value is None:
        return None
    text = _string(value, where, limit=64)
    assert text is not None
    try:
        datetime.fromisoformat(text.strip()).astimezone(UTC)
    except (ValueError, OverflowError):
        raise PayloadError(f"{where}: {_short(text)} is not an ISO 8601 time") from None
    return text.strip()


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
            starts_at=_timestamp(item.get("startsAt"), f"{where}.startsAt"),
            group_key=group_key, source="alertmanager"))
    return out


#: PagerDuty v3 event types that start runs (a new incident, or one reopened after it
#: was resolved) and the one that resolves. Every other event type, documented or added
#: by PagerDuty later, says something about who works on an incident, its notes,
#: priority, fields, workflows, or a service's settings: none of that means something
#: broke or was fixed, so those events are journaled as ``ignored`` and start nothing.
PD_FIRING = frozenset({"incident.triggered", "incident.reopened"})
PD_RESOLVED = frozenset({"incident.resolved"})
MAX_EVENT_ID_CHARS = 128


def parse_pagerduty(data: object, limits: Limits, *, name_field: str = "title") -> list[Alert]:
    """A PagerDuty v3 webhook event, as one alert.

    For an event about an incident the fingerprint is the incident id, so every event
    about one incident deduplicates together; the name is ``event.data.<name_field>``
    (default: the incident title) for events that carry the incident itself, and the
    incident reference's summary (its title) for those that carry a note, a responder,
    a status update, a task, a workflow and the like. Labels: the incident's service,
    urgency, priority, status, number, id, escalation policy, and the event type.

    Triggered and reopened events fire, resolved resolves, and every other event type
    is accepted and journaled as ``ignored``: PagerDuty drops a delivery answered 4xx
    and disables the subscription after three in a row, so only a body that is not a
    v3 event at all, or a firing/resolving event without its incident, is refused.
    """
    body = _object(data, "body")
    event = _object(body.get("event"), "event")
    event_type = _string(event.get("event_type"), "event.event_type", limit=128)
    assert event_type is not None
    event_id = _string(event.get("id"), "event.id", limit=MAX_EVENT_ID_CHARS, required=False)
    occurred = _timestamp(event.get("occurred_at"), "event.occurred_at")
    payload = event.get("data")
    payload = {} if payload is None else _object(payload, "event.data")
    deliveries = (f"pagerduty:event:{event_id}",) if event_id else ()
    if event_type in PD_FIRING or event_type in PD_RESOLVED:
        alert = _pd_incident(event_type, payload, limits, name_field)
    else:
        alert = _pd_other(event_type, payload, limits, name_field, fallback=event_id)
    return [Alert(name=alert.name, labels=alert.labels, annotations=alert.annotations,
                  status=alert.status, fingerprint=alert.fingerprint, source="pagerduty",
                  note=alert.note, starts_at=occurred, deliveries=deliveries)]


def _pd_incident(event_type: str, incident: dict[str, Any], limits: Limits,
                 name_field: str) -> Alert:
    """A firing or resolving event: it must carry the incident, with an id and a name."""
    name = _lookup(incident, name_field)
    if not (isinstance(name, str) and name.strip()):
        name = incident.get("title", name)
    if not isinstance(name, str):
        raise PayloadError(f"event.data.{name_field}: expected a string, got "
                           f"{_json_type(name)}")
    if not name.strip():
        raise PayloadError(f"event.data.{name_field}: must not be empty")
    if len(name) > limits.max_annotation_chars:  # a longer name is kept whole as "title"
        raise PayloadError(f"event.data.{name_field}: {len(name)} characters, at most "
                           f"{limits.max_annotation_chars} allowed")
    incident_id = _string(incident.get("id"), "event.data.id", limit=MAX_FINGERPRINT_CHARS)
    assert incident_id is not None
    status = FIRING if event_type in PD_FIRING else RESOLVED
    return Alert(name=_clip(name.strip(), MAX_NAME_CHARS),
                 labels=_pd_labels(event_type, incident, limits),
                 annotations=_pd_annotations(incident, limits, title=name),
                 status=status, fingerprint=incident_id)


def _pd_other(event_type: str, payload: dict[str, Any], limits: Limits, name_field: str,
              *, fallback: str | None) -> Alert:
    """Any other event: journaled with what it names (its incident or its service)."""
    incident = payload if _is_incident(payload) else None
    reference = incident or _incident_reference(payload)
    labels = _pd_labels(event_type, incident or {}, limits)
    fingerprint: str | None = None
    name: object = None
    if incident is not None:
        name = _lookup(incident, name_field)
        if not (isinstance(name, str) and name.strip()):
            name = incident.get("title")
    if reference is not None:
        fingerprint = _text(reference.get("id"), MAX_FINGERPRINT_CHARS)
        if fingerprint:
            labels["incident_id"] = _clip(fingerprint, limits.max_label_chars)
        if not (isinstance(name, str) and name.strip()):
            name = reference.get("summary")
    service = payload.get("service")
    if not isinstance(service, dict):
        service = payload if event_type.startswith("service.") else {}
    if "service_id" not in labels:  # a workflow's service, or a service event's own
        service_id = _text(service.get("id"), MAX_FINGERPRINT_CHARS - 8)
        summary = _text(service.get("summary"), limits.max_label_chars)
        if service_id:
            labels["service_id"] = _clip(service_id, limits.max_label_chars)
        if summary:
            labels["service"] = summary
        if reference is None and service_id:
            fingerprint = f"service:{service_id}"
            name = summary
    annotations = _pd_annotations(incident or {}, limits, title=None)
    for key in ("content", "message"):  # a note, a status update, a responder request
        text = _text(payload.get(key), limits.max_annotation_chars)
        if text:
            annotations[key] = text
    shown = name.strip() if isinstance(name, str) and name.strip() else event_type
    return Alert(name=_clip(shown, MAX_NAME_CHARS), labels=labels, annotations=annotations,
                 status=IGNORED, fingerprint=fingerprint or fallback or event_type,
                 note=f"PagerDuty {event_type} event: starts nothing")


def _lookup(data: dict[str, Any], dotted: str) -> object:
    value: object = data
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _text(value: object, limit: int) -> str | None:
    """A non-empty string from PagerDuty's own data, clipped rather than refused."""
    if isinstance(value, str) and value.strip():
        return _clip(value, limit)
    return None


def _is_incident(payload: dict[str, Any]) -> bool:
    if "type" in payload:
        return bool(payload["type"] == "incident")
    return isinstance(payload.get("id"), str) and isinstance(payload.get("title"), str)


def _incident_reference(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The incident an event's data points at (a note's, a responder's, a task's …)."""
    reference = payload.get("incident")
    if isinstance(reference, dict):
        return reference
    assignments = payload.get("incident_role_assignments")
    if isinstance(assignments, list) and assignments and isinstance(assignments[0], dict) \
            and isinstance(assignments[0].get("incident"), dict):
        found: dict[str, Any] = assignments[0]["incident"]
        return found
    return None


def _pd_labels(event_type: str, incident: dict[str, Any], limits: Limits) -> dict[str, str]:
    """The incident's fields that runbooks match on; values are PagerDuty's own, so a
    long one is clipped, never a reason to refuse the event."""
    labels = {"event_type": _clip(event_type, limits.max_label_chars)}
    for label, path in (("incident_id", "id"), ("service", "service.summary"),
                        ("service_id", "service.id"), ("urgency", "urgency"),
                        ("priority", "priority.summary"), ("status", "status"),
                        ("incident_number", "number"),
                        ("escalation_policy", "escalation_policy.summary")):
        found = _lookup(incident, path)
        if isinstance(found, int) and not isinstance(found, bool):
            found = str(found) if abs(found) < 10 ** 18 else None
        text = _text(found, limits.max_label_chars)
        if text:
            labels[label] = text
    return labels


def _pd_annotations(incident: dict[str, Any], limits: Limits, *,
                    title: str | None) -> dict[str, str]:
    annotations: dict[str, str] = {}
    for key, value in (("title", title or incident.get("title")),
                       ("html_url", incident.get("html_url")),
                       ("incident_key", incident.get("incident_key"))):
        text = _text(value, limits.max_annotation_chars)
        if text:
            annotations[key] = text
    return annotations


PARSERS = {"generic": parse_generic, "alertmanager": parse_alertmanager}


def decode_json(body: bytes) -> Any:
    """Strict UTF-8 JSON; every way it can fail becomes a :class:`PayloadError`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"body is not valid JSON: {exc.msg} at line {exc.lineno} column "
                           f"{exc.colno}") from None
    except RecursionError:
        raise PayloadError("body is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer with too many digits
        raise PayloadError(f"body is not acceptable JSON: {str(exc)[:120]}") from None
    if _SURROGATE_ESCAPE.search(text):
        _refuse_surrogates(data)
    return data


#: JSON's \ud800-\udfff escapes: valid text only as pairs. A strict UTF-8 body holds
#: no surrogate otherwise, so only bodies with such an escape need the walk below.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _refuse_surrogates(data: Any) -> None:
    """A lone surrogate (``"\\ud800"``) parses into a string no UTF-8 writer can take:
    not the journal, the answer or the log. Refuse it here, naming where it is."""
    stack: list[tuple[Any, str]] = [(data, "body")]
    while stack:  # iterative: the depth is the sender's choice
        value, where = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                shown = f"{where}.{_printable(key)}"
                _check_text(key, f"{shown} (the key)")
                stack.append((item, shown))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, str):
            _check_text(value, where)


def _check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise PayloadError(f"{_clip(where, 200)}: a lone UTF-16 surrogate "
                           f"(\\u{ord(text[exc.start]):04x}) at character {exc.start} is "
                           f"not valid Unicode") from None


def _printable(key: str) -> str:
    return _clip(key.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace"),
                 60)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
