"""``selfdrive serve``: the alert receiver, a small WSGI app on waitress.

Routes::

    POST /alerts/alertmanager   Prometheus Alertmanager webhook (payload version "4")
    POST /alerts/pagerduty      PagerDuty v3 webhook (signed with X-PagerDuty-Signature)
    POST /alerts                the generic form (see selfdrive.triggers.payloads)
    GET  /healthz               liveness: {"status": "ok", "queued": N}

Every alert is journaled before the sender gets its 2xx; when the journal cannot
take it the answer is 503, so the sender retries. Every refused request (bad
credentials, too large, malformed, even what waitress itself refuses before the app
sees it) gets a 4xx with a JSON ``error``, and is counted on a sampled journal row
(one per source address per minute, ``RefusalLedger``) that says why, never with its
body or its credentials: nobody can grow the journal without credentials. A delivery
seen before (PagerDuty's event id or X-Webhook-Id) is a replay: answered 200 and
counted, it starts nothing. Alerts that arrive together share one journal
transaction (``GroupCommit``). The runs alerts start happen in worker processes
(``selfdrive.triggers.workers``), never on the request threads.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import hmac
import ipaddress
import json
import re
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from selfdrive.config.sense import ReceiverConfig
from selfdrive.journal.store import Journal
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
           415: "Unsupported Media Type", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 503: "Service Unavailable"}
MAX_SIGNATURES = 8
#: PagerDuty's X-Webhook-Id: one per webhook, repeated on every retry of it.
WEBHOOK_ID = re.compile(r"[\x21-\x7e]{1,128}")


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


# -- refusals, sampled -------------------------------------------------------------

#: The source address of a sample that stands for every address beyond the cap.
OTHER_ADDRESSES = "(other addresses)"


@dataclass
class _Sample:
    """The refusals from one source address in one minute: one journal row."""

    source: str
    reason: str
    status: int
    remote: str | None
    first_at: str
    last_at: str
    row_id: int | None = None
    pending: int = 0  # counted, not yet journaled
    total: int = 0


class RefusalLedger:
    """Refused requests, sampled: one journal row per source address per minute, with a
    count of the requests it stands for, and at most ``max_sources`` addresses a minute
    (the rest share one row). The sender is answered at once; one thread journals what
    was counted every ``flush_every`` seconds in one transaction, so a flood of requests
    without credentials costs neither journal rows nor journal writes, and never waits
    on a busy journal. The log gets one line per row, not one per request.
    """

    def __init__(self, journal: Journal, *, log: Log, period: float = 60.0,
                 max_sources: int = 16, flush_every: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.journal = journal
        self.log = log
        self.period = period
        self.max_sources = max_sources
        self.flush_every = flush_every
        self.clock = clock
        self._samples: dict[tuple[str | None, int], _Sample] = {}
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failed_at = 0.0

    def refuse(self, *, source: str, reason: str, status: int, remote: str | None) -> None:
        now = self.clock()
        bucket = int(now // self.period)
        stamp = datetime.fromtimestamp(now, UTC).isoformat(timespec="microseconds")
        with self._lock:
            key: tuple[str | None, int] = (remote, bucket)
            sample = self._samples.get(key)
            if sample is None and sum(b == bucket for _, b in self._samples) >= \
                    self.max_sources:
                key = (OTHER_ADDRESSES, bucket)
                sample = self._samples.get(key)
            first = sample is None
            if sample is None:
                sample = self._samples[key] = _Sample(source, reason, status, key[0], stamp,
                                                      stamp)
            sample.pending += 1
            sample.total += 1
            sample.last_at = stamp
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="selfdrive-refusals")
                self._thread.start()
        if first:
            self.log(f"receiver: refused a request to {source} from {key[0]}: {status} "
                     f"{reason} (more from there this minute are counted on one row)")

    def _run(self) -> None:
        while not self._stop.wait(self.flush_every):
            self.flush()

    def flush(self) -> None:
        """Journal what was counted since the last flush (one transaction)."""
        with self._flushing:
            with self._lock:
                due = [(s, s.pending) for s in self._samples.values() if s.pending]
            if due:
                rows = [{"id": s.row_id, "requests": n, "last_at": s.last_at}
                        if s.row_id is not None else
                        {"source": s.source, "reason": s.reason, "http_status": s.status,
                         "remote": s.remote, "received_at": s.first_at, "requests": n,
                         "last_at": s.last_at}
                        for s, n in due]
                try:
                    ids = self.journal.alerts.record_refusals(rows)
                except Exception as exc:  # kept counted; the next flush tries again
                    if time.monotonic() - self._failed_at > self.period:
                        self._failed_at = time.monotonic()
                        self.log(f"receiver: could not journal {sum(n for _, n in due)} "
                                 f"refused request(s) yet: {exc}")
                    return
            else:
                ids = []
            with self._lock:
                for (sample, n), row_id in zip(due, ids, strict=True):
                    sample.row_id, sample.pending = row_id, sample.pending - n
                current = int(self.clock() // self.period)
                for key in [k for k, s in self._samples.items()
                            if k[1] < current and not s.pending]:
                    done = self._samples.pop(key)
                    if done.total > 1:
                        self.log(f"receiver: {done.total} refused request(s) from "
                                 f"{done.remote} in the minute from {done.first_at[:19]}Z, "
                                 f"counted on alert #{done.row_id}")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.flush()


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
                 log: Log | None = None, refusals: RefusalLedger | None = None) -> None:
        self.intake = intake
        self.creds = credentials
        self.dispatch = dispatch
        self.pending = pending
        self.log = log or intake.log
        self.refusals = refusals or RefusalLedger(intake.journal, log=self.log)
        rc = intake.config.receiver
        self.max_body = rc.max_body
        self.name_field = rc.pagerduty.name_field

    def close(self) -> None:
        """Journal the refusals still only counted."""
        self.refusals.close()

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
            self.log(f"receiver: internal error on {method} {path[:200]!r}: "
                     f"{traceback.format_exc(limit=8)}")
            self.refuse(ROUTES.get(path.rstrip("/"), "internal"),
                        f"internal error: {type(exc).__name__}", 500, environ.get("REMOTE_ADDR"))
            return _json(start_response, 500, {"error": "internal error; see the receiver's "
                                                        "log"})

    def refuse(self, source: str, reason: str, status: int, remote: str | None) -> None:
        try:
            self.refusals.refuse(source=source, reason=reason, status=status, remote=remote)
        except Exception as exc:  # answering matters more than counting the refusal
            self.log(f"receiver: could not count a refused request ({reason}): {exc}")

    def _alerts(self, source: str, method: str, environ: WSGIEnvironment,
                start_response: StartResponse) -> Iterable[bytes]:
        try:
            alerts = self._read_alerts(source, method, environ)
        except Refused as refused:
            self.refuse(source, refused.reason, refused.status, environ.get("REMOTE_ADDR"))
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
        # A replay is answered 2xx too: the sender must stop sending it, not retry.
        status = 200 if all(r.replay for r in received) else 202
        return _json(start_response, status, {"accepted": [r.as_json() for r in received]})

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
                return self._delivered(parse_pagerduty(data, limits,
                                                       name_field=self.name_field), environ)
            return parse_generic(data, limits)
        except PayloadError as exc:
            raise Refused(400, str(exc)) from None

    @staticmethod
    def _delivered(alerts: list[Alert], environ: WSGIEnvironment) -> list[Alert]:
        """Add PagerDuty's X-Webhook-Id (the same on every retry of one webhook) to the
        event id as what marks a second delivery as a replay."""
        header = environ.get("HTTP_X_WEBHOOK_ID")
        if header is None:
            return alerts
        if not WEBHOOK_ID.fullmatch(header.strip()):
            raise PayloadError("X-Webhook-Id: expected 1 to 128 printable ASCII characters")
        key = f"pagerduty:webhook:{header.strip()}"
        return [dataclasses.replace(a, deliveries=(*a.deliveries, key)) for a in alerts]

    def _body(self, environ: WSGIEnvironment) -> bytes:
        text = environ.get("CONTENT_LENGTH") or "0"
        if not (text.isascii() and text.isdigit()):
            raise Refused(400, "Content-Length is not a number")
        length = int(text)
        if length > self.max_body:
            raise Refused(413, f"body of {length} bytes is larger than receiver.max_body "
                               f"({self.max_body} bytes)")
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        if len(body) != length:
            raise Refused(400, f"body ended after {len(body)} of {length} bytes")
        return bytes(body)


def _json(start_response: StartResponse, status: int, payload: dict[str, Any],
          headers: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    body = json.dumps(payload, default=str).encode()  # ASCII: whatever text it holds
    start_response(f"{status} {REASONS.get(status, '')}".strip(),
                   [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                    ("Cache-Control", "no-store"), *headers])
    return [body]


# -- serving ---------------------------------------------------------------------


def waitress_body_limit(max_body: int) -> int:
    """What waitress reads at most before it refuses a body itself (with the JSON answer
    and the sampled row of ``_json_channel``): a little over ``max_body``, the room a
    chunked body's framing takes. Between the two, the app refuses it by its length."""
    return max_body + 64 * 1024


#: After refusing a request whose body it will not read, the receiver still reads (and
#: drops) what the client sends, for this long and this much at most, before closing:
#: closing with unread bytes makes the kernel send a reset, which can destroy the
#: answer before the client reads it ("connection reset" instead of a 413).
LINGER_SECONDS = 5.0
LINGER_BYTES = 64 * 1024 * 1024


def _server_refusal(error: Any, max_body: int | None) -> tuple[int, str]:
    """The status and reason for a request waitress refused before the app saw it."""
    code = int(getattr(error, "code", 400))
    detail = str(getattr(error, "body", "") or "")
    if code == 413:
        return 413, f"body is larger than receiver.max_body ({max_body} bytes)"
    if code == 431:
        return 431, "the request's headers are too large"
    if code == 501:  # a transfer coding it cannot read: a retry would never succeed
        code = 400
    text = f"{getattr(error, 'reason', 'Bad Request')}: {detail}".strip(": ")
    return code, text.encode("ascii", "backslashreplace").decode()[:200]


@functools.cache
def _json_channel() -> type[Any]:
    """Waitress's connection class, made to answer what it refuses itself (malformed
    requests, bodies over the limit, headers too large, a body cut short) like the app
    does: JSON and a sampled journal row. Built on first use: waitress loads lazily."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask
    from waitress.utilities import BadRequest

    # Typed as Any: waitress's stubs miss much of what these classes use.
    error_task: Any = ErrorTask
    channel_base: Any = HTTPChannel

    class JsonErrorTask(error_task):  # type: ignore[misc]
        def execute(self) -> None:
            channel = self.channel
            app = getattr(channel.server, "selfdrive_app", None)  # not wrapped, unlike .application
            status, reason = _server_refusal(self.request.error,
                                             getattr(app, "max_body", None))
            body = json.dumps({"error": reason}).encode()
            self.status = f"{status} {REASONS.get(status, 'Bad Request')}"
            self.response_headers.extend([("Content-Type", "application/json"),
                                          ("Cache-Control", "no-store")])
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)
            channel.linger = True
            if isinstance(app, ReceiverApp):
                path = str(getattr(self.request, "path", "") or "")
                remote = channel.addr[0] if isinstance(channel.addr, tuple) else None
                app.refuse(ROUTES.get(path.rstrip("/"), "http"), reason, status, remote)

    class JsonChannel(channel_base):  # type: ignore[misc]
        error_task_class = JsonErrorTask
        linger = False  # set by an error answer: drain the rest before closing
        drain_until = 0.0
        drained = 0

        def handle_read(self) -> None:
            try:
                data = self.socket.recv(self.adj.recv_bytes)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = None
            if self.drain_until:
                self.drained += len(data or b"")
                if not data or self.drained > LINGER_BYTES:
                    self._closing()
            elif data:
                self.last_activity = time.time()
                self.received(data)
            elif data is None or not self._cut_short():
                self.handle_close()

        def _cut_short(self) -> bool:
            """The client stopped sending (its side closed) inside a request: answer
            that, rather than dropping the connection without a word."""
            channel: Any = self
            with channel.requests_lock:
                request = channel.request
                if request is None or request.completed or channel.requests \
                        or not (request.headers_finished or request.header_plus):
                    return False
                request.error = BadRequest("the client stopped sending before the end of "
                                           "the request (a body shorter than its "
                                           "Content-Length, or a cut-off chunked body)")
                request.completed = True
                channel.request = None
                channel.requests.append(request)
            channel.server.add_task(channel)
            return True

        def readable(self) -> bool:
            if self.drain_until:
                if time.monotonic() > self.drain_until:
                    self._closing()
                    return False
                return True
            return bool(super().readable())

        def writable(self) -> bool:
            if self.drain_until:
                return False
            return bool(super().writable())

        def _closing(self) -> None:
            # Closed from the write path: closing while the loop polls is not safe.
            self.drain_until, self.linger, self.will_close = 0.0, False, True

        def handle_close(self) -> None:
            if self.linger and not self.drain_until and self.connected:
                try:
                    self.socket.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                else:
                    self.drain_until = time.monotonic() + LINGER_SECONDS
                    self.will_close = False
                    return
            self.drain_until, self.linger = 0.0, False
            super().handle_close()

    return JsonChannel


def create_server(app: ReceiverApp, *, host: str, port: int, threads: int) -> Any:
    """A waitress server bound to ``host:port`` (port 0: any free port), not yet running."""
    from waitress.server import BaseWSGIServer
    from waitress.server import create_server as waitress_server

    sockets: dict[int, Any] = {}
    server = waitress_server(app, map=sockets, host=host, port=port, threads=threads,
                             ident="selfdrive",
                             max_request_body_size=waitress_body_limit(app.max_body),
                             expose_tracebacks=False, clear_untrusted_proxy_headers=True,
                             asyncore_use_poll=True, channel_timeout=60)
    for listener in list(sockets.values()):  # one per address it listens on
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = _json_channel()
            listener.selfdrive_app = app  # type: ignore[attr-defined]
    return server


def bound_addresses(server: Any) -> list[tuple[str, int]]:
    """Where the server listens, with the real port when 0 was asked for."""
    if hasattr(server, "effective_listen"):
        return [(str(h), int(p)) for h, p in server.effective_listen]
    return [(str(server.effective_host), int(server.effective_port))]
