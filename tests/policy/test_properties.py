"""Properties the README's "Policy" section promises, over random situations."""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from hypothesis import given, settings
from hypothesis import strategies as st

from selfdrive import Context, Level, Mode, Risk, Runbook, alert, runbook
from selfdrive.config import TeamConfig, parse_config
from selfdrive.policy import Decision, Firing, Halt, Request, Situation, TrackRecord, decide

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
DOMAIN = "web"

# No example database: the suite leaves nothing behind in the working tree.
PROFILE = settings(max_examples=150, deadline=None, database=None)


@functools.cache
def make_runbook(risk: Risk, domain: str | None, approval: Literal["policy", "always"]
                 ) -> Runbook:
    @runbook(risk=risk, domain=domain, approval=approval,
             triggers=[alert("DiskFull")])
    def clean_disk(ctx: Context) -> None:
        """Free space on a full disk."""

    return clean_disk


@functools.cache
def make_config(level: Level) -> TeamConfig:
    return parse_config({"team": "t", "level": level.name}, Path("/t/selfdrive.toml"))


firings = st.one_of(
    st.none(),
    st.builds(Firing, kind=st.just("alert"), name=st.sampled_from(["DiskFull", "CpuHigh"]),
              own=st.booleans(), domain=st.sampled_from([None, DOMAIN, "db"])),
    st.builds(Firing, kind=st.just("schedule"), name=st.just("nightly"), own=st.booleans(),
              domain=st.none()),
)
records = st.one_of(
    st.none(),
    st.builds(TrackRecord, verified_successes=st.integers(0, 8),
              recent=st.lists(st.sampled_from(["succeeded", "verification_failed", "failed",
                                               "rolled_back", "interrupted"]),
                              max_size=8).map(tuple)),
)
HALT = Halt(by="bob", reason="incident", since=NOW)
HALT2 = Halt(by="carol", reason="second incident", since=NOW)


@st.composite
def worlds(draw: st.DrawFn) -> dict[str, Any]:
    """Everything decide() reads except the level and the risk.

    Halt, dry-run and approval="always" flatten every decision, so they are drawn
    rarely enough that most worlds exercise the matrix itself.
    """
    return {
        "domain": draw(st.sampled_from([None, DOMAIN])),
        "approval": draw(st.sampled_from(["policy", "policy", "policy", "always"])),
        "firing": draw(firings),
        "record": draw(records),
        "halts": draw(st.sampled_from([(), (), (), (HALT,), (HALT, HALT2)])),
        "dry_run": draw(st.sampled_from([False, False, False, True])),
    }




def run(level: Level, risk: Risk, world: dict[str, Any]) -> Decision:
    rb = make_runbook(risk, world["domain"], world["approval"])
    request = Request(requested_by="alice", firing=world["firing"], dry_run=world["dry_run"])
    return decide(rb, request, make_config(level), world["record"], NOW,
                  situation=Situation(halts=world["halts"]))


def grid(world: dict[str, Any]) -> dict[tuple[Level, Risk], int]:
    """The autonomy rank of every level × risk cell in one world."""
    return {(level, risk): run(level, risk, world).mode.rank for level in Level for risk in Risk}


@PROFILE
@given(world=worlds())
def test_raising_risk_never_raises_autonomy(world: dict[str, Any]) -> None:
    ranks = grid(world)

    for level in Level:
        row = [ranks[level, risk] for risk in sorted(Risk)]
        assert row == sorted(row, reverse=True), (level, row)


@PROFILE
@given(world=worlds())
def test_raising_the_level_never_lowers_autonomy(world: dict[str, Any]) -> None:
    ranks = grid(world)

    for risk in Risk:
        column = [ranks[level, risk] for level in sorted(Level)]
        assert column == sorted(column), (risk, column)


@PROFILE
@given(level=st.sampled_from(Level), risk=st.sampled_from(Risk), world=worlds(),
       halt=st.builds(Halt, by=st.sampled_from(["bob", "carol"]), reason=st.text(max_size=20),
                      since=st.just(NOW)))
def test_halt_always_wins(level: Level, risk: Risk, world: dict[str, Any], halt: Halt) -> None:
    decision = run(level, risk, {**world, "halts": (*world["halts"], halt)})

    assert decision.mode is not Mode.AUTONOMOUS
    assert any("halt switch is on" in g for g in decision.guardrails)
    assert any(r.startswith("guardrail: halt switch is on") for r in decision.reasons)


@PROFILE
@given(level=st.sampled_from(Level), risk=st.sampled_from(Risk), world=worlds())
def test_dry_run_request_always_yields_dry_run(level: Level, risk: Risk,
                                               world: dict[str, Any]) -> None:
    decision = run(level, risk, {**world, "dry_run": True})

    assert decision.mode is Mode.DRY_RUN
    assert decision.reasons[-1].startswith("dry-run requested")


@PROFILE
@given(level=st.sampled_from(Level), risk=st.sampled_from(Risk), world=worlds())
def test_decide_is_deterministic(level: Level, risk: Risk, world: dict[str, Any]) -> None:
    first = run(level, risk, world)
    second = run(level, risk, world)

    assert first == second
    # A fresh runbook and config with the same content decide the same way too.
    rb = make_runbook.__wrapped__(risk, world["domain"], world["approval"])
    config = make_config.__wrapped__(level)
    request = Request(requested_by="alice", firing=world["firing"], dry_run=world["dry_run"])
    third = decide(rb, request, config, world["record"], NOW,
                   situation=Situation(halts=world["halts"]))
    assert (third.mode, third.reasons, third.rule, third.guardrails) == (
        first.mode, first.reasons, first.rule, first.guardrails)


@PROFILE
@given(level=st.sampled_from(Level), risk=st.sampled_from(Risk), world=worlds())
def test_every_decision_explains_itself(level: Level, risk: Risk, world: dict[str, Any]) -> None:
    decision = run(level, risk, world)

    assert decision.reasons[0].startswith(f"level {level.name} ({level.title}) × {risk.name} "
                                          f"risk: ")
    assert all(isinstance(r, str) and r for r in decision.reasons)
    if world["approval"] == "always":
        assert decision.mode is not Mode.AUTONOMOUS


@PROFILE
@given(level=st.sampled_from(Level), risk=st.sampled_from(Risk), world=worlds())
def test_autonomy_from_medium_up_always_rests_on_a_qualifying_record(
        level: Level, risk: Risk, world: dict[str, Any]) -> None:
    decision = run(level, risk, world)

    if decision.mode is Mode.AUTONOMOUS and risk >= Risk.MEDIUM:
        record = world["record"] or TrackRecord()
        ok, _ = record.qualifies(make_config(level).policy.track_record)
        assert ok
        assert any(r.startswith("track record qualifies") for r in decision.reasons)
