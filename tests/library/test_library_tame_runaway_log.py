"""tame-runaway-log: rotate (compressed copy, truncate in place) or cut to the tail, for
real on a file a live writer keeps open; failure paths with fakes."""

from __future__ import annotations

import gzip
import re
import subprocess
from pathlib import Path

from kit_support import Team

from selfdrive.library.tame_runaway_log import tame_runaway_log
from selfdrive.sdk import RunState
from selfdrive.testing import FakeContext, plan_of, simulate

MIB = 1024 * 1024


def _log(path: Path, mib: float) -> bytes:
    line = b"2026-11-25T21:00:00 GET /health 200 0.001s\n"
    data = line * int(mib * MIB / len(line))
    path.write_bytes(data)
    return data


def test_rotation_keeps_every_line_and_the_inode_with_a_writer_attached(
        team: Team, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    data = _log(log, 2.2)
    (tmp_path / "app.log.1.gz").write_bytes(gzip.compress(b"older\n"))
    inode = log.stat().st_ino
    writer = subprocess.Popen(["bash", "-c", f"exec 3>>{log}; sleep 30"])  # holds it open
    try:
        real_plan = team.plan("tame-runaway-log", path=str(log), max_mb=1)
        fake = FakeContext()
        fake.on(f"test -f {log} && test ! -L {log}")
        fake.on(f"stat -c %s -- {log}", stdout=f"{len(data)}\n")
        assert plan_of(tame_runaway_log, fake, path=str(log), max_mb=1).hash == real_plan.hash
        assert fake.unused() == []

        outcome = team.run("tame-runaway-log", path=str(log), max_mb=1)
        assert outcome.run.status is RunState.SUCCEEDED, outcome.message
        assert log.stat().st_size == 0 and log.stat().st_ino == inode
        assert gzip.decompress((tmp_path / "app.log.1.gz").read_bytes()) == data
        assert gzip.decompress((tmp_path / "app.log.2.gz").read_bytes()) == b"older\n"
        assert not list(tmp_path.glob("*selfdrive*"))
    finally:
        writer.kill()
        writer.wait()

    again = team.run("tame-runaway-log", path=str(log), max_mb=1)
    assert again.run.status is RunState.PRECONDITION_FAILED and again.exit_code == 4
    assert "not above max_mb=1" in again.message


def test_truncate_mode_keeps_only_the_tail(team: Team, tmp_path: Path) -> None:
    log = tmp_path / "chatty.log"
    data = _log(log, 3)
    outcome = team.run("tame-runaway-log", path=str(log), max_mb=2, mode="truncate",
                       tail_mb=1)
    assert outcome.run.status is RunState.SUCCEEDED, outcome.message
    assert log.read_bytes() == data[-MIB:]


def _rotating_fake(size: int, *, gzip_ok: bool = True, archive_ok: bool = True) -> FakeContext:
    fake = FakeContext(default_ok=True)
    fake.on("test -f /var/log/app.log && test ! -L /var/log/app.log")
    fake.on("stat -c %s -- /var/log/app.log", stdout=f"{size}\n", times=2)  # plan, run
    fake.on("stat -c %s -- /var/log/app.log", stdout=f"{size}\n", times=2)
    fake.on("stat -c %s -- /var/log/app.log", stdout="0\n")  # after the truncation
    if not gzip_ok:
        fake.on(re.compile(r"^gzip -c"), exit_code=1, stderr="No space left on device")
    fake.on("gzip -t -- /var/log/app.log.1.gz", exit_code=0 if archive_ok else 1)
    return fake


def test_a_full_disk_fails_before_truncating_and_the_rollback_cleans_up() -> None:
    sim = simulate(tame_runaway_log, _rotating_fake(5 * 1024 * MIB, gzip_ok=False),
                   path="/var/log/app.log")
    assert sim.status is RunState.ROLLED_BACK and sim.exit_code == 1
    assert "gzip -c" in sim.message and "exit code 1" in sim.message
    assert not any(c.startswith("truncate") for c in sim.changes)
    assert sim.commands("rollback") == [
        "rm -f -- /var/log/app.log.1.gz.selfdrive-tmp /var/log/app.log.selfdrive-tail"]


def test_a_corrupt_archive_fails_verification() -> None:
    sim = simulate(tame_runaway_log, _rotating_fake(5 * 1024 * MIB, archive_ok=False),
                   path="/var/log/app.log")
    assert sim.status is RunState.ROLLED_BACK and sim.exit_code == 5
    assert sim.changes[-2:] == ["truncate -s 0 -- /var/log/app.log",
                                "rm -f -- /var/log/app.log.1.gz.selfdrive-tmp "
                                "/var/log/app.log.selfdrive-tail"]
