"""simulate() follows the executor's run loop: each scenario runs for real (Executor,
local shell, SQLite journal) and simulated (fakes answering what the shell answered),
and both end in the same state, with the same message, after the same steps."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import pytest
from kit_support import Team

from selfdrive import Context, Risk, runbook
from selfdrive.sdk import RunState
from selfdrive.testing import FakeContext, UnscriptedCommand, simulate

FLAG = '''
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW, timeout="1m")
def write_flag(ctx: Context, folder: str, value: str, expect: str | None = None,
               fail_body: bool = False, fail_rollback: bool = False, shards: int = 1,
               crash_live: bool = False, fail_by_default: bool = False) -> None:
    """Write a flag file; verification reads it back."""
    ctx.run("test -w {{ folder }}", readonly=True, check=True)
    ctx.note("per_shard", len(value) / shards)
    ctx.run("printf %s {{ value }} > {{ folder }}/flag", check=True)
    if fail_body:
        ctx.run("false", check=True)
    if fail_by_default:
        ctx.run("false")  # no check=: a failed command raises all the same
    if crash_live and not ctx.dry_run:
        {}["shard"]


@write_flag.precondition
def folder_exists(ctx: Context, folder: str) -> bool:
    return ctx.run("test -d {{ folder }}", readonly=True, check=False).ok


@write_flag.verify(attempts=2, interval="0.1s")
def flag_reads_back(ctx: Context, folder: str, value: str, expect: str | None) -> bool:
    return ctx.run("cat {{ folder }}/flag", readonly=True).stdout == (expect or value)


@write_flag.rollback
def remove_flag(ctx: Context, folder: str, fail_rollback: bool) -> None:
    ctx.run("rm -f -- {{ folder }}/flag", check=True)
    if fail_rollback:
        ctx.run("false", check=True)
'''


def _fake(folder: Path, value: str, *, exists: bool = True) -> FakeContext:
    """The fakes answer what bash answers for the real folder."""
    q = shlex.quote(str(folder))
    fake = FakeContext()
    fake.on(f"test -d {q}", exit_code=0 if exists else 1)
    fake.on(f"test -w {q}")
    fake.on(f"printf %s {shlex.quote(value)} > {q}/flag")
    fake.on(f"cat {q}/flag", stdout=value)
    fake.on("false", exit_code=1)
    fake.on(f"rm -f -- {q}/flag")
    return fake


def _journal_view(steps: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(s["phase"], s["kind"], s["name"], s["target"], s["command"], s["status"])
            for s in steps]


CASES = {
    "succeeds": ({}, RunState.SUCCEEDED, 0),
    "verification fails, rollback runs": ({"expect": "other"}, RunState.ROLLED_BACK, 5),
    "body fails, rollback runs": ({"fail_body": True}, RunState.ROLLED_BACK, 1),
    "a failed command raises by default": ({"fail_by_default": True}, RunState.ROLLED_BACK, 1),
    "rollback fails": ({"expect": "other", "fail_rollback": True}, RunState.ROLLBACK_FAILED, 5),
}


@pytest.mark.parametrize("case", list(CASES))
def test_simulation_and_real_run_agree(team: Team, tmp_path: Path, case: str) -> None:
    extra, status, code = CASES[case]
    team.write(FLAG)
    folder = tmp_path / "flag dir"
    folder.mkdir()
    params = {"folder": str(folder), "value": "on", **extra}

    real = team.run("write-flag", **params)
    sim = simulate(team.runbook("write-flag"), _fake(folder, "on"), **params)

    assert real.run.status is status, real.message
    assert (sim.status, sim.exit_code) == (status, code) == (real.run.status, real.exit_code)
    assert sim.message == real.message
    assert sim.plan is not None and sim.plan.hash == real.plan.hash
    simulated = [(s.phase, s.kind, s.name, s.target, s.command, s.status) for s in sim.steps]
    assert simulated == _journal_view(team.steps(real.run.id))


@pytest.mark.parametrize(("extra", "status", "error", "line"), [
    ({"shards": 0}, RunState.FAILED, "planning failed: ZeroDivisionError: division by zero",
     '    ctx.note("per_shard", len(value) / shards)'),
    ({"crash_live": True}, RunState.ROLLED_BACK, "KeyError: 'shard'", '        {}["shard"]'),
])
def test_a_crash_names_the_runbook_line_in_simulation_and_real_run_alike(
        team: Team, tmp_path: Path, extra: dict[str, Any], status: RunState, error: str,
        line: str) -> None:
    path = team.write(FLAG)
    number = path.read_text().splitlines().index(line) + 1
    folder = tmp_path / "flags"
    folder.mkdir()
    params = {"folder": str(folder), "value": "on", **extra}

    real = team.run("write-flag", **params)
    sim = simulate(team.runbook("write-flag"), _fake(folder, "on"), **params)

    where = f"(at {path}:{number}, in write_flag)"
    assert real.run.status is sim.status is status
    assert real.message.startswith(f"{error} {where}"), real.message
    assert sim.message == real.message
    assert sim.traceback == (f'  File "{path}", line {number}, in write_flag\n'
                             f"    {line.strip()}\n{error.removeprefix('planning failed: ')}")
    journal = team.executor().journal
    journaled = [e.data.get("traceback") for e in journal.events(real.run.id)]
    assert sim.traceback in journaled  # what `selfdrive logs` shows


def test_unmet_precondition_stops_both_before_any_change(team: Team, tmp_path: Path) -> None:
    team.write(FLAG)
    missing = tmp_path / "missing"
    real = team.run("write-flag", folder=str(missing), value="on")
    sim = simulate(team.runbook("write-flag"), _fake(missing, "on", exists=False),
                   folder=str(missing), value="on")
    assert real.run.status is sim.status is RunState.PRECONDITION_FAILED
    assert real.exit_code == sim.exit_code == 4
    assert sim.message == real.message
    assert sim.steps == () and team.steps(real.run.id) == []


@runbook(risk=Risk.MEDIUM)
def swap(ctx: Context, path: str) -> None:
    """Swap a config."""
    ctx.run("cp -- {{ path }} {{ path }}.prev")
    ctx.run("cp -- {{ path }}.new {{ path }}")


@swap.verify(attempts=3, interval="5s")
def healthy(ctx: Context) -> bool:
    return ctx.run("curl -fsS http://127.0.0.1:8080/health", readonly=True, check=False).ok


@swap.rollback
def restore(ctx: Context, path: str) -> None:
    ctx.run("cp -- {{ path }}.prev {{ path }}")


@runbook(risk=Risk.LOW)
def careless(ctx: Context) -> None:
    """Swallows every error."""
    try:
        ctx.run("uptime", readonly=True)
    except Exception:  # an UnscriptedCommand is not an Exception: it gets through
        pass


def test_a_failure_path_says_what_the_rollback_did() -> None:
    fake = FakeContext(default_ok=True)  # changes answer ok; reads need scripts
    fake.on("curl -fsS http://127.0.0.1:8080/health", exit_code=7, times=2)
    fake.on("curl -fsS http://127.0.0.1:8080/health", exit_code=7)
    sim = simulate(swap, fake, path="/etc/app.conf")
    assert sim.rolled_back and sim.exit_code == 5
    assert sim.attempts("healthy") == 3
    assert sim.waited == (5.0, 5.0)  # recorded, not slept
    assert sim.commands("rollback") == ["cp -- /etc/app.conf.prev /etc/app.conf"]
    assert sim.changes == ["cp -- /etc/app.conf /etc/app.conf.prev",
                           "cp -- /etc/app.conf.new /etc/app.conf",
                           "cp -- /etc/app.conf.prev /etc/app.conf"]
    assert sim.plan is not None and len(sim.plan.changes) == 3


def test_a_read_without_a_script_fails_the_simulation() -> None:
    with pytest.raises(UnscriptedCommand, match="'uptime' on 'local'"):
        simulate(careless, FakeContext())
