"""Who owns a run, and what is left of its commands: processes named so that a
recycled pid is never mistaken for the one that wrote the row.

Identities are ``host:pid:start`` (start in clock ticks since boot, from
``/proc/PID/stat``); an owner on another host cannot be checked from here, and every
answer says so (None) rather than guess.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path


def process_identity(pid: int | None = None) -> str:
    """``host:pid:start`` — start time guards against a recycled pid."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def _start_ticks(pid: int) -> str:
    fields = _stat(pid)
    return "?" if fields is None else fields[_START]


#: In the fields of ``/proc/PID/stat`` after the command name: state, parent, process
#: group, and the start time (field 22, in clock ticks since boot).
_STATE, _PGRP, _START = 0, 2, 19


def _stat(pid: int | str) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def owner_alive(owner: str) -> bool | None:
    """True/False for an owner on this host; None when it lives elsewhere."""
    host, _, rest = owner.partition(":")
    pid_text, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return None
    pid = int(pid_text)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat(pid)
    if fields is not None and fields[_STATE] == "Z":
        return False  # dead, waiting for a parent (or an init that never reaps) to reap it
    return start in ("?", "?" if fields is None else fields[_START])


def group_members(group: str) -> list[int] | None:
    """The live processes of the process group that ``group`` names (``host:pgid:start``,
    its leader's :func:`process_identity`); None when it lives on another host.

    Only processes of that group that started no earlier than its leader count, and a
    group whose leader's pid now belongs to a later process is gone: Linux reuses no pid
    while a group of that id has a member, so this never names a stranger.
    """
    host, _, rest = group.partition(":")
    pgid, _, start = rest.partition(":")
    if host != socket.gethostname() or not pgid.isdigit():
        return None
    if not start.isdigit():
        return []  # its leader was gone before it could read a command
    leader = _stat(pgid)
    if leader is not None and leader[_START] != start:
        return []
    members = []
    with os.scandir("/proc") as entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            fields = _stat(entry.name)
            if (fields is not None and fields[_PGRP] == pgid and fields[_STATE] != "Z"
                    and int(fields[_START]) >= int(start)):
                members.append(int(entry.name))
    return members


def end_group(group: str, *, wait: float = 1.0) -> list[int] | None:
    """SIGKILL every member of ``group`` (see :func:`group_members`). Returns the pids left
    after at most ``wait`` seconds (processes this user may not signal, or stuck in the
    kernel), or None for a group on another host, which cannot be reached from here."""
    deadline = time.monotonic() + wait
    denied: set[int] = set()
    while True:
        members = group_members(group)
        if members is None:
            return None
        for pid in members:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError:
                denied.add(pid)
        if not members or set(members) <= denied or time.monotonic() >= deadline:
            return members
        time.sleep(0.005)
