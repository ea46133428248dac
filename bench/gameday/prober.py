"""The harness's prober: looks at the fleet from outside and alerts like Alertmanager.

Every ``interval`` it probes each service's ``/health`` (HTTPS for the edge, whose
certificate it also checks), each host's disk, the CPU each host's processes burn, and
whether the application role can still connect to PostgreSQL. A condition seen on two
probes in a row fires (Prometheus' ``for:``); one clear on two probes in a row
resolves. Each change is POSTed to the receiver as an Alertmanager webhook (payload
version 4, one alert per notification, retried like Alertmanager does); every
notification and whether it was accepted goes to ``sent`` for the score. Without a
receiver (the ``none`` level) it only keeps the snapshot that the incident tracker reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleet import ADDRESS, EDGE_PORT, HOSTS, HTTP_SERVICES, ROLES, Fleet

CERT_WARN_SECONDS = 14 * 86400
CPU_FIRE = 0.3       # a host's processes using a third of a core: services idle far below
DISK_FIRE = 90.0     # percent used
# Internal services are watched through their clients (an api's health names the
# upstream that does not answer): a dead one shows downstream, as in many real fleets.
INTERNAL = {"queue", "cache"}
DOMAIN = {"ServiceDown": "host", "ServiceUnhealthy": "host", "UpstreamUnavailable": "host",
          "NodeDiskFull": "host", "HostHighCpu": "host", "PostgresTooManyConnections":
          "postgres", "PostgresDown": "postgres", "SSLCertExpiringSoon": "tls"}


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fingerprint(labels: dict[str, str]) -> str:
    text = json.dumps(labels, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Snapshot:
    """What the last probe saw."""

    at: float = 0.0
    health: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    disk_used: dict[str, float] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    db: str = "ok"          # ok | exhausted | down
    cert_ok: bool = True


class Prober:
    def __init__(self, fleet: Fleet, interval: float = 0.5) -> None:
        self.fleet = fleet
        self.interval = interval
        self.snapshot = Snapshot()
        self.receiver: str | None = None
        self.sent: list[dict[str, Any]] = []
        self.pending: dict[str, tuple[dict[str, str], float]] = {}
        self.firing: dict[str, tuple[dict[str, str], float]] = {}
        self.clearing: dict[str, bool] = {}
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.pool = ThreadPoolExecutor(max_workers=8)
        self._cpu_hist: dict[int, list[tuple[float, float]]] = {}
        self._slow_at = 0.0
        self._tls = ssl.create_default_context()
        self._tls.check_hostname, self._tls.verify_mode = False, ssl.CERT_NONE
        self.ticks = 0

    # --------------------------------------------------------------- lifecycle
    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, daemon=True, name="prober")
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread:
            self.thread.join(timeout=10)
        self.pool.shutdown(wait=False)

    def attach(self, receiver: str | None) -> None:
        """A new level: a new receiver (or none), nothing firing, an empty log."""
        with self.lock:
            self.receiver = receiver
            self.sent = []
            self.pending, self.firing, self.clearing = {}, {}, {}

    def wait_ticks(self, n: int, timeout: float = 30) -> None:
        want, deadline = self.ticks + n, time.monotonic() + timeout
        while self.ticks < want and time.monotonic() < deadline:
            time.sleep(0.05)

    def _loop(self) -> None:
        while not self.stop_event.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except Exception as exc:  # the prober must outlive any one bad probe
                print(f"prober: {type(exc).__name__}: {exc}", flush=True)
            self.ticks += 1
            self.stop_event.wait(max(0.05, self.interval - (time.monotonic() - started)))

    # --------------------------------------------------------------- probing
    def _health(self, host: str, role: str) -> tuple[int, dict[str, Any]]:
        url = self.fleet.url(host, role) + "/health"
        try:
            with urllib.request.urlopen(url, timeout=1.0, context=self._tls) as a:
                return a.status, json.loads(a.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read() or b"{}")
            except ValueError:
                return exc.code, {}
        except (OSError, ValueError):
            return 0, {}

    def _db(self) -> str:
        r = self.fleet.psql("SELECT 1", user="app", timeout=5)
        if r.returncode == 0:
            return "ok"
        return "exhausted" if "too many clients" in r.stderr or "remaining connection" \
            in r.stderr else "down"

    def _cert_ok(self) -> bool:
        import socket
        try:
            with socket.create_connection((ADDRESS["edge1"], EDGE_PORT), timeout=2) as raw, \
                    self._tls.wrap_socket(raw) as s:
                der = s.getpeercert(binary_form=True)
        except OSError:
            return True  # a dead edge is ServiceDown, not a certificate problem
        if not der:
            return True
        pem = ssl.DER_cert_to_PEM_cert(der)
        r = subprocess.run(["openssl", "x509", "-noout", "-checkend", str(CERT_WARN_SECONDS)],
                           input=pem, check=False, capture_output=True, text=True, timeout=10)
        return r.returncode == 0

    def _cpu(self) -> dict[str, float]:
        """Cores used over the last ~3 s (a rate, as Prometheus takes one) by the processes
        of each host's folder."""
        now = time.monotonic()
        tick = os.sysconf("SC_CLK_TCK")
        usage: dict[str, float] = dict.fromkeys(HOSTS, 0.0)
        hist: dict[int, list[tuple[float, float]]] = {}
        marker = str(self.fleet.root / "hosts") + "/"
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace")
                if marker not in cmd:
                    continue
                host = cmd.split(marker, 1)[1].split("/", 1)[0].split()[0]
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                cpu = (int(stat[11]) + int(stat[12])) / tick
            except (OSError, IndexError, ValueError):
                continue
            pid = int(entry.name)
            points = [p for p in self._cpu_hist.get(pid, []) if now - p[1] <= 3.0]
            points.append((cpu, now))
            hist[pid] = points
            first = points[0]
            if host in usage and now - first[1] >= 0.4:
                usage[host] += (cpu - first[0]) / (now - first[1])
        self._cpu_hist = hist
        return usage

    def tick(self) -> None:
        snap = Snapshot(at=time.time())
        futures = {h: self.pool.submit(self._health, h, r) for h, r in HTTP_SERVICES}
        db = self.pool.submit(self._db)
        slow = time.monotonic() - self._slow_at > 0.9
        cert = self.pool.submit(self._cert_ok) if slow else None
        for host in HOSTS:
            snap.disk_used[host] = self.fleet.disk_used(host)
        snap.cpu = self._cpu()
        snap.health = {h: f.result() for h, f in futures.items()}
        snap.db = db.result()
        if cert is not None:
            snap.cert_ok = cert.result()
            self._slow_at = time.monotonic()
        else:
            snap.cert_ok = self.snapshot.cert_ok
        self.snapshot = snap
        self._evaluate(snap)

    def conditions(self, snap: Snapshot) -> dict[str, dict[str, str]]:
        found: list[dict[str, str]] = []
        for host, (code, body) in snap.health.items():
            role = ROLES[host]
            if role in INTERNAL:
                continue
            if code == 0:
                found.append({"alertname": "ServiceDown", "host": host, "service": role})
            elif code >= 500 and body.get("reason") == "upstream":
                found.append({"alertname": "UpstreamUnavailable", "host": host, "service": role,
                              "upstream": str(body.get("upstream")),
                              "upstream_host": str(body.get("upstream_host"))})
            elif code >= 500:
                found.append({"alertname": "ServiceUnhealthy", "host": host, "service": role,
                              "reason": str(body.get("reason", "unknown"))})
        for host, used in snap.disk_used.items():
            if used >= DISK_FIRE:
                found.append({"alertname": "NodeDiskFull", "host": host,
                              "mountpoint": str(self.fleet.disk(host))})
        for host, cores in snap.cpu.items():
            if cores >= CPU_FIRE:
                found.append({"alertname": "HostHighCpu", "host": host})
        if snap.db == "exhausted":
            found.append({"alertname": "PostgresTooManyConnections", "host": "db1"})
        elif snap.db == "down":
            found.append({"alertname": "PostgresDown", "host": "db1"})
        if not snap.cert_ok:
            found.append({"alertname": "SSLCertExpiringSoon", "host": "edge1",
                          "instance": f"{ADDRESS['edge1']}:{EDGE_PORT}"})
        out = {}
        for labels in found:
            labels["domain"] = DOMAIN[labels["alertname"]]
            labels["severity"] = "critical"
            out[fingerprint(labels)] = labels
        return out

    def _evaluate(self, snap: Snapshot) -> None:
        now = snap.at
        current = self.conditions(snap)
        with self.lock:
            for fp, labels in current.items():
                if fp in self.firing:
                    continue
                if fp in self.pending:
                    _, since = self.pending.pop(fp)
                    self.firing[fp] = (labels, since)
                    self._notify(fp, labels, "firing", since, None)
                else:
                    self.pending[fp] = (labels, now)
            for fp in list(self.pending):
                if fp not in current:
                    del self.pending[fp]
            for fp in list(self.firing):
                if fp in current:
                    self.clearing.pop(fp, None)
                elif self.clearing.pop(fp, None):  # clear on two probes in a row
                    labels, since = self.firing.pop(fp)
                    self._notify(fp, labels, "resolved", since, now)
                else:
                    self.clearing[fp] = True

    def resolve_all(self) -> None:
        """At a level's end: what still fires is resolved (the fleet is being reset)."""
        with self.lock:
            for fp, (labels, since) in list(self.firing.items()):
                self._notify(fp, labels, "resolved", since, time.time())
            self.firing.clear()
            self.pending.clear()
            self.clearing.clear()

    def _notify(self, fp: str, labels: dict[str, str], status: str, since: float,
                ended: float | None) -> None:
        record: dict[str, Any] = {"fingerprint": fp, "alertname": labels["alertname"],
                                  "labels": labels, "status": status, "at": time.time(),
                                  "starts_at": _iso(since), "accepted": None, "attempts": 0}
        self.sent.append(record)
        if self.receiver is None:
            return
        alert = {"status": status, "labels": labels,
                 "annotations": {"summary": f"{labels['alertname']} on {labels['host']}"},
                 "startsAt": _iso(since),
                 "endsAt": _iso(ended) if ended else "0001-01-01T00:00:00Z",
                 "generatorURL": "http://gameday-prober.invalid/", "fingerprint": fp}
        body = {"version": "4", "groupKey": f'{{}}:{{alertname="{labels["alertname"]}"}}',
                "truncatedAlerts": 0, "status": status, "receiver": "selfdrive",
                "groupLabels": {"alertname": labels["alertname"]}, "commonLabels": labels,
                "commonAnnotations": alert["annotations"],
                "externalURL": "http://gameday-prober.invalid", "alerts": [alert]}
        threading.Thread(target=self._post, args=(record, body), daemon=True).start()

    def _post(self, record: dict[str, Any], body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        for attempt in range(1, 6):  # Alertmanager retries a failed notification
            record["attempts"] = attempt
            req = urllib.request.Request(f"{self.receiver}/alerts/alertmanager", data=data,
                                         headers={"Content-Type": "application/json"})
            with contextlib.suppress(OSError), urllib.request.urlopen(req, timeout=10) as a:
                    if 200 <= a.status < 300:
                        record["accepted"] = True
                        return
            time.sleep(0.3 * attempt)
        record["accepted"] = False
