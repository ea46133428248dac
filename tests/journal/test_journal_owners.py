"""Whether a run's owner is alive: a dead process is dead, also while it waits to be
reaped (a killed receiver's workers become zombies when nothing reaps them)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from selfdrive.journal.processes import owner_alive, process_identity


def _state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_killed_process_is_dead_even_before_it_is_reaped() -> None:
    child = subprocess.Popen(["sleep", "60"])
    try:
        owner = process_identity(child.pid)
        assert owner_alive(owner) is True
        child.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _state(child.pid) != "Z" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _state(child.pid) == "Z"  # not reaped yet: /proc still has it
        assert owner_alive(owner) is False
    finally:
        child.wait()
    assert owner_alive(owner) is False


def test_an_owner_elsewhere_is_not_guessed() -> None:
    assert owner_alive("another-host:1:1") is None
