"""What a runbook's own code raises is the runbook's fault, and every place that tells of
it names the line in the runbook: the CLI's message, `selfdrive logs`, the HTML report,
and simulate(). Whatever the phase: planning, precondition, body, verification,
rollback; and a template the runbook's code got wrong."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from kit_support import SELFDRIVE, Team

from selfdrive.sdk import RunState
from selfdrive.testing import FakeContext, simulate

S = RunState

X = '''\
"""Runbook x: divides by zero where ``where`` says."""
from selfdrive import Context, Risk, runbook


def live(ctx: Context) -> bool:
    return not ctx.dry_run


def share(parts: int, here: bool) -> float:
    """Divides 10 by ``parts`` when ``here``."""
    if here:
        return 10 / parts
    return 0.0


@runbook(risk=Risk.LOW)
def x(ctx: Context, where: str = "body", parts: int = 0) -> None:
    """Divides by zero in the phase ``where`` names."""
    ctx.note("share", share(parts, where == "planning" or (where == "body" and live(ctx))))
    if where == "rollback" and live(ctx):
        ctx.run("false")


@x.precondition
def ready(ctx: Context, where: str, parts: int) -> bool:
    return share(parts, where == "precondition" and live(ctx)) == 0.0


@x.verify
def shared(ctx: Context, where: str, parts: int) -> bool:
    return share(parts, where == "verify") == 0.0


@x.rollback
def undo(ctx: Context, where: str, parts: int) -> None:
    share(parts, where == "rollback" and live(ctx))
'''
LINE = "runbooks/x.py:12"

#: where: (status, exit code)
WHERE = {
    "planning": (S.FAILED, 1),
    "precondition": (S.PRECONDITION_FAILED, 4),
    "body": (S.ROLLED_BACK, 1),
    "verify": (S.ROLLED_BACK, 5),
    "rollback": (S.ROLLBACK_FAILED, 1),
}


def sd(team: Team, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFDRIVE_")}
    env["SELFDRIVE_USER"] = "alice"
    return subprocess.run([SELFDRIVE, *args], cwd=team.root, env=env, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60, check=False)


def shown(proc: subprocess.CompletedProcess[str]) -> str:
    return f"$ {' '.join(proc.args)} → {proc.returncode}\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture
def x(team: Team) -> Team:
    path = team.write(X, "x.py")
    assert path.read_text().splitlines()[11] == "        return 10 / parts"
    return team


@pytest.mark.parametrize("where", list(WHERE))
def test_a_zero_division_names_its_runbook_line_everywhere(x: Team, tmp_path: Path,
                                                           where: str) -> None:
    status, code = WHERE[where]

    run = sd(x, "run", "x", "-p", f"where={where}")
    assert run.returncode == code, shown(run)
    assert f"{LINE}, in share" in run.stdout + run.stderr, shown(run)
    last = json.loads(sd(x, "history", "--json").stdout)[0]
    assert last["status"] == status.value

    logs = sd(x, "logs", last["id"])
    assert logs.returncode == 0, shown(logs)
    assert f"{LINE}, in share" in logs.stdout, shown(logs)

    html = tmp_path / "report.html"
    report = sd(x, "report", last["id"], "-o", str(html))
    assert report.returncode == 0, shown(report)
    assert f"{LINE}, in share" in html.read_text()

    fake = FakeContext().on("false", exit_code=1)
    sim = simulate(x.runbook("x"), fake, where=where)
    assert (sim.status, sim.exit_code) == (status, code)
    assert f"{LINE}, in share" in sim.message
    assert sim.message.replace(str(x.root) + "/", "") in (
        (run.stdout + run.stderr).replace(str(x.root) + "/", ""))


def test_a_template_the_runbook_got_wrong_names_its_line(team: Team) -> None:
    path = team.write('''\
        from selfdrive import Context, Risk, runbook


        @runbook(risk=Risk.LOW)
        def t(ctx: Context) -> None:
            """Names a variable nobody passes."""
            ctx.run("echo {{ nothing }}")
        ''', "t.py")
    run = sd(team, "run", "t")
    assert run.returncode == 2, shown(run)
    assert (f"error: template 'echo {{{{ nothing }}}}': 'nothing' is undefined (pass it as a "
            f"keyword argument or a runbook parameter) (at {path}:7, in t)") in run.stderr
    with pytest.raises(Exception, match=r"runbooks/t\.py:7, in t\)$"):
        simulate(team.runbook("t"), FakeContext())
