"""Standard streams that go quiet when their reader is gone.

Output is never part of a run: ``selfdrive run X --yes | head -1`` closes the pipe
after one line, a terminal hangs up, a disk fills under a redirect. Python ignores
SIGPIPE, so each later write raises (``BrokenPipeError``); unguarded, that exception
would surface wherever the CLI happens to print — in the middle of a run, or at the
interpreter's final flush (exit status 120). Guarded, every later write is dropped
and the run, and its exit code, are the run's own.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any, TextIO


class QuietStream:
    """Wraps a text stream: the first failed write or flush silences it for good."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # click probes for binary streams with b""
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if not self.gone:
            try:
                return self._stream.write(text)
            except (OSError, ValueError):
                self._go_quiet()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except (OSError, ValueError):
                self._go_quiet()

    def _go_quiet(self) -> None:
        self.gone = True
        # What is still buffered would fail again at the interpreter's final flush:
        # point the descriptor at /dev/null, where that flush succeeds.
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(devnull, self._stream.fileno())
            finally:
                os.close(devnull)
            self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def guard_standard_streams() -> None:
    """Replace ``sys.stdout`` and ``sys.stderr`` with quiet ones (once per process)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, QuietStream):
            setattr(sys, name, QuietStream(stream))


def gone(stream: object) -> bool:
    """True once a guarded stream's reader has gone away."""
    return isinstance(stream, QuietStream) and stream.gone
