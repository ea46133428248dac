"""Track records: what the journal says about a runbook, in the shape policy reads."""

from __future__ import annotations

from selfdrive.config.model import TrackRecordRule
from selfdrive.journal.store import Journal
from selfdrive.policy.decide import TrackRecord


def track_record(journal: Journal, runbook: str, rule: TrackRecordRule) -> TrackRecord:
    """The runbook's verified successes and its latest outcomes, newest first."""
    recent = tuple(
        "verification_failed" if verified is False else status
        for status, verified in journal.runs.recent_outcomes(runbook, rule.window)
    )
    return TrackRecord(verified_successes=journal.runs.verified_successes(runbook), recent=recent)
