"""Exit codes as `selfdrive --help` lists them, and the JSON a script reads, through the
real CLI.

0 planned or succeeded, 1 failed, 2 usage or bad input, 3 pending approval,
4 precondition unmet, 5 verification failed (also when rolled back).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_support import USER, Project, clean_env, explain, team_config

RUNBOOKS = '''
"""Runbooks that end in each outcome."""
from pathlib import Path

from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW)
def works(ctx: Context, marker: str = "") -> None:
    """Touches a marker (when given) and succeeds."""
    if marker:
        ctx.run("touch {{ marker }}")
    else:
        ctx.run("true")


@works.verify
def marker_is_there(ctx: Context, marker: str) -> bool:
    return not marker or Path(marker).exists()


@runbook(risk=Risk.LOW)
def breaks(ctx: Context) -> None:
    """A command fails."""
    ctx.run("echo about to fail; exit 7", check=True)


@runbook(risk=Risk.LOW)
def guarded(ctx: Context, marker: str) -> None:
    """Never gets past its precondition."""
    ctx.run("touch {{ marker }}")


@guarded.precondition
def never(ctx: Context) -> bool:
    return ctx.run("false", readonly=True, check=False).ok


@runbook(risk=Risk.LOW)
def unverified(ctx: Context) -> None:
    """Its verification fails; no rollback."""
    ctx.run("true")


@unverified.verify
def always_false(ctx: Context) -> bool:
    return False


@runbook(risk=Risk.LOW)
def undone(ctx: Context, marker: str) -> None:
    """Its verification fails and the rollback runs."""
    ctx.run("true")


@undone.verify
def fails_too(ctx: Context) -> bool:
    return False


@undone.rollback
def put_back(ctx: Context, marker: str) -> None:
    ctx.run("touch {{ marker }}")


@runbook(risk=Risk.LOW, approval="always")
def gated(ctx: Context, marker: str) -> None:
    """Always needs a human."""
    ctx.run("touch {{ marker }}")


@runbook(risk=Risk.HIGH)
def risky(ctx: Context, marker: str) -> None:
    """HIGH risk: someone other than the requester approves."""
    ctx.run("touch {{ marker }}")
'''

RUN_FIELDS = {"id", "runbook", "mode", "status", "requested_by", "started_at", "finished_at"}


@pytest.fixture
def proj(l4: Project) -> Project:
    l4.runbook("outcomes.py", RUNBOOKS)
    return l4


def _check_record(run: dict, runbook: str, mode: str, status: str, *,
                  started: bool = True, finished: bool = True) -> None:
    assert set(run) >= RUN_FIELDS, sorted(run)
    assert run["id"]
    assert run["runbook"] == runbook
    assert run["mode"] == mode
    assert run["status"] == status
    assert run["requested_by"] == USER
    assert bool(run["started_at"]) is started, run
    assert bool(run["finished_at"]) is finished, run


def test_plan_is_0_and_planned(proj: Project, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    out = proj.sd_json("plan", "works", "-p", f"marker={marker}", code=0)
    _check_record(out["run"], "works", "dry-run", "planned", started=False)
    assert out["decision"]["mode"] == "dry-run"
    assert any("dry-run requested" in r for r in out["decision"]["reasons"])
    assert out["exit_code"] == 0
    assert not marker.exists()


def test_autonomous_success_is_0(proj: Project, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    out = proj.sd_json("run", "works", "-p", f"marker={marker}", code=0)
    _check_record(out["run"], "works", "autonomous", "succeeded")
    assert out["decision"]["mode"] == "autonomous"
    assert out["decision"]["reasons"][0].startswith("level L4")
    assert marker.exists()


def test_failure_is_1(proj: Project) -> None:
    out = proj.sd_json("run", "breaks", code=1)
    _check_record(out["run"], "breaks", "autonomous", "failed")
    assert "exit code 7" in out["run"]["error"]


def test_pending_approval_is_3_without_a_terminal(proj: Project, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    proc = proj.sd("run", "gated", "-p", f"marker={marker}")
    assert proc.returncode == 3, explain(proc)
    assert "pending_approval" in proc.stdout
    out = proj.sd_json("run", "gated", "-p", f"marker={marker}", code=3)
    _check_record(out["run"], "gated", "approval", "pending_approval",
                  started=False, finished=False)
    assert out["decision"]["mode"] == "approval"
    assert any('approval="always"' in r for r in out["decision"]["reasons"])
    assert not marker.exists()


def test_yes_runs_an_approval_mode_run(proj: Project, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    proc = proj.sd("run", "gated", "-p", f"marker={marker}", "--yes")
    assert proc.returncode == 0, explain(proc)
    assert "approved with --yes by alice" in proc.stderr
    assert marker.exists()
    marker.unlink()
    out = proj.sd_json("run", "gated", "-p", f"marker={marker}", "--yes", code=0)
    _check_record(out["run"], "gated", "approval", "succeeded")
    assert marker.exists()


def test_yes_does_not_approve_your_own_high_risk_run(proj: Project, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    out = proj.sd_json("run", "risky", "-p", f"marker={marker}", "--yes", code=3)
    _check_record(out["run"], "risky", "approval", "pending_approval",
                  started=False, finished=False)
    assert "someone other than alice" in out["message"]
    assert not marker.exists()


def test_precondition_unmet_is_4(proj: Project, tmp_path: Path) -> None:
    marker = tmp_path / "m"
    out = proj.sd_json("run", "guarded", "-p", f"marker={marker}", code=4)
    _check_record(out["run"], "guarded", "autonomous", "precondition_failed", started=False)
    assert "never" in out["run"]["error"]
    assert not marker.exists()
    # A plan says the same, and says it with the same exit code.
    planned = proj.sd_json("plan", "guarded", "-p", f"marker={marker}", code=4)
    assert planned["run"]["status"] == "planned"


def test_verification_failed_is_5(proj: Project) -> None:
    out = proj.sd_json("run", "unverified", code=5)
    _check_record(out["run"], "unverified", "autonomous", "verification_failed")
    assert "always_false" in out["run"]["error"]


def test_verification_failed_and_rolled_back_is_still_5(proj: Project, tmp_path: Path) -> None:
    marker = tmp_path / "rolled-back"
    out = proj.sd_json("run", "undone", "-p", f"marker={marker}", code=5)
    _check_record(out["run"], "undone", "autonomous", "rolled_back")
    assert "put_back" in out["message"]
    assert marker.exists(), "the rollback did not run"


def test_requested_by_comes_from_as_then_selfdrive_user(proj: Project) -> None:
    by_env = proj.sd_json("run", "works", env=clean_env(SELFDRIVE_USER="carol"))
    assert by_env["run"]["requested_by"] == "carol"
    by_flag = proj.sd_json("--as", "bob", "run", "works", env=clean_env(SELFDRIVE_USER="carol"))
    assert by_flag["run"]["requested_by"] == "bob"
    default = proj.sd_json("run", "works")
    assert default["run"]["requested_by"] == USER


def test_history_lists_runs_newest_first_and_logs_shows_steps(proj: Project,
                                                              tmp_path: Path) -> None:
    ids = []
    for name, code in (("works", 0), ("breaks", 1), ("unverified", 5), ("works", 0)):
        ids.append(proj.sd_json("run", name, code=code)["run"]["id"])
    ids.append(proj.sd_json("plan", "works", "-p", f"marker={tmp_path / 'm'}")["run"]["id"])

    history = proj.sd_json("history")
    assert [r["id"] for r in history] == ids[::-1]
    assert [r["status"] for r in history] == ["planned", "succeeded", "verification_failed",
                                              "failed", "succeeded"]
    for run in history:
        assert set(run) >= RUN_FIELDS
    created = [r["created_at"] for r in history]
    assert created == sorted(created, reverse=True)

    failed = proj.sd_json("history", "--status", "failed")
    assert [r["id"] for r in failed] == [ids[1]]
    only_works = proj.sd_json("history", "works")
    assert {r["runbook"] for r in only_works} == {"works"}
    assert len(proj.sd_json("history", "--limit", "2")) == 2

    text = proj.sd("history")
    assert text.returncode == 0, explain(text)
    assert all(run_id in text.stdout for run_id in ids)

    logs = proj.sd_json("logs", ids[1])
    assert logs["run"]["id"] == ids[1]
    assert logs["run"]["status"] == "failed"
    live = [s for s in logs["steps"] if s["phase"] == "body"]
    command = next(s for s in live if s["kind"] == "command")
    assert command["command"] == "echo about to fail; exit 7"
    assert command["status"] == "failed"
    assert command["exit_code"] == 7
    assert command["stdout"] == "about to fail\n"
    assert [s["seq"] for s in logs["steps"]] == sorted(s["seq"] for s in logs["steps"])

    # A unique prefix of a run id is enough.
    prefix = ids[1][:-1]
    if sum(i.startswith(prefix) for i in ids) == 1:
        assert proj.sd_json("logs", prefix)["run"]["id"] == ids[1]
    text_logs = proj.sd("logs", ids[1])
    assert text_logs.returncode == 0, explain(text_logs)
    assert "echo about to fail; exit 7" in text_logs.stdout


def test_history_with_an_unknown_status_is_2(proj: Project) -> None:
    proc = proj.sd("history", "--status", "bogus")
    assert proc.returncode == 2, explain(proc)
    assert "'bogus'" in proc.stderr and "succeeded" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_logs_of_an_unknown_run_is_2(proj: Project) -> None:
    proc = proj.sd("logs", "no-such-run")
    assert proc.returncode == 2, explain(proc)
    assert "no-such-run" in proc.stderr


@pytest.mark.parametrize("args", [["frobnicate"], ["run"], ["run", "works", "--bogus"],
                                  ["halt", "--reason"], ["history", "--limit", "0"]])
def test_click_usage_errors_are_2(proj: Project, args: list[str]) -> None:
    proc = proj.sd(*args)
    assert proc.returncode == 2, explain(proc)
    assert "Traceback" not in proc.stderr


def test_team_level_decides_the_mode(project: Project, tmp_path: Path) -> None:
    project.config(team_config("L0"))
    project.runbook("outcomes.py", RUNBOOKS)
    marker = tmp_path / "m"
    out = project.sd_json("run", "works", "-p", f"marker={marker}", "--yes", code=0)
    assert out["run"]["mode"] == "dry-run"
    assert out["run"]["status"] == "planned"
    assert not marker.exists()


def test_a_run_that_policy_only_plans_says_what_would_allow_it(project: Project,
                                                               tmp_path: Path) -> None:
    project.config(team_config("L1"))
    project.runbook("wipe.py", '''
        """A CRITICAL runbook: only ever planned at L1."""
        from selfdrive import Context, Risk, runbook


        @runbook(risk=Risk.CRITICAL)
        def wipe(ctx: Context, marker: str) -> None:
            """Wipes."""
            ctx.run("touch {{ marker }}", check=True)
        ''')
    marker = tmp_path / "m"
    allows = ('policy only plans CRITICAL runbooks at L1; to run it, raise the team\'s level '
              'to L3 (single-domain: a human approves) or override the cell: '
              '[policy.matrix.L1] CRITICAL = "approval"')

    proc = project.sd("run", "wipe", "-p", f"marker={marker}", "--yes")

    assert proc.returncode == 0, explain(proc)
    assert f"planned only, not run: {allows}; nothing was changed" in proc.stdout
    assert f"  - {allows}\n" in proc.stderr  # among the decision's reasons
    assert "--yes was not used: policy only plans this run" in proc.stderr
    assert not marker.exists()
    explained = project.sd_json("explain", "wipe")
    assert explained["mode"] == "dry-run" and explained["reasons"][-1] == allows
    # Asking for a plan needs no such advice.
    planned = project.sd("plan", "wipe", "-p", f"marker={marker}")
    assert "planned only, not run" not in planned.stdout, explain(planned)
    assert "--yes" not in planned.stderr, explain(planned)
    assert "planned; nothing was changed" in planned.stdout
