"""Fault injection, fixing by hand, and the harness's own judgement of "healed".

``inject`` breaks the fleet the way the fault class says; ``fix_by_hand`` is what a
person does when nothing else fixed it; ``healed`` reads the prober's snapshot (and, for
causes the prober does not alert on, the fleet directly). All of it runs as root from
the harness, never through selfdrive.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from fleet import ADDRESS, PG_MAX_CONNECTIONS, PG_PORT, ROLES, Fleet
from prober import DISK_FIRE, Snapshot
from scenario import Fault

RUNAWAY = "while True: pass"


def _kill_service(fleet: Fleet, host: str) -> None:
    """SIGKILL the host's service: every process running it, whatever its pidfile says."""
    needle = f"service.py {ROLES[host]} {fleet.hostdir(host)} "
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace")
                if needle in cmd + " ":
                    os.kill(int(entry.name), signal.SIGKILL)


def _as_user(fleet: Fleet, path: Path) -> None:
    os.chown(path, fleet.uid, fleet.gid)


def _write(fleet: Fleet, path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".gameday-tmp")
    tmp.write_text(text)
    _as_user(fleet, tmp)
    tmp.replace(path)


def _runaway_pids(fleet: Fleet, host: str) -> list[int]:
    needle = f"gameday-runaway {fleet.hostdir(host)}"
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if needle in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                        errors="replace"):
                    out.append(int(entry.name))
    return out


def expired_cert(fleet: Fleet, host: str) -> None:
    """A self-signed certificate that expired yesterday (``openssl ca`` sets both dates)."""
    tls = fleet.hostdir(host) / "tls"
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "index.txt").write_text("")
        (t / "serial").write_text("01\n")
        (t / "ca.cnf").write_text(
            "[ca]\ndefault_ca = gd\n[gd]\ndatabase = index.txt\nnew_certs_dir = .\n"
            "serial = serial\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n")
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={host}",
                        "-keyout", "key.pem", "-out", "req.pem"], cwd=tmp, check=True,
                       capture_output=True, timeout=30)
        day = 86400
        start = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() - 30 * day))
        end = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() - day))
        subprocess.run(["openssl", "ca", "-batch", "-selfsign", "-config", "ca.cnf",
                        "-keyfile", "key.pem", "-in", "req.pem", "-out", "cert.pem",
                        "-startdate", start, "-enddate", end, "-notext"], cwd=tmp, check=True,
                       capture_output=True, timeout=30)
        for name in ("key.pem", "cert.pem"):
            _write(fleet, tls / name, (t / name).read_text())


def inject(fleet: Fleet, fault: Fault, holders: dict[str, subprocess.Popen[bytes]]) -> None:
    host = fault.hosts[0]
    d = fleet.hostdir(host)
    role = ROLES[host]
    if fault.cls in ("crashed_service", "storm", "dead_dependency"):
        for h in fault.hosts:
            _kill_service(fleet, h)
    elif fault.cls == "full_disk":
        disk = fleet.disk(host)
        old = time.time() - 10 * 86400
        for i in range(1000):
            if fleet.disk_used(host) >= DISK_FIRE + 4:
                break
            f = disk / f"spool-{i:04d}.tmp"
            try:
                f.write_bytes(b"\1" * 128 * 1024)
            except OSError:  # full: that is the point
                break
            _as_user(fleet, f)
            os.utime(f, (old, old))
    elif fault.cls == "runaway_process":
        holders[fault.id] = fleet.popen_as_user(
            ["python3", "-c", RUNAWAY, "gameday-runaway", str(d)], host)
    elif fault.cls == "db_connections":
        script = ("for i in $(seq {n}); do (echo 'BEGIN; SELECT 1;'; exec sleep 3600) | "
                  "{psql} -X -q -h {addr} -p {port} -U app -d postgres >/dev/null 2>&1 & "
                  "done; wait").format(n=PG_MAX_CONNECTIONS, psql=fleet.pg_bindir / "psql",
                                       addr=ADDRESS["db1"], port=PG_PORT)
        holders[fault.id] = fleet.popen_as_user(["bash", "-c", script, "gameday-dbhold",
                                                 str(d)], host)
    elif fault.cls == "expired_cert":
        expired_cert(fleet, host)
        fleet.service("restart", host)
    elif fault.cls == "bad_config":
        cfg = d / "etc" / f"{role}.json"
        good = cfg.read_text()
        _write(fleet, cfg.with_name(cfg.name + ".previous"), good)
        bad = json.loads(good)
        bad["threads"] = "many"  # the deploy's typo: a string where a count belongs
        _write(fleet, cfg, json.dumps(bad, indent=1))
    elif fault.cls == "flapping":
        _write(fleet, d / "run" / f"{role}.flap", str(time.time() + fault.duration))
    elif fault.cls == "unfixable":
        if fault.variant == "corrupt_data":
            _write(fleet, d / "data" / "corrupt", "checksum mismatch in segment 7\n")
        else:
            _write(fleet, d / "lib" / "broken", "libgameday.so: truncated\n")
            _kill_service(fleet, host)
    else:
        raise ValueError(f"unknown fault class {fault.cls!r}")


def fix_by_hand(fleet: Fleet, fault: Fault,
                holders: dict[str, subprocess.Popen[bytes]]) -> None:
    """What the on-call person does; safe to run on a fault already healed."""
    host = fault.hosts[0]
    d = fleet.hostdir(host)
    role = ROLES[host]
    if fault.cls in ("crashed_service", "storm", "dead_dependency"):
        for h in fault.hosts:
            fleet.service("start", h)
    elif fault.cls == "full_disk":
        for f in fleet.disk(host).glob("spool-*.tmp"):
            f.unlink(missing_ok=True)
    elif fault.cls == "runaway_process":
        for pid in _runaway_pids(fleet, host):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    elif fault.cls == "db_connections":
        proc = holders.pop(fault.id, None)
        if proc is not None:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        fleet.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                   "WHERE usename = 'app'")
    elif fault.cls == "expired_cert":
        fleet.new_cert(host, days=90)
        fleet.service("restart", host)
    elif fault.cls == "bad_config":
        prev = d / "etc" / f"{role}.json.previous"
        if prev.exists():
            prev.replace(d / "etc" / f"{role}.json")
        fleet.service("start", host)
    elif fault.cls == "flapping":
        (d / "run" / f"{role}.flap").unlink(missing_ok=True)
    elif fault.cls == "unfixable":
        (d / "data" / "corrupt").unlink(missing_ok=True)
        (d / "lib" / "broken").unlink(missing_ok=True)
        fleet.service("start", host)


def healed(fleet: Fleet, fault: Fault, snap: Snapshot) -> bool:
    host = fault.hosts[0]
    ok = [snap.health.get(h, (0, {}))[0] == 200 for h in fault.hosts]
    if fault.cls in ("crashed_service", "storm", "bad_config", "flapping", "unfixable"):
        return all(ok)
    if fault.cls == "full_disk":
        return snap.disk_used.get(host, 100.0) < DISK_FIRE
    if fault.cls == "runaway_process":
        return not _runaway_pids(fleet, host)
    if fault.cls == "db_connections":
        return snap.db == "ok"
    if fault.cls == "expired_cert":
        return snap.cert_ok and all(ok)
    if fault.cls == "dead_dependency":  # the cause is not alerted on: ask it directly
        return fleet.healthy(host)
    raise ValueError(f"unknown fault class {fault.cls!r}")


def broken(fleet: Fleet, fault: Fault, snap: Snapshot) -> bool:
    """The fault shows (so that "healed" afterwards means something)."""
    return not healed(fleet, fault, snap)


def reset(fleet: Fleet, holders: dict[str, subprocess.Popen[bytes]]) -> None:
    """Between levels: every fault of every class undone, every service started."""
    for proc in list(holders.values()):
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
    holders.clear()
    for host, role in ROLES.items():
        d = fleet.hostdir(host)
        for f in fleet.disk(host).glob("spool-*.tmp"):
            f.unlink(missing_ok=True)
        for pid in _runaway_pids(fleet, host):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for f in (d / "data" / "corrupt", d / "lib" / "broken", d / "run" / f"{role}.flap"):
            f.unlink(missing_ok=True)
        prev = d / "etc" / f"{role}.json.previous"
        if prev.exists():
            prev.replace(d / "etc" / f"{role}.json")
    cert = fleet.hostdir("edge1") / "tls" / "cert.pem"
    fresh = subprocess.run(["openssl", "x509", "-noout", "-checkend", "1209600", "-in",
                            str(cert)], check=False, capture_output=True,
                           timeout=30).returncode == 0
    if not fresh:
        fleet.new_cert("edge1", days=90)
    fleet.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'")
    for host, role in ROLES.items():
        if role != "postgres" and (not fleet.healthy(host) or (host == "edge1" and not fresh)):
            fleet.service("restart", host)
