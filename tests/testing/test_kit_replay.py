"""Alert replay: a real Alertmanager webhook body, which runbooks it fires, with what."""

from __future__ import annotations

import json
import re
from pathlib import Path

from selfdrive import Context, Risk, alert, runbook
from selfdrive.library.check_cert_expiry import check_cert_expiry
from selfdrive.library.restart_service import restart_service
from selfdrive.testing import replay

# As Alertmanager 0.27 POSTs it to a webhook receiver (payload version 4).
PAYLOAD = {
    "receiver": "selfdrive",
    "status": "firing",
    "alerts": [
        {"status": "firing",
         "labels": {"alertname": "NodeSystemdServiceFailed", "instance": "web1:9100",
                    "job": "node", "name": "nginx.service", "severity": "warning",
                    "state": "failed"},
         "annotations": {"summary": "Systemd service has entered failed state."},
         "startsAt": "2026-11-25T21:30:02.551Z", "endsAt": "0001-01-01T00:00:00Z",
         "generatorURL": "http://prometheus:9090/graph?g0.expr=...",
         "fingerprint": "8c6cc2b3a7b5b1f2"},
        {"status": "resolved",
         "labels": {"alertname": "NodeSystemdServiceFailed", "instance": "web2:9100",
                    "name": "redis.service", "severity": "warning"},
         "annotations": {}, "startsAt": "2026-11-25T20:00:00Z",
         "endsAt": "2026-11-25T21:00:00Z", "fingerprint": "11aa22bb33cc44dd"},
        {"status": "firing",
         "labels": {"alertname": "SSLCertExpiringSoon", "instance": "shop.example.com:443",
                    "job": "blackbox"},
         "annotations": {"description": "expires in 12 days"},
         "startsAt": "2026-11-25T21:31:00Z", "endsAt": "0001-01-01T00:00:00Z",
         "fingerprint": "aa00bb11cc22dd33"},
        {"status": "firing",
         "labels": {"alertname": "DiskFull", "mountpoint": "/var/cache", "host": "web3"},
         "annotations": {}, "startsAt": "2026-11-25T21:32:00Z", "fingerprint": "d1d2d3d4"},
        {"status": "firing",
         "labels": {"alertname": "DiskFull", "mountpoint": "/", "host": "web3",
                    "team": "payments"},
         "annotations": {}, "startsAt": "2026-11-25T21:32:00Z", "fingerprint": "e1e2e3e4"},
    ],
    "groupLabels": {"alertname": "NodeSystemdServiceFailed"},
    "commonLabels": {}, "commonAnnotations": {},
    "externalURL": "http://alertmanager:9093", "version": "4",
    "groupKey": "{}:{alertname=\"NodeSystemdServiceFailed\"}", "truncatedAlerts": 0,
}


@runbook(risk=Risk.LOW, triggers=[
    alert("DiskFull", team=re.compile("payments|search"),
          params={"path": "{{ labels.mountpoint }}", "days": "{{ labels.days }}"}),
    alert("DiskFull", params={"path": "{{ labels.mountpoint }}"}),
])
def clean_disk(ctx: Context, path: str, days: int = 7) -> None:
    """Clean."""


def test_replay_names_each_runbook_an_alert_fires_and_its_parameters(tmp_path: Path) -> None:
    body = tmp_path / "alert.json"
    body.write_text(json.dumps(PAYLOAD))
    matches = replay(body, [restart_service, check_cert_expiry, clean_disk])
    got = [(m.alert.name, m.alert.labels.get("instance") or m.alert.labels.get("mountpoint"),
            m.runbook, dict(m.params), m.fires) for m in matches]
    assert got[:4] == [
        ("NodeSystemdServiceFailed", "web1:9100", "restart-service",
         {"service": "nginx.service"}, True),
        ("NodeSystemdServiceFailed", "web2:9100", "restart-service",
         {"service": "redis.service"}, False),  # resolved: matches, starts nothing
        ("SSLCertExpiringSoon", "shop.example.com:443", "check-cert-expiry",
         {"endpoint": "shop.example.com:443"}, True),
        ("DiskFull", "/var/cache", "clean-disk", {"path": "/var/cache"}, True),
    ]
    # The first matching trigger wins, and its templates need a label this alert lacks.
    last = matches[4]
    assert last.runbook == "clean-disk" and not last.fires
    assert last.error is not None and "days" in last.error


def test_replay_accepts_text_a_registry_folder_and_the_generic_form(tmp_path: Path) -> None:
    folder = tmp_path / "runbooks"
    folder.mkdir()
    (folder / "web.py").write_text(
        "from selfdrive import Context, Risk, alert, runbook\n\n\n"
        "@runbook(risk=Risk.LOW, triggers=[alert('Down', params={'host': '{{ labels.host }}'})])\n"
        "def bounce(ctx: Context, host: str) -> None:\n    \"\"\"Bounce.\"\"\"\n")
    generic = json.dumps({"name": "Down", "labels": {"host": "web1"}})
    [match] = replay(generic, folder)
    assert (match.runbook, dict(match.params), match.fires) == ("bounce", {"host": "web1"}, True)
    assert replay(json.dumps({"name": "Up"}), folder) == []
