"""The executor and simulate() run one loop: every ending, run for real (Executor, local
shell, SQLite journal in tmp_path) and simulated (fakes answering what the shell
answers), ends with the same status, exit code, message and steps.

A timeout in each phase is real time on the real side (a ``sleep`` past the runbook's
timeout); on the fake side, a command scripted to time out takes its whole time limit
on the simulation's clock, without the time passing.
"""

from __future__ import annotations

import shlex
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from kit_support import Team

from selfdrive.sdk import RunState
from selfdrive.testing import FakeContext, simulate

S = RunState

ENDINGS = '''
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW, timeout=0.8)
def endings(ctx: Context, folder: str, unmet: bool = False, fail_body: bool = False,
            fail_verify: bool = False, fail_rollback: bool = False, slow: str = "") -> None:
    """Ends where its parameters say."""
    ctx.run("touch {{ folder }}/changed")
    if slow == "body" and not ctx.dry_run:
        ctx.run("sleep 3")
    if fail_body:
        ctx.run("false")


@endings.precondition
def ready(ctx: Context, folder: str, unmet: bool, slow: str) -> bool:
    if slow == "precondition" and not ctx.dry_run:
        ctx.run("sleep 3", readonly=True, check=False)
    return ctx.run("test -d {{ folder }}", readonly=True, check=False).ok and not unmet


@endings.verify(attempts=2, interval="0.05s")
def changed(ctx: Context, folder: str, fail_verify: bool, slow: str) -> bool:
    if slow == "verify":
        ctx.run("sleep 3", readonly=True)
    return ctx.run("test -e {{ folder }}/changed", readonly=True, check=False).ok \\
        and not fail_verify


@endings.rollback
def undo(ctx: Context, folder: str, fail_rollback: bool, slow: str) -> None:
    ctx.run("rm -f -- {{ folder }}/changed")
    if slow == "rollback" and not ctx.dry_run:
        ctx.run("sleep 3")
    if fail_rollback:
        ctx.run("false")
'''

#: case: (parameters, status, exit code)
CASES: dict[str, tuple[dict[str, Any], RunState, int]] = {
    "succeeded": ({}, S.SUCCEEDED, 0),
    "precondition_failed": ({"unmet": True}, S.PRECONDITION_FAILED, 4),
    "failed": ({"fail_body": True, "fail_rollback": True}, S.ROLLBACK_FAILED, 1),
    "verification_failed": ({"fail_verify": True}, S.ROLLED_BACK, 5),
    "rolled_back": ({"fail_body": True}, S.ROLLED_BACK, 1),
    "rollback_failed": ({"fail_verify": True, "fail_rollback": True}, S.ROLLBACK_FAILED, 5),
    "timeout in a precondition": ({"slow": "precondition"}, S.FAILED, 1),
    "timeout in the body": ({"slow": "body"}, S.ROLLED_BACK, 1),
    "timeout in a verification": ({"slow": "verify"}, S.ROLLED_BACK, 5),
    "timeout in the rollback": ({"fail_verify": True, "slow": "rollback"},
                                S.ROLLBACK_FAILED, 5),
}


def _fake(folder: Path, fake: FakeContext | None = None) -> FakeContext:
    """What bash answers for the real folder; ``sleep 3`` runs into its time limit.
    ``fake``: a fake whose own scripts come first."""
    q = shlex.quote(str(folder))
    fake = fake if fake is not None else FakeContext()
    fake.on(f"test -d {q}")
    fake.on(f"touch {q}/changed")
    fake.on(f"test -e {q}/changed")
    fake.on(f"rm -f -- {q}/changed")
    fake.on("false", exit_code=1)
    fake.on("sleep 3", exit_code=None, timed_out=True)
    return fake


def _live_states(team: Team, run_id: str) -> list[str]:
    """The run's states after ``running`` (none when it ended before), from the journal's
    run events."""
    conn = sqlite3.connect(team.config.journal_path)
    try:
        kinds = [k for (k,) in conn.execute(
            "SELECT kind FROM events WHERE run_id = ? AND kind LIKE 'run.%' ORDER BY id",
            (run_id,))]
    finally:
        conn.close()
    states = [k.removeprefix("run.") for k in kinds]
    return states[states.index("running") + 1:] if "running" in states else []


@pytest.mark.parametrize("case", list(CASES))
def test_the_executor_and_simulate_end_alike(team: Team, tmp_path: Path, case: str) -> None:
    params, status, code = CASES[case]
    team.write(ENDINGS)
    folder = tmp_path / "work"
    folder.mkdir()
    params = {"folder": str(folder), **params}

    real = team.run("endings", **params)
    started = time.monotonic()
    sim = simulate(team.runbook("endings"), _fake(folder), **params)
    simulated_in = time.monotonic() - started

    assert (real.run.status, real.exit_code) == (status, code), real.message
    assert (sim.status, sim.exit_code) == (status, code), sim.message
    assert sim.message == real.message
    journaled = [(s["phase"], s["kind"], s["status"]) for s in team.steps(real.run.id)]
    assert [(s.phase, s.kind, s.status) for s in sim.steps] == journaled
    assert list(sim.states) == _live_states(team, real.run.id)
    assert simulated_in < 0.5, "a simulated timeout takes no real time"


def test_a_fake_command_that_never_started_is_an_error_step_not_an_unknown_one(
        team: Team, tmp_path: Path) -> None:
    team.write(ENDINGS)
    folder = tmp_path / "work"
    folder.mkdir()
    q = shlex.quote(str(folder))
    for outcome, status in (("not_started", "error"), ("unknown", "unknown")):
        fake = _fake(folder, FakeContext().on(f"touch {q}/changed", exit_code=None,
                                              error="refused", outcome=outcome, times=1))
        sim = simulate(team.runbook("endings"), fake, folder=str(folder))
        [touch] = [s for s in sim.steps if s.command == f"touch {q}/changed"]
        assert (touch.phase, touch.status) == ("body", status)
        assert sim.status is S.ROLLED_BACK


def test_a_timeout_in_a_precondition_fails_the_run_without_touching_anything(
        team: Team, tmp_path: Path) -> None:
    """Not "precondition unmet" (exit 4, "check the system and retry"): the check never
    answered, and the body never ran, so nothing is rolled back."""
    team.write(ENDINGS)
    folder = tmp_path / "work"
    folder.mkdir()
    sim = simulate(team.runbook("endings"), _fake(folder), folder=str(folder),
                   slow="precondition")
    assert sim.status is S.FAILED and sim.exit_code == 1
    assert sim.message.startswith("the runbook's timeout passed while running: sleep 3 (at ")
    assert sim.message.endswith("in ready); the body never ran, so nothing was rolled back")
    assert sim.changes == []
    assert [(s.phase, s.kind, s.status) for s in sim.steps] == [
        ("precondition", "check", "error"), ("precondition", "command", "unknown")]
