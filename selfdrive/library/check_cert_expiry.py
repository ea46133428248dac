"""TLS certificate expiry: check with openssl, renew through a hook when it is close."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import Field, StringConstraints

from selfdrive import Context, Operand, Risk, alert, runbook
from selfdrive.library._common import SCRIPT, AbsPath, HostName, Runner, where

Endpoint = Annotated[Operand, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*:\d{1,5}$")]
ServerName = Annotated[Operand, StringConstraints(pattern=r"^[A-Za-z0-9*][A-Za-z0-9.-]*$")]
DAY = 86400
# The certificate as PEM on stdout, from a file or from what an endpoint presents.
FROM_FILE = "openssl x509 -in {{ cert_file }}"
FROM_ENDPOINT = ("openssl s_client -connect {{ endpoint }} -servername {{ sni }} </dev/null "
                 "2>/dev/null | openssl x509")


@runbook(
    risk=Risk.LOW,
    domain="tls",
    timeout="10m",
    tags=["library", "tls"],
    triggers=[alert("SSLCertExpiringSoon", params={"endpoint": "{{ labels.instance }}"})],
)
def check_cert_expiry(ctx: Context, cert_file: AbsPath | None = None,
                      endpoint: Endpoint | None = None, server_name: ServerName | None = None,
                      warn_days: Annotated[int, Field(ge=1, le=365)] = 21,
                      renew_command: str | None = None, key_file: AbsPath | None = None,
                      host: HostName | None = None) -> None:
    """Check when a TLS certificate expires; renew it through a hook when it is close.

    The certificate is a PEM file (`cert_file`) or what `endpoint` (`host:port`)
    presents, with SNI `server_name` (default: the endpoint's host). openssl reads it
    (`x509 -checkend`), so the check is read-only and notes `not_after` and
    `days_left`. When fewer than `warn_days` days are left:

    - with `renew_command` (a shell command; `$1` is the cert file or endpoint) the
      file is first copied to `CERT.selfdrive-prev` (and `key_file` likewise), then
      the hook runs; verification reads the certificate again and needs more than
      `warn_days` days;
    - without it the run fails, saying when the certificate expires, so that a human
      (or the alert's next firing) takes over.

    Rollback puts the previous certificate (and key) back, but only when the one in
    place is unreadable or expires sooner than the saved copy: a rollback never
    installs an older certificate over a newer one, even a stale copy.
    """
    on = where(ctx, host)
    source = _source(cert_file, endpoint)
    not_after = _not_after(on, source, server_name, endpoint)
    days_left = (not_after - datetime.now(UTC)).total_seconds() / DAY
    ctx.note("not_after", not_after.isoformat())
    ctx.note("days_left", round(days_left, 1))
    if _valid_for(on, source, server_name, endpoint, warn_days):
        ctx.log(f"valid until {not_after:%Y-%m-%d %H:%M} UTC ({days_left:.0f} days): "
                f"nothing to do")
        return
    if renew_command is None:
        raise RuntimeError(f"the certificate expires on {not_after:%Y-%m-%d %H:%M} UTC, in "
                           f"{days_left:.1f} days (< {warn_days}); no renew_command given")
    for path in (cert_file, key_file):
        if path is not None:
            on.run("cp -p -- {{ path }} {{ saved }}", path=path, saved=f"{path}.selfdrive-prev",
                   check=True)
    on.run(SCRIPT, script=renew_command, arg=cert_file or endpoint, check=True)


def _source(cert_file: str | None, endpoint: str | None) -> str:
    if (cert_file is None) == (endpoint is None):
        raise ValueError("give exactly one of cert_file and endpoint")
    return FROM_FILE if cert_file is not None else FROM_ENDPOINT


def _sni(server_name: str | None, endpoint: str | None) -> str:
    return server_name or (endpoint or "").rsplit(":", 1)[0]


def _not_after(on: Runner, source: str, server_name: str | None,
               endpoint: str | None) -> datetime:
    out = on.run(source + " -noout -enddate", sni=_sni(server_name, endpoint), readonly=True,
                 check=True).stdout.strip()
    # notAfter=Nov 25 22:38:17 2026 GMT
    return datetime.strptime(out.split("=", 1)[1], "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)


def _valid_for(on: Runner, source: str, server_name: str | None, endpoint: str | None,
               days: int) -> bool:
    # -checkend N: exit 0 when the certificate is still valid N seconds from now.
    return on.run(source + " -noout -checkend {{ seconds }}", seconds=days * DAY,
                  sni=_sni(server_name, endpoint), readonly=True, check=False).ok


@check_cert_expiry.precondition
def the_certificate_is_readable(ctx: Context, cert_file: str | None, endpoint: str | None,
                                server_name: str | None, host: str | None) -> bool:
    """openssl can read the certificate (a missing file or a closed port stops here)."""
    source = _source(cert_file, endpoint)
    return where(ctx, host).run(source + " -noout -subject", sni=_sni(server_name, endpoint),
                                readonly=True, check=False).ok


@check_cert_expiry.verify
def the_certificate_is_valid_long_enough(ctx: Context, cert_file: str | None,
                                         endpoint: str | None, server_name: str | None,
                                         warn_days: int, host: str | None) -> bool:
    return _valid_for(where(ctx, host), _source(cert_file, endpoint), server_name, endpoint,
                      warn_days)


@check_cert_expiry.rollback
def restore_the_previous_certificate(ctx: Context, cert_file: str | None,
                                     key_file: str | None, host: str | None) -> None:
    """Put the saved certificate back if the current one is unreadable or expires sooner."""
    if cert_file is None:
        ctx.log("endpoint mode: no file to restore")
        return
    on = where(ctx, host)
    saved = f"{cert_file}.selfdrive-prev"
    if not on.run("test -f {{ saved }}", saved=saved, readonly=True, check=False).ok:
        ctx.log("no saved certificate: the renewal never started")
        return
    current = on.run("openssl x509 -in {{ cert_file }} -noout -enddate", readonly=True,
                     check=False)
    previous = on.run("openssl x509 -in {{ saved }} -noout -enddate", saved=saved,
                      readonly=True, check=True)
    if current.ok and _parse(current.stdout) >= _parse(previous.stdout):
        ctx.log("the certificate in place expires no sooner than the saved one: kept")
        return
    for path in (cert_file, key_file):
        if path is not None:
            on.run("if [ -f {{ saved }} ]; then cp -p -- {{ saved }} {{ path }}; fi",
                   path=path, saved=f"{path}.selfdrive-prev", check=True)


def _parse(enddate: str) -> datetime:
    return datetime.strptime(enddate.strip().split("=", 1)[1], "%b %d %H:%M:%S %Y %Z")
