"""Private data directories for tools that must keep secrets on disk while they run.

ansible-runner keeps a run's extra variables, event data (task results) and output in
a directory; a ``finally`` that removes it does not run after ``kill -9`` or a power
loss. So each directory lives under one root the team's journal owns (mode 0700), is
locked (``flock``) by its process for as long as it exists, and the tools started for
it carry its name in their environment (:data:`MARK_VARIABLE`). The kernel drops the
lock when the process dies: whoever sweeps the root next (the next playbook, the next
selfdrive command) finds the lock free, kills the dead run's leftover processes and
removes the directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: In the environment of every process started for a private directory: its name.
MARK_VARIABLE = "SELFDRIVE_ANSIBLE_RUN"
PREFIX = "run-"


def private_root(state_dir: Path) -> Path:
    """Where a team's private data directories live: in this machine's state folder
    (beside a SQLite journal)."""
    return state_dir / "ansible"


@contextlib.contextmanager
def private_dir(root: Path) -> Iterator[Path]:
    """A fresh directory (0700) under ``root``, locked while the block runs, then
    removed with every process still marked with its name. Stale ones are swept first."""
    _make_root(root)
    sweep(root)
    path, fd = _new_locked(root)
    try:
        yield path
    finally:
        kill_marked(path.name)
        _remove(path)
        os.close(fd)


def sweep(root: Path) -> list[str]:
    """Remove the directories under ``root`` whose process died; their names.

    A directory whose lock is free belongs to no live process: the processes still
    marked with its name (an orphaned ansible-playbook and its workers) are killed
    first, so nothing writes into it, or goes on changing hosts, unjournaled.
    """
    try:
        entries = sorted(root.iterdir())
    except OSError:  # no root yet: nothing to sweep
        return []
    removed = []
    for entry in entries:
        if not entry.name.startswith(PREFIX):
            continue
        try:
            fd = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process is alive
            kill_marked(entry.name)
            _remove(entry)
            removed.append(entry.name)
        finally:
            os.close(fd)
    return removed


def kill_marked(mark: str) -> int:
    """SIGKILL every process whose environment carries ``mark``; how many there were.

    On a timeout or cancel, ansible-runner kills ansible-playbook's process group, but
    Ansible's workers run in sessions of their own: they, and their ssh clients, would
    go on with the task in flight (and its remote command) after the run "ended".
    Linux: read from /proc/PID/environ.
    """
    needle = f"{MARK_VARIABLE}={mark}".encode()
    killed: set[int] = set()
    for _ in range(3):
        found = 0
        for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if needle in environ.split(b"\0"):
                with contextlib.suppress(OSError):
                    os.kill(int(entry.name), signal.SIGKILL)
                    found += 1
                    killed.add(int(entry.name))
        if not found:
            break
    return len(killed)


def _make_root(root: Path) -> None:
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    if root.is_symlink() or not root.is_dir():
        raise OSError(f"{root} must be a directory, not a link")
    if root.stat().st_mode & 0o077:
        os.chmod(root, 0o700)


def _new_locked(root: Path) -> tuple[Path, int]:
    """A new directory under ``root`` and a descriptor holding its lock."""
    while True:
        path = root / f"{PREFIX}{uuid.uuid4().hex}"
        os.mkdir(path, 0o700)
        os.chmod(path, 0o700)  # whatever the umask
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        # A sweep may have taken it between mkdir and flock (its lock was free): then it
        # is gone, or about to be; make another.
        with contextlib.suppress(OSError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino and os.fstat(fd).st_nlink:
                return path, fd
        os.close(fd)


def _remove(path: Path) -> None:
    def retry(func: Callable[..., Any], target: str, _exc: object) -> None:
        with contextlib.suppress(OSError):
            os.chmod(target, 0o700)
            func(target)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)
