"""A journal that cannot be written: a clear error naming it, never a traceback.

Real file systems, the real CLI in subprocesses. A read-only journal is a read-only
bind mount of the file (root ignores file modes); a full disk is a 1 MiB tmpfs that a
filler file fills. Before a run: exit 2, nothing written, nothing run. During a run:
the run stops before its next step (even if the runbook catches the error and the
disk is freed), exit 1, and it is found `interrupted` once the journal can be written.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import Project, explain, team_config

pytestmark = pytest.mark.slow

FILL_THEN_TOUCH = '''
"""Fill the disk the journal is on, then make a change (a marker file)."""
import os

from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW)
def fill_then_touch(ctx: Context, fill: str, marker: str, free: bool = False) -> None:
    """Fill a disk; then touch a marker."""
    try:
        # The command fills the disk: its result cannot be journaled.
        ctx.run("cat /dev/zero > {{ fill }} 2>/dev/null; true", check=False)
    except Exception:  # a runbook that swallows the journal's error and goes on …
        if free:
            os.remove(fill)  # … even with the disk freed again
    ctx.run("touch {{ marker }}", check=False)


@fill_then_touch.verify()
def touched(ctx: Context, marker: str) -> bool:
    return ctx.run("test -e {{ marker }}", readonly=True, check=False).ok
'''

TOUCH = '''
"""A LOW-risk change: touch a marker."""
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW)
def touch(ctx: Context, marker: str) -> None:
    """Touch a marker."""
    ctx.run("touch {{ marker }}", check=True)


@touch.verify()
def touched(ctx: Context, marker: str) -> bool:
    return ctx.run("test -e {{ marker }}", readonly=True, check=False).ok
'''


def mount(*args: str) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"needs root and mount(8): mount {' '.join(args)}: {proc.stderr.strip()}")


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` read-only for everyone, root included, while the block runs."""
    mount("--bind", str(path), str(path))
    try:
        mount("-o", "remount,ro,bind", str(path))
        yield
    finally:
        subprocess.run(["umount", str(path)], check=True)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB file system of its own."""
    where = tmp_path / "disk"
    where.mkdir()
    mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where))
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def fill(path: Path) -> None:
    with contextlib.suppress(OSError), path.open("wb") as out:
        while True:
            out.write(b"\0" * 65536)
            out.flush()
            os.fsync(out.fileno())


def no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr, explain(proc)
    assert "sqlite3." not in proc.stderr, explain(proc)


def test_a_read_only_journal_is_named_and_nothing_runs(l4: Project, tmp_path: Path) -> None:
    l4.runbook("touch.py", TOUCH)
    first = l4.sd_json("run", "touch", "-p", f"marker={tmp_path / 'first'}")
    assert first["run"]["status"] == "succeeded"
    journal = l4.journal.resolve()

    marker = tmp_path / "second"
    with read_only(journal):
        for args in (("run", "touch", "-p", f"marker={marker}"),
                     ("halt", "--reason", "drill")):
            proc = l4.sd(*args)
            assert proc.returncode == 2, explain(proc)
            no_traceback(proc)
            assert (f"error: journal {journal}: cannot " in proc.stderr
                    and ": it is read-only (attempt to write a readonly database); nothing of "
                        "it was written" in proc.stderr), explain(proc)
        assert not marker.exists()
        history = l4.sd_json("history")  # reading it still works
        assert [r["id"] for r in history] == [first["run"]["id"]]

    assert [r["id"] for r in l4.sd_json("history")] == [first["run"]["id"]]
    assert l4.sd("audit", "verify").returncode == 0


def test_a_full_disk_before_a_run_is_named_and_nothing_runs(project: Project, disk: Path,
                                                           tmp_path: Path) -> None:
    project.config(team_config("L4", f'journal = "{disk / "journal.db"}"\n'))
    project.runbook("touch.py", TOUCH)
    assert project.sd("run", "touch", "-p", f"marker={tmp_path / 'first'}").returncode == 0
    fill(disk / "filler")
    marker = tmp_path / "second"

    proc = project.sd("run", "touch", "-p", f"marker={marker}")

    assert proc.returncode == 2, explain(proc)
    no_traceback(proc)
    assert f"error: journal {disk / 'journal.db'}: cannot " in proc.stderr, explain(proc)
    assert "the disk it is on is full" in proc.stderr, explain(proc)
    assert not marker.exists()
    (disk / "filler").unlink()
    runs = project.sd_json("history")
    assert [r["status"] for r in runs] == ["succeeded"]
    assert project.sd("run", "touch", "-p", f"marker={marker}").returncode == 0
    assert marker.exists()


@pytest.mark.parametrize("free", [False, True], ids=["disk-stays-full", "runbook-frees-it"])
def test_a_disk_filling_mid_run_stops_it_before_its_next_change(
        project: Project, disk: Path, tmp_path: Path, free: bool) -> None:
    journal = disk / "journal.db"
    project.config(team_config("L4", f'journal = "{journal}"\n'))
    project.runbook("fill.py", FILL_THEN_TOUCH)
    marker = tmp_path / "marker"

    proc = project.sd("run", "fill-then-touch", "-p", f"fill={disk / 'filler'}",
                      "-p", f"marker={marker}", "-p", f"free={str(free).lower()}")

    assert proc.returncode == 1, explain(proc)
    no_traceback(proc)
    assert (f"error: journal {journal}: cannot record a step's result: the disk it is on is "
            f"full (database or disk is full); nothing of it was written. Run ") in proc.stderr
    assert "stopped before its next step" in proc.stderr
    if free:
        assert "it is marked interrupted" in proc.stderr
    else:
        assert "the next selfdrive command marks it interrupted once the journal can be " \
               "written" in proc.stderr
    assert not marker.exists()  # the change after the lost result never happened

    with contextlib.suppress(FileNotFoundError):
        (disk / "filler").unlink()
    [run] = project.sd_json("history")
    assert run["status"] == "interrupted"
    logs = project.sd_json("logs", run["id"])
    live = [(s["phase"], s["command"], s["status"]) for s in logs["steps"]
            if not s["phase"].startswith("plan:") and s["kind"] == "command"]
    assert live == [("body", f"cat /dev/zero > {disk / 'filler'} 2>/dev/null; true",
                     "unknown")]
    assert json.loads(json.dumps(logs["disagreements"])) == []
    assert project.sd("audit", "verify").returncode == 0
