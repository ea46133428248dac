"""Which of the runbooks one alert matches goes first: the one that resolves it best.

A runbook's record *against that alert name* is its verified successes out of its
trials (live runs the alert fired that got past their preconditions and ended), scored
by the Wilson lower bound so that a long good record beats a short perfect one. Ties,
and runbooks with no record, keep the declared order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from selfdrive.journal.store import Journal
from selfdrive.learning.queries import (
    ALERT_NAME,
    IS_ALERT,
    TRIALS,
    VERIFIED,
    count_if,
    marks,
    read,
    wilson_lower_bound,
)


@dataclass(frozen=True)
class AlertRecord:
    """One runbook's all-time record against one alert name."""

    runbook: str
    alert: str
    trials: int
    verified_successes: int

    @property
    def score(self) -> float:
        return wilson_lower_bound(self.verified_successes, self.trials)


def alert_records(journal: Journal, runbook_names: Sequence[str],
                  alert_name: str) -> dict[str, AlertRecord]:
    """Each named runbook's record against ``alert_name`` (all time; zero when none)."""
    names = list(dict.fromkeys(runbook_names))
    out = {n: AlertRecord(n, alert_name, 0, 0) for n in names}
    if not names:
        return out
    # The expressions match idx_runs_alert_record's exactly, so SQLite uses it.
    rows = read(journal,
                f"SELECT runbook, COUNT(*) AS trials, "
                f"{count_if(VERIFIED)} AS verified FROM runs "
                f"WHERE {IS_ALERT} AND {ALERT_NAME} = ? AND runbook IN ({marks(names)}) "
                f"AND status IN ({marks(TRIALS)}) GROUP BY runbook",
                [alert_name, *names, *TRIALS])
    for row in rows:
        out[row["runbook"]] = AlertRecord(row["runbook"], alert_name, int(row["trials"]),
                                          int(row["verified"] or 0))
    return out


def rank_matches(runbook_names: Sequence[str], alert_name: str, journal: Journal) -> list[str]:
    """``runbook_names`` (declared order) reordered best record against ``alert_name`` first.

    The sort is stable on the Wilson lower bound (95 %) of verified successes per
    trial, so equal scores — and runbooks with no record at all, which score 0 — keep
    the order they were declared in.
    """
    records = alert_records(journal, runbook_names, alert_name)
    return sorted(runbook_names, key=lambda name: -records[name].score)
