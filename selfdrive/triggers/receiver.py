"""``selfdrive serve``: the alert receiver, a small WSGI app on waitress.

Routes::

    POST /alerts/alertmanager   Prometheus Alertmanager webhook (payload version "4")
    POST /alerts/pagerduty      PagerDuty v3 webhook (signed with X-PagerDuty-Signature)
    POST /alerts                the generic form (see selfdrive.triggers.payloads)
    GET  /healthz               liveness: {"status": "ok", "queued": N}

Every alert is journaled before the sender gets its 2xx; when the journal cannot
take it the answer is 503, so the sender retries. Every refused request (bad
credentials, too large, malformed) gets a 4xx with a JSON ``error`` and a journal
row saying why, never its body or its credentials. Alerts that arrive together share
one journal transaction (``GroupCommit``). The runs alerts start happen in worker
processes (``selfdrive.triggers.workers``), never on the request threads.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from selfdrive.config.sense import ReceiverConfig
from selfdrive.sdk.errors import JournalError, UsageError
from selfdrive.triggers.intake import AlertIntake, Job, Log
from selfdrive.triggers.payloads import (
    Alert,
    PayloadError,
    decode_json,
    parse_alertmanager,
    parse_generic,
    parse_pagerduty,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

ROUTES = {"/alerts": "generic", "/alerts/alertmanager": "alertmanager",
          "/alerts/pagerduty": "pagerduty"}
REASONS = {200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized",
           404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large",
           415: "Unsupported Media Type", 500: "Internal Server Error",
           503: "Service Unavailable"}
MAX_SIGNATURES = 8


# -- credentials ---------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    """The secrets the receiver checks, read from the environment (never from the TOML)."""

    token: bytes | None = None
    basic_user: bytes | None = None
    basic_password: bytes | None = None
    pagerduty_secret: bytes | None = None

    @property
    def any(self) -> bool:
        return self.token is not None or self.basic_user is not None

    @classmethod
    def from_config(cls, rc: ReceiverConfig, environ: Mapping[str, str]) -> Credentials:
        """Read each configured variable; a named but unset or empty one is an error."""

        def read(key: str, variable: str | None) -> bytes | None:
            if variable is None:
                return None
            value = environ.get(variable, "")
            if not value:
                raise UsageError(f"receiver.{key} names the environment variable {variable}, "
                                 f"but it is not set (or empty); export it before "
                                 f"`selfdrive serve`")
            # The variable's own bytes, even when they are not UTF-8: compared as bytes
            # with the raw header (or used as the HMAC key), nothing is lost or altered.
            return value.encode("utf-8", "surrogateescape")

        return cls(token=read("token_env", rc.token_env),
                   basic_user=rc.basic_user.encode() if rc.basic_user else None,
                   basic_password=read("basic_password_env", rc.basic_password_env),
                   pagerduty_secret=read("pagerduty.secret_env", rc.pagerduty.secret_env))


def _same(given: bytes, expected: bytes) -> bool:
    """Constant-time comparison that does not even leak the expected length."""
    return hmac.compare_digest(hashlib.sha256(given).digest(), hashlib.sha256(expected).digest())


def check_authorization(header: str | None, creds: Credentials) -> bool:
    """A bearer token or basic credentials that match the configured ones."""
    if not header:
        return False
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and creds.token is not None:
        return _same(value.encode("latin-1", "replace"), creds.token)
    if scheme.lower() == "basic" and creds.basic_user is not None \
            and creds.basic_password is not None:
        try:
            decoded = base64.b64decode(value.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError):
            return False
        user, sep, password = decoded.partition(b":")
        ok_user = _same(user, creds.basic_user)
        ok_password = _same(password, creds.basic_password)
        return bool(sep) and ok_user and ok_password
    return False


def check_pagerduty_signature(body: bytes, header: str | None, secret: bytes) -> bool:
    """``X-PagerDuty-Signature: v1=<hex>[,v1=<hex>…]``: HMAC-SHA256 of the raw body.

    Several signatures arrive while a secret is being rotated; any one may match.
    """
    if not header:
        return False
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest().encode()
    matched = False
    for part in header.split(",")[:MAX_SIGNATURES]:
        version, _, digest = part.strip().partition("=")
        if version == "v1" and hmac.compare_digest(digest.strip().lower().encode("latin-1",
                                                                                  "replace"),
                                                   expected):
            matched = True
    return matched


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, creds: Credentials) -> None:
    """Refuse to listen beyond loopback when nobody has to authenticate."""
    if not creds.any and not is_loopback(host):
        raise UsageError(
            f"refusing to listen on {host} without authentication: anyone who can reach it "
            f"could start runs. Set receiver.token_env (or receiver.basic_user and "
            f"receiver.basic_password_env) in selfdrive.toml, or listen on 127.0.0.1")


# -- the WSGI app ----------------------------------------------------------------


class Refused(Exception):
    """A request answered with a 4xx; ``reason`` goes to the sender and the journal."""

    def __init__(self, status: int, reason: str, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.headers = list(headers)


class ReceiverApp:
    """Routes four endpoints by hand; everything an alert needs happens in ``intake``."""

    def __init__(self, intake: AlertIntake, *, credentials: Credentials,
                 dispatch: Callable[[Job], None], pending: Callable[[], int] = lambda: 0,
                 log: Log | None = None) -> None:
        self.intake = intake
        self.creds = credentials
        self.dispatch = dispatch
        self.pending = pending
        self.log = log or intake.log
        rc = intake.config.receiver
        self.max_body = rc.max_body
        self.name_field = rc.pagerduty.name_field

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse
                 ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if path == "/healthz":
                if method not in ("GET", "HEAD"):
                    return _json(start_response, 405, {"error": "use GET"},
                                 [("Allow", "GET, HEAD")])
                return _json(start_response, 200, {"status": "ok", "queued": self.pending()})
            source = ROUTES.get(path.rstrip("/") or "/")
            if source is None:
                return _json(start_response, 404, {"error": f"no such endpoint; POST to "
                                                            f"{', '.join(sorted(ROUTES))}"})
            return self._alerts(source, method, environ, start_response)
        except Exception as exc:  # the server must answer and stay up, whatever happens
            self.log(f"receiver: internal error on {method} {path[:200]}: "
                     f"{traceback.format_exc(limit=8)}")
            self._journal_refusal("internal", f"internal error: {type(exc).__name__}", 500,
                                  environ)
            return _json(start_response, 500, {"error": "internal error; see the receiver's "
                                                        "log"})

    def _alerts(self, source: str, method: str, environ: WSGIEnvironment,
                start_response: StartResponse) -> Iterable[bytes]:
        try:
            alerts = self._read_alerts(source, method, environ)
        except Refused as refused:
            self._journal_refusal(source, refused.reason, refused.status, environ)
            self.log(f"receiver: refused {method} {environ.get('PATH_INFO')} from "
                     f"{environ.get('REMOTE_ADDR')}: {refused.status} {refused.reason}")
            return _json(start_response, refused.status, {"error": refused.reason},
                         refused.headers)
        try:
            received = self.intake.receive(alerts, remote=environ.get("REMOTE_ADDR"))
        except JournalError as exc:
            self.log(f"receiver: journal cannot take {len(alerts)} alert(s), answered 503: "
                     f"{exc}")
            return _json(start_response, 503, {"error": f"the journal cannot take the alert "
                                                        f"now; retry ({exc})"},
                         [("Retry-After", "5")])
        for item in received:
            for job in item.jobs:
                self.dispatch(job)
        return _json(start_response, 202, {"accepted": [r.as_json() for r in received]})

    def _read_alerts(self, source: str, method: str, environ: WSGIEnvironment) -> list[Alert]:
        if method != "POST":
            raise Refused(405, f"{method} is not allowed here; POST an alert",
                          [("Allow", "POST")])
        signed = source == "pagerduty" and self.creds.pagerduty_secret is not None
        if not signed and self.creds.any \
                and not check_authorization(environ.get("HTTP_AUTHORIZATION"), self.creds):
            raise Refused(401, "missing or wrong credentials (a bearer token or basic auth "
                               "is required)",
                          [("WWW-Authenticate", 'Bearer realm="selfdrive"')])
        body = self._body(environ)
        if signed:
            assert self.creds.pagerduty_secret is not None
            if not check_pagerduty_signature(body, environ.get("HTTP_X_PAGERDUTY_SIGNATURE"),
                                             self.creds.pagerduty_secret):
                raise Refused(401, "missing or wrong X-PagerDuty-Signature (HMAC-SHA256 of "
                                   "the body with the subscription's secret)")
        content_type = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if content_type != "application/json" and not (
                content_type.startswith("application/") and content_type.endswith("+json")):
            raise Refused(415, f"Content-Type must be application/json, not "
                               f"{content_type[:80] or 'missing'!r}")
        try:
            data = decode_json(body)
            limits = self.intake.limits
            if source == "alertmanager":
                return parse_alertmanager(data, limits)
            if source == "pagerduty":
                return parse_pagerduty(data, limits, name_field=self.name_field)
            return parse_generic(data, limits)
        except PayloadError as exc:
            raise Refused(400, str(exc)) from None

    def _body(self, environ: WSGIEnvironment) -> bytes:
        text = environ.get("CONTENT_LENGTH") or "0"
        try:
            length = int(text)
        except ValueError:
            raise Refused(400, "Content-Length is not a number") from None
        if length > self.max_body:
            raise Refused(413, f"body of {length} bytes is larger than receiver.max_body "
                               f"({self.max_body} bytes)")
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        if len(body) != length:
            raise Refused(400, f"body ended after {len(body)} of {length} bytes")
        return bytes(body)

    def _journal_refusal(self, source: str, reason: str, status: int,
                         environ: WSGIEnvironment) -> None:
        try:
            self.intake.journal.record_refused_alert(
                source=source, reason=reason, http_status=status,
                remote=environ.get("REMOTE_ADDR"))
        except Exception as exc:  # answering matters more than recording the refusal
            self.log(f"receiver: could not journal a refused request ({reason}): {exc}")


def _json(start_response: StartResponse, status: int, payload: dict[str, Any],
          headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    body = json.dumps(payload, ensure_ascii=False, default=str).encode()
    start_response(f"{status} {REASONS.get(status, '')}".strip(),
                   [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                    ("Cache-Control", "no-store"), *headers])
    return [body]


# -- serving ---------------------------------------------------------------------


def waitress_body_limit(max_body: int) -> int:
    """Waitress refuses larger bodies itself (a plain 413 that the app never sees, so it
    is not journaled); below this, the app answers 413 with a reason and a record."""
    return max(4 * max_body, max_body + 64 * 1024)


def create_server(app: ReceiverApp, *, host: str, port: int, threads: int) -> Any:
    """A waitress server bound to ``host:port`` (port 0: any free port), not yet running."""
    from waitress.server import create_server as waitress_server

    return waitress_server(app, host=host, port=port, threads=threads, ident="selfdrive",
                           max_request_body_size=waitress_body_limit(app.max_body),
                           expose_tracebacks=False, clear_untrusted_proxy_headers=True,
                           asyncore_use_poll=True, channel_timeout=60)


def bound_addresses(server: Any) -> list[tuple[str, int]]:
    """Where the server listens, with the real port when 0 was asked for."""
    if hasattr(server, "effective_listen"):
        return [(str(h), int(p)) for h, p in server.effective_listen]
    return [(str(server.effective_host), int(server.effective_port))]
