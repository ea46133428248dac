"""Per-runbook records over a window of the journal: what ``selfdrive stats`` prints.

A *live* run is one that started (``started_at`` is set only when a run really ran,
or when its code failed while planning: a crash is a failed run, whatever the mode):
dry-runs, denials, expiries and runs still waiting are counted apart, as requests
that never ran. Durations are ``finished_at - started_at`` of finished live runs
(not interrupted ones: their end is when recovery noticed). Time to resolve runs
from an alert's arrival to the end of a verified success of a run it started.

Every query here reads the window through ``idx_runs_window`` alone (migration 0005):
counting happens in SQLite, and only durations come back row by row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from selfdrive.journal.store import Journal
from selfdrive.learning.queries import (
    FAILURES,
    FIRED_BY,
    ROLLBACKS,
    SECONDS,
    SUCCEEDED,
    VERIFIED,
    count_if,
    marks,
    median,
    percentile,
    read_tuples,
)

_COUNTS = (
    "requests", "runs", "approved", "succeeded", "verified_successes",
    "verification_failures", "rollbacks", "failures", "preconditions_unmet", "planned",
    "denied", "expired", "waiting",
)
_LIVE = "started_at IS NOT NULL"
_COUNT_COLUMNS = "".join(f"{count_if(condition)}, " for condition in (
    _LIVE, f"{_LIVE} AND mode = 'approval'", SUCCEEDED, VERIFIED, f"{_LIVE} AND verified = 0",
    f"status IN ({marks(ROLLBACKS)})", f"{_LIVE} AND status IN ({marks(FAILURES)})",
    f"{_LIVE} AND status = 'precondition_failed'", "status = 'planned'",
    "status = 'denied'", "status = 'expired'", "status IN ('pending_approval', 'approved')"))
# One row per (runbook, alert that fired it), with the columns of the group's latest live
# run: SQLite takes them as bare columns beside MAX(started_at) (its min/max rule);
# PostgreSQL has no such rule, so it picks them from the group's runs in that order.
_COUNT_SQL = {
    "sqlite": ("SELECT runbook, {alert} AS alert, COUNT(*), " + _COUNT_COLUMNS
               + "MAX(started_at), id, status, verified, finished_at FROM runs"),
    "postgresql": ("SELECT runbook, {alert} AS alert, COUNT(*), " + _COUNT_COLUMNS
                   + "MAX(started_at), "
                   + ", ".join(f"(array_agg({c} ORDER BY started_at DESC NULLS LAST))[1]"
                               for c in ("id", "status", "verified", "finished_at"))
                   + " FROM runs"),
}
_DURATION_SQL = (
    "SELECT runbook, {alert}, "
    f"{SECONDS.format(end='finished_at', start='started_at')} FROM runs"
)
# Driven from the window of runs (unary + keeps SQLite off the status index, which
# would read every success ever recorded).
_RESOLVE_SQL = (
    "SELECT r.runbook, {alert}, "
    f"{SECONDS.format(end='r.finished_at', start='a.received_at')} "
    f"FROM runs r JOIN alert_runs c ON c.dedup_key = r.dedup_key "
    f"JOIN alerts a ON a.id = c.alert_id "
    f"WHERE r.dedup_key IS NOT NULL AND +r.status = 'succeeded' AND +r.verified = 1"
)


@dataclass(frozen=True)
class RunbookStats:
    """One runbook's record over a window; ``alert`` set when limited to runs it fired."""

    runbook: str
    alert: str | None
    requests: int = 0
    runs: int = 0
    approved: int = 0
    succeeded: int = 0
    verified_successes: int = 0
    verification_failures: int = 0
    rollbacks: int = 0
    failures: int = 0
    preconditions_unmet: int = 0
    planned: int = 0
    denied: int = 0
    expired: int = 0
    waiting: int = 0
    median_seconds: float | None = None
    p90_seconds: float | None = None
    last_outcome: str | None = None
    last_run: str | None = None
    last_at: str | None = None
    resolved: int = 0
    median_resolve_seconds: float | None = None
    p90_resolve_seconds: float | None = None
    by_alert: tuple[RunbookStats, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "by_alert"}
        if self.alert is None:
            data.pop("alert")
            data["by_alert"] = [a.as_json() for a in self.by_alert]
        else:
            data.pop("runbook")
        return data


@dataclass
class _Group:
    counts: list[int] = field(default_factory=lambda: [0] * len(_COUNTS))
    last: tuple[Any, ...] | None = None   # (started_at, id, status, verified, finished_at)
    durations: list[float] = field(default_factory=list)
    resolves: list[float] = field(default_factory=list)

    def merge(self, other: _Group) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        if other.last is not None and (self.last is None or other.last[0] > self.last[0]):
            self.last = other.last
        self.durations.extend(other.durations)
        self.resolves.extend(other.resolves)

    def freeze(self, runbook: str, alert: str | None,
               by_alert: Iterable[RunbookStats] = ()) -> RunbookStats:
        durations, resolves = sorted(self.durations), sorted(self.resolves)
        outcome = run_id = at = None
        if self.last is not None:
            _, run_id, outcome, verified, at = self.last
            if outcome in ROLLBACKS and verified == 0:
                outcome = f"{outcome} (verification failed)"
        return RunbookStats(
            runbook, alert, **dict(zip(_COUNTS, self.counts, strict=True)),
            median_seconds=median(durations), p90_seconds=percentile(durations, 0.9),
            last_outcome=outcome, last_run=run_id, last_at=at, resolved=len(resolves),
            median_resolve_seconds=median(resolves),
            p90_resolve_seconds=percentile(resolves, 0.9), by_alert=tuple(by_alert))


def _where(since: str | None, runbook: str | None, prefix: str = "") -> tuple[str, list[Any]]:
    terms, params = [], list[Any]()
    if since is not None:
        terms.append(f"{prefix}created_at >= ?")
        params.append(since)
    if runbook is not None:
        terms.append(f"{prefix}runbook = ?")
        params.append(runbook)
    return " AND ".join(terms), params


def runbook_stats(journal: Journal, *, since: str | None, runbook: str | None = None,
                  by_alert: bool = True, durations: bool = True,
                  resolve: bool = True) -> list[RunbookStats]:
    """Each runbook's record over the runs requested since ``since`` (None: all time).

    Sorted by name; each carries ``by_alert``, its records limited to the runs each
    alert name fired. ``by_alert``, ``durations`` and ``resolve`` may be turned off
    when only the runbooks' counts are wanted (``learn``): they cost the most.
    """
    where, params = _where(since, runbook)
    clause = f" WHERE {where}" if where else ""
    fired = FIRED_BY if by_alert else "NULL"
    groups: dict[tuple[str, str | None], _Group] = defaultdict(_Group)
    group_by = " GROUP BY +runbook, alert" if by_alert else " GROUP BY +runbook"
    sql = _COUNT_SQL[journal.dialect].format(alert=fired) + clause + group_by
    for row in read_tuples(journal, sql, [*ROLLBACKS, *FAILURES, *params]):
        group = groups[(row[0], row[1])]
        group.counts = [int(v or 0) for v in row[2:2 + len(_COUNTS)]]
        group.last = row[2 + len(_COUNTS):] if row[2 + len(_COUNTS)] is not None else None
    if durations:
        live = "started_at IS NOT NULL AND finished_at IS NOT NULL AND status != 'interrupted'"
        sql = f"{_DURATION_SQL.format(alert=fired)} WHERE {live}" + (
            f" AND {where}" if where else "")
        for name, fired_by, seconds in read_tuples(journal, sql, params):
            groups[(name, fired_by)].durations.append(seconds)
    if resolve:
        rwhere, rparams = _where(since, runbook, "r.")
        sql = _RESOLVE_SQL.format(alert=fired.replace("firing", "r.firing")) + (
            f" AND {rwhere}" if rwhere else "")
        for name, fired_by, seconds in read_tuples(journal, sql, rparams):
            groups[(name, fired_by)].resolves.append(seconds)
    by_name: dict[str, list[tuple[str | None, _Group]]] = defaultdict(list)
    for (name, alert), group in groups.items():
        by_name[name].append((alert, group))
    out = []
    for name in sorted(by_name):
        total = _Group()
        per_alert = []
        for alert, group in sorted(by_name[name], key=lambda item: str(item[0])):
            total.merge(group)
            if alert is not None:
                per_alert.append(group.freeze(name, alert))
        out.append(total.freeze(name, None, per_alert))
    return out


def empty_stats(runbook: str) -> RunbookStats:
    """The record of a runbook with no request in the window."""
    return RunbookStats(runbook, None)
