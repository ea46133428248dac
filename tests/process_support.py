"""Process checks shared by the test suites (on pytest's pythonpath)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie waiting for its reaper counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def gone_soon(pid: int, within: float = 3.0) -> bool:
    """Poll until ``pid`` is gone, at most ``within`` seconds."""
    deadline = time.monotonic() + within
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class ProcSampler:
    """Reads every process's ``cmdline`` and ``environ`` every ``interval`` seconds, in a
    thread, and keeps each place one of ``needles`` shows (a ``ps -ef``, or a process
    of the same user, would see it there). ``ignore`` pids are not read."""

    def __init__(self, needles: list[bytes], *, interval: float = 0.01,
                 ignore: set[int] | None = None) -> None:
        import threading

        self.needles = needles
        self.interval = interval
        self.ignore = {os.getpid(), *(ignore or set())}
        self.hits: list[tuple[int, str, str]] = []
        self.rounds = 0
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> ProcSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in self.ignore:
                continue
            self.seen.add(int(entry.name))
            for name in ("cmdline", "environ"):
                try:
                    data = (entry / name).read_bytes()
                except OSError:
                    continue
                if any(n in data for n in self.needles):
                    try:
                        argv = (entry / "cmdline").read_bytes()
                    except OSError:
                        argv = b"?"
                    self.hits.append((int(entry.name), name,
                                      argv.replace(b"\0", b" ").decode(errors="replace")))
        self.rounds += 1
