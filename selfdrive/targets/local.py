"""The local shell target."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time

from selfdrive.sdk.command import Command
from selfdrive.sdk.context import CommandResult

KILL_GRACE = 2.0


class LocalTarget:
    """Runs commands with bash (or sh) in a fresh process group, so a timeout kills all of it."""

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
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            out, err = self._kill(proc)
            return CommandResult(
                command=command, target=self.name, exit_code=None,
                stdout=out.decode(errors="replace"), stderr=err.decode(errors="replace"),
                duration=time.monotonic() - started, timed_out=True,
                error=f"timed out after {timeout:g}s; the process group was killed")
        except BaseException:
            self._kill(proc)
            raise
        return CommandResult(command=command, target=self.name, exit_code=proc.returncode,
                             stdout=out.decode(errors="replace"),
                             stderr=err.decode(errors="replace"),
                             duration=time.monotonic() - started)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> tuple[bytes, bytes]:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                return proc.communicate(timeout=KILL_GRACE)
            except subprocess.TimeoutExpired:
                continue
        return b"", b""

    def close(self) -> None:
        """Nothing to release: each command is its own process."""
