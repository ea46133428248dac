"""Private data directories: 0700, locked by their live process, swept once it died.

Real processes: a holder that makes a directory and starts a marked child, then
sleeps; the test sweeps while it lives, kills it with SIGKILL, and sweeps again.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from selfdrive.targets.ansible import run_playbook
from selfdrive.targets.inventory import HostSpec
from selfdrive.targets.private import MARK_VARIABLE, private_dir, sweep

HOLDER = textwrap.dedent("""
    import os, subprocess, sys, time
    from pathlib import Path
    from selfdrive.targets.private import MARK_VARIABLE, private_dir

    with private_dir(Path(sys.argv[1])) as path:
        (path / "extravars").write_text("secret")
        child = subprocess.Popen(["sleep", "300"], env={**os.environ, MARK_VARIABLE: path.name})
        print(path, child.pid, flush=True)
        time.sleep(300)
""")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_live_run_keeps_its_directory_a_dead_one_loses_it_and_its_processes(
        tmp_path: Path) -> None:
    root = tmp_path / "ansible"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(root)],
                              stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert holder.stdout is not None
        path_text, child_text = holder.stdout.readline().split()
        path, child = Path(path_text), int(child_text)
        assert stat.S_IMODE(root.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        assert sweep(root) == []  # its process holds the lock
        assert path.is_dir() and _alive(child)

        holder.kill()  # SIGKILL: no finally runs
        holder.wait(timeout=10)
        assert (path / "extravars").read_text() == "secret"  # left behind ...
        assert sweep(root) == [path.name]  # ... until the next sweep
        assert not path.exists() and list(root.iterdir()) == []
        assert _wait(lambda: not _alive(child)), "the dead run's marked process lives on"
    finally:
        for pid in (holder.pid, child):
            if pid and _alive(pid):
                os.kill(pid, 9)


def test_the_root_is_made_private_and_each_directory_goes_when_done(tmp_path: Path) -> None:
    root = tmp_path / "ansible"
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    stale = root / "run-left-by-a-dead-process"
    stale.mkdir()
    (stale / "extravars").write_text("secret")
    other = root / "not-ours"
    other.mkdir()
    old = os.umask(0)
    try:
        with private_dir(root) as path:
            assert stat.S_IMODE(root.stat().st_mode) == 0o700
            assert stat.S_IMODE(path.stat().st_mode) == 0o700
            assert not stale.exists()  # swept at start: nothing holds its lock
            marked = subprocess.Popen(["sleep", "300"],
                                      env={**os.environ, MARK_VARIABLE: path.name})
    finally:
        os.umask(old)
    assert marked.wait(timeout=5) == -9  # the block's leftover processes are killed
    assert not path.exists()
    assert sorted(p.name for p in root.iterdir()) == ["not-ours"]


def test_a_root_that_cannot_hold_them_is_an_error_naming_it(tmp_path: Path) -> None:
    taken = tmp_path / "journal.db"
    taken.write_text("not a folder")
    play = [{"hosts": "all", "gather_facts": False, "tasks": [{"ping": {}}]}]
    host = HostSpec(name="web1", address="127.0.0.1", port=1, user="nobody")
    r = run_playbook(play, [host], known_hosts=tmp_path / "known_hosts", private_root=taken,
                     timeout=30)
    assert r.status == "error" and not r.ok and r.rc is None
    assert r.error is not None
    assert r.error.startswith(f"cannot make or use Ansible's private data directory under "
                              f"{taken}: ")
    assert taken.read_text() == "not a folder"
