"""``decide()``: the pure function that picks a run's mode and says why.

The matrix cell gives the most autonomy a run may have; then track record, the
runbook's own override and the guardrails may only lower it, each adding a reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from selfdrive.config.model import Rule, TeamConfig, TrackRecordRule
from selfdrive.policy.matrix import DEFAULT_MATRIX, RULE_WORDS
from selfdrive.sdk.runbook import Runbook
from selfdrive.sdk.vocabulary import Level, Mode


@dataclass(frozen=True)
class Firing:
    """What fired an unattended run: an alert (with its domain) or a schedule."""

    kind: str
    name: str
    own: bool
    domain: str | None = None


@dataclass(frozen=True)
class Request:
    """Who asks for a run, how it was fired, and what was asked."""

    requested_by: str
    firing: Firing | None = None
    dry_run: bool = False
    targets: int | None = None


@dataclass(frozen=True)
class TrackRecord:
    """A runbook's recent outcomes, newest first, as policy needs them."""

    verified_successes: int = 0
    recent: tuple[str, ...] = ()

    def qualifies(self, rule: TrackRecordRule) -> tuple[bool, str]:
        """Whether the record earns autonomy, and the evidence in words."""
        window = self.recent[: rule.window]
        failures = sum(1 for outcome in window if outcome == "verification_failed")
        if failures:
            return False, (f"{failures} verification failure(s) in the last {len(window)} "
                           f"run(s); it must earn autonomy back")
        if self.verified_successes < rule.min_verified_successes:
            return False, (f"{self.verified_successes} verified success(es), "
                           f"{rule.min_verified_successes} needed")
        return True, (f"{self.verified_successes} verified successes and no verification "
                      f"failure in the last {len(window)} run(s)")


@dataclass(frozen=True)
class Halt:
    """One reason the halt switch is on: who turned it on, why and when."""

    by: str
    reason: str
    since: datetime


@dataclass(frozen=True)
class Situation:
    """The shared state guardrails read at decision time (from the journal)."""

    halts: tuple[Halt, ...] = ()  # the halt switch is on while one reason is left
    autonomous_runs_of_runbook: int = 0
    autonomous_runs_total: int = 0


@dataclass(frozen=True)
class Decision:
    """The mode a run gets and every reason that shaped it, in plain words."""

    mode: Mode
    reasons: tuple[str, ...]
    rule: Rule
    guardrails: tuple[str, ...] = field(default=())


Guardrail = Callable[[Runbook, Request, TeamConfig, Situation, datetime], str | None]


def halt_guardrail(runbook: Runbook, request: Request, config: TeamConfig,
                   situation: Situation, now: datetime) -> str | None:
    """The halt switch: while on, nothing runs autonomously. Every reason is named."""
    if not situation.halts:
        return None
    reasons = "; ".join((f"since {h.since:%Y-%m-%d %H:%M:%S %Z}, by {h.by}: "
                         f"{h.reason!r}").replace(" , by", ", by") for h in situation.halts)
    return f"halt switch is on ({reasons})"


def rate_limit_guardrail(runbook: Runbook, request: Request, config: TeamConfig,
                         situation: Situation, now: datetime) -> str | None:
    """At most N autonomous runs per runbook, and M in total, per sliding window."""
    g = config.guardrails
    window = _words(g.rate_window)
    if situation.autonomous_runs_of_runbook >= g.rate_limit_per_runbook:
        return (f"rate limit: {situation.autonomous_runs_of_runbook} autonomous run(s) of "
                f"{runbook.name} in the last {window} (limit {g.rate_limit_per_runbook})")
    if situation.autonomous_runs_total >= g.rate_limit_total:
        return (f"rate limit: {situation.autonomous_runs_total} autonomous run(s) in total in "
                f"the last {window} (limit {g.rate_limit_total})")
    return None


def freeze_guardrail(runbook: Runbook, request: Request, config: TeamConfig,
                     situation: Situation, now: datetime) -> str | None:
    """Change-freeze windows: date ranges or cron-matched minutes, time zone aware."""
    from zoneinfo import ZoneInfo

    for window in config.guardrails.freeze:
        tz = ZoneInfo(window.timezone)
        local = now.astimezone(tz)
        if window.start is not None and window.end is not None:
            start, end = window.bounds()
            if start <= now < end:
                return (f"change freeze {window.name!r} ({start:%Y-%m-%d %H:%M} → "
                        f"{end:%Y-%m-%d %H:%M} {window.timezone})")
        elif window.cron is not None and _cron_matches(window.cron, local):
            return (f"change freeze {window.name!r} (cron {window.cron!r} matches "
                    f"{local:%a %Y-%m-%d %H:%M} {window.timezone})")
    return None


def blast_radius_guardrail(runbook: Runbook, request: Request, config: TeamConfig,
                           situation: Situation, now: datetime) -> str | None:
    """No autonomous run touches more targets than the team allows."""
    limit = config.guardrails.blast_radius
    if request.targets is not None and request.targets > limit:
        return f"blast radius: this run touches {request.targets} targets (limit {limit})"
    return None


def _cron_matches(expression: str, local: datetime) -> bool:
    from cronsim import CronSim

    minute = local.replace(second=0, microsecond=0, tzinfo=None)
    return next(CronSim(expression, minute - timedelta(minutes=1))) == minute


def _words(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0 and seconds >= size:
            n = seconds // size
            return f"{n} {unit}" if n == 1 else f"{n} {unit}s"
    return f"{seconds}s"


GUARDRAILS: tuple[Guardrail, ...] = (halt_guardrail, freeze_guardrail, rate_limit_guardrail,
                                     blast_radius_guardrail)
#: Reported in the reasons even when the run would not have been autonomous anyway.
ALWAYS_REPORTED: frozenset[Guardrail] = frozenset({halt_guardrail, freeze_guardrail})


def rule_for(runbook: Runbook, config: TeamConfig) -> tuple[Rule, bool]:
    """The matrix rule for this runbook at the team's level, and whether config set it."""
    override = config.policy.override(config.level, runbook.risk)
    if override is not None:
        return override, True
    return DEFAULT_MATRIX[config.level][runbook.risk], False


def reads_track_record(runbook: Runbook, config: TeamConfig) -> bool:
    """Whether :func:`decide` may look at this runbook's track record; when not, the
    caller need not read it from the journal (the decision is the same without it)."""
    rule, _ = rule_for(runbook, config)
    return rule is Rule.AUTO_WITH_RECORD or runbook.risk >= config.policy.track_record.applies_from


def decide(runbook: Runbook, request: Request, config: TeamConfig,
           track_record: TrackRecord | None, now: datetime, *,
           situation: Situation | None = None,
           guardrails: Sequence[Guardrail] = GUARDRAILS) -> Decision:
    """Choose dry-run, approval or autonomous for one request. Pure: no I/O, no clock."""
    situation = situation or Situation()
    record = track_record or TrackRecord()
    level, risk = config.level, runbook.risk
    rule, overridden = rule_for(runbook, config)
    source = "team override" if overridden else "default matrix"
    reasons = [f"level {level.name} ({level.title}) × {risk.name} risk: "
               f"{RULE_WORDS[rule]} ({source})"]

    mode = _mode_from_rule(rule, runbook, request, record, config, reasons)
    if rule is Rule.DRY_RUN and not request.dry_run:  # a run was asked for: say what allows one
        reasons.append(what_allows_a_run(runbook, config))

    if mode is Mode.AUTONOMOUS and risk >= config.policy.track_record.applies_from \
            and rule is not Rule.AUTO_WITH_RECORD:
        ok, evidence = record.qualifies(config.policy.track_record)
        if ok:
            reasons.append(f"track record qualifies: {evidence}")
        else:
            mode = Mode.APPROVAL
            reasons.append(f"track record does not qualify for autonomy at {risk.name}: "
                           f"{evidence}; a human approves")

    if runbook.approval == "always" and mode is Mode.AUTONOMOUS:
        mode = Mode.APPROVAL
        reasons.append('runbook declares approval="always"; a human approves')

    tripped = []
    for guard in guardrails:
        trip = guard(runbook, request, config, situation, now)
        if trip is None:
            continue
        if mode is Mode.AUTONOMOUS:
            tripped.append(trip)
            mode = Mode.APPROVAL
            reasons.append(f"guardrail: {trip}; a human decides")
        elif guard in ALWAYS_REPORTED or guard not in GUARDRAILS:
            tripped.append(trip)
            reasons.append(f"guardrail: {trip}")

    if request.dry_run:
        mode = Mode.DRY_RUN
        reasons.append("dry-run requested: read-only steps run, changes are only planned")
    return Decision(mode=mode, reasons=tuple(reasons), rule=rule, guardrails=tuple(tripped))


def what_allows_a_run(runbook: Runbook, config: TeamConfig) -> str:
    """What would let ``runbook`` run where the matrix only plans it: the lowest higher
    level whose cell allows a run (as the team configured the matrix), or the override."""
    risk, here = runbook.risk, config.level
    override = f'[policy.matrix.{here.name}] {risk.name} = "{Rule.APPROVAL.value}"'
    for level in Level:
        if level <= here:
            continue
        rule = config.policy.override(level, risk) or DEFAULT_MATRIX[level][risk]
        if rule is not Rule.DRY_RUN:
            return (f"policy only plans {risk.name} runbooks at {here.name}; to run it, "
                    f"raise the team's level to {level.name} ({level.title}: "
                    f"{RULE_WORDS[rule]}) or override the cell: {override}")
    return (f"policy only plans {risk.name} runbooks at {here.name} (and at every level "
            f"above it); to run it, override the cell: {override}")


def _mode_from_rule(rule: Rule, runbook: Runbook, request: Request, record: TrackRecord,
                    config: TeamConfig, reasons: list[str]) -> Mode:
    firing = request.firing
    if rule is Rule.DRY_RUN:
        return Mode.DRY_RUN
    if rule is Rule.APPROVAL:
        return Mode.APPROVAL
    if rule is Rule.AUTO:
        return Mode.AUTONOMOUS
    if rule is Rule.AUTO_OWN_TRIGGER:
        if firing is not None and firing.own:
            reasons.append(f"fired by its own trigger ({firing.kind} {firing.name!r})")
            return Mode.AUTONOMOUS
        why = "requested by hand" if firing is None else \
            f"{firing.kind} {firing.name!r} is not one of its declared triggers"
        reasons.append(f"not fired by its own trigger ({why}); a human approves")
        return Mode.APPROVAL
    if rule is Rule.AUTO_IN_DOMAIN:
        if firing is not None and firing.kind == "alert" and runbook.domain is not None \
                and firing.domain == runbook.domain:
            reasons.append(f"alert {firing.name!r} is in the runbook's domain "
                           f"{runbook.domain!r}")
            return Mode.AUTONOMOUS
        if firing is None or firing.kind != "alert":
            why = "no alert fired this run"
        elif runbook.domain is None:
            why = "the runbook declares no domain"
        else:
            why = (f"alert domain {firing.domain!r} is not the runbook's domain "
                   f"{runbook.domain!r}")
        reasons.append(f"outside the alert's domain ({why}); a human approves")
        return Mode.APPROVAL
    # Rule.AUTO_WITH_RECORD
    ok, evidence = record.qualifies(config.policy.track_record)
    if ok:
        reasons.append(f"track record qualifies: {evidence}")
        return Mode.AUTONOMOUS
    reasons.append(f"track record does not qualify: {evidence}; a human approves")
    return Mode.APPROVAL


