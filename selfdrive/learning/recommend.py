"""Recommendations from the journal: what ``selfdrive learn`` prints.

Each one names a runbook (or an alert), the numbers it rests on and a suggestion in
plain words. Nothing here changes policy: the track record already promotes and
demotes MEDIUM-and-above runbooks by itself; these say what a human may want to
change (a level, a matrix cell, a runbook) and what already changed on its own.

Kinds, in the order they are listed: ``failing`` (its latest runs all failed: its
code raised, or a command it checked failed), ``demote`` (a recent verification failure),
``flaky`` (verifications that pass only after retries), ``slow`` (recent runs take
longer than the ones before), ``promote`` (earned more autonomy, or always approved),
``uncovered`` (alerts no runbook matched), ``stale`` (never run, or not for long).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from selfdrive.config.model import Rule, TeamConfig
from selfdrive.journal.store import Journal
from selfdrive.learning.queries import SECONDS, median, read
from selfdrive.learning.records import track_record
from selfdrive.learning.stats import RunbookStats, empty_stats, runbook_stats
from selfdrive.policy.decide import Decision, Firing, Request, TrackRecord, decide
from selfdrive.registry.load import Registry
from selfdrive.sdk.runbook import Runbook
from selfdrive.sdk.vocabulary import Level, Mode

KINDS = ("failing", "demote", "flaky", "slow", "promote", "uncovered", "stale")
#: Outcomes of a run whose own work failed (a verification failure is ``demote``'s).
_FAILED = ("failed", "rolled_back", "rollback_failed")


@dataclass(frozen=True)
class Thresholds:
    """When a pattern in the journal is worth a recommendation."""

    #: A runbook not run for this long is stale.
    stale_after: timedelta = timedelta(days=30)
    #: A runbook whose latest this many live runs all failed is failing.
    failing_runs: int = 3
    #: Approvals granted in the window, none denied, before suggesting less approval.
    approvals_granted: int = 5
    #: Runs whose verification passed only after a retry: at least this many …
    flaky_min_runs: int = 2
    #: … and at least this share of the runs that verified.
    flaky_min_share: float = 0.1
    #: Compare the median duration of the last N successful runs with the N before.
    slow_window: int = 10
    #: The recent median must be this many times the earlier one …
    slow_factor: float = 1.5
    #: … and longer by at least this many seconds.
    slow_min_seconds: float = 1.0


@dataclass(frozen=True)
class Recommendation:
    """One finding: what, about which runbook or alert, on what evidence, and what to do."""

    kind: str
    runbook: str | None
    alert: str | None
    finding: str
    evidence: Mapping[str, Any]
    suggestion: str

    @property
    def subject(self) -> str:
        return self.runbook if self.runbook is not None else f"alert {self.alert}"

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "runbook": self.runbook, "alert": self.alert,
                "finding": self.finding, "evidence": dict(self.evidence),
                "suggestion": self.suggestion}


@dataclass
class _Book:
    """What learning knows about one registered runbook."""

    rb: Runbook
    record: TrackRecord
    decision: Decision
    fired_as: str
    stats: RunbookStats
    latest: list[dict[str, Any]] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)

    @property
    def last(self) -> dict[str, Any] | None:
        """The newest live run."""
        return self.latest[0] if self.latest else None


def recommend(journal: Journal, registry: Registry, config: TeamConfig, *,
              since: str | None, now: datetime,
              thresholds: Thresholds | None = None) -> list[Recommendation]:
    """Every recommendation the journal supports for the runbooks in ``registry``.

    ``since`` bounds the window the counts come from (approvals, flaky verifications,
    uncovered alerts); track records, staleness and durations look at each runbook's
    own latest runs, whenever they were.
    """
    th = thresholds or Thresholds()
    window = {s.runbook: s for s in runbook_stats(journal, since=since, by_alert=False,
                                                   durations=False, resolve=False)}
    books = [_book(journal, rb, config, window.get(rb.name) or empty_stats(rb.name), th, now)
             for rb in registry.runbooks.values()]
    found: list[Recommendation] = []
    for book in books:
        found.extend(_failing(book, th))
        found.extend(_demote(book, config))
        found.extend(_slow(book, th))
        found.extend(_promote(book, config, th, now))
        found.extend(_stale(book, th, now))
    found.extend(_flaky(journal, {b.rb.name: b for b in books}, since, th))
    found.extend(_uncovered(journal, registry, since))
    order = {kind: i for i, kind in enumerate(KINDS)}
    return sorted(found, key=lambda r: (order[r.kind], r.subject))


# -- per runbook ---------------------------------------------------------------------


def _decide_now(rb: Runbook, config: TeamConfig, record: TrackRecord,
                now: datetime) -> tuple[Decision, str]:
    """Policy's mode for the runbook's usual request: by its own alert, else by hand.

    Guardrails (halt, freezes, rate limits) are left out: they are moments, not
    the runbook's standing.
    """
    firing = None
    fired_as = "requested by hand"
    if rb.triggers:
        name = rb.triggers[0].name
        firing = Firing(kind="alert", name=name, own=True, domain=rb.domain)
        fired_as = f"fired by its alert {name!r}"
    decision = decide(rb, Request(requested_by="selfdrive-learn", firing=firing), config,
                      record, now, guardrails=())
    return decision, fired_as


def _book(journal: Journal, rb: Runbook, config: TeamConfig, stats: RunbookStats,
          th: Thresholds, now: datetime) -> _Book:
    record = track_record(journal, rb.name, config.policy.track_record)
    decision, fired_as = _decide_now(rb, config, record, now)
    # Newest live runs first, through idx_runs_runbook_started_at.
    latest = read(journal, "SELECT id, mode, status, verified, error, started_at, finished_at "
                           "FROM runs WHERE runbook = ? AND started_at IS NOT NULL "
                           "ORDER BY started_at DESC LIMIT ?", (rb.name, max(1, th.failing_runs)))
    rows = read(journal,
                f"SELECT {SECONDS.format(end='finished_at', start='started_at')} AS seconds "
                f"FROM runs WHERE runbook = ? AND started_at IS NOT NULL "
                f"AND +status = 'succeeded' ORDER BY started_at DESC LIMIT ?",
                (rb.name, 2 * th.slow_window))
    return _Book(rb=rb, record=record, decision=decision, fired_as=fired_as, stats=stats,
                 latest=latest, durations=[r["seconds"] for r in rows if r["seconds"] is not None])


def _record_gated(book: _Book, config: TeamConfig) -> bool:
    """Whether policy weighs this runbook's record at the team's level."""
    return (book.decision.rule is Rule.AUTO_WITH_RECORD
            or book.rb.risk >= config.policy.track_record.applies_from)


def _failing(book: _Book, th: Thresholds) -> list[Recommendation]:
    latest = book.latest[: th.failing_runs]
    if len(latest) < th.failing_runs or not all(
            r["status"] in _FAILED and r["verified"] != 0 for r in latest):
        return []
    last = latest[0]
    evidence = {"failed_in_a_row": len(latest), "last_run": last["id"],
                "last_error": last["error"]}
    finding = f"its last {len(latest)} live run(s) all failed"
    suggestion = (f"its own code or a command it checks fails, so every run will: see where "
                  f"(`selfdrive logs {last['id']}`), then fix the runbook or retire it.")
    return [Recommendation("failing", book.rb.name, None, finding, evidence, suggestion)]


def _demote(book: _Book, config: TeamConfig) -> list[Recommendation]:
    rule = config.policy.track_record
    recent = book.record.recent[: rule.window]
    if "verification_failed" not in recent:
        return []
    failures = recent.count("verification_failed")
    oldest = max(i for i, outcome in enumerate(recent) if outcome == "verification_failed")
    name = book.rb.name
    evidence = {"verification_failures_recent": failures, "recent_runs": len(recent),
                "verification_failures_window": book.stats.verification_failures,
                "verified_successes": book.record.verified_successes,
                "mode_now": book.decision.mode.value, "last_run": (book.last or {}).get("id")}
    finding = (f"{failures} verification failure(s) in its last {len(recent)} live run(s)")
    look = f"`selfdrive logs {evidence['last_run']}`" if evidence["last_run"] else \
        f"`selfdrive history {name}`"
    if _record_gated(book, config):
        earn = rule.window - oldest
        suggestion = (f"policy already asks a human for each run (it is now "
                      f"{book.decision.mode.value}); it earns autonomy back after {earn} more "
                      f"run(s) without a verification failure. Find why it failed ({look}) "
                      f"and fix the runbook or its verification.")
    else:
        suggestion = (f"policy does not weigh the record below "
                      f"{rule.applies_from.name} risk, so it still runs "
                      f"{book.decision.mode.value}; put approval=\"always\" on it until its "
                      f"verification is fixed ({look}).")
    return [Recommendation("demote", name, None, finding, evidence, suggestion)]


def _slow(book: _Book, th: Thresholds) -> list[Recommendation]:
    n = th.slow_window
    if len(book.durations) < 2 * n:
        return []
    recent = median(sorted(book.durations[:n])) or 0.0
    before = median(sorted(book.durations[n:2 * n])) or 0.0
    if recent < before * th.slow_factor or recent - before < th.slow_min_seconds:
        return []
    evidence = {"median_seconds_recent": round(recent, 3),
                "median_seconds_before": round(before, 3),
                "ratio": round(recent / before, 2) if before else None, "runs_compared": n}
    finding = (f"its last {n} successful runs took {recent:.1f}s (median), the {n} before "
               f"{before:.1f}s")
    suggestion = ("something it depends on got slower, or it does more work than it used "
                  "to: compare an old and a new run step by step (`selfdrive logs`), and "
                  "check that its timeout still leaves room.")
    return [Recommendation("slow", book.rb.name, None, finding, evidence, suggestion)]


def _promote(book: _Book, config: TeamConfig, th: Thresholds,
             now: datetime) -> list[Recommendation]:
    ok, words = book.record.qualifies(config.policy.track_record)
    if not ok:
        return []
    name, level = book.rb.name, config.level
    mode = book.decision.mode
    evidence: dict[str, Any] = {
        "verified_successes": book.record.verified_successes,
        "recent_runs": len(book.record.recent), "approved_runs_window": book.stats.approved,
        "denied_window": book.stats.denied, "mode_now": mode.value,
        "last_run_mode": (book.last or {}).get("mode"), "decided_as": book.fired_as}
    if mode is Mode.AUTONOMOUS and _record_gated(book, config) \
            and (book.last or {}).get("mode") == Mode.APPROVAL.value:
        finding = f"its track record now earns autonomy at {level.name}: {words}"
        suggestion = (f"nothing to change: policy runs it autonomously from its next run "
                      f"on ({book.fired_as}; `selfdrive explain {name}`). One verification "
                      f"failure sends it back to approval.")
        return [Recommendation("promote", name, None, finding, evidence, suggestion)]
    if mode is not Mode.APPROVAL or book.stats.denied \
            or book.stats.approved < th.approvals_granted:
        return []
    finding = (f"a human approved all {book.stats.approved} of its runs in the window and "
               f"denied none; {words}")
    if book.rb.approval == "always":
        suggestion = ("it declares approval=\"always\": drop it to let policy decide by its "
                      "record (`selfdrive explain` shows the result).")
        return [Recommendation("promote", name, None, finding, evidence, suggestion)]
    higher = _autonomous_from(book, config, now)
    risk = book.rb.risk.name
    cell = (f"[policy.matrix.{level.name}] {risk} = \"{Rule.AUTO_WITH_RECORD.value}\" "
            f"(autonomous while the record qualifies; it applies to every {risk} runbook)")
    if higher is not None:
        evidence["autonomous_from_level"] = higher.name
        suggestion = (f"at {higher.name} ({higher.title}) it would run autonomously: raise "
                      f"the team's level, or set {cell}.")
    else:
        suggestion = f"consider {cell}."
    return [Recommendation("promote", name, None, finding, evidence, suggestion)]


def _autonomous_from(book: _Book, config: TeamConfig, now: datetime) -> Level | None:
    """The lowest level above the team's where this runbook, as it is, runs autonomously."""
    for level in Level:
        if level <= config.level:
            continue
        higher = config.model_copy(update={"level": level})
        decision, _ = _decide_now(book.rb, higher, book.record, now)
        if decision.mode is Mode.AUTONOMOUS:
            return level
    return None


def _stale(book: _Book, th: Thresholds, now: datetime) -> list[Recommendation]:
    name = book.rb.name
    evidence: dict[str, Any]
    if book.last is None:
        evidence = {"live_runs": 0, "planned_window": book.stats.planned}
        finding = "it has never run"
        suggestion = (f"try it (`selfdrive plan {name}`), drill it on a test target, or "
                      f"delete it if nothing needs it any more: a runbook that never ran "
                      f"has never been proven.")
        return [Recommendation("stale", name, None, finding, evidence, suggestion)]
    started = datetime.fromisoformat(book.last["started_at"])
    idle = now - started
    if idle < th.stale_after:
        return []
    evidence = {"days_since_last_run": round(idle.total_seconds() / 86400, 1),
                "last_run": book.last["id"], "last_started_at": book.last["started_at"],
                "last_outcome": book.last["status"]}
    finding = f"it has not run for {idle.days} days (last: run {book.last['id']})"
    suggestion = (f"plan it again (`selfdrive plan {name}`) to see it still fits the systems "
                  f"it changes, or retire it.")
    return [Recommendation("stale", name, None, finding, evidence, suggestion)]


# -- across runbooks -----------------------------------------------------------------


def _flaky(journal: Journal, books: Mapping[str, _Book], since: str | None,
           th: Thresholds) -> list[Recommendation]:
    # The WHERE terms match idx_steps_verify_retried's, so only retried checks are read.
    sql = ("SELECT r.runbook, s.name, COUNT(DISTINCT s.run_id) AS runs, "
           "MAX(s.attempt) AS worst FROM steps s JOIN runs r ON r.id = s.run_id "
           "WHERE s.phase = 'verify' AND s.kind = 'check' AND s.attempt > 1 "
           "AND s.status = 'ok'")
    params: list[Any] = []
    if since is not None:
        sql += " AND s.started_at >= ?"
        params.append(since)
    out = []
    for row in read(journal, sql + " GROUP BY r.runbook, s.name", params):
        book = books.get(row["runbook"])
        if book is None:
            continue
        verifications = book.stats.verified_successes + book.stats.verification_failures
        share = row["runs"] / verifications if verifications else 1.0
        if row["runs"] < th.flaky_min_runs or share < th.flaky_min_share:
            continue
        evidence = {"check": row["name"], "runs_passed_after_retry": row["runs"],
                    "runs_verified": verifications, "share": round(share, 3),
                    "most_attempts": row["worst"]}
        finding = (f"verification {row['name']} passed only after a retry in {row['runs']} "
                   f"of {verifications} run(s) (up to attempt {row['worst']})")
        suggestion = ("the check races the change it verifies, or depends on something "
                      "unsteady: wait for the condition it checks explicitly (or give it a "
                      "longer interval) so that a retry means trouble, not routine.")
        out.append(Recommendation("flaky", row["runbook"], None, finding, evidence,
                                  suggestion))
    return out


def _uncovered(journal: Journal, registry: Registry,
               since: str | None) -> list[Recommendation]:
    # The WHERE terms match idx_alerts_uncovered's, which covers the whole query.
    sql = ("SELECT name, COUNT(*) AS alerts, COUNT(DISTINCT fingerprint) AS fingerprints, "
           "MIN(received_at) AS first_seen, MAX(received_at) AS last_seen FROM alerts "
           "WHERE status = 'firing' AND matched = '[]'")
    params: list[Any] = []
    if since is not None:
        sql += " AND received_at >= ?"
        params.append(since)
    declared: dict[str, list[str]] = {}
    for rb in registry.runbooks.values():
        for trigger in rb.triggers:
            declared.setdefault(trigger.name, []).append(rb.name)
    out = []
    for row in read(journal, sql + " GROUP BY +name", params):
        name = row["name"]
        if name is None:
            continue
        evidence = {"alerts": row["alerts"], "fingerprints": row["fingerprints"],
                    "first_seen": row["first_seen"], "last_seen": row["last_seen"]}
        last = str(row["last_seen"])[:19].replace("T", " ")
        finding = (f"{row['alerts']} firing alert(s) ({row['fingerprints']} distinct) matched "
                   f"no runbook; last seen {last} UTC")
        if name in declared:
            evidence["declared_by"] = declared[name]
            suggestion = (f"{', '.join(declared[name])} declare(s) alert({name!r}) but its "
                          f"label matchers did not match these: check them against the "
                          f"alerts' labels (`selfdrive alerts --name {name}`).")
        else:
            suggestion = (f"write a runbook with triggers=[alert({name!r})] — a READ_ONLY "
                          f"diagnostic is a safe start — or stop routing this alert here.")
        out.append(Recommendation("uncovered", None, name, finding, evidence, suggestion))
    return out
