"""`selfdrive init` and the first commands a new user types in the scaffolded project."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

from cli_support import Project, explain

DAY = 86400


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_init_scaffolds_a_project_and_refuses_to_overwrite_it(project: Project) -> None:
    proc = project.sd("init")
    assert proc.returncode == 0, explain(proc)
    config = project.root / "selfdrive.toml"
    example = project.root / "runbooks" / "clean_old_files.py"
    assert config.is_file()
    assert example.is_file()
    assert f'team = "{project.root.name}"' in config.read_text()
    assert str(config) in proc.stdout and str(example) in proc.stdout

    before = _snapshot(project.root)
    again = project.sd("init")
    assert again.returncode == 2, explain(again)
    assert "already exists" in again.stderr and "selfdrive.toml" in again.stderr
    assert "Traceback" not in again.stderr
    assert _snapshot(project.root) == before


def test_init_refuses_when_only_the_example_runbook_exists(project: Project) -> None:
    example = project.runbook("clean_old_files.py", "# mine, do not overwrite\n")
    proc = project.sd("init")
    assert proc.returncode == 2, explain(proc)
    assert str(example) in proc.stderr
    assert not (project.root / "selfdrive.toml").exists()
    assert example.read_text() == "# mine, do not overwrite\n"


def test_list_show_lint_and_plan_work_in_a_fresh_project(project: Project,
                                                         tmp_path: Path) -> None:
    assert project.sd("init").returncode == 0

    listed = project.sd("list")
    assert listed.returncode == 0, explain(listed)
    assert "clean-old-files" in listed.stdout
    assert "Delete files older than N days" in listed.stdout

    shown = project.sd("show", "clean-old-files")
    assert shown.returncode == 0, explain(shown)
    for text in ("clean-old-files", "LOW risk", "path", "days", "(required)",
                 "path_is_a_directory", "nothing_old_is_left"):
        assert text in shown.stdout, text

    linted = project.sd("lint")
    assert linted.returncode == 0, explain(linted)
    assert "0 finding(s)" in linted.stdout

    data = tmp_path / "data"
    data.mkdir()
    old = [data / "old-1.log", data / "old-2.log"]
    new = data / "new.log"
    long_ago = time.time() - 30 * DAY
    for path in [*old, new]:
        path.write_text("x")
    for path in old:
        os.utime(path, (long_ago, long_ago))

    planned = project.sd("plan", "clean-old-files", "-p", f"path={data}")
    assert planned.returncode == 0, explain(planned)
    assert all(p.exists() for p in [*old, new]), "plan deleted something"
    shown_text = planned.stdout + planned.stderr
    for path in old:
        assert f"rm -f -- {shlex.quote(str(path))}" in shown_text, explain(planned)
    assert f"rm -f -- {shlex.quote(str(new))}" not in shown_text
    assert "planned" in planned.stdout

    as_json = project.sd_json("plan", "clean-old-files", "-p", f"path={data}")
    assert as_json["run"]["status"] == "planned"
    assert as_json["run"]["mode"] == "dry-run"
    changes = [c["command"] for c in as_json["plan"]["changes"]]
    assert sorted(changes) == sorted(f"rm -f -- {shlex.quote(str(p))}" for p in old)
    assert all(p.exists() for p in [*old, new])


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30,
                          check=False)


def test_init_makes_git_ignore_the_journal(project: Project, tmp_path: Path) -> None:
    assert _git(project.root, "init", "-q").returncode == 0
    proc = project.sd("init")
    assert proc.returncode == 0, explain(proc)
    gitignore = project.root / ".gitignore"
    assert f"created {gitignore}" in proc.stdout
    assert ".selfdrive/" in gitignore.read_text().splitlines()

    data = tmp_path / "data"
    data.mkdir()
    assert project.sd("plan", "clean-old-files", "-p", f"path={data}").returncode == 0
    assert project.journal.is_file()
    untracked = _git(project.root, "status", "--porcelain", "--untracked-files=all").stdout
    assert ".selfdrive" not in untracked, untracked
    assert "selfdrive.toml" in untracked and ".gitignore" in untracked


def test_init_appends_to_a_gitignore_and_never_clobbers_it(tmp_path: Path) -> None:
    mine = Project(tmp_path / "mine")
    own = b"node_modules\n# caf\xc3\xa9\n*.log"  # no newline at the end
    (mine.root / ".gitignore").write_bytes(own)
    proc = mine.sd("init")
    assert proc.returncode == 0, explain(proc)
    assert f"added .selfdrive/ to {mine.root / '.gitignore'}" in proc.stdout
    assert (mine.root / ".gitignore").read_bytes() == own + b"\n.selfdrive/\n"

    covered = Project(tmp_path / "covered")
    already = b"build/\n/.selfdrive\n"
    (covered.root / ".gitignore").write_bytes(already)
    proc = covered.sd("init")
    assert proc.returncode == 0, explain(proc)
    assert ".gitignore" not in proc.stdout
    assert (covered.root / ".gitignore").read_bytes() == already

    # A refused init touches nothing, .gitignore included.
    refused = covered.sd("init")
    assert refused.returncode == 2
    assert (covered.root / ".gitignore").read_bytes() == already
