"""The halt switch through the CLI: explain and run see it; unhalt restores autonomy."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from cli_support import SELFDRIVE, Project, clean_env, explain

TOUCH = '''
"""A LOW-risk change: autonomous at L4 unless something stops it."""
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW)
def touch_file(ctx: Context, path: str) -> None:
    """Touches a file."""
    ctx.run("touch {{ path }}")
'''


def test_halt_then_unhalt(l4: Project, tmp_path: Path) -> None:
    l4.runbook("touch.py", TOUCH)
    marker = tmp_path / "touched"

    before = l4.sd_json("explain", "touch-file")
    assert before["mode"] == "autonomous"
    assert not any("halt" in r for r in before["reasons"])

    halted = l4.sd("--as", "oncall", "halt", "--reason", "db migration in progress")
    assert halted.returncode == 0, explain(halted)
    assert "halted by oncall" in halted.stdout

    during = l4.sd_json("explain", "touch-file")
    assert during["mode"] == "approval"
    halt_reasons = [r for r in during["reasons"] if "halt" in r]
    assert halt_reasons, during["reasons"]
    assert "db migration in progress" in halt_reasons[0]
    assert "oncall" in halt_reasons[0]

    # A run asked for now waits for a human (no terminal here, so it is pending).
    run = l4.sd_json("run", "touch-file", "-p", f"path={marker}", code=3)
    assert run["run"]["status"] == "pending_approval"
    assert run["decision"]["mode"] == "approval"
    assert any("halt switch is on" in r for r in run["decision"]["reasons"])
    assert not marker.exists()

    unhalted = l4.sd("unhalt")
    assert unhalted.returncode == 0, explain(unhalted)
    assert "unhalted by alice" in unhalted.stdout

    after = l4.sd_json("explain", "touch-file")
    assert after["mode"] == "autonomous"
    assert not any("halt" in r for r in after["reasons"])
    ran = l4.sd_json("run", "touch-file", "-p", f"path={marker}", code=0)
    assert ran["run"]["mode"] == "autonomous"
    assert marker.exists()

    again = l4.sd("unhalt")
    assert again.returncode == 0, explain(again)
    assert "was not halted" in again.stdout


def _events(project: Project, kind: str) -> list[dict[str, object]]:
    conn = sqlite3.connect(project.journal)
    try:
        return [json.loads(row[0]) for row in conn.execute(
            "SELECT data FROM events WHERE kind = ? ORDER BY id", (kind,))]
    finally:
        conn.close()


def test_halts_add_up_and_unhalt_clears_them_all(l4: Project) -> None:
    l4.runbook("touch.py", TOUCH)
    first = l4.sd("--as", "oncall", "halt", "--reason", "db migration in progress")
    assert first.returncode == 0 and "halted by oncall" in first.stdout, explain(first)
    second = l4.sd("halt", "--reason", "disk array degraded", "--as", "bob")
    assert second.returncode == 0, explain(second)
    assert "halted by bob: disk array degraded" in second.stdout
    assert "halted for 2 reason(s)" in second.stdout
    assert "by oncall: db migration in progress" in second.stdout

    shown = l4.sd("halt")  # no reason: what is it halted for, by whom, since when
    assert shown.returncode == 0, explain(shown)
    lines = [ln for ln in shown.stdout.splitlines() if ln.startswith("  since ")]
    assert len(lines) == 2
    assert lines[0].endswith("by oncall: db migration in progress")
    assert lines[1].endswith("by bob: disk array degraded")
    status = l4.sd_json("halt")
    assert status["halted"] is True
    assert [(r["by"], r["reason"]) for r in status["reasons"]] == [
        ("oncall", "db migration in progress"), ("bob", "disk array degraded")]
    assert all(r["since"] for r in status["reasons"])

    decided = l4.sd_json("explain", "touch-file")
    assert decided["mode"] == "approval"
    [guard] = [r for r in decided["reasons"] if "halt switch" in r]
    assert "db migration in progress" in guard and "disk array degraded" in guard

    assert [(e["by"], e["reason"]) for e in _events(l4, "halt.on")] == [
        ("oncall", "db migration in progress"), ("bob", "disk array degraded")]

    cleared = l4.sd("unhalt")
    assert cleared.returncode == 0, explain(cleared)
    assert "unhalted by alice; cleared 2 reason(s)" in cleared.stdout
    assert "db migration in progress" in cleared.stdout
    assert "disk array degraded" in cleared.stdout
    [off] = _events(l4, "halt.off")
    assert [c["reason"] for c in off["cleared"]] == ["db migration in progress",
                                                     "disk array degraded"]
    assert l4.sd_json("halt") == {"halted": False, "reasons": []}
    assert l4.sd_json("explain", "touch-file")["mode"] == "autonomous"
    assert "not halted" in l4.sd("halt").stdout


def test_an_empty_reason_is_refused(l4: Project) -> None:
    proc = l4.sd("halt", "--reason", "  ")
    assert proc.returncode == 2 and "--reason" in proc.stderr, explain(proc)
    assert l4.sd_json("halt") == {"halted": False, "reasons": []}


def test_halts_at_the_same_moment_are_all_kept(l4: Project) -> None:
    procs = [subprocess.Popen([SELFDRIVE, "--as", f"p{i}", "halt", "--reason", f"r{i}"],
                              cwd=l4.root, env=clean_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(6)]
    for proc in procs:
        assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
        proc.communicate()
    reasons = l4.sd_json("halt")["reasons"]
    assert sorted(r["reason"] for r in reasons) == [f"r{i}" for i in range(6)]
    assert len(_events(l4, "halt.on")) == 6


def test_a_halt_journaled_before_reasons_added_up_is_read_as_one(l4: Project) -> None:
    # A journal written by an earlier selfdrive holds one reason as the flag's whole value.
    assert l4.sd("halt").returncode == 0  # creates and migrates the journal
    conn = sqlite3.connect(l4.journal)
    with conn:
        conn.execute("INSERT INTO flags (name, value, set_by, set_at) VALUES ('halt', ?, "
                     "'old', '2025-01-01T00:00:00+00:00')",
                     (json.dumps({"by": "old", "reason": "legacy",
                                  "since": "2025-01-01T00:00:00+00:00"}),))
    conn.close()
    assert [r["reason"] for r in l4.sd_json("halt")["reasons"]] == ["legacy"]
    assert l4.sd("halt", "--reason", "new").returncode == 0
    assert [r["reason"] for r in l4.sd_json("halt")["reasons"]] == ["legacy", "new"]
