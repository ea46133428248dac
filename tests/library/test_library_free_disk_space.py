"""free-disk-space: the plan lists exactly the files that would go; a run removes them."""

from __future__ import annotations

import os
import re
import shlex
import time
from pathlib import Path

import pytest
from kit_support import Team

from selfdrive.library.free_disk_space import free_disk_space
from selfdrive.sdk import RunState
from selfdrive.sdk.errors import ParameterError
from selfdrive.testing import FakeContext, plan_of, simulate

DAY = 86400
DF = ("Filesystem 1024-blocks Used Available Capacity Mounted on\n"
      "/dev/vda1 1000000 {used} {avail} {pct}% /\n")


def _tree(root: Path) -> tuple[list[Path], list[Path]]:
    """Old matching files (doomed), and files that must stay for one reason each."""
    root.mkdir()
    (root / "sub dir").mkdir()
    doomed = [root / "app.log.1", root / "sub dir" / "old report.gz", root / "x.tmp"]
    kept = [root / "app.log",                 # does not match
            root / "fresh.tmp",               # too new
            root / "sub dir" / "notes.txt"]   # does not match
    for path in doomed + kept:
        path.write_text("x" * 4096)
    for path in [*doomed, root / "app.log"]:
        os.utime(path, (time.time() - 30 * DAY, time.time() - 30 * DAY))
    (root / "link.tmp").symlink_to(root / "app.log")  # old target, but a link: never
    os.utime(root / "link.tmp", (time.time() - 30 * DAY,) * 2, follow_symlinks=False)
    return doomed, kept


def test_real_plan_then_run_removes_exactly_the_planned_files(team: Team,
                                                             tmp_path: Path) -> None:
    root = tmp_path / "cache"
    doomed, kept = _tree(root)
    plan = team.plan("free-disk-space", path=str(root))
    deletes = [c.command for c in plan.changes]
    assert deletes == [f"find {shlex.quote(str(p))} -maxdepth 0 -type f -mtime +7 -delete"
                       for p in sorted(map(str, doomed))]
    assert all(p.exists() for p in doomed + kept)  # the plan changed nothing

    # The fakes, answering what the disk answered, give the same plan.
    fake = FakeContext()
    fake.on(f"test -d {root} && test ! -L {root}")
    fake.on(f"df -P -k -- {root}", stdout=DF.format(used=1, avail=2, pct=1))
    fake.on(re.compile(r"^find .* -print0$"), stdout="".join(f"{p}\0" for p in doomed))
    assert plan_of(free_disk_space, fake, path=str(root)).hash == plan.hash

    outcome = team.run("free-disk-space", path=str(root))
    assert outcome.run.status is RunState.SUCCEEDED, outcome.message
    assert not any(p.exists() for p in doomed)
    assert all(p.exists() for p in kept) and (root / "link.tmp").is_symlink()


def test_a_file_rewritten_after_the_plan_is_spared() -> None:
    """Each delete re-checks age and type, so only the find answers matter here."""
    fake = FakeContext(default_ok=True)
    fake.on("test -d /srv/cache && test ! -L /srv/cache")
    fake.on("df -P -k -- /srv/cache", stdout=DF.format(used=900000, avail=100000, pct=90))
    fake.on(re.compile(r"-print0$"), stdout="/srv/cache/a.tmp\0")
    fake.on(re.compile(r"-print -quit$"), stdout="")
    sim = simulate(free_disk_space, fake, path="/srv/cache", older_than_days=3)
    assert sim.ok
    assert sim.changes == ["find /srv/cache/a.tmp -maxdepth 0 -type f -mtime +3 -delete"]


@pytest.mark.parametrize("path", ["/", "/etc", "/var/log/", "/usr/../etc", "relative/path"])
def test_system_and_odd_folders_are_refused(path: str) -> None:
    fake = FakeContext()
    try:
        plan = plan_of(free_disk_space, fake, path=path)
    except ParameterError:
        return  # not an absolute, normalised path: refused before anything ran
    assert not plan.preconditions_met and plan.changes == ()
    assert fake.calls == []  # refused before reading anything


def test_too_many_matches_refuse_and_a_calm_disk_is_left_alone() -> None:
    fake = FakeContext()
    fake.on("test -d /srv/cache && test ! -L /srv/cache")
    fake.on("df -P -k -- /srv/cache", stdout=DF.format(used=500000, avail=500000, pct=50))
    fake.on(re.compile(r"-print0$"), stdout="".join(f"/srv/cache/{i}.tmp\0" for i in range(5)))
    sim = simulate(free_disk_space, fake, path="/srv/cache", max_files=4)
    assert sim.status is RunState.FAILED and "5 files match" in sim.message
    calm = simulate(free_disk_space, fake, path="/srv/cache", only_above_percent=80)
    assert calm.status is RunState.PRECONDITION_FAILED and "50% full" in calm.message
