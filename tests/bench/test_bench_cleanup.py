"""Benchmarks leave nothing behind: every tmp folder and generated journal is removed,
also when a benchmark stops early."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _bench(tmp: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL,
                          env={**os.environ, "TMPDIR": str(tmp), "SELFDRIVE_USER": "bench"})


@pytest.mark.forged_journal  # the bench writes synthetic rows, with no events
def test_journal_scale_removes_its_journal_and_its_cli_project(tmp_path: Path) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = _bench(scratch, "journal_scale.py", "--runs", "2000", "--days", "5", "-r", "1",
                  "--json")
    assert done.returncode in (0, 1), done.stderr  # 1: a figure over target, not a failure
    assert sorted(p.name for p in scratch.iterdir()) == []

    chosen = tmp_path / "chosen"
    done = _bench(scratch, "journal_scale.py", "--runs", "2000", "--days", "5", "-r", "1",
                  "--dir", str(chosen), "--json")
    assert done.returncode in (0, 1), done.stderr
    assert sorted(p.name for p in chosen.iterdir()) == []
    assert sorted(p.name for p in scratch.iterdir()) == []

    kept = tmp_path / "kept"
    done = _bench(scratch, "journal_scale.py", "--runs", "2000", "--days", "5", "-r", "1",
                  "--dir", str(kept), "--keep", "--json")
    assert done.returncode in (0, 1), done.stderr
    assert (kept / "journal.db").is_file()
    assert sorted(p.name for p in scratch.iterdir()) == []


def test_remote_fanout_removes_its_folder_when_sshd_cannot_start(tmp_path: Path) -> None:
    # 300 hosts need addresses up to 127.0.0.301, which do not exist: it stops at once.
    done = _bench(tmp_path, "remote_fanout.py", "--hosts", "300", "--no-ansible")
    assert done.returncode != 0 and "no free port" in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []
