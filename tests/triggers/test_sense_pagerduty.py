"""PagerDuty v3 webhooks: every documented event type becomes one alert.

The payloads are PagerDuty's documented shapes (``pagerduty_events/``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from selfdrive.triggers.payloads import Limits, PayloadError, parse_pagerduty

EVENTS = Path(__file__).parent / "pagerduty_events"
#: What each documented event type does here: only these two start runs, one resolves.
FIRING = {"incident.triggered", "incident.reopened"}
RESOLVED = {"incident.resolved"}


def documented() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(EVENTS.glob("*.json"))}


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
