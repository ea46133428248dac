"""check-cert-expiry: real certificates made with openssl, in files and served by
`openssl s_server`; renewal through the hook, and the rollback's "never older" rule."""

from __future__ import annotations

import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from kit_support import Team

from selfdrive.library.check_cert_expiry import check_cert_expiry
from selfdrive.sdk import RunState
from selfdrive.testing import FakeContext, plan_of, simulate

WARN = 21 * 86400


def make_cert(folder: Path, days: int, name: str = "cert") -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", str(days), "-subj", "/CN=localhost"],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def renew_script(folder: Path, days: int) -> str:
    """A renewal hook: what certbot or an ACME client would be, here openssl."""
    return (f"openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
            f"-keyout {folder}/cert.key -out \"$1\" -days {days} -subj /CN=localhost "
            f"2>/dev/null")


def enddate(cert: Path) -> str:
    return subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-enddate"],
                          capture_output=True, text=True, check=True).stdout


def test_a_valid_certificate_is_only_read(team: Team, tmp_path: Path) -> None:
    cert, _ = make_cert(tmp_path, 90)
    outcome = team.run("check-cert-expiry", cert_file=str(cert))
    assert outcome.run.status is RunState.SUCCEEDED, outcome.message
    assert outcome.plan.changes == ()
    notes = {s["name"]: s["data"] for s in team.steps(outcome.run.id) if s["kind"] == "note"}
    assert 88 < float(notes["days_left"]) <= 90


def test_an_expiring_certificate_is_renewed_by_the_hook(team: Team, tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, 2)
    params = {"cert_file": str(cert), "key_file": str(key),
              "renew_command": renew_script(tmp_path, 90)}
    real_plan = team.plan("check-cert-expiry", **params)

    fake = FakeContext()
    fake.on(f"openssl x509 -in {cert} -noout -subject", stdout="subject=CN = localhost\n")
    fake.on(f"openssl x509 -in {cert} -noout -enddate", stdout=enddate(cert))
    fake.on(f"openssl x509 -in {cert} -noout -checkend {WARN}", exit_code=1)
    fake.on(f"test -f {cert}.selfdrive-prev", exit_code=1)
    assert plan_of(check_cert_expiry, fake, **params).hash == real_plan.hash
    assert [c.command for c in real_plan.changes] == [
        f"cp -p -- {cert} {cert}.selfdrive-prev", f"cp -p -- {key} {key}.selfdrive-prev",
        f"sh -c {shlex.quote(params['renew_command'])} sh {cert}"]

    old = cert.read_bytes()
    outcome = team.run("check-cert-expiry", **params)
    assert outcome.run.status is RunState.SUCCEEDED, outcome.message
    assert cert.read_bytes() != old and Path(f"{cert}.selfdrive-prev").read_bytes() == old
    assert subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-checkend",
                           str(80 * 86400)], capture_output=True).returncode == 0


def test_without_a_hook_an_expiring_certificate_fails_the_run(team: Team,
                                                              tmp_path: Path) -> None:
    cert, _ = make_cert(tmp_path, 3)
    outcome = team.run("check-cert-expiry", cert_file=str(cert))
    assert outcome.run.status is RunState.FAILED and outcome.exit_code == 1
    assert "no renew_command given" in outcome.message and "< 21" in outcome.message


def test_a_broken_renewal_is_rolled_back_to_the_saved_certificate(team: Team,
                                                                  tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path, 2)
    old_cert, old_key = cert.read_bytes(), key.read_bytes()
    broken = 'echo garbage > "$1"; echo garbage > ' + str(key)
    outcome = team.run("check-cert-expiry", cert_file=str(cert), key_file=str(key),
                       renew_command=broken)
    assert outcome.run.status is RunState.ROLLED_BACK and outcome.exit_code == 5, \
        outcome.message
    assert cert.read_bytes() == old_cert and key.read_bytes() == old_key


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    cert, key = make_cert(tmp_path, 10, name="served")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(["openssl", "s_server", "-accept", f"127.0.0.1:{port}",
                               "-cert", str(cert), "-key", str(key), "-quiet", "-www"],
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    yield port, cert
    server.kill()
    server.wait()


def test_an_endpoint_is_checked_through_openssl_s_client(team: Team,
                                                         tls_server: tuple[int, Path]) -> None:
    port, _ = tls_server
    endpoint = f"127.0.0.1:{port}"
    fine = team.run("check-cert-expiry", endpoint=endpoint, server_name="localhost",
                    warn_days=7)
    assert fine.run.status is RunState.SUCCEEDED, fine.message
    close = team.run("check-cert-expiry", endpoint=endpoint, server_name="localhost")
    assert close.run.status is RunState.FAILED and "no renew_command" in close.message


def test_the_rollback_never_installs_an_older_certificate() -> None:
    """A saved copy that expires sooner (say, a stale one) never replaces the one in place."""
    fake = FakeContext(default_ok=True)
    fake.on("openssl x509 -in /etc/tls/a.pem -noout -subject")
    fake.on("openssl x509 -in /etc/tls/a.pem -noout -enddate",
            stdout="notAfter=Jan  1 00:00:00 2030 GMT\n")
    fake.on("openssl x509 -in /etc/tls/a.pem -noout -checkend 1814400", exit_code=1)
    fake.on("test -f /etc/tls/a.pem.selfdrive-prev")
    fake.on("openssl x509 -in /etc/tls/a.pem.selfdrive-prev -noout -enddate",
            stdout="notAfter=Jan  1 00:00:00 2024 GMT\n")
    sim = simulate(check_cert_expiry, fake, cert_file="/etc/tls/a.pem",
                   renew_command="certbot renew --cert-name a")
    assert sim.status is RunState.ROLLED_BACK and sim.exit_code == 5  # still expiring
    assert sim.commands("rollback", changes=True) == []
    assert "kept" in " ".join(sim.logs)
