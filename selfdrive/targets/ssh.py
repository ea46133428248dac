"""The SSH target: one inventory host reached with paramiko, host keys checked strictly.

Failures come back as values. ``run`` never raises for a refused or dropped
connection, a failed authentication, a host key problem or a timeout; it returns a
:class:`~selfdrive.sdk.context.CommandResult` with ``exit_code=None`` and a one-line
``error`` that begins with one of two prefixes, and an ``outcome`` that says the same
as a value (``not_started`` or ``unknown``: :func:`never_started`, :func:`outcome_unknown`):

``not started:``
    the command was never sent (DNS, refused, timeout while connecting,
    authentication, host key, a channel the server would not open). Nothing
    happened on the host; running it again is safe.
``outcome unknown:``
    the command was sent and then it timed out (``timed_out=True``; the remote
    process group was killed) or the connection dropped. It may have run in part or
    in full.

How a command runs on the wire: the login shell gets a fixed string, the same for
every command (see :func:`wrap_command`), so the process list shows nothing of it. It
leads its own process group, prints that group's id on stdout (the target strips
the line) and becomes ``bash`` reading the command's text from stdin
(:mod:`selfdrive.targets.shell`): the variables the runbook passes (exported)
and the rendered ``command.raw``, never logged. On a timeout the target kills the
whole group (``kill -KILL -- -PGID``) over a second channel, so a hung command stops
for real. The command's own stdin is ``/dev/null``; a command killed by a signal exits
128+N as in a shell. The channel's stdin stays open until the command has ended: when
the connection closes first (the runner died, the network dropped and sshd noticed),
the command's process group is killed on the host.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import random
import select
import shlex
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfdrive.config.remote import SshConfig
from selfdrive.sdk.command import Command
from selfdrive.sdk.context import CommandResult
from selfdrive.sdk.vocabulary import Outcome
from selfdrive.targets.base import NOT_STARTED, OUTCOME_UNKNOWN, Intent
from selfdrive.targets.inventory import HostSpec
from selfdrive.targets.shell import WATCHED_READER, ScriptError, payload

if TYPE_CHECKING:
    import paramiko

#: The first stdout line of every wrapped command: ``@@selfdrive-pgid <pgid>``.
PGID_MARKER = b"@@selfdrive-pgid "
_MARKER_LIMIT = 64
_READ_CHUNK = 1 << 16
_WINDOW_SIZE = 8 * 1024 * 1024
_KEEPALIVE = 15
_KILL_WAIT = 3.0
_RETRY_BACKOFF = (0.2, 0.6, 1.5, 3.0)

_INNER = ('printf "@@selfdrive-pgid %s\\n" "$$"; '
          'command -v bash >/dev/null 2>&1 || { echo "selfdrive: bash is not installed on '
          'this host; commands run with bash" >&2; exit 127; }; exec bash -c "$1"')


def outcome_unknown(result: CommandResult) -> bool:
    """True when ``result`` may hide a command that ran: timed out or dropped after sending
    (its ``outcome``, as the target that ran it set it)."""
    return result.outcome is Outcome.UNKNOWN


def never_started(result: CommandResult) -> bool:
    """True when the command was certainly not sent (and not merely planned)."""
    return result.outcome is Outcome.NOT_STARTED and not result.planned


def wrap_command() -> str:
    """The string sent to the server's login shell for every command (POSIX sh syntax).

    The wrapper must lead its own process group so that a timeout can kill the whole
    command. OpenSSH already makes the session's shell a session leader: when
    ``/proc`` says so, the shell just ``exec``s the wrapper (no extra process);
    otherwise ``setsid -w`` makes a new session, where it exists and knows ``-w``.
    The command itself follows on stdin (:func:`selfdrive.targets.shell.payload`).
    """
    return _WRAPPED


def _wrapped() -> str:
    run = f"sh -c {shlex.quote(_INNER)} sd {shlex.quote(WATCHED_READER)}"
    return ("if { read -r s </proc/$$/stat; } 2>/dev/null && set -- ${s##*) } "
            f"&& [ \"$3\" = \"$$\" ]; then exec {run}; "
            f"elif setsid -w true >/dev/null 2>&1; then exec setsid -w {run}; "
            f"else exec {run}; fi")


_WRAPPED = _wrapped()


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint of a public key: ``SHA256:base64-without-padding``."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


class _HostKeyError(Exception):
    """A host key problem, already worded for the operator."""


class _ConnectError(Exception):
    """A connection that could not be made, worded for the operator."""


_known_hosts_lock = threading.Lock()
#: known_hosts files as parsed, by path, with the (inode, mtime, size) they were read at.
_parsed: dict[str, tuple[tuple[int, int, int], paramiko.HostKeys]] = {}
_parsed_lock = threading.Lock()


def _known_hosts(path: Path) -> paramiko.HostKeys:
    """``path`` parsed once per version of the file, shared read-only.

    Parsing builds a key object per line (~1.3 ms for 50 lines, under the interpreter
    lock): a fan-out over 50 hosts parsed the same file 50 times, serially. Any change
    to the file (a key trusted on first use, an edit) is read again.
    """
    import paramiko

    st = path.stat()
    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    with _parsed_lock:
        hit = _parsed.get(str(path))
    if hit is not None and hit[0] == stamp:
        return hit[1]
    keys = paramiko.HostKeys(str(path))
    with _parsed_lock:
        _parsed[str(path)] = (stamp, keys)
    return keys
_semaphores: dict[tuple[str, int], threading.BoundedSemaphore] = {}
_semaphores_lock = threading.Lock()
_quiet_done = False


def _connect_slot(address: str, port: int, limit: int) -> threading.BoundedSemaphore:
    """The process-wide cap on concurrent handshakes to one sshd (MaxStartups drops them)."""
    with _semaphores_lock:
        sem = _semaphores.get((address, port))
        if sem is None:
            sem = _semaphores[(address, port)] = threading.BoundedSemaphore(limit)
        return sem


def _quiet_paramiko() -> None:
    """Keep paramiko's transport threads from logging tracebacks, unless someone chose a level."""
    global _quiet_done
    if not _quiet_done:
        log = logging.getLogger("paramiko")
        if log.level == logging.NOTSET:
            log.setLevel(logging.CRITICAL + 1)
        _quiet_done = True


class SshTarget:
    """One host over SSH. Connects on the first ``run`` and reuses the connection.

    Host keys are checked against ``known_hosts`` only (never the user's own files):
    an unknown key is refused with its fingerprint and the ``ssh-keyscan`` line that
    trusts it, unless ``trust_on_first_use`` (then it is appended to ``known_hosts``);
    a changed key is always refused. Authentication uses ``host.key`` alone when the
    inventory names one, else the SSH agent and the default keys (``~/.ssh/id_*``).
    Safe to call from several threads; each command gets its own channel.
    """

    def __init__(self, host: HostSpec, *, known_hosts: Path, trust_on_first_use: bool = False,
                 connect_timeout: float = 10.0, connect_retries: int = 3,
                 max_connects_per_host: int = 8) -> None:
        self.host = host
        self.name = host.name
        self.known_hosts = known_hosts
        self.trust_on_first_use = trust_on_first_use
        self.connect_timeout = connect_timeout
        self.connect_retries = max(1, connect_retries)
        self.max_connects_per_host = max_connects_per_host
        self.connects = 0
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, host: HostSpec, ssh: SshConfig, root: Path) -> SshTarget:
        """A target configured by the team's ``[ssh]`` table (paths against ``root``)."""
        return cls(host, known_hosts=ssh.known_hosts_path(root),
                   trust_on_first_use=ssh.trust_on_first_use,
                   connect_timeout=ssh.connect_timeout, connect_retries=ssh.connect_retries,
                   max_connects_per_host=ssh.max_connects_per_host)

    def __repr__(self) -> str:
        return f"SshTarget({self.name!r}, {self.host.login}@{self.host.endpoint})"

    # -- connection -------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        client = self._client
        transport = client.get_transport() if client is not None else None
        return transport is not None and transport.is_active()

    def connect(self) -> None:
        """Connect now (``run`` does it lazily). Raises ``ConnectionError`` with the reason."""
        try:
            self._ensure_client()
        except _ConnectError as exc:
            raise ConnectionError(str(exc)) from None

    def _ensure_client(self) -> paramiko.SSHClient:
        with self._lock:
            if self._client is not None:
                transport = self._client.get_transport()
                if transport is not None and transport.is_active():
                    return self._client
                self._drop()
            self._client = self._connect()
            self.connects += 1
            return self._client

    def _connect(self) -> paramiko.SSHClient:
        _quiet_paramiko()
        host = self.host
        if host.key is not None:
            try:
                with host.key.open("rb"):
                    pass
            except OSError as exc:
                raise _ConnectError(f"cannot read the key {host.key} for {host.name}: "
                                    f"{exc.strerror or exc}") from None
        slot = _connect_slot(host.address, host.port, self.max_connects_per_host)
        attempts = self.connect_retries
        for attempt in range(attempts):
            retry = attempt + 1 < attempts
            with slot:
                try:
                    return self._connect_once()
                except _Retryable as exc:
                    if not retry:
                        raise _ConnectError(f"{host.name} ({host.endpoint}) dropped the "
                                            f"connection during the handshake {attempts} times "
                                            f"({exc}); sshd's MaxStartups may be too low"
                                        ) from None
            delay = _RETRY_BACKOFF[min(attempt, len(_RETRY_BACKOFF) - 1)]
            time.sleep(delay * (0.5 + random.random()))
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect_once(self) -> paramiko.SSHClient:
        import paramiko

        host = self.host
        where = f"{host.name} ({host.endpoint})"
        sock = self._open_socket()
        client = paramiko.SSHClient()
        try:
            self._load_known_hosts(client)
            client.set_missing_host_key_policy(_policy(self))

            def factory(s: Any, /, **kw: Any) -> paramiko.Transport:
                return paramiko.Transport(s, default_window_size=_WINDOW_SIZE, **kw)

            client.connect(
                host.address, port=host.port, username=host.login, sock=sock,
                key_filename=str(host.key) if host.key else None,
                allow_agent=host.key is None, look_for_keys=host.key is None,
                timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                auth_timeout=self.connect_timeout, channel_timeout=self.connect_timeout,
                transport_factory=factory)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                client.close()
            with contextlib.suppress(Exception):
                sock.close()
            if isinstance(exc, Exception):
                raise self._classify(exc, where) from None
            raise
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(_KEEPALIVE)
        return client

    def _open_socket(self) -> socket.socket:
        host = self.host
        where = f"{host.name} ({host.endpoint})"
        try:
            infos = socket.getaddrinfo(host.address, host.port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise _ConnectError(f"cannot resolve {host.address!r} for {host.name}: "
                                f"{exc.strerror}") from None
        last: OSError | None = None
        deadline = time.monotonic() + self.connect_timeout
        for family, kind, proto, _, addr in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                sock.connect(addr)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        if isinstance(last, ConnectionRefusedError):
            raise _ConnectError(f"connection refused by {where}: is sshd running there, "
                                f"on that port?")
        if isinstance(last, TimeoutError | socket.timeout):
            raise _ConnectError(f"no answer from {where} within {self.connect_timeout:g}s")
        reason = (last.strerror or str(last)) if last else "no address"
        raise _ConnectError(f"cannot connect to {where}: {reason}")

    def _load_known_hosts(self, client: paramiko.SSHClient) -> None:
        if not self.known_hosts.exists():
            return  # every key is unknown: refused, or trusted on first use
        try:
            known = _known_hosts(self.known_hosts)
        except Exception as exc:
            raise _ConnectError(f"cannot read known_hosts {self.known_hosts}: {exc}") from None
        # Only this host's keys: what paramiko looks up for it, and all it may compare.
        name = self.host.known_hosts_name
        mine = client.get_host_keys()
        for keytype, key in (known.lookup(name) or {}).items():
            mine.add(name, keytype, key)

    def _classify(self, exc: Exception, where: str) -> Exception:
        import paramiko

        if isinstance(exc, _ConnectError | _HostKeyError | _Retryable):
            return exc
        if isinstance(exc, paramiko.BadHostKeyException):
            return _HostKeyError(self._changed_key_message(exc.key, exc.expected_key))
        if isinstance(exc, paramiko.PasswordRequiredException):
            return _ConnectError(f"the key {self.host.key} for {self.host.name} is encrypted; "
                                 f"load it into ssh-agent and drop 'key' from the inventory")
        if isinstance(exc, paramiko.AuthenticationException):
            keys = (f"key {self.host.key}" if self.host.key
                    else "the SSH agent and default keys")
            return _ConnectError(f"authentication failed for {self.host.login}@{where} "
                                 f"with {keys}")
        if isinstance(exc, paramiko.SSHException) and "no authentication methods" in str(
                exc).lower():
            return _ConnectError(f"authentication failed for {self.host.login}@{where}: no key "
                                 f"in the inventory, no SSH agent and no default key")
        if isinstance(exc, EOFError | ConnectionResetError):
            return _Retryable(type(exc).__name__)
        if isinstance(exc, paramiko.SSHException) and (
                "banner" in str(exc).lower() or "reset" in str(exc).lower()
                or isinstance(exc.__cause__ or exc.__context__, EOFError | ConnectionResetError)):
            return _Retryable(str(exc))
        if isinstance(exc, TimeoutError | socket.timeout):
            return _ConnectError(f"SSH handshake with {where} timed out after "
                                 f"{self.connect_timeout:g}s")
        if isinstance(exc, OSError):
            return _ConnectError(f"connection to {where} failed: {exc.strerror or exc}")
        return _ConnectError(f"SSH to {where} failed: {type(exc).__name__}: {exc}")

    def _changed_key_message(self, offered: paramiko.PKey, expected: paramiko.PKey) -> str:
        h = self.host
        return (f"host key of {h.name} ({h.endpoint}) has CHANGED: known_hosts "
                f"{self.known_hosts} has {expected.get_name()} {fingerprint(expected)}, the "
                f"server offered {offered.get_name()} {fingerprint(offered)}; refusing to "
                f"connect (a man-in-the-middle, or a reinstalled host); if the change is "
                f"expected, remove the old key with: ssh-keygen -R "
                f"{shlex.quote(h.known_hosts_name)} -f {shlex.quote(str(self.known_hosts))}")

    def _unknown_key_message(self, offered: paramiko.PKey) -> str:
        h = self.host
        return (f"host key of {h.name} ({h.endpoint}) is not in known_hosts "
                f"{self.known_hosts}: the server offered {offered.get_name()} "
                f"{fingerprint(offered)}; if that fingerprint is right, trust it with: "
                f"ssh-keyscan -p {h.port} {shlex.quote(h.address)} >> "
                f"{shlex.quote(str(self.known_hosts))}")

    def _trust(self, client: paramiko.SSHClient, name: str, key: paramiko.PKey) -> None:
        with _known_hosts_lock:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with self.known_hosts.open("a", encoding="ascii") as fh:
                fh.write(f"{name} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(name, key.get_name(), key)

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def close(self) -> None:
        """Close the connection; a later ``run`` connects again."""
        with self._lock:
            self._drop()

    def __enter__(self) -> SshTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands ---------------------------------------------------------------------

    def run(self, command: Command, timeout: float, *,
            intent: Intent | None = None) -> CommandResult:
        """Run ``command.raw`` on the host; never raises for connection or command failures.

        ``timeout`` counts from this call, connecting included (connecting alone is also
        bounded by ``connect_timeout``); a command is never sent once it has passed.
        """
        started = time.monotonic()
        if intent is not None:
            intent(None)  # before connecting: a connection failure is journaled too

        def failed(error: str, **extra: object) -> CommandResult:
            """The command may have run: it was sent, or may have been."""
            return CommandResult(command=command, target=self.name, exit_code=None,
                                 error=error, duration=time.monotonic() - started,
                                 **extra)  # type: ignore[arg-type]

        def unsent(why: str) -> CommandResult:
            """The command was certainly never sent."""
            return failed(NOT_STARTED + why, outcome=Outcome.NOT_STARTED)

        try:
            script = payload(command)
        except ScriptError as exc:
            return unsent(str(exc))
        try:
            chan = self._open_channel()
        except (_ConnectError, _HostKeyError) as exc:
            return unsent(str(exc))
        if time.monotonic() >= started + timeout:
            chan.close()
            return unsent(f"the {timeout:g}s timeout passed while connecting to {self.name}")
        try:
            try:
                chan.exec_command(wrap_command())
            except Exception as exc:
                if self.connected:
                    return unsent(f"{self.name} refused to run the command: "
                                  f"{exc or type(exc).__name__}")
                self.close()
                return failed(f"{OUTCOME_UNKNOWN}the connection to {self.name} dropped while "
                              f"the command was being sent")
            # Stdin stays open until the channel closes: its end tells the host's watcher
            # the runner is gone (see selfdrive.targets.shell).
            chan.sendall(script)
            out, err, pgid, done = _pump(chan, started + timeout)
            stdout = out.decode(errors="replace")
            stderr = err.decode(errors="replace")
            if not done:
                killed = self._kill(pgid)
                return failed(f"{OUTCOME_UNKNOWN}timed out after {timeout:g}s on {self.name}; "
                              f"{killed}", stdout=stdout, stderr=stderr, timed_out=True)
            status = chan.exit_status if chan.exit_status_ready() else -1
            if status == -1:
                alive = self.connected
                if not alive:
                    self.close()
                why = ("the connection dropped" if not alive
                       else "the server closed the channel without an exit status")
                return failed(f"{OUTCOME_UNKNOWN}{why} while the command ran on {self.name}",
                              stdout=stdout, stderr=stderr)
            return CommandResult(command=command, target=self.name, exit_code=status,
                                 stdout=stdout, stderr=stderr,
                                 duration=time.monotonic() - started)
        except Exception as exc:  # paramiko failing mid-command: report, never raise
            self.close()
            return failed(f"{OUTCOME_UNKNOWN}the SSH channel to {self.name} failed while the "
                          f"command ran: {type(exc).__name__}: {exc}")
        finally:
            with contextlib.suppress(Exception):
                chan.close()

    def _open_channel(self) -> paramiko.Channel:
        for attempt in (1, 2):
            client = self._ensure_client()
            transport = client.get_transport()
            try:
                if transport is None:
                    raise EOFError
                return transport.open_session(timeout=self.connect_timeout)
            except Exception as exc:
                if (transport is not None and transport.is_active()) or attempt == 2:
                    raise _ConnectError(f"{self.name} would not open a session: "
                                        f"{exc or type(exc).__name__}") from None
                self.close()  # a stale connection: connect once more
        raise AssertionError("unreachable")  # pragma: no cover

    def _kill(self, pgid: int | None) -> str:
        if pgid is None:
            return "its process id never arrived, so it may still be running"
        try:
            client = self._ensure_client()
            transport = client.get_transport()
            if transport is None:
                raise EOFError("no transport")
            chan = transport.open_session(timeout=_KILL_WAIT)
            try:
                chan.settimeout(_KILL_WAIT)
                chan.exec_command(f"kill -KILL -- -{pgid} 2>/dev/null || kill -KILL {pgid}")
                chan.shutdown_write()
                if not chan.status_event.wait(_KILL_WAIT):
                    return f"the kill of process group {pgid} did not answer in time"
            finally:
                chan.close()
        except Exception as exc:
            return f"could not kill process group {pgid}: {exc or type(exc).__name__}"
        return f"its process group {pgid} was killed"


class _Retryable(Exception):
    """A handshake dropped by the server (MaxStartups, a reset): worth another try."""


def _policy(target: SshTarget) -> paramiko.MissingHostKeyPolicy:
    """Unknown host keys: refuse with the fingerprint, or trust on first use."""
    import paramiko

    class Policy(paramiko.MissingHostKeyPolicy):
        def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                             key: paramiko.PKey) -> None:
            if target.trust_on_first_use:
                target._trust(client, hostname, key)
                return
            raise _HostKeyError(target._unknown_key_message(key))

    return Policy()


def _pump(chan: paramiko.Channel, deadline: float) -> tuple[bytes, bytes, int | None, bool]:
    """Read stdout and stderr together until the command ends or ``deadline`` passes.

    Returns ``(stdout, stderr, pgid, finished)``; the wrapper's pgid line is stripped.
    """
    out: list[bytes] = []
    err: list[bytes] = []
    head = b""
    pgid: int | None = None
    marker_done = False
    fd = chan.fileno()
    while True:
        progressed = False
        while chan.recv_ready():
            data = chan.recv(_READ_CHUNK)
            if not data:
                break
            progressed = True
            if marker_done:
                out.append(data)
                continue
            head += data
            if b"\n" in head or len(head) > _MARKER_LIMIT:
                marker_done = True
                line, sep, rest = head.partition(b"\n")
                if sep and line.startswith(PGID_MARKER) and line[len(PGID_MARKER):].isdigit():
                    pgid = int(line[len(PGID_MARKER):])
                    out.append(rest)
                else:
                    out.append(head)
                head = b""
        while chan.recv_stderr_ready():
            data = chan.recv_stderr(_READ_CHUNK)
            if not data:
                break
            progressed = True
            err.append(data)
        if progressed:
            continue
        remaining = deadline - time.monotonic()
        if chan.closed or chan.eof_received:
            # All output is in; wait for the exit status (or the close) only.
            if chan.exit_status_ready() or chan.closed or chan.status_event.wait(
                    max(0.0, remaining)):
                break
            return _join(out, head, err, pgid, finished=False)
        if remaining <= 0:
            return _join(out, head, err, pgid, finished=False)
        select.select([fd], [], [], min(remaining, 1.0))
    return _join(out, head, err, pgid, finished=True)


def _join(out: list[bytes], head: bytes, err: list[bytes], pgid: int | None,
          *, finished: bool) -> tuple[bytes, bytes, int | None, bool]:
    if head:
        out.append(head)
    return b"".join(out), b"".join(err), pgid, finished


__all__ = ["NOT_STARTED", "OUTCOME_UNKNOWN", "SshTarget", "fingerprint", "never_started",
           "outcome_unknown", "wrap_command"]

