"""Proving the event chain untouched (each event carries the digest of the one before),
and the rows beside it backed by it."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

from selfdrive.journal.chain import Disagreement
from selfdrive.journal.core import GENESIS, Journal, event_digest


@dataclass(frozen=True)
class AuditReport:
    """The outcome of walking the chain; ``broken`` names the first bad event and
    ``disagreements`` every runs or approvals row the chain does not back."""

    checked: int
    head: str
    head_id: int | None
    broken: str | None = None
    disagreements: tuple[Disagreement, ...] = ()
    runs: int = 0
    approvals: int = 0

    @property
    def ok(self) -> bool:
        return self.broken is None and not self.disagreements


def head(journal: Journal) -> tuple[int | None, str]:
    """The last event's id and digest: anchor it outside the journal."""
    rows = journal._read("SELECT id, hash FROM events ORDER BY id DESC LIMIT 1")
    return (rows[0]["id"], rows[0]["hash"]) if rows else (None, GENESIS)


def verify(journal: Journal, *, expect_head: str | None = None) -> AuditReport:
    """Recompute every link; report the first event whose link or digest is wrong, and
    every runs or approvals row that disagrees with the chain.

    With ``expect_head`` (a digest printed earlier by ``audit head``), also report a
    chain that no longer contains it: the tail was truncated or the whole chain
    rewritten.
    """
    links = _walk(journal, expect_head)
    counts = journal._read("SELECT (SELECT COUNT(*) FROM runs) AS runs, "
                           "(SELECT COUNT(*) FROM approvals) AS approvals")[0]
    return replace(links, disagreements=tuple(journal.disagreements()), runs=counts["runs"],
                   approvals=counts["approvals"])


def _walk(journal: Journal, expect_head: str | None) -> AuditReport:
    prev, prev_id, checked = GENESIS, None, 0
    # The genesis digest (what `head` prints for an empty journal) anchors every chain.
    seen_expected = expect_head is None or expect_head == GENESIS
    rows = journal._read("SELECT id, at, kind, actor, run_id, data, prev_hash, hash "
                         "FROM events ORDER BY id")
    for row in rows:
        where = f"event {row['id']} ({row['kind']} at {row['at']})"
        if row["prev_hash"] != prev:
            after = f"event {prev_id}" if prev_id is not None else "the start of the chain"
            return AuditReport(checked, prev, prev_id,
                               f"{where}: does not link to {after} — an event before it was "
                               f"removed, inserted or reordered")
        try:
            json.loads(row["data"])
            digest = event_digest(row["prev_hash"], row["at"], row["kind"], row["actor"],
                                  row["run_id"], row["data"])
        except (TypeError, ValueError):
            digest = ""
        if digest != row["hash"]:
            return AuditReport(checked, prev, prev_id,
                               f"{where}: its content does not match its digest — the event "
                               f"was altered")
        prev, prev_id = row["hash"], row["id"]
        checked += 1
        if expect_head is not None and row["hash"] == expect_head:
            seen_expected = True
    if not seen_expected:
        return AuditReport(checked, prev, prev_id,
                           f"the anchored head {expect_head} is not in the chain — events were "
                           f"truncated or the chain was rewritten")
    return AuditReport(checked, prev, prev_id)
