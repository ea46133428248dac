"""Output is never part of a run: a reader that goes away changes nothing a run does.

Each test runs the real CLI in a real shell pipeline whose reader (``head -1``) leaves
after the first line. The runbooks pause (a read-only ``sleep``, which also runs while
planning) before anything else is printed, so every later line meets a closed pipe.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from cli_support import SELFDRIVE, Project, clean_env, explain

STAMPS = '''
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW)
def stamp_many(ctx: Context, folder: str, count: int = 6) -> None:
    """Write one file per step, printing a progress line for each."""
    ctx.run("sleep 0.3", readonly=True)  # the reader is gone before the next line
    for i in range(count):
        ctx.log(f"stamp {i} of {count}")
        ctx.run("echo {{ i }} > {{ folder }}/stamp-{{ i }}", i=i)


@stamp_many.verify
def every_stamp_is_there(ctx: Context, folder: str, count: int) -> bool:
    found = ctx.run("ls {{ folder }}", readonly=True)
    return len(found.stdout.split()) == count


@runbook(risk=Risk.LOW)
def append_then_fail(ctx: Context, log: str) -> None:
    """Append a line, then fail verification, so the rollback removes it again."""
    ctx.run("sleep 0.3", readonly=True)
    ctx.run("echo appended >> {{ log }}")


@append_then_fail.verify
def never_verified(ctx: Context) -> bool:
    return False


@append_then_fail.rollback
def take_it_back(ctx: Context, log: str) -> None:
    ctx.log("taking the appended line back")
    ctx.run("sed -i '$d' {{ log }}")
'''


def _piped(project: Project, *args: str, reader: str = "head -1") -> tuple[int, str]:
    """Run ``selfdrive ARGS 2>&1 | READER`` in a shell; (selfdrive's exit code, what was read)."""
    line = " ".join(f"'{a}'" for a in (SELFDRIVE, *args))
    shell = f"{line} 2>&1 | {reader}; exit ${{PIPESTATUS[0]}}"
    done = subprocess.run(["bash", "-c", shell], cwd=project.root, env=clean_env(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=60, check=False)
    return done.returncode, done.stdout + done.stderr


def _last_run(project: Project) -> dict[str, object]:
    proc = project.sd("history", "--json")
    assert proc.returncode == 0, explain(proc)
    runs = json.loads(proc.stdout)
    assert runs, "no run was journaled"
    return runs[0]  # type: ignore[no-any-return]


def test_a_run_whose_reader_left_finishes_every_change(l4: Project, tmp_path: Path) -> None:
    l4.runbook("stamps.py", STAMPS)
    folder = tmp_path / "stamps"
    folder.mkdir()
    code, seen = _piped(l4, "run", "stamp-many", "-p", f"folder={folder}", "--yes")
    assert seen.startswith("running stamp-many"), seen  # head read one line, then left
    assert code == 0, seen
    run = _last_run(l4)
    assert run["status"] == "succeeded", run
    assert sorted(p.name for p in folder.iterdir()) == [f"stamp-{i}" for i in range(6)]
    logs = l4.sd("logs", str(run["id"]))
    assert "stamp 5 of 6" in logs.stdout, explain(logs)  # the journal kept what no one read


def test_json_output_to_a_closed_pipe_keeps_the_run_and_its_exit_code(
        l4: Project, tmp_path: Path) -> None:
    l4.runbook("stamps.py", STAMPS)
    folder = tmp_path / "stamps"
    folder.mkdir()
    # `true` reads nothing and leaves at once: the JSON meets a closed pipe.
    code, seen = _piped(l4, "run", "stamp-many", "-p", f"folder={folder}", "--json",
                        reader="true")
    assert code == 0, seen
    assert _last_run(l4)["status"] == "succeeded"
    assert len(list(folder.iterdir())) == 6


def test_a_plan_whose_reader_left_ends_planned(l4: Project, tmp_path: Path) -> None:
    l4.runbook("stamps.py", STAMPS)
    folder = tmp_path / "stamps"
    folder.mkdir()
    code, seen = _piped(l4, "plan", "stamp-many", "-p", f"folder={folder}")
    assert code == 0, seen
    run = _last_run(l4)
    assert run["status"] == "planned" and run["error"] is None, run
    assert list(folder.iterdir()) == []  # a plan changes nothing


def test_a_failing_run_whose_reader_left_rolls_back_once(l4: Project, tmp_path: Path) -> None:
    l4.runbook("stamps.py", STAMPS)
    log = tmp_path / "app.log"
    log.write_text("first\nsecond\n")
    code, seen = _piped(l4, "run", "append-then-fail", "-p", f"log={log}", "--yes")
    assert code == 5, seen  # verification failed, rolled back: the run's own exit code
    run = _last_run(l4)
    assert run["status"] == "rolled_back", run
    assert log.read_text() == "first\nsecond\n"  # appended once, taken back once


def test_the_quickstart_rotation_through_a_closed_pipe_succeeds(project: Project) -> None:
    """The reproduction from the review: rotate-log piped into head."""
    project.config('team = "quickstart"\nlevel = "L1"\nentry_points = false\n')
    source = Path(__file__).resolve().parents[2] / "examples" / "quickstart" / "runbooks"
    project.runbook("logs.py", (source / "logs.py").read_text())
    log = project.root / "var" / "log" / "app.log"
    log.parent.mkdir(parents=True)
    lines = "".join(f"line {i}\n" for i in range(2000))
    log.write_text(lines)
    code, seen = _piped(project, "run", "rotate-log", "--yes")
    assert code == 0, seen
    run = _last_run(project)
    assert run["status"] == "succeeded", run
    assert log.read_text() == ""
    archived = subprocess.run(["gzip", "-dc", str(log) + ".1.gz"], capture_output=True,
                              text=True, check=True).stdout
    assert archived == lines  # every line once: no rollback appended them again
