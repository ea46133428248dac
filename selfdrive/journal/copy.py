"""Moving a team's history from one journal to another (SQLite to PostgreSQL, or back).

Every row is copied as it is, ids included, so the audit chain's links and digests stay
what they were: ``audit verify`` passes on the copy and ``audit head`` prints the same
digest. The copy goes into an empty journal only, in one transaction (all or nothing),
while the source's write lock is held, so no run can start or end halfway through it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from selfdrive.journal.audit import AuditReport, head, verify
from selfdrive.journal.core import Journal
from selfdrive.sdk.errors import JournalError, UsageError

#: Every table of the journal, parents before the rows that refer to them.
TABLES = ("runs", "steps", "events", "flags", "locks", "approvals", "alerts", "alert_runs",
          "schedules", "schedule_fires", "alert_deliveries")
BATCH = 1000


@dataclass(frozen=True)
class CopyReport:
    """What was copied, and the audit of the copy beside the source's head."""

    rows: dict[str, int] = field(default_factory=dict)
    source_head: str = ""
    audit: AuditReport | None = None

    @property
    def ok(self) -> bool:
        return self.audit is not None and self.audit.ok and self.audit.head == self.source_head


def copy_journal(source: Journal, target: Journal, *,
                 progress: Callable[[str, int], None] | None = None) -> CopyReport:
    """Copy every row of ``source`` into the empty ``target``; audit the copy."""
    if source.name == target.name:
        raise UsageError(f"journal {source.name} cannot be copied onto itself")
    held = {t: n for t in TABLES if (n := _count(target, t))}
    if held:
        what = ", ".join(f"{n} {t}" for t, n in held.items())
        raise UsageError(f"journal {target.name} is not empty ({what}); a copy goes into an "
                         f"empty journal only, so that its audit chain is the source's")
    rows: dict[str, int] = {}
    # The source's write lock for the whole copy: nothing changes under it.
    with source._write(f"hold still while it is copied to {target.name}") as reader, \
            target._write(f"take the copy of {source.name}") as writer:
        for table in TABLES:
            columns = [c for c in source._columns(reader, table)
                       if c in set(target._columns(writer, table))]
            names = ", ".join(columns)
            marks = ", ".join("?" for _ in columns)
            insert = f"INSERT INTO {table} ({names}) VALUES ({marks})"
            order = "id" if "id" in columns else columns[0]
            copied = 0
            cursor = reader.execute(f"SELECT {names} FROM {table} ORDER BY {order}")
            while batch := cursor.fetchmany(BATCH):
                writer.executemany(insert, [tuple(row[i] for i in range(len(columns)))
                                            for row in batch])
                copied += len(batch)
                if progress is not None:
                    progress(table, copied)
            rows[table] = copied
        target._after_copy(writer, TABLES)
    source_head = head(source)[1]
    report = verify(target)
    if report.head != source_head:
        raise JournalError(f"the copy's audit head {report.head} is not the source's "
                           f"{source_head}")
    return CopyReport(rows=rows, source_head=source_head, audit=report)


def _count(journal: Journal, table: str) -> int:
    return int(journal._read(f"SELECT COUNT(*) AS n FROM {table}")[0]["n"])
