"""The local shell target."""

from __future__ import annotations

import contextlib
import os
import selectors
import shutil
import signal
import subprocess
import time
from typing import IO

from selfdrive.sdk.command import Command
from selfdrive.sdk.context import CommandResult

KILL_GRACE = 2.0
#: After the shell exits, how long to keep reading pipes a background child still holds.
EXIT_DRAIN = 0.5
CHUNK = 65536


class LocalTarget:
    """Runs commands with bash (or sh) in a fresh process group, so a timeout kills all of it.

    Waiting is event-driven (the pipes and a pidfd in one selector) rather than
    ``communicate(timeout=…)``, whose wait polls with sleeps and costs about a
    millisecond per command.
    """

    name = "local"

    def __init__(self, cwd: str | None = None, env: dict[str, str] | None = None) -> None:
        self.cwd = cwd
        self.env = env
        self.shell = shutil.which("bash") or "/bin/sh"

    def run(self, command: Command, timeout: float) -> CommandResult:
        started = time.monotonic()
        try:
            proc = subprocess.Popen(
                [self.shell, "-c", command.raw], stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=self.cwd, env=self.env,
                start_new_session=True)
        except OSError as exc:
            return CommandResult(command=command, target=self.name, exit_code=None,
                                 error=f"cannot start {self.shell}: {exc}",
                                 duration=time.monotonic() - started)
        try:
            out, err, finished = _collect(proc, started + timeout)
        except BaseException:
            _kill(proc)
            raise
        if not finished:
            _kill(proc)
            return CommandResult(
                command=command, target=self.name, exit_code=None,
                stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"),
                duration=time.monotonic() - started, timed_out=True,
                error=f"timed out after {timeout:g}s; the process group was killed")
        return CommandResult(command=command, target=self.name, exit_code=proc.returncode,
                             stdout=out.decode(errors="replace"),
                             stderr=err.decode(errors="replace"),
                             duration=time.monotonic() - started)

    def close(self) -> None:
        """Nothing to release: each command is its own process."""


def _collect(proc: subprocess.Popen[bytes], deadline: float) -> tuple[bytes, bytes, bool]:
    """Read both pipes until the shell exits (and its pipes close, or a short drain passes).

    Returns (stdout, stderr, finished); ``finished`` is False when the deadline came first.
    """
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    chunks: dict[int, list[bytes]] = {out_fd: [], err_fd: []}
    pipes: list[IO[bytes]] = [proc.stdout, proc.stderr]
    pidfd = _pidfd(proc.pid)
    exited_at: float | None = None
    with selectors.DefaultSelector() as selector:
        for pipe in pipes:
            selector.register(pipe, selectors.EVENT_READ)
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ)
        try:
            while True:
                now = time.monotonic()
                if exited_at is None and proc.poll() is not None:
                    exited_at = now
                if exited_at is not None and (not pipes or now - exited_at >= EXIT_DRAIN):
                    break
                left = deadline - now
                if left <= 0:
                    return b"".join(chunks[out_fd]), b"".join(chunks[err_fd]), False
                wait = left if exited_at is None else min(left, EXIT_DRAIN)
                if pidfd is None and exited_at is None:
                    wait = min(wait, 0.05)  # no pidfd: notice the exit by polling
                for key, _ in selector.select(wait):
                    if key.fileobj == pidfd:
                        selector.unregister(pidfd)
                        continue
                    fd = key.fd
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
    for pipe in (proc.stdout, proc.stderr):
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
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
