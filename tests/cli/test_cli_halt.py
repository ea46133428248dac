"""The halt switch through the CLI: explain and run see it; unhalt restores autonomy."""

from __future__ import annotations

from pathlib import Path

from cli_support import Project, explain

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
