"""The local shell target."""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import IO

from selfdrive.config.model import DEFAULT_ENV_ALLOW
from selfdrive.sdk.command import Command
from selfdrive.sdk.context import CommandResult
from selfdrive.sdk.vocabulary import Outcome
from selfdrive.targets.base import NOT_STARTED, Intent
from selfdrive.targets.environ import child_environ
from selfdrive.targets.shell import READER, ScriptError, payload

KILL_GRACE = 2.0
#: After the shell exits, how long to keep reading pipes a background child still holds.
EXIT_DRAIN = 0.5
CHUNK = 65536

#: The guard's program. Its stdin is a pipe only the runner holds; ``+PGID`` and
#: ``-PGID`` lines name the process groups of the commands in flight. End of file means
#: the runner is gone (it exited, or was killed): each group still named gets TERM,
#: then KILL two seconds later. A pgid is not reused while its group has a member,
#: and the runner names a group gone only once it has reaped the group's leader.
_GUARD = ('declare -A g; while read -r l; do case $l in +*) g[${l#+}]=1;; '
          '-*) unset "g[${l#-}]";; esac; done; [ ${#g[@]} -gt 0 ] || exit 0; '
          'for p in "${!g[@]}"; do kill -TERM -- "-$p"; done 2>/dev/null; sleep 2; '
          'for p in "${!g[@]}"; do kill -KILL -- "-$p"; done 2>/dev/null')


class LocalTarget:
    """Runs commands with bash in a fresh session (its own process group), so a timeout
    kills all of it, and so does the runner's death.

    The command's text reaches bash on stdin (:mod:`selfdrive.targets.shell`), never in
    argv. Its environment is ``env``; without one, the variables of this process that
    ``DEFAULT_ENV_ALLOW`` names, so a command never inherits the runner's credentials.
    A guard process (one per target, started with the first command, in a session of
    its own) ends every command still running when the runner dies, even by
    ``kill -9``; telling it costs two pipe writes per command, not a process.

    Waiting is event-driven (the pipes and a pidfd in one selector) rather than
    ``communicate(timeout=…)``, whose wait polls with sleeps and costs about a
    millisecond per command.
    """

    name = "local"

    def __init__(self, cwd: str | None = None, env: Mapping[str, str] | None = None) -> None:
        self.cwd = cwd
        self.env = dict(env) if env is not None else child_environ(DEFAULT_ENV_ALLOW)
        self.shell = shutil.which("bash", path=self.env.get("PATH")) or shutil.which("bash")
        self._guard = _Guard(self.shell or "bash", self.env)

    def run(self, command: Command, timeout: float, *,
            intent: Intent | None = None) -> CommandResult:
        started = time.monotonic()

        def failed(error: str) -> CommandResult:
            """Nothing of the command ran: bash never got its text."""
            if intent is not None:
                intent(None)
            return CommandResult(command=command, target=self.name, exit_code=None,
                                 error=error, duration=time.monotonic() - started,
                                 outcome=Outcome.NOT_STARTED)

        try:
            script = payload(command)
        except ScriptError as exc:
            return failed(f"{NOT_STARTED}{exc}")
        if self.shell is None:
            return failed(f"{NOT_STARTED}bash is not installed (commands run with bash)")
        try:
            proc = subprocess.Popen(
                [self.shell, "-c", READER], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.cwd, env=self.env,
                start_new_session=True)
        except OSError as exc:
            return failed(f"cannot start {self.shell}: {exc}")
        # The shell now waits for its text: nothing of the command has happened yet.
        try:
            try:
                self._guard.watch(proc.pid)
            except OSError as exc:
                _kill(proc)
                return failed(f"{NOT_STARTED}cannot start the guard that ends commands when "
                              f"selfdrive dies: {exc}")
            try:
                if intent is not None:
                    intent(proc.pid)  # records the process group, before the text is sent
                out, err, finished = _collect(proc, started + timeout, script)
            except BaseException:
                _kill(proc)
                raise
            if not finished:
                _kill(proc)
        finally:
            self._guard.release(proc.pid)
        if not finished:
            return CommandResult(
                command=command, target=self.name, exit_code=None,
                stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"),
                duration=time.monotonic() - started, timed_out=True,
                error=f"timed out after {timeout:g}s; the process group was killed",
                outcome=Outcome.UNKNOWN)
        return CommandResult(command=command, target=self.name, exit_code=proc.returncode,
                             stdout=out.decode(errors="replace"),
                             stderr=err.decode(errors="replace"),
                             duration=time.monotonic() - started)

    def close(self) -> None:
        """Let the guard go (a later command starts another); each command is its own
        process, so there is nothing else to release."""
        self._guard.close()


class _Guard:
    """The guard process of one :class:`LocalTarget` (see :data:`_GUARD`)."""

    def __init__(self, shell: str, env: Mapping[str, str]) -> None:
        self._shell = shell
        self._env = env
        self._proc: subprocess.Popen[bytes] | None = None
        self._ended: Callable[[], object] | None = None
        self._lock = threading.Lock()

    def watch(self, pgid: int) -> None:
        """Name a group in flight (before its command can start); OSError if no guard runs."""
        self._send(b"+%d\n" % pgid, start=True)

    def release(self, pgid: int) -> None:
        """The group's leader is reaped: a later death of the runner leaves it alone."""
        with contextlib.suppress(OSError):
            self._send(b"-%d\n" % pgid, start=False)

    def _send(self, line: bytes, *, start: bool) -> None:
        with self._lock:
            for attempt in (1, 2):
                proc = self._proc
                if proc is None or proc.poll() is not None:
                    if not start:
                        return
                    proc = self._proc = subprocess.Popen(
                        [self._shell, "-c", _GUARD], stdin=subprocess.PIPE,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                        env=self._env, start_new_session=True)
                    # Let it go with its target, or at exit, rather than leak it.
                    self._ended = weakref.finalize(self, _end_guard, proc)
                assert proc.stdin is not None
                try:
                    os.write(proc.stdin.fileno(), line)  # shorter than PIPE_BUF: atomic
                    return
                except OSError:
                    if attempt == 2:
                        raise
                    self._stop()  # someone killed it: start another

    def _stop(self) -> None:
        ended, self._ended, self._proc = self._ended, None, None
        if ended is not None:
            ended()

    def close(self) -> None:
        with self._lock:
            self._stop()


def _end_guard(proc: subprocess.Popen[bytes]) -> None:
    """Close the guard's stdin (it leaves, ending any group still named) and reap it."""
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=KILL_GRACE + 1)


def _collect(proc: subprocess.Popen[bytes], deadline: float,
             script: bytes) -> tuple[bytes, bytes, bool]:
    """Write ``script`` to the shell's stdin (then close it) and read both pipes until the
    shell exits (and its pipes close, or a short drain passes).

    Returns (stdout, stderr, finished); ``finished`` is False when the deadline came first.
    """
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd, in_fd = proc.stdout.fileno(), proc.stderr.fileno(), proc.stdin.fileno()
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    pipes: list[IO[bytes]] = [proc.stdout, proc.stderr]
    pidfd = _pidfd(proc.pid)
    exited_at: float | None = None
    left = memoryview(script)
    os.set_blocking(in_fd, False)
    with selectors.DefaultSelector() as selector:
        for pipe in pipes:
            selector.register(pipe, selectors.EVENT_READ)
        selector.register(proc.stdin, selectors.EVENT_WRITE)
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ)
        try:
            while True:
                now = time.monotonic()
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
                if exited_at is not None and (not pipes or now - exited_at >= EXIT_DRAIN):
                    break
                wait = deadline - now
                if wait <= 0:
                    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd]), False
                wait = wait if exited_at is None else min(wait, EXIT_DRAIN)
                if pidfd is None and exited_at is None:
                    wait = min(wait, 0.05)  # no pidfd: notice the exit by polling
                for key, _ in selector.select(wait):
                    if key.fileobj == pidfd:
                        selector.unregister(pidfd)
                        continue
                    fd = key.fd
                    if fd == in_fd:
                        try:
                            left = left[os.write(fd, left):]
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:  # the shell is gone; its exit tells why
                            left = left[:0]
                        if not left:
                            selector.unregister(proc.stdin)
                            proc.stdin.close()
                        continue
                    data = os.read(fd, CHUNK)
                    if data:
                        chunks[fd].append(data)
                    else:
                        selector.unregister(key.fileobj)
                        pipes = [p for p in pipes if p.fileno() != fd]
        finally:
            if pidfd is not None:
                os.close(pidfd)
    proc.wait()
    for pipe in (proc.stdout, proc.stderr, proc.stdin):
        with contextlib.suppress(OSError):
            pipe.close()
    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd]), True


def _pidfd(pid: int) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None:
        return None
    try:
        return int(opener(pid))
    except OSError:
        return None


def _kill(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=KILL_GRACE)
            break
        except subprocess.TimeoutExpired:
            continue
    for pipe in (proc.stdout, proc.stderr, proc.stdin):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()
