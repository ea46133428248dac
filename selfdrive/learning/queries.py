"""The SQL learning runs against the journal, and the small values it needs.

Learning only reads. Its queries live here, next to the indexes they rely on
(migration ``0005_learning_indexes``), so that ``bench/journal_scale.py`` can keep
them fast on a journal of a million runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from selfdrive.journal.core import Journal
from selfdrive.sdk.errors import UsageError
from selfdrive.sdk.vocabulary import parse_duration

#: Statuses a run can only reach by running: its outcome counts in a record.
LIVE_OUTCOMES = ("succeeded", "failed", "verification_failed", "rolled_back",
                 "rollback_failed", "interrupted", "precondition_failed")
#: Outcomes that are a trial of the runbook's work (ranking): it ran past its preconditions
#: and ended one way or the other.
TRIALS = ("succeeded", "failed", "verification_failed", "rolled_back", "rollback_failed")
ROLLBACKS = ("rolled_back", "rollback_failed")
#: A run that succeeded, and one that succeeded with its verification passed.
SUCCEEDED = "status = 'succeeded'"
VERIFIED = "status = 'succeeded' AND verified = 1"
FAILURES = ("failed", "verification_failed", "rolled_back", "rollback_failed", "interrupted")
#: Seconds between two ISO timestamps, in SQL (SQLite keeps milliseconds).
SECONDS = "(julianday({end}) - julianday({start})) * 86400.0"
ALERT_NAME = "json_extract(firing, '$.name')"
IS_ALERT = "json_extract(firing, '$.kind') = 'alert'"
#: The alert name that fired a run, else NULL (a manual or scheduled run).
FIRED_BY = f"CASE WHEN firing IS NOT NULL AND {IS_ALERT} THEN {ALERT_NAME} END"


def read(journal: Journal, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Rows from the journal, by column name."""
    return journal._read(sql, params)


def read_tuples(journal: Journal, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows as plain tuples: for the big reads, where building a dict per row would
    cost more than the query itself."""
    return journal._read_tuples(sql, params)


def count_if(condition: str) -> str:
    """How many rows of a group meet ``condition``, in SQL both databases read (SQLite
    sums booleans; PostgreSQL does not)."""
    return f"SUM(CASE WHEN {condition} THEN 1 ELSE 0 END)"


def marks(values: Sequence[Any]) -> str:
    return ", ".join("?" for _ in values)


def since_of(text: str | None, now: datetime) -> str | None:
    """``"7d"``, ``"2w"``, ``"36h"`` … before ``now`` as a journal timestamp; None for all."""
    if text is None or text.strip().lower() in ("", "all", "ever"):
        return None
    spec = text.strip().lower()
    weeks = re.fullmatch(r"(\d+)w", spec)
    try:
        delta = timedelta(weeks=int(weeks.group(1))) if weeks else parse_duration(spec)
    except ValueError:
        raise UsageError(f"--since {text!r}: use a duration such as 7d, 2w, 36h or 'all'"
                         ) from None
    return stamp(now - delta)


def stamp(moment: datetime) -> str:
    """A moment as the journal writes it (UTC, microseconds), so strings compare in order."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def percentile(sorted_values: Sequence[float], share: float) -> float | None:
    """Nearest-rank percentile of already sorted values (p90: ``share=0.9``)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(share * len(sorted_values)))
    return float(sorted_values[rank - 1])


def median(sorted_values: Sequence[float]) -> float | None:
    n = len(sorted_values)
    if not n:
        return None
    mid = n // 2
    return float(sorted_values[mid] if n % 2 else (sorted_values[mid - 1] + sorted_values[mid]) / 2)


def wilson_lower_bound(successes: int, trials: int, z: float = 1.959964) -> float:
    """Lower end of the Wilson score interval (95 % by default) of a success share.

    Three of three scores lower than ninety of a hundred: the bound rewards evidence,
    not only a perfect but short streak. Zero trials give 0.
    """
    if trials <= 0:
        return 0.0
    p = successes / trials
    z2 = z * z
    centre = p + z2 / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    return max(0.0, (centre - spread) / (1 + z2 / trials))


def seconds_between(start: str | None, end: str | None) -> float | None:
    """Seconds from one journal timestamp to another; None when either is missing."""
    if not start or not end:
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def format_seconds(seconds: float | None) -> str:
    """A duration for people: ``850ms``, ``12.3s``, ``4m05s``, ``2h03m``, ``3d04h``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"
