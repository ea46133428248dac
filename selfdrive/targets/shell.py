"""How a command reaches its shell, locally and over SSH: on stdin, never in argv.

A process's argv is world-readable (``ps -ef``), so the command's text, which may hold
a secret, never goes there. Both targets start a fixed program with ``bash -c`` and
write :func:`payload` to its stdin: the variables the runbook passes (exported),
then the command's text, then a NUL byte. The program (:data:`READER`)

1. reads up to the NUL; text that did not arrive whole (its sender died) never runs;
2. points its stdin at ``/dev/null``, so a command reading stdin gets end of file;
3. evaluates the text in the shell itself: ``exit N``, ``$$``, heredocs and a bare
   ``wait`` behave as under ``bash -c``.

Over SSH the reader also starts a watcher before it runs the text
(:data:`WATCHED_READER`): the target keeps the channel's stdin open until the command
has ended, and sshd closes it only after reaping the shell, so end of file while the
shell still lives means the connection is gone (the runner died, or the network).
The watcher then sends TERM to the command's whole process group, and KILL two
seconds later. Locally the same job is done for every command by one guard process
per runner (see :mod:`selfdrive.targets.local`), which costs no fork per command.
"""

from __future__ import annotations

import re
import shlex

from selfdrive.sdk.command import Command

_READ = 'IFS= read -r -d "" __sd_script || exit 127; '
_WATCH = ('{ read -r _; if kill -0 $$; then trap "" TERM; kill -TERM 0; sleep 2; '
          'kill -KILL 0; fi; } 0<&0 >/dev/null 2>&1 & disown; ')
_RUN = 'exec </dev/null; eval "$__sd_script"'

#: The program a local command's shell runs; it names no command, only reads one.
READER = _READ + _RUN
#: The same with a watcher that ends the command when its stdin ends first (SSH).
WATCHED_READER = _READ + _WATCH + _RUN

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ScriptError(ValueError):
    """A command that cannot be handed to a shell whole (the message says why)."""


def payload(command: Command) -> bytes:
    """What the reader reads: ``export`` of the command's variables, its text, a NUL.

    The exports share the text's first line, so error messages keep their line numbers.
    """
    if "\0" in command.raw:
        raise ScriptError(f"the command {command} contains a NUL character, which no "
                          f"shell can run; nothing ran")
    exports = ""
    if command.env:
        for name, value in command.env:
            if not _NAME.fullmatch(name) or "\0" in value:
                raise ScriptError(f"the command {command} has a bad variable {name!r} "
                                  f"(a name of letters, digits and _, a value without NUL)")
        exports = "export " + " ".join(f"{n}={shlex.quote(v)}" for n, v in command.env) + "; "
    return (exports + command.raw).encode("utf-8", "surrogateescape") + b"\0"
