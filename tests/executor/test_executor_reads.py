"""Each read paid once: a live run takes the reads its plan just ran, through the real CLI.

The "read" appends a line to a file each time it really runs (a read that lies about
being read-only, so the tests can count real executions) and prints how many lines
the file holds; the runbook logs what it saw.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from selfdrive.config import parse_config
from selfdrive.sdk.errors import ConfigError

SELFDRIVE = str(Path(sys.executable).parent / "selfdrive")

BOOK = '''
from selfdrive import Context, Risk, SecretStr, runbook

COUNT = "echo x >> {{ log }}; wc -l < {{ log }}"


@runbook(risk=Risk.RISK, timeout="1m")
def look(ctx: Context, log: str) -> None:
    """Read once."""
    ctx.log("saw " + ctx.run(COUNT, readonly=True).stdout.strip())


@runbook(risk=Risk.LOW, timeout="1m")
def look_change_look(ctx: Context, log: str, mark: str) -> None:
    """Read, change, read again."""
    ctx.log("first " + ctx.run(COUNT, readonly=True).stdout.strip())
    ctx.run("touch {{ mark }}", mark=mark)
    ctx.log("second " + ctx.run(COUNT, readonly=True).stdout.strip())


@runbook(risk=Risk.LOW, timeout="1m")
def look_twice(ctx: Context, log: str) -> None:
    """The same read twice in a row, no change between."""
    ctx.run(COUNT, readonly=True)
    ctx.run(COUNT, readonly=True)


@runbook(risk=Risk.LOW, timeout="1m")
def look_until_seen(ctx: Context, log: str) -> None:
    """A read that fails the first time it runs."""
    first = ctx.run(COUNT + " | grep -qv '^1$'", readonly=True, check=False)
    ctx.log(f"exit {first.exit_code}")


@runbook(risk=Risk.LOW, timeout="1m")
def look_secret(ctx: Context, log: str, token: SecretStr, out: str) -> None:
    """A read whose output holds the secret; the change writes what the read saw."""
    seen = ctx.run(COUNT + " >/dev/null; echo $TOKEN", readonly=True, env={"TOKEN": token})
    ctx.run("printf %s {{ seen }} > {{ out }}", seen=seen.stdout.strip(), out=out)


@runbook(risk=Risk.LOW, timeout="1m")
def look_after(ctx: Context, log: str) -> None:
    """Changes nothing; its verification reads what its (planned) rollback read."""
    ctx.log("body")


@look_after.verify
def still_there(ctx: Context, log: str) -> bool:
    return ctx.run(COUNT, readonly=True).ok


@look_after.rollback
def undo(ctx: Context, log: str) -> None:
    ctx.run(COUNT, readonly=True)


@runbook(risk=Risk.LOW, timeout="1m")
def look_with_env(ctx: Context, log: str, who: str) -> None:
    """The same text with a different variable is a different read."""
    ctx.run(COUNT, readonly=True, env={"WHO": "a"})
    ctx.run(COUNT, readonly=True, env={"WHO": who})
'''


class Team:
    """A tmp project driven through the installed `selfdrive` in subprocesses."""

    def __init__(self, root: Path, *, level: str = "L4", risk: str = "LOW",
                 extra: str = "") -> None:
        self.root = root
        (root / "runbooks").mkdir(parents=True)
        (root / "runbooks" / "books.py").write_text(textwrap.dedent(BOOK).replace("RISK", risk))
        (root / "selfdrive.toml").write_text(
            f'team = "reads"\nlevel = "{level}"\nentry_points = false\n{extra}')
        self.log = root / "reads.log"

    def sd(self, *args: str, code: int | None = 0, who: str = "alice"
           ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SELFDRIVE_")}
        proc = subprocess.run([SELFDRIVE, "--as", who, *args], cwd=self.root, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=60, check=False)
        if code is not None:
            assert proc.returncode == code, (f"{args}: exit {proc.returncode}\n{proc.stdout}"
                                             f"\n{proc.stderr}")
        return proc

    def run(self, name: str, *params: str, code: int = 0, yes: bool = False) -> str:
        flags = [f for p in (f"log={self.log}", *params) for f in ("-p", p)]
        out = json.loads(self.sd("run", name, *flags, *(["--yes"] if yes else []), "--json",
                                 code=code).stdout)
        return str(out["run"]["id"])

    def executions(self) -> int:
        return len(self.log.read_text().splitlines()) if self.log.exists() else 0

    def steps(self, run_id: str) -> list[dict[str, Any]]:
        return list(json.loads(self.sd("logs", run_id, "--json").stdout)["steps"])

    def reads(self, run_id: str) -> list[dict[str, Any]]:
        """The live run's read steps, in order."""
        return [s for s in self.steps(run_id) if s["kind"] == "command" and s["readonly"]
                and not s["phase"].startswith("plan:")]

    def logged(self, run_id: str) -> list[str]:
        return [s["stdout"] for s in self.steps(run_id)
                if s["kind"] == "log" and not s["phase"].startswith("plan:")]


def reused(step: dict[str, Any]) -> Any:
    return (step.get("data") or {}).get("reused")


@pytest.mark.parametrize(("level", "risk", "yes"), [("L4", "LOW", False),
                                                     ("L1", "MEDIUM", True)],
                         ids=["autonomous", "approved-with-yes"])
def test_a_planned_read_runs_once_and_the_run_says_so(tmp_path: Path, level: str, risk: str,
                                                      yes: bool) -> None:
    team = Team(tmp_path / "p", level=level, risk=risk)
    run_id = team.run("look", yes=yes)
    assert team.executions() == 1, "the live run ran the plan's read again"
    [read] = team.reads(run_id)
    assert read["status"] == "ok" and read["exit_code"] == 0 and read["stdout"] == "1\n"
    plan_steps = [s for s in team.steps(run_id) if s["phase"].startswith("plan:")]
    marker = reused(read)
    assert marker is not None and 0 <= marker["age"] < 30
    plan_read = plan_steps[marker["plan_step"] - 1]
    assert (plan_read["command"], plan_read["target"]) == (read["command"], read["target"])
    assert team.logged(run_id) == ["saw 1"], "the runbook did not get the plan's output"
    text = team.sd("logs", run_id).stdout
    assert f"[body] local: echo x >> {team.log}" in text and "(reused from the plan)" in text
    report = team.sd("report", run_id).stdout
    assert "(reused from the plan)" in report


def test_a_reused_read_gives_the_runbook_its_secret_and_the_journal_a_mask(
        tmp_path: Path) -> None:
    team = Team(tmp_path / "p")
    out = tmp_path / "seen"
    secret = "s3cr3t-" + os.urandom(4).hex()
    run_id = team.run("look-secret", f"token={secret}", f"out={out}")
    assert team.executions() == 1
    assert out.read_text() == secret, "the runbook did not get the real output"
    [read] = team.reads(run_id)
    assert reused(read) is not None and read["stdout"] == "******\n"
    journal = (team.root / ".selfdrive").rglob("*")
    assert not any(secret.encode() in p.read_bytes() for p in journal if p.is_file())


def test_a_read_after_a_change_on_its_target_runs_again(tmp_path: Path) -> None:
    team = Team(tmp_path / "p")
    mark = tmp_path / "mark"
    run_id = team.run("look-change-look", f"mark={mark}")
    # The plan runs both reads (the change is only planned); live, the first is reused
    # and the second, after the real change, runs again.
    assert team.executions() == 3
    first, second = team.reads(run_id)
    assert reused(first) is not None and reused(second) is None
    assert team.logged(run_id) == ["first 1", "second 3"]
    assert mark.exists()


def test_a_repeated_read_is_reused_as_many_times_as_planned(tmp_path: Path) -> None:
    team = Team(tmp_path / "p")
    run_id = team.run("look-twice")
    assert team.executions() == 2
    first, second = team.reads(run_id)
    assert (first["stdout"], second["stdout"]) == ("1\n", "2\n"), "taken out of order"
    assert reused(first)["plan_step"] < reused(second)["plan_step"]


def test_env_variables_are_part_of_what_a_read_is(tmp_path: Path) -> None:
    team = Team(tmp_path / "p")
    run_id = team.run("look-with-env", "who=b")
    # Planned: WHO=a, WHO=b; live: both taken, each for its own variables.
    assert team.executions() == 2
    assert [r["data"]["env"]["WHO"] for r in team.reads(run_id)] == ["a", "b"]
    assert all(reused(r) is not None for r in team.reads(run_id))


def test_window_zero_runs_every_read_again(tmp_path: Path) -> None:
    team = Team(tmp_path / "p", extra='[executor]\nreuse_reads = "0s"\n')
    run_id = team.run("look")
    assert team.executions() == 2
    [read] = team.reads(run_id)
    assert reused(read) is None and read["stdout"] == "2\n"
    plan = json.loads(team.sd("plan", "look", "-p", f"log={team.log}", "--json").stdout)
    assert plan["plan"]["reuse"] == {"window": 0.0, "steps": []}
    text = team.sd("plan", "look", "-p", f"log={team.log}").stdout
    assert "reads: 1, each runs again in a live run" in text


def test_plan_says_which_reads_a_run_could_reuse_and_for_how_long(tmp_path: Path) -> None:
    team = Team(tmp_path / "p", extra='[executor]\nreuse_reads = "45s"\n')
    args = ("plan", "look-change-look", "-p", f"log={team.log}", "-p", f"mark={tmp_path}/m")
    plan = json.loads(team.sd(*args, "--json").stdout)["plan"]
    reads = [i + 1 for i, s in enumerate(plan["steps"]) if s["kind"] == "command"
             and s["readonly"]]
    assert plan["reuse"] == {"window": 45.0, "steps": reads[:1]}
    text = team.sd(*args).stdout
    assert ("reads: 1 of 2 taken from its plan by a live run (when read within 45s of "
            "planning, before any change on their target), not run again:") in text
    assert f"    [body] local: echo x >> {team.log}" in text


def test_a_verification_always_reads_again(tmp_path: Path) -> None:
    team = Team(tmp_path / "p")
    run_id = team.run("look-after")
    # The plan ran the rollback's read; the verification asks the same, and runs it.
    assert team.executions() == 2
    [read] = team.reads(run_id)
    assert read["phase"] == "verify" and reused(read) is None and read["stdout"] == "2\n"


def test_a_failed_planning_read_is_not_reused(tmp_path: Path) -> None:
    team = Team(tmp_path / "p")
    run_id = team.run("look-until-seen")
    assert team.executions() == 2
    [read] = team.reads(run_id)
    assert reused(read) is None and read["status"] == "ok"
    assert team.logged(run_id) == ["exit 0"]


def test_a_resumed_run_reuses_its_own_plan_not_the_first(tmp_path: Path) -> None:
    team = Team(tmp_path / "p", level="L1", risk="MEDIUM")
    run_id = team.run("look", code=3)  # no terminal, no --yes: it waits
    assert team.executions() == 1
    team.sd("approve", run_id, who="bob")
    team.sd("resume", run_id, who="bob")
    # The resume plans again (a second execution) and the run takes that plan's read.
    assert team.executions() == 2
    [read] = team.reads(run_id)
    assert reused(read) is not None and read["stdout"] == "2\n"
    assert team.logged(run_id) == ["saw 2"]


@pytest.mark.parametrize(("value", "message"), [
    ("-1s", "not a duration: '-1s'"),
    ("1h", "reuse_reads must be at most 10m"),
    ("soon", "not a duration: 'soon'"),
])
def test_bad_reuse_window_is_named(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"team": "t", "executor": {"reuse_reads": value}},
                     tmp_path / "selfdrive.toml")
    assert "executor.reuse_reads" in str(caught.value) and message in str(caught.value)


def test_reuse_window_takes_durations(tmp_path: Path) -> None:
    config = parse_config({"team": "t", "executor": {"reuse_reads": "2m"}},
                          tmp_path / "selfdrive.toml")
    assert config.executor.reuse_reads.total_seconds() == 120
    default = parse_config({"team": "t"}, tmp_path / "selfdrive.toml")
    assert default.executor.reuse_reads.total_seconds() == 30


def _recorded(clock: list[float]) -> tuple[Any, Any, Any]:
    """A real local read, recorded as planning records it, sealed at clock[0]."""
    from selfdrive.executor.reads import ReadRecorder
    from selfdrive.sdk.command import Command
    from selfdrive.targets.local import LocalTarget

    target = LocalTarget()
    command = Command(masked="echo seen-by-the-plan", raw="echo seen-by-the-plan")
    result = target.run(command, 10)
    recorder = ReadRecorder(30.0, clock=lambda: clock[0])
    recorder.record("body", target, command, result, "ok", 0)
    return recorder.seal(), target, command


def test_a_read_older_than_the_window_runs_again() -> None:
    from selfdrive.executor.reads import ReadLedger

    clock = [100.0]
    plan, target, command = _recorded(clock)
    clock[0] = 130.5
    assert ReadLedger(plan, clock=lambda: clock[0]).take("body", target, command) is None
    clock[0] = 129.0
    taken = ReadLedger(plan, clock=lambda: clock[0]).take("body", target, command)
    assert taken is not None and taken.read.result.stdout == "seen-by-the-plan\n"
    assert taken.marker == {"reused": {"plan_step": 1, "age": 29.0}}


def test_reads_are_never_handed_to_another_process() -> None:
    import dataclasses

    from selfdrive.executor.reads import ReadLedger

    clock = [100.0]
    plan, target, command = _recorded(clock)
    elsewhere = dataclasses.replace(plan, pid=plan.pid + 1)
    assert ReadLedger(elsewhere, clock=lambda: clock[0]).take("body", target, command) is None
    assert "seen-by-the-plan" not in repr(plan), "a plan's reads must not show their output"
