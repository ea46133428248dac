"""The README's first command: the quickstart tour plans and runs runbooks end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
BIN = Path(sys.executable).parent


def _copy_example(tmp_path: Path) -> Path:
    dest = tmp_path / "quickstart"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("var", ".selfdrive",
                                                                 "__pycache__"))
    return dest


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "SELFDRIVE_USER": "newcomer"}


def test_tour_plans_and_executes_and_history_shows_both(tmp_path: Path) -> None:
    project = _copy_example(tmp_path)
    tour = subprocess.run(["bash", str(project / "tour.sh")], capture_output=True, text=True,
                          env=_env(), stdin=subprocess.DEVNULL, timeout=120)
    assert tour.returncode == 0, tour.stdout + tour.stderr

    history = subprocess.run([str(BIN / "selfdrive"), "history", "--json"], cwd=project,
                             capture_output=True, text=True, env=_env(), check=True)
    runs = json.loads(history.stdout)
    by_name = {(r["runbook"], r["mode"]): r["status"] for r in runs}
    assert by_name[("clean-cache", "dry-run")] == "planned"
    assert by_name[("clean-cache", "approval")] == "succeeded"
    assert by_name[("disk-report", "autonomous")] == "succeeded"
    assert by_name[("rotate-log", "approval")] == "succeeded"
    assert by_name[("wipe-cache", "dry-run")] == "planned"
    # The alert is clean-cache's own trigger: at L1 a LOW runbook then runs by itself.
    assert by_name[("clean-cache", "autonomous")] == "succeeded"
    assert {r["requested_by"] for r in runs} == {"newcomer", "alert"}

    # clean-cache removed old files only; wipe-cache (CRITICAL at L1) changed nothing;
    # the alert-fired run removed the file the tour aged just before it.
    cache = project / "var" / "cache" / "thumbnails"
    assert sorted(p.name for p in cache.iterdir()) == []
    assert cache.is_dir()
    log = project / "var" / "log"
    assert (log / "app.log").stat().st_size == 0
    assert (log / "app.log.1.gz").stat().st_size > 0
    assert "rm -f -- var/cache/thumbnails/old-1.bin" in tour.stderr


def test_plan_of_clean_cache_leaves_every_file(tmp_path: Path) -> None:
    project = _copy_example(tmp_path)
    cache = project / "var" / "cache"
    cache.mkdir(parents=True)
    old = cache / "old.bin"
    old.write_bytes(b"x" * 1000)
    os.utime(old, (0, 0))
    result = subprocess.run([str(BIN / "selfdrive"), "plan", "clean-cache", "--json"],
                            cwd=project, capture_output=True, text=True, env=_env(),
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)["plan"]
    assert [c["command"] for c in plan["changes"]] == ["rm -f -- var/cache/old.bin"]
    assert old.exists()
