"""The journal: a database core (SQLite; numbered migrations, hash-chained events) and
narrow stores on it for runs, approvals, locks, alerts, schedules and flags."""

from selfdrive.journal.records import RunRecord, StepRecord
from selfdrive.journal.store import (
    HALT_FLAG,
    Event,
    Journal,
    SqliteJournal,
    event_digest,
    open_journal,
    process_identity,
    utcnow,
)

__all__ = ["HALT_FLAG", "Event", "Journal", "RunRecord", "SqliteJournal", "StepRecord",
           "event_digest", "open_journal", "process_identity", "utcnow"]
