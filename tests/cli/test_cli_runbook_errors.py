"""A runbook whose own code raises: every place that tells of it names the file and line
(the run's message, `logs`, `report`), `logs` shows the calls of runbook code that led
there, and `stats` and `learn` count it as the failure it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import Project, explain

CRASHING = '''
"""Runbooks whose code raises."""
from selfdrive import Context, Risk, runbook


def ratio(total: int, parts: int) -> float:
    return total / parts


@runbook(risk=Risk.LOW)
def split_work(ctx: Context, parts: int = 0) -> None:
    """Divides by a parameter: crashes while planning when it is 0."""
    ctx.run("true", readonly=True)
    ctx.note("ratio", ratio(10, parts))


@runbook(risk=Risk.LOW)
def crash_live(ctx: Context) -> None:
    """Plans fine; its live run looks up a key that is not there."""
    if not ctx.dry_run:
        {}["missing"]
'''
LINES = CRASHING.lstrip().splitlines()  # the file as Project.runbook writes it
HELPER_LINE = LINES.index("    return total / parts") + 1
CALL_LINE = LINES.index('    ctx.note("ratio", ratio(10, parts))') + 1
LIVE_LINE = LINES.index('        {}["missing"]') + 1


@pytest.fixture
def proj(l4: Project) -> tuple[Project, Path]:
    path = l4.runbook("crashing.py", CRASHING)
    assert path.read_text().splitlines() == LINES
    return l4, path


@pytest.mark.parametrize("verb", ["run", "plan"])
def test_a_crash_while_planning_names_file_and_line(proj: tuple[Project, Path],
                                                    verb: str) -> None:
    project, path = proj
    out = project.sd_json(verb, "split-work", code=1)
    assert out["run"]["status"] == "failed"
    assert out["message"] == (f"planning failed: ZeroDivisionError: division by zero "
                              f"(at {path}:{HELPER_LINE}, in ratio)")
    assert out["run"]["error"] == out["message"]


def test_logs_show_the_runbook_code_that_led_to_the_crash(proj: tuple[Project, Path]) -> None:
    project, path = proj
    run_id = project.sd_json("run", "split-work", code=1)["run"]["id"]

    logs = project.sd("logs", run_id)
    assert logs.returncode == 0, explain(logs)
    text = logs.stdout
    assert f"error: planning failed: ZeroDivisionError: division by zero (at {path}:" in text
    expected = (f'File "{path}", line {CALL_LINE}, in split_work\n'
                f'      ctx.note("ratio", ratio(10, parts))\n'
                f'    File "{path}", line {HELPER_LINE}, in ratio\n'
                f"      return total / parts\n"
                f"  ZeroDivisionError: division by zero\n")
    assert expected in text, explain(logs)
    assert "selfdrive/executor" not in text  # selfdrive's own frames are left out
    assert project.sd_json("logs", run_id)["traceback"] == (
        f'  File "{path}", line {CALL_LINE}, in split_work\n'
        f'    ctx.note("ratio", ratio(10, parts))\n'
        f'  File "{path}", line {HELPER_LINE}, in ratio\n'
        f"    return total / parts\n"
        f"ZeroDivisionError: division by zero")

    report = project.sd("report", run_id)
    assert f"(at {path}:{HELPER_LINE}, in ratio)" in report.stdout, explain(report)


def test_a_crash_in_a_live_run_names_file_and_line_on_the_run_and_its_step(
        proj: tuple[Project, Path]) -> None:
    project, path = proj
    out = project.sd_json("run", "crash-live", code=1)
    where = f"(at {path}:{LIVE_LINE}, in crash_live)"
    assert out["message"] == f"KeyError: 'missing' {where}; no rollback declared"
    logs = project.sd_json("logs", out["run"]["id"])
    [body] = [s for s in logs["steps"] if s["phase"] == "body"]
    assert body["status"] == "failed" and body["error"] == f"KeyError: 'missing' {where}"
    assert body["data"]["traceback"] == (f'  File "{path}", line {LIVE_LINE}, in crash_live\n'
                                         f'    {{}}["missing"]\n'
                                         f"KeyError: 'missing'")
    text = project.sd("logs", out["run"]["id"]).stdout
    assert f'      File "{path}", line {LIVE_LINE}, in crash_live' in text


def test_runs_that_crash_while_planning_count_as_failures(proj: tuple[Project, Path]) -> None:
    project, _ = proj
    for verb in ("run", "run", "plan"):
        project.sd_json(verb, "split-work", code=1)

    [stats] = project.sd_json("stats", "split-work")["runbooks"]
    assert (stats["requests"], stats["runs"], stats["failures"]) == (3, 3, 3)
    assert stats["last_outcome"] == "failed"

    learned = project.sd_json("learn")["recommendations"]
    mine = [r for r in learned if r["runbook"] == "split-work"]
    assert [r["kind"] for r in mine] == ["failing"], json.dumps(mine, indent=1)
    assert mine[0]["evidence"]["failed_in_a_row"] == 3
    assert "ZeroDivisionError" in mine[0]["evidence"]["last_error"]
