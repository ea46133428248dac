"""Guardrails turn would-be autonomous runs into pending approvals, and say why.

Rate limits, change freezes and the halt switch through the real CLI (a LOW-risk,
verified runbook is autonomous at L4 until one trips); the blast radius through the
library, since local runs only ever touch one target.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from approvals_support import Team, clean_env, explain, low_runbook

from selfdrive import Context, Mode, Risk, runbook
from selfdrive.config import parse_config
from selfdrive.policy import Request, Situation, decide
from selfdrive.policy.decide import blast_radius_guardrail, freeze_guardrail


def _two_low_runbooks(team: Team, extra: str = "") -> None:
    team.config("L4", extra)
    team.runbook("a.py", low_runbook("touch-a"))
    team.runbook("b.py", low_runbook("touch-b"))


def _held(team: Team, out: dict[str, Any], *words: str) -> str:
    """Assert ``out`` is a pending approval tripped by a guardrail naming ``words``."""
    run = out["run"]
    assert run["status"] == "pending_approval", out
    assert out["decision"]["mode"] == "approval"
    [reason] = [r for r in out["decision"]["reasons"] if r.startswith("guardrail: ")]
    for word in words:
        assert word in reason, (word, reason)
    assert reason.endswith("; a human decides")
    [tripped] = team.events("guardrail.tripped", run["id"])
    assert tripped["actor"] == "selfdrive"
    assert tripped["data"]["guardrails"] == [reason.removeprefix("guardrail: ")
                                            .removesuffix("; a human decides")]
    return str(reason)


def test_rate_limit_per_runbook(team: Team, tmp_path: Path) -> None:
    _two_low_runbooks(team)
    out = tmp_path / "a.out"
    for _ in range(5):
        ran = team.request("touch-a", f"path={out}", who="alice", code=0)
        assert ran["run"]["mode"] == "autonomous"
        assert ran["run"]["status"] == "succeeded"
    assert team.events("guardrail.tripped") == []

    sixth = team.request("touch-a", f"path={out}", who="alice", code=3)
    _held(team, sixth, "rate limit: 5 autonomous run(s) of touch-a in the last 1 hour "
                       "(limit 5)")
    assert out.read_text().count("touch_a") == 5
    # The limit is per runbook: another one is still autonomous.
    other = team.request("touch-b", f"path={tmp_path / 'b.out'}", who="alice", code=0)
    assert other["run"]["mode"] == "autonomous"
    text = team.sd("explain", "touch-a")
    assert "rate limit" in text.stdout, explain(text)


def test_rate_limit_total_across_runbooks(team: Team, tmp_path: Path) -> None:
    _two_low_runbooks(team, "[guardrails]\nrate_limit_total = 2\n")
    assert team.request("touch-a", f"path={tmp_path / 'a'}", who="alice",
                        code=0)["run"]["mode"] == "autonomous"
    assert team.request("touch-b", f"path={tmp_path / 'b'}", who="alice",
                        code=0)["run"]["mode"] == "autonomous"
    limit = "rate limit: 2 autonomous run(s) in total in the last 1 hour (limit 2)"
    _held(team, team.request("touch-a", f"path={tmp_path / 'a'}", who="alice", code=3), limit)
    _held(team, team.request("touch-b", f"path={tmp_path / 'b'}", who="alice", code=3), limit)
    assert (tmp_path / "a").read_text() == "touch_a\n"


def test_rate_limit_is_exact_for_processes_deciding_at_once(team: Team, tmp_path: Path
                                                            ) -> None:
    """Eight `selfdrive run` processes started together, limit 3: the limit is checked
    again under the journal's write lock, so exactly three run on their own."""
    _two_low_runbooks(team, "[guardrails]\nrate_limit_per_runbook = 3\n")
    out = tmp_path / "a.out"
    procs = [subprocess.Popen(team.command("run", "touch-a", "-p", f"path={out}", "--json",
                                           who="alice"),
                              cwd=team.root, env=clean_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    codes = sorted(p.wait(60) for p in procs)
    for p in procs:
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()
        p.stderr.close()
    assert codes == [0, 0, 0, 3, 3, 3, 3, 3]
    runs = team.rows("SELECT mode, status FROM runs WHERE runbook = 'touch-a'")
    assert sorted((r["mode"], r["status"]) for r in runs) == \
        [("approval", "pending_approval")] * 5 + [("autonomous", "succeeded")] * 3
    assert out.read_text().count("touch_a") == 3
    assert len(team.events("guardrail.tripped")) == 5


def _toml_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


def test_freeze_date_range_in_its_own_time_zone(team: Team, tmp_path: Path) -> None:
    zone = "Asia/Kolkata"  # UTC+05:30 all year: a naive UTC reading is 5.5 h off
    now_utc = datetime.now(UTC).replace(tzinfo=None)
    now_there = datetime.now(ZoneInfo(zone)).replace(tzinfo=None)
    # "decoy" holds now only if its wall-clock times were (wrongly) read as UTC.
    _two_low_runbooks(team, f"""
        [[guardrails.freeze]]
        name = "decoy"
        start = {_toml_time(now_utc - timedelta(minutes=30))}
        end = {_toml_time(now_utc + timedelta(minutes=30))}
        timezone = "{zone}"

        [[guardrails.freeze]]
        name = "diwali freeze"
        start = {_toml_time(now_there - timedelta(hours=1))}
        end = {_toml_time(now_there + timedelta(hours=1))}
        timezone = "{zone}"
    """)
    held = team.request("touch-a", f"path={tmp_path / 'a'}", who="alice", code=3)
    reason = _held(team, held, "change freeze 'diwali freeze'", zone)
    assert "decoy" not in " ".join(held["decision"]["reasons"]), reason
    assert not (tmp_path / "a").exists()


def test_freeze_cron_window(team: Team, tmp_path: Path) -> None:
    _two_low_runbooks(team, """
        [[guardrails.freeze]]
        name = "always frozen"
        cron = "* * * * *"
        timezone = "Europe/Berlin"
    """)
    for name in ("touch-a", "touch-b"):
        held = team.request(name, f"path={tmp_path / name}", who="alice", code=3)
        _held(team, held, "change freeze 'always frozen'", "cron '* * * * *'",
              "Europe/Berlin")
        assert not (tmp_path / name).exists()


def test_halt_holds_every_runbook(team: Team, tmp_path: Path) -> None:
    _two_low_runbooks(team)
    halted = team.sd("halt", "--reason", "incident 42", who="oncall")
    assert halted.returncode == 0, explain(halted)
    for name in ("touch-a", "touch-b"):
        held = team.request(name, f"path={tmp_path / name}", who="alice", code=3)
        _held(team, held, "halt switch is on", "oncall", "incident 42")
        assert not (tmp_path / name).exists()
    [on] = team.events("halt.on")
    assert (on["actor"], on["data"]["reason"]) == ("oncall", "incident 42")
    # Off again: autonomy is back.
    assert team.sd("unhalt", who="oncall").returncode == 0
    ran = team.request("touch-a", f"path={tmp_path / 'touch-a'}", who="alice", code=0)
    assert ran["run"]["mode"] == "autonomous"


# -- the library: what a CLI test cannot reach with local targets ----------------

@runbook(risk=Risk.LOW)
def spray(ctx: Context) -> None:
    """Touch many hosts at once."""


def _config(**guardrails: Any) -> Any:
    data: dict[str, Any] = {"team": "t", "level": "L4"}
    if guardrails:
        data["guardrails"] = guardrails
    return parse_config(data, Path("/teams/t/selfdrive.toml"))


NOW = datetime(2026, 11, 27, 19, 30, tzinfo=UTC)  # a Friday: 14:30 in New York


def test_blast_radius_guardrail_and_decide() -> None:
    config = _config()
    assert config.guardrails.blast_radius == 10
    situation = Situation()
    for targets in (None, 1, 10):
        request = Request(requested_by="alice", targets=targets)
        assert blast_radius_guardrail(spray, request, config, situation, NOW) is None
        assert decide(spray, request, config, None, NOW).mode is Mode.AUTONOMOUS

    wide = Request(requested_by="alice", targets=11)
    trip = blast_radius_guardrail(spray, wide, config, situation, NOW)
    assert trip == "blast radius: this run touches 11 targets (limit 10)"
    decision = decide(spray, wide, config, None, NOW, situation=situation)
    assert decision.mode is Mode.APPROVAL
    assert decision.guardrails == (trip,)
    assert f"guardrail: {trip}; a human decides" in decision.reasons
    # The team may widen it.
    assert decide(spray, wide, _config(blast_radius=11), None, NOW).mode is Mode.AUTONOMOUS


def test_cron_freeze_reads_the_clock_of_its_time_zone() -> None:
    config = _config(freeze=[{"name": "friday afternoons", "cron": "* 14-23 * * 5",
                              "timezone": "America/New_York"}])
    request = Request(requested_by="alice")
    inside = freeze_guardrail(spray, request, config, Situation(), NOW)
    assert inside is not None
    assert "friday afternoons" in inside
    assert "Fri 2026-11-27 14:30 America/New_York" in inside
    # 18:30 UTC is inside 14-23 in UTC, but it is 13:30 in New York: no freeze.
    before = NOW - timedelta(hours=1)
    assert freeze_guardrail(spray, request, config, Situation(), before) is None
    assert decide(spray, request, config, None, before).mode is Mode.AUTONOMOUS
    assert decide(spray, request, config, None, NOW).mode is Mode.APPROVAL
