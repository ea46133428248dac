"""What an exception from runbook code says to its author: the error, where, and how.

``ZeroDivisionError: division by zero`` alone sends the on-call engineer hunting; the
file and line in the runbook, and the last few calls of runbook code that led there,
do not. Frames of selfdrive's own machinery and of Python's standard library are left
out: the author cannot change them, and the line that called them is shown instead.
"""

from __future__ import annotations

import os
import sysconfig
import traceback
from dataclasses import dataclass
from pathlib import Path

from selfdrive.sdk.errors import SelfdriveError

#: How many frames of runbook code a traceback keeps (the innermost ones).
TRACEBACK_FRAMES = 5

_PACKAGE = Path(__file__).resolve().parent.parent
#: The built-in runbook library ships inside the package but is runbook code.
_LIBRARY = _PACKAGE / "library"
_PATHS = sysconfig.get_paths()
#: Installed packages (runbook packs among them) are code someone wrote runbooks in.
_INSTALLED = tuple({Path(_PATHS[k]).resolve() for k in ("purelib", "platlib") if k in _PATHS})
_STDLIB = tuple({Path(_PATHS[k]).resolve() for k in ("stdlib", "platstdlib") if k in _PATHS})


@dataclass(frozen=True)
class Failure:
    """An exception from runbook code, described.

    ``error`` is what was raised; ``where`` the innermost line of runbook code
    (``runbooks/disk.py:12, in clean``), None when no frame is the author's;
    ``traceback`` the last few frames of runbook code, as Python prints them.
    """

    error: str
    where: str | None = None
    traceback: str | None = None

    def __str__(self) -> str:
        return self.error if self.where is None else f"{self.error} (at {self.where})"


def describe_failure(exc: BaseException, *, source_file: str | None = None) -> Failure:
    """Describe ``exc`` raised by runbook code whose file is ``source_file``.

    Runbook code is the runbook's own file and any file outside selfdrive's package
    (the built-in library counts as runbook code) and Python's standard library.
    Paths are shown whole, as ``selfdrive show`` and ``lint`` show them: the same
    wherever the message is read (and in a simulation as in a real run).
    """
    error = str(exc) if isinstance(exc, SelfdriveError) else f"{type(exc).__name__}: {exc}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if _is_runbook_code(f.filename, source_file)]
    if not frames:
        return Failure(error)
    last = frames[-1]
    where = f"{last.filename}:{last.lineno}, in {last.name}"
    lines = []
    for frame in frames[-TRACEBACK_FRAMES:]:
        lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}')
        if frame.line:
            lines.append(f"    {frame.line}")
    lines.append(error)
    return Failure(error, where, "\n".join(lines))


def _is_runbook_code(filename: str, source_file: str | None) -> bool:
    if filename == source_file:
        return True
    if filename.startswith("<"):  # <frozen importlib._bootstrap>, <string>
        return False
    path = Path(os.path.realpath(filename))
    if path.is_relative_to(_LIBRARY):
        return True
    if path.is_relative_to(_PACKAGE):
        return False
    if any(path.is_relative_to(base) for base in _INSTALLED):  # site-packages may sit
        return True                                             # inside the stdlib folder
    return not any(path.is_relative_to(base) for base in _STDLIB)
