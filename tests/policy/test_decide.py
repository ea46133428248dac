"""decide(): every cell of the default matrix, then each rule that may only lower autonomy."""

from __future__ import annotations

import functools
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest

from selfdrive import Context, Level, Mode, Risk, Runbook, alert, runbook
from selfdrive.config import Rule, TeamConfig, parse_config
from selfdrive.policy import (
    DEFAULT_MATRIX,
    GUARDRAILS,
    Decision,
    Firing,
    Halt,
    Request,
    Situation,
    TrackRecord,
    decide,
    rule_for,
)

NOW = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
CONFIG_FILE = Path("/teams/payments/selfdrive.toml")
DOMAIN = "web"

GOOD = TrackRecord(verified_successes=4, recent=("succeeded",) * 5)
BAD = TrackRecord(verified_successes=10, recent=("succeeded", "verification_failed", "succeeded"))

D, A, AUTO = Mode.DRY_RUN, Mode.APPROVAL, Mode.AUTONOMOUS
CODES = {"d": D, "a": A, "A": AUTO}


def make_runbook(risk: Risk, *, domain: str | None = DOMAIN,
                 approval: Literal["policy", "always"] = "policy") -> Runbook:
    @runbook(risk=risk, domain=domain, approval=approval,
             triggers=[alert("DiskFull", params={"host": "{{ labels.instance }}"})])
    def clean_disk(ctx: Context, host: str = "web1") -> None:
        """Free space on a host whose disk filled up."""

    return clean_disk


cached_runbook = functools.cache(make_runbook)


def make_config(level: str | Level, **policy: Any) -> TeamConfig:
    name = level.name if isinstance(level, Level) else level
    data: dict[str, Any] = {"team": "payments-sre", "level": name}
    if policy:
        data["policy"] = policy
    return parse_config(data, CONFIG_FILE)


cached_config = functools.cache(make_config)


def by_hand() -> Request:
    return Request(requested_by="alice")


def fired(name: str = "DiskFull", *, own: bool = True, domain: str | None = DOMAIN,
          kind: str = "alert", dry_run: bool = False) -> Request:
    return Request(requested_by="alertmanager",
                   firing=Firing(kind=kind, name=name, own=own, domain=domain),
                   dry_run=dry_run)


def reasons_text(decision: Decision) -> str:
    return "\n".join(decision.reasons)


# -- every cell of the default matrix ----------------------------------------------

# What the README's policy matrix says, cell by cell, in its own words.
DOCUMENTED_MATRIX = {
    Level.L0: ["dry-run", "dry-run", "dry-run", "dry-run", "dry-run"],
    Level.L1: ["auto", "auto-own-trigger", "approval", "approval", "dry-run"],
    Level.L2: ["auto", "auto-own-trigger", "approval", "approval", "dry-run"],
    Level.L3: ["auto", "auto", "auto-in-domain", "approval", "approval"],
    Level.L4: ["auto", "auto", "auto", "approval", "approval"],
    Level.L5: ["auto", "auto", "auto", "auto-with-record", "approval"],
}

# Situations, one letter each in the table below:
#   H  requested by hand, qualifying record
#   O  its own alert, inside its domain, qualifying record
#   F  a foreign alert, outside its domain, qualifying record
#   B  its own alert, inside its domain, record with a recent verification failure
#   I  a foreign alert inside its domain, qualifying record
#   X  its own alert outside its domain, qualifying record
SITUATIONS: dict[str, tuple[Request, TrackRecord]] = {
    "H": (by_hand(), GOOD),
    "O": (fired(), GOOD),
    "F": (fired("CpuHigh", own=False, domain="db"), GOOD),
    "B": (fired(), BAD),
    "I": (fired("CpuHigh", own=False), GOOD),
    "X": (fired(domain="db"), GOOD),
}

# Expected mode per situation, in the order H O F B I X (d dry-run, a approval, A autonomous).
EXPECTED = {
    Level.L0: ["dddddd", "dddddd", "dddddd", "dddddd", "dddddd"],
    Level.L1: ["AAAAAA", "aAaAaA", "aaaaaa", "aaaaaa", "dddddd"],
    Level.L2: ["AAAAAA", "aAaAaA", "aaaaaa", "aaaaaa", "dddddd"],
    Level.L3: ["AAAAAA", "AAAAAA", "aAaaAa", "aaaaaa", "aaaaaa"],
    Level.L4: ["AAAAAA", "AAAAAA", "AAAaAA", "aaaaaa", "aaaaaa"],
    Level.L5: ["AAAAAA", "AAAAAA", "AAAaAA", "AAAaAA", "aaaaaa"],
}

CELLS = [(level, risk) for level in Level for risk in Risk]
CASES = [(level, risk, letter) for level, risk in CELLS for letter in SITUATIONS]


def test_the_tables_cover_every_cell() -> None:
    assert len(CELLS) == 30
    assert set(DEFAULT_MATRIX) == set(Level)
    assert all(set(row) == set(Risk) for row in DEFAULT_MATRIX.values())


@pytest.mark.parametrize(("level", "risk"), CELLS, ids=[f"{lv.name}-{r.name}" for lv, r in CELLS])
def test_default_matrix_is_designs(level: Level, risk: Risk) -> None:
    assert DEFAULT_MATRIX[level][risk] is Rule(DOCUMENTED_MATRIX[level][risk])


@pytest.mark.parametrize(("level", "risk", "letter"), CASES,
                         ids=[f"{lv.name}-{r.name}-{s}" for lv, r, s in CASES])
def test_every_cell_in_every_situation(level: Level, risk: Risk, letter: str) -> None:
    request, record = SITUATIONS[letter]
    expected = CODES[EXPECTED[level][risk][list(SITUATIONS).index(letter)]]

    decision = decide(cached_runbook(risk), request, cached_config(level), record, NOW)

    assert decision.mode is expected, reasons_text(decision)
    assert decision.rule is Rule(DOCUMENTED_MATRIX[level][risk])
    assert decision.guardrails == ()


@pytest.mark.parametrize(("level", "risk"), CELLS, ids=[f"{lv.name}-{r.name}" for lv, r in CELLS])
def test_first_reason_names_level_risk_and_rule(level: Level, risk: Risk) -> None:
    decision = decide(cached_runbook(risk), by_hand(), cached_config(level), GOOD, NOW)
    rule = Rule(DOCUMENTED_MATRIX[level][risk])
    words = {
        Rule.DRY_RUN: "plan only (dry-run)",
        Rule.APPROVAL: "a human approves",
        Rule.AUTO: "autonomous",
        Rule.AUTO_OWN_TRIGGER: "autonomous when fired by its own trigger, else a human approves",
        Rule.AUTO_IN_DOMAIN: "autonomous inside the alert's domain, else a human approves",
        Rule.AUTO_WITH_RECORD: ("autonomous with a qualifying track record, "
                                "else a human approves"),
    }[rule]

    assert decision.reasons[0] == (f"level {level.name} ({level.title}) × {risk.name} risk: "
                                   f"{words} (default matrix)")


def test_an_approval_cell_gives_exactly_one_reason() -> None:
    decision = decide(cached_runbook(Risk.HIGH), by_hand(), cached_config(Level.L4), GOOD, NOW)

    assert decision.mode is Mode.APPROVAL
    assert decision.reasons == ("level L4 (cross-environment) × HIGH risk: "
                                "a human approves (default matrix)",)


def test_no_track_record_counts_as_an_empty_one() -> None:
    rb, config = cached_runbook(Risk.MEDIUM), cached_config(Level.L4)

    assert decide(rb, by_hand(), config, None, NOW) == decide(rb, by_hand(), config,
                                                             TrackRecord(), NOW)
    assert decide(rb, by_hand(), config, None, NOW).mode is Mode.APPROVAL


# -- the conditional cells, and their words ----------------------------------------


@pytest.mark.parametrize("level", [Level.L1, Level.L2])
def test_own_trigger_words(level: Level) -> None:
    rb, config = cached_runbook(Risk.LOW), cached_config(level)

    own = decide(rb, fired(), config, None, NOW)
    foreign = decide(rb, fired("CpuHigh", own=False), config, None, NOW)
    hand = decide(rb, by_hand(), config, None, NOW)
    scheduled = decide(rb, fired("nightly", kind="schedule", own=True), config, None, NOW)

    assert own.mode is Mode.AUTONOMOUS
    assert own.reasons[1:] == ("fired by its own trigger (alert 'DiskFull')",)
    assert foreign.mode is Mode.APPROVAL
    assert foreign.reasons[1:] == ("not fired by its own trigger (alert 'CpuHigh' is not one of "
                                   "its declared triggers); a human approves",)
    assert hand.mode is Mode.APPROVAL
    assert hand.reasons[1:] == ("not fired by its own trigger (requested by hand); "
                                "a human approves",)
    assert scheduled.mode is Mode.AUTONOMOUS
    assert scheduled.reasons[1:] == ("fired by its own trigger (schedule 'nightly')",)


def test_in_domain_words() -> None:
    rb, config = cached_runbook(Risk.MEDIUM), cached_config(Level.L3)

    inside = decide(rb, fired(), config, GOOD, NOW)
    outside = decide(rb, fired(domain="db"), config, GOOD, NOW)
    hand = decide(rb, by_hand(), config, GOOD, NOW)
    scheduled = decide(rb, fired("nightly", kind="schedule", domain=DOMAIN), config, GOOD, NOW)

    assert inside.mode is Mode.AUTONOMOUS
    assert inside.reasons[1:] == (
        "alert 'DiskFull' is in the runbook's domain 'web'",
        "track record qualifies: 4 verified successes and no verification failure in the last "
        "5 run(s)")
    assert outside.mode is Mode.APPROVAL
    assert outside.reasons[1:] == ("outside the alert's domain (alert domain 'db' is not the "
                                   "runbook's domain 'web'); a human approves",)
    assert hand.mode is Mode.APPROVAL
    assert hand.reasons[1:] == ("outside the alert's domain (no alert fired this run); "
                                "a human approves",)
    assert scheduled.mode is Mode.APPROVAL
    assert "no alert fired this run" in scheduled.reasons[1]


def test_in_domain_needs_the_runbook_to_declare_a_domain() -> None:
    rb = make_runbook(Risk.MEDIUM, domain=None)

    decision = decide(rb, fired(domain=None), cached_config(Level.L3), GOOD, NOW)

    assert decision.mode is Mode.APPROVAL
    assert decision.reasons[1:] == ("outside the alert's domain (the runbook declares no "
                                    "domain); a human approves",)


def test_with_record_words() -> None:
    rb, config = cached_runbook(Risk.HIGH), cached_config(Level.L5)

    good = decide(rb, by_hand(), config, GOOD, NOW)
    bad = decide(rb, by_hand(), config, BAD, NOW)

    assert good.mode is Mode.AUTONOMOUS
    assert good.reasons[1:] == ("track record qualifies: 4 verified successes and no "
                                "verification failure in the last 5 run(s)",)
    assert bad.mode is Mode.APPROVAL
    assert bad.reasons[1:] == ("track record does not qualify: 1 verification failure(s) in the "
                               "last 3 run(s); it must earn autonomy back; a human approves",)


# -- rule 1: track record ----------------------------------------------------------


@pytest.mark.parametrize(("record", "ok", "evidence"), [
    (TrackRecord(3, ("succeeded",) * 3), True,
     "3 verified successes and no verification failure in the last 3 run(s)"),
    (TrackRecord(9, ("succeeded", "failed", "rolled_back", "succeeded", "succeeded")), True,
     "9 verified successes and no verification failure in the last 5 run(s)"),
    (TrackRecord(2, ("succeeded",) * 2), False, "2 verified success(es), 3 needed"),
    (TrackRecord(0, ()), False, "0 verified success(es), 3 needed"),
    (TrackRecord(7, ("verification_failed",) + ("succeeded",) * 6), False,
     "1 verification failure(s) in the last 5 run(s); it must earn autonomy back"),
    (TrackRecord(7, ("succeeded",) * 4 + ("verification_failed",)), False,
     "1 verification failure(s) in the last 5 run(s); it must earn autonomy back"),
    (TrackRecord(7, ("verification_failed", "verification_failed")), False,
     "2 verification failure(s) in the last 2 run(s); it must earn autonomy back"),
    # a failure older than the window is forgiven
    (TrackRecord(7, ("succeeded",) * 5 + ("verification_failed",)), True,
     "7 verified successes and no verification failure in the last 5 run(s)"),
])
def test_track_record_qualifies(record: TrackRecord, ok: bool, evidence: str) -> None:
    assert record.qualifies(cached_config(Level.L4).policy.track_record) == (ok, evidence)


@pytest.mark.parametrize("risk", [Risk.MEDIUM, Risk.HIGH, Risk.CRITICAL])
def test_autonomy_from_medium_up_needs_a_qualifying_record(risk: Risk) -> None:
    # Open the cell to plain "auto" so that only the record can lower it.
    config = make_config("L4", matrix={"L4": {risk.name: "auto"}})
    rb = cached_runbook(risk)

    good = decide(rb, by_hand(), config, GOOD, NOW)
    few = decide(rb, by_hand(), config, TrackRecord(2, ("succeeded",) * 2), NOW)
    failed = decide(rb, by_hand(), config, BAD, NOW)

    assert good.mode is Mode.AUTONOMOUS
    assert good.reasons[-1] == ("track record qualifies: 4 verified successes and no "
                                "verification failure in the last 5 run(s)")
    assert few.mode is Mode.APPROVAL
    assert few.reasons[-1] == (f"track record does not qualify for autonomy at {risk.name}: "
                               f"2 verified success(es), 3 needed; a human approves")
    assert failed.mode is Mode.APPROVAL
    assert failed.reasons[-1] == (f"track record does not qualify for autonomy at {risk.name}: "
                                  f"1 verification failure(s) in the last 3 run(s); it must "
                                  f"earn autonomy back; a human approves")


@pytest.mark.parametrize("risk", [Risk.READ_ONLY, Risk.LOW])
def test_below_medium_the_record_does_not_matter(risk: Risk) -> None:
    decision = decide(cached_runbook(risk), by_hand(), cached_config(Level.L4), BAD, NOW)

    assert decision.mode is Mode.AUTONOMOUS
    assert "track record" not in reasons_text(decision)


def test_record_is_not_consulted_when_the_cell_gives_no_autonomy() -> None:
    decision = decide(cached_runbook(Risk.HIGH), by_hand(), cached_config(Level.L4), BAD, NOW)

    assert "track record" not in reasons_text(decision)


def test_track_record_thresholds_come_from_config() -> None:
    strict = make_config("L4", track_record={"min_verified_successes": 10, "window": 10,
                                             "applies_from": "low"})
    lenient = make_config("L4", track_record={"min_verified_successes": 1, "window": 1})
    old_failure = TrackRecord(2, ("succeeded", "verification_failed"))

    low = decide(cached_runbook(Risk.LOW), by_hand(), strict, GOOD, NOW)
    medium = decide(cached_runbook(Risk.MEDIUM), by_hand(), lenient, old_failure, NOW)

    assert low.mode is Mode.APPROVAL
    assert low.reasons[-1] == ("track record does not qualify for autonomy at LOW: "
                               "4 verified success(es), 10 needed; a human approves")
    assert medium.mode is Mode.AUTONOMOUS
    assert medium.reasons[-1] == ("track record qualifies: 2 verified successes and no "
                                  "verification failure in the last 1 run(s)")


def test_applies_from_high_frees_medium() -> None:
    config = make_config("L4", track_record={"applies_from": "HIGH"})

    decision = decide(cached_runbook(Risk.MEDIUM), by_hand(), config, BAD, NOW)

    assert decision.mode is Mode.AUTONOMOUS


# -- rule 2: approval="always" -----------------------------------------------------


def test_approval_always_lowers_autonomy() -> None:
    rb = make_runbook(Risk.LOW, approval="always")

    decision = decide(rb, by_hand(), cached_config(Level.L4), GOOD, NOW)

    assert decision.mode is Mode.APPROVAL
    assert decision.reasons == (
        "level L4 (cross-environment) × LOW risk: autonomous (default matrix)",
        'runbook declares approval="always"; a human approves')


@pytest.mark.parametrize(("level", "expected"), [("L0", Mode.DRY_RUN), ("L1", Mode.APPROVAL)])
def test_approval_always_never_raises(level: str, expected: Mode) -> None:
    rb = make_runbook(Risk.MEDIUM, approval="always")

    decision = decide(rb, by_hand(), cached_config(level), GOOD, NOW)

    assert decision.mode is expected
    assert "approval=" not in reasons_text(decision)


def test_approval_always_after_the_record() -> None:
    rb = make_runbook(Risk.MEDIUM, approval="always")

    decision = decide(rb, by_hand(), cached_config(Level.L5), GOOD, NOW)

    assert decision.mode is Mode.APPROVAL
    assert decision.reasons[1].startswith("track record qualifies")
    assert decision.reasons[2] == 'runbook declares approval="always"; a human approves'


# -- rule 3: guardrails, the halt switch -------------------------------------------

HALT = Halt(by="bob", reason="incident 42: stop everything", since=NOW)
HALT_WORDS = ("halt switch is on (since 2025-03-04 05:06:07 UTC, by bob: "
              "'incident 42: stop everything')")


def test_halt_turns_autonomous_into_approval_and_names_itself() -> None:
    decision = decide(cached_runbook(Risk.LOW), by_hand(), cached_config(Level.L4), GOOD, NOW,
                      situation=Situation(halts=(HALT,)))

    assert decision.mode is Mode.APPROVAL
    assert decision.guardrails == (HALT_WORDS,)
    assert decision.reasons == (
        "level L4 (cross-environment) × LOW risk: autonomous (default matrix)",
        f"guardrail: {HALT_WORDS}; a human decides")


def test_halt_with_a_naive_time() -> None:
    halt = Halt(by="bob", reason="r", since=datetime(2025, 1, 2, 3, 4, 5))

    decision = decide(cached_runbook(Risk.LOW), by_hand(), cached_config(Level.L4), GOOD, NOW,
                      situation=Situation(halts=(halt,)))

    assert decision.guardrails == ("halt switch is on (since 2025-01-02 03:04:05, by bob: 'r')",)


def test_every_reason_of_the_halt_switch_is_named() -> None:
    later = Halt(by="carol", reason="disk array", since=NOW + timedelta(minutes=5))

    decision = decide(cached_runbook(Risk.LOW), by_hand(), cached_config(Level.L4), GOOD, NOW,
                      situation=Situation(halts=(HALT, later)))

    assert decision.mode is Mode.APPROVAL
    assert decision.guardrails == (
        "halt switch is on (since 2025-03-04 05:06:07 UTC, by bob: 'incident 42: stop "
        "everything'; since 2025-03-04 05:11:07 UTC, by carol: 'disk array')",)


@pytest.mark.parametrize(("level", "risk", "mode"), [
    ("L0", Risk.LOW, Mode.DRY_RUN), ("L4", Risk.HIGH, Mode.APPROVAL),
    ("L1", Risk.CRITICAL, Mode.DRY_RUN),
])
def test_halt_is_recorded_even_when_it_changes_nothing(level: str, risk: Risk,
                                                       mode: Mode) -> None:
    decision = decide(cached_runbook(risk), by_hand(), cached_config(level), GOOD, NOW,
                      situation=Situation(halts=(HALT,)))

    assert decision.mode is mode
    assert decision.reasons[-1] == f"guardrail: {HALT_WORDS}"
    assert decision.guardrails == (HALT_WORDS,)


def test_no_halt_no_guardrail() -> None:
    decision = decide(cached_runbook(Risk.LOW), by_hand(), cached_config(Level.L4), GOOD, NOW,
                      situation=Situation(halts=()))

    assert decision.mode is Mode.AUTONOMOUS
    assert decision.guardrails == ()
    assert "guardrail" not in reasons_text(decision)


def test_halt_wins_over_a_qualifying_record_at_l5() -> None:
    decision = decide(cached_runbook(Risk.HIGH), fired(), cached_config(Level.L5), GOOD, NOW,
                      situation=Situation(halts=(HALT,)))

    assert decision.mode is Mode.APPROVAL
    assert decision.reasons[1].startswith("track record qualifies")
    assert decision.reasons[2] == f"guardrail: {HALT_WORDS}; a human decides"


def test_custom_guardrails_get_every_input_and_lower_autonomy() -> None:
    seen: list[tuple[Any, ...]] = []

    def freeze(rb: Runbook, request: Request, config: TeamConfig, situation: Situation,
               now: datetime) -> str | None:
        seen.append((rb, request, config, situation, now))
        return "change freeze until Monday"

    def quiet(*args: Any) -> str | None:
        return None

    rb, request, config = cached_runbook(Risk.LOW), by_hand(), cached_config(Level.L4)
    decision = decide(rb, request, config, GOOD, NOW, guardrails=(quiet, freeze))

    assert seen == [(rb, request, config, Situation(), NOW)]
    assert decision.mode is Mode.APPROVAL
    assert decision.guardrails == ("change freeze until Monday",)
    assert decision.reasons[-1] == "guardrail: change freeze until Monday; a human decides"


def test_several_guardrails_are_all_named() -> None:
    decision = decide(cached_runbook(Risk.LOW), by_hand(), cached_config(Level.L4), GOOD, NOW,
                      situation=Situation(halts=(HALT,)),
                      guardrails=(*GUARDRAILS,
                                  lambda *a: "rate limit: 5 runs in the last hour"))

    assert decision.mode is Mode.APPROVAL
    assert decision.guardrails == (HALT_WORDS, "rate limit: 5 runs in the last hour")
    assert decision.reasons[1:] == (f"guardrail: {HALT_WORDS}; a human decides",
                                    "guardrail: rate limit: 5 runs in the last hour")


# -- dry-run requests --------------------------------------------------------------


@pytest.mark.parametrize(("level", "risk"), CELLS, ids=[f"{lv.name}-{r.name}" for lv, r in CELLS])
def test_dry_run_request_always_gives_dry_run(level: Level, risk: Risk) -> None:
    decision = decide(cached_runbook(risk), fired(dry_run=True), cached_config(level), GOOD, NOW)

    assert decision.mode is Mode.DRY_RUN
    assert decision.reasons[-1] == ("dry-run requested: read-only steps run, changes are only "
                                    "planned")
    assert decision.rule is Rule(DOCUMENTED_MATRIX[level][risk])


def test_dry_run_request_under_halt() -> None:
    decision = decide(cached_runbook(Risk.LOW), replace(by_hand(), dry_run=True),
                      cached_config(Level.L4), GOOD, NOW, situation=Situation(halts=(HALT,)))

    assert decision.mode is Mode.DRY_RUN
    assert decision.guardrails == (HALT_WORDS,)


# -- the team's own matrix ---------------------------------------------------------


def test_override_lowers_a_cell() -> None:
    config = make_config("L4", matrix={"L4": {"LOW": "approval"}})

    decision = decide(cached_runbook(Risk.LOW), by_hand(), config, GOOD, NOW)

    assert rule_for(cached_runbook(Risk.LOW), config) == (Rule.APPROVAL, True)
    assert decision.mode is Mode.APPROVAL
    assert decision.rule is Rule.APPROVAL
    assert decision.reasons == ("level L4 (cross-environment) × LOW risk: a human approves "
                                "(team override)",)


def test_override_of_another_level_does_not_apply() -> None:
    config = make_config("L4", matrix={"L3": {"LOW": "approval"}})

    assert rule_for(cached_runbook(Risk.LOW), config) == (Rule.AUTO, False)
    assert decide(cached_runbook(Risk.LOW), by_hand(), config, GOOD, NOW).mode is Mode.AUTONOMOUS


def test_override_may_raise_a_cell_as_the_teams_own_choice() -> None:
    config = make_config("L0", matrix={"L0": {"LOW": "auto"}})

    decision = decide(cached_runbook(Risk.LOW), by_hand(), config, None, NOW)

    assert decision.mode is Mode.AUTONOMOUS
    assert decision.reasons == ("level L0 (manual) × LOW risk: autonomous (team override)",)


def test_raised_cell_still_needs_a_track_record() -> None:
    config = make_config("L1", matrix={"L1": {"CRITICAL": "auto"}})
    rb = cached_runbook(Risk.CRITICAL)

    with_record = decide(rb, by_hand(), config, GOOD, NOW)
    without = decide(rb, by_hand(), config, BAD, NOW)

    assert with_record.mode is Mode.AUTONOMOUS
    assert without.mode is Mode.APPROVAL
    assert without.reasons == (
        "level L1 (rules-based) × CRITICAL risk: autonomous (team override)",
        "track record does not qualify for autonomy at CRITICAL: 1 verification failure(s) in "
        "the last 3 run(s); it must earn autonomy back; a human approves")


def test_raised_cell_still_yields_to_approval_always_and_halt() -> None:
    config = make_config("L0", matrix={"L0": {"LOW": "auto"}})

    always = decide(make_runbook(Risk.LOW, approval="always"), by_hand(), config, GOOD, NOW)
    halted = decide(cached_runbook(Risk.LOW), by_hand(), config, GOOD, NOW,
                    situation=Situation(halts=(HALT,)))

    assert always.mode is Mode.APPROVAL
    assert always.reasons[-1] == 'runbook declares approval="always"; a human approves'
    assert halted.mode is Mode.APPROVAL
    assert halted.reasons[-1] == f"guardrail: {HALT_WORDS}; a human decides"


@pytest.mark.parametrize(("rule", "request_", "mode"), [
    ("auto-own-trigger", fired(), Mode.AUTONOMOUS),
    ("auto-own-trigger", by_hand(), Mode.APPROVAL),
    ("auto-in-domain", fired(), Mode.AUTONOMOUS),
    ("auto-in-domain", fired(domain="db"), Mode.APPROVAL),
    ("auto-with-record", by_hand(), Mode.AUTONOMOUS),
    ("dry-run", fired(), Mode.DRY_RUN),
])
def test_any_rule_may_go_in_any_cell(rule: str, request_: Request, mode: Mode) -> None:
    config = make_config("L2", matrix={"L2": {"MEDIUM": rule}})

    decision = decide(cached_runbook(Risk.MEDIUM), request_, config, GOOD, NOW)

    assert decision.mode is mode
    assert decision.rule is Rule(rule)
    assert decision.reasons[0].endswith("(team override)")


def test_auto_with_record_override_checks_the_record_once() -> None:
    config = make_config("L4", matrix={"L4": {"MEDIUM": "auto-with-record"}})

    decision = decide(cached_runbook(Risk.MEDIUM), by_hand(), config, BAD, NOW)

    assert decision.mode is Mode.APPROVAL
    assert [r.startswith("track record") for r in decision.reasons] == [False, True]


# -- purity ------------------------------------------------------------------------


def test_decide_is_deterministic_and_leaves_its_inputs_alone() -> None:
    rb, config = cached_runbook(Risk.MEDIUM), cached_config(Level.L3)
    request, record = fired(), GOOD
    situation = Situation(halts=(HALT,))
    before = (request, record, situation, config.model_dump())

    first = decide(rb, request, config, record, NOW, situation=situation)
    second = decide(rb, request, config, record, NOW, situation=situation)

    assert first == second
    assert (request, record, situation, config.model_dump()) == before
    assert rb.preconditions == [] and rb.verifications == []


def test_reasons_are_plain_words() -> None:
    decision = decide(make_runbook(Risk.MEDIUM, approval="always"), fired(dry_run=True),
                      cached_config(Level.L3), BAD, NOW, situation=Situation(halts=(HALT,)))

    for reason in decision.reasons:
        assert isinstance(reason, str)
        assert reason and reason == reason.strip()
        assert not re.search(r"<[A-Za-z]+\.|Rule\.|Risk\.|Mode\.|Level\.", reason), reason


@pytest.mark.parametrize(("level", "risk", "policy", "allows"), [
    ("L1", Risk.CRITICAL, {}, 'policy only plans CRITICAL runbooks at L1; to run it, raise '
     'the team\'s level to L3 (single-domain: a human approves) or override the cell: '
     '[policy.matrix.L1] CRITICAL = "approval"'),
    ("L0", Risk.LOW, {}, "policy only plans LOW runbooks at L0; to run it, raise the team's "
     "level to L1 (rules-based: autonomous when fired by its own trigger, else a human "
     'approves) or override the cell: [policy.matrix.L0] LOW = "approval"'),
    ("L1", Risk.CRITICAL, {"matrix": {"L2": {"CRITICAL": "approval"}}},
     "policy only plans CRITICAL runbooks at L1; to run it, raise the team's level to L2 "
     "(summarization: a human approves) or override the cell: "
     '[policy.matrix.L1] CRITICAL = "approval"'),
    ("L4", Risk.HIGH, {"matrix": {lv: {"HIGH": "dry-run"} for lv in ("L4", "L5")}},
     "policy only plans HIGH runbooks at L4 (and at every level above it); to run it, "
     'override the cell: [policy.matrix.L4] HIGH = "approval"'),
])
def test_a_run_the_matrix_only_plans_says_what_would_allow_it(
        level: str, risk: Risk, policy: dict[str, Any], allows: str) -> None:
    config = make_config(level, **policy)
    decision = decide(make_runbook(risk), by_hand(), config, GOOD, NOW)

    assert decision.mode is Mode.DRY_RUN
    assert decision.reasons[-1] == allows
    asked_for_a_plan = decide(make_runbook(risk), Request(requested_by="alice", dry_run=True),
                              config, GOOD, NOW)
    assert allows not in asked_for_a_plan.reasons
