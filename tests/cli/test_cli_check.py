"""A failed command fails the run unless the runbook says check=False (Invoke's default).

Through the real CLI: the exit code, the run's status, the files the steps left, and
the error as `selfdrive logs` shows it.
"""

from __future__ import annotations

import json
from pathlib import Path

from cli_support import Project, explain

RUNBOOKS = '''
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW)
def three_steps(ctx: Context, folder: str, tolerate: bool = False) -> None:
    """Write a, fail with exit 3, write b."""
    ctx.run("touch {{ folder }}/a")
    result = ctx.run("exit 3", check=False) if tolerate else ctx.run("exit 3")
    ctx.log(f"the middle step said {result.exit_code}")
    ctx.run("touch {{ folder }}/b")


@three_steps.verify
def a_is_there(ctx: Context, folder: str) -> bool:
    return ctx.run("test -f {{ folder }}/a", readonly=True, check=False).ok


@three_steps.rollback
def remove_a(ctx: Context, folder: str) -> None:
    ctx.run("rm -f -- {{ folder }}/a; touch {{ folder }}/rolled-back")


@runbook(risk=Risk.LOW)
def needs_a_folder(ctx: Context, folder: str) -> None:
    """Its precondition's command fails and raises."""
    ctx.run("touch {{ folder }}/changed")


@needs_a_folder.precondition
def folder_exists(ctx: Context, folder: str) -> bool:
    ctx.run("test -d {{ folder }}", readonly=True)  # raises when the folder is missing
    return True


@runbook(risk=Risk.LOW)
def weakly_verified(ctx: Context, folder: str) -> None:
    """Its verification's command fails and raises: the rollback runs."""
    ctx.run("touch {{ folder }}/changed")


@weakly_verified.verify
def marker_is_readable(ctx: Context, folder: str) -> bool:
    ctx.run("cat -- {{ folder }}/no-such-marker", readonly=True)
    return True


@weakly_verified.rollback
def unchange(ctx: Context, folder: str) -> None:
    ctx.run("rm -f -- {{ folder }}/changed")
'''


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    return folder


def _run(project: Project, *args: str) -> tuple[int, dict]:
    proc = project.sd("run", *args, "--json")
    assert proc.stdout, explain(proc)
    return proc.returncode, json.loads(proc.stdout)


def test_a_failing_command_fails_the_run_and_the_rollback_runs(l4: Project,
                                                               tmp_path: Path) -> None:
    l4.runbook("check.py", RUNBOOKS)
    tmp_path = _folder(tmp_path)
    code, out = _run(l4, "three-steps", "-p", f"folder={tmp_path}")
    assert code == 1, out
    assert out["run"]["status"] == "rolled_back"
    # The failure names the command and where in the runbook it was run.
    assert out["run"]["error"].startswith("exit 3 failed on local: exit code 3 (at ")
    assert out["run"]["error"].endswith("check.py:8, in three_steps)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rolled-back"]  # b never written


def test_check_false_lets_the_body_go_on(l4: Project, tmp_path: Path) -> None:
    l4.runbook("check.py", RUNBOOKS)
    tmp_path = _folder(tmp_path)
    code, out = _run(l4, "three-steps", "-p", f"folder={tmp_path}", "-p", "tolerate=true")
    assert code == 0, out
    assert out["run"]["status"] == "succeeded"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]
    logs = l4.sd("logs", out["run"]["id"])
    assert "the middle step said 3" in logs.stdout, explain(logs)


def _line(path: Path, text: str) -> int:
    """The number of the one line of ``path`` that holds ``text``."""
    [number] = [n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line]
    return number


def test_a_command_failing_in_a_precondition_is_the_reason_it_is_unmet(
        l4: Project, tmp_path: Path) -> None:
    l4.runbook("check.py", RUNBOOKS)
    tmp_path = _folder(tmp_path)
    missing = tmp_path / "missing"
    code, out = _run(l4, "needs-a-folder", "-p", f"folder={missing}")
    assert code == 4, out
    assert out["run"]["status"] == "precondition_failed"
    book = l4.root / "runbooks" / "check.py"
    line = _line(book, "test -d {{ folder }}")
    assert out["message"] == (f"preconditions unmet: folder_exists: test -d {missing} failed "
                              f"on local: exit code 1 (at {book}:{line}, in folder_exists)")
    assert list(tmp_path.iterdir()) == []


def test_a_command_failing_in_a_verification_fails_it_and_rolls_back(
        l4: Project, tmp_path: Path) -> None:
    l4.runbook("check.py", RUNBOOKS)
    tmp_path = _folder(tmp_path)
    code, out = _run(l4, "weakly-verified", "-p", f"folder={tmp_path}")
    assert code == 5, out
    assert out["run"]["status"] == "rolled_back"
    book = l4.root / "runbooks" / "check.py"
    line = _line(book, "cat -- {{ folder }}/no-such-marker")
    assert out["run"]["error"] == (
        f"verification failed: marker_is_readable: cat -- {tmp_path}/no-such-marker failed on "
        f"local: exit code 1 (at {book}:{line}, in marker_is_readable) (after 1 attempt(s))")
    assert list(tmp_path.iterdir()) == []
