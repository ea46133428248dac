"""Approvals and locks: what lets a run go ahead, and what keeps two from colliding.

An approval or denial is a row and a chained event written together, and a run's
approval moves it through :meth:`RunStore._move`, the one state-machine move. Locks
are leases on keys, held by a run while it goes on in a live process or while a
command it started outlives it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from selfdrive.journal import chain
from selfdrive.journal.core import utcnow
from selfdrive.journal.processes import group_members, owner_alive
from selfdrive.journal.records import ApprovalRecord, RunRecord
from selfdrive.sdk.vocabulary import RunState

if TYPE_CHECKING:
    from selfdrive.journal.core import Journal


class ApprovalStore:
    """Approvals and denials of runs, each bound to the plan hash it was given for."""

    def __init__(self, db: Journal) -> None:
        self._db = db

    def approve(self, run_id: str, *, actor: str, os_user: str, plan_hash: str,
                reason: str | None, counts: Callable[[str], bool], needed: int,
                expires_at: str) -> tuple[int, bool]:
        """Record ``actor``'s approval of ``plan_hash``; approve the run once enough count.

        One transaction: the run must be pending on that very plan, as the audit chain
        says too; a person approving twice counts once; approvals are counted from the
        chain's ``approval.granted`` events, never from rows alone; ``counts`` says
        whether an approver counts (rules from config). Returns (approvals that count,
        whether the run is now approved).
        """
        from selfdrive.sdk.errors import UsageError

        with self._db._write(f"record approval of run {run_id}") as conn:
            row = conn.execute("SELECT status, plan_hash FROM runs WHERE id = ?",
                               (run_id,)).fetchone()
            if row is None:
                raise UsageError(f"no run {run_id}")
            if row["status"] != RunState.PENDING_APPROVAL.value:
                raise UsageError(f"run {run_id} is {row['status']}, not pending_approval")
            if row["plan_hash"] != plan_hash:
                raise UsageError(f"run {run_id} now waits on plan {row['plan_hash'][:12]}, "
                                 f"not {plan_hash[:12]}")
            self._db._check_chain(conn, run_id, row["status"])
            approvers = {e["actor"] for e in chain.granted(conn, run_id, plan_hash)}
            if actor not in approvers:
                at = utcnow()
                conn.execute("INSERT INTO approvals (run_id, decision, actor, os_user, plan_hash,"
                             " reason, at) VALUES (?, 'approve', ?, ?, ?, ?, ?)",
                             (run_id, actor, os_user, plan_hash, reason, at))
                self._db._append_event(conn, "approval.granted", actor, run_id,
                                       {"plan_hash": plan_hash, "os_user": os_user,
                                        "reason": reason}, at=at)
                approvers.add(actor)
            counted = sum(1 for a in approvers if counts(a))
            approved = counted >= needed
            if approved:
                # Nobody owns an approved run until a process resumes it.
                self._db.runs._move(conn, run_id, RunState.APPROVED, actor=actor,
                                    fields={"owner": None, "expires_at": expires_at},
                                    data={"plan_hash": plan_hash,
                                          "approvers": sorted(approvers),
                                          "expires_at": expires_at})
        return counted, approved

    def deny(self, run_id: str, *, actor: str, os_user: str, reason: str,
             plan_hash: str) -> RunRecord:
        """Deny a run that waits for a human (pending, or approved but not yet run)."""
        from selfdrive.sdk.errors import UsageError

        with self._db._write(f"record denial of run {run_id}") as conn:
            row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise UsageError(f"no run {run_id}")
            current = RunState(row["status"])
            if not current.can_become(RunState.DENIED):
                raise UsageError(f"run {run_id} is {current.value}; only a run waiting for "
                                 f"approval can be denied")
            now = utcnow()
            conn.execute("INSERT INTO approvals (run_id, decision, actor, os_user, plan_hash, "
                         "reason, at) VALUES (?, 'deny', ?, ?, ?, ?, ?)",
                         (run_id, actor, os_user, plan_hash, reason, now))
            # The event shares the row's time: audit matches the two by it.
            return self._db.runs._move(
                conn, run_id, RunState.DENIED, actor=actor, at=now, owned=False,
                fields={"owner": None, "error": f"denied by {actor}: {reason}"},
                data={"plan_hash": plan_hash, "os_user": os_user, "reason": reason})

    def of_run(self, run_id: str) -> list[ApprovalRecord]:
        """The run's approvals and denials, oldest first."""
        rows = self._db._read("SELECT * FROM approvals WHERE run_id = ? ORDER BY id", (run_id,))
        return [ApprovalRecord.from_row(r) for r in rows]

    def granted(self, run_id: str, plan_hash: str) -> list[str]:
        """Who approved this plan of this run, as the audit chain proves it: the actors of
        its ``approval.granted`` events that are links of the chain where they stand."""
        return self._db._query(lambda conn: sorted(
            {e["actor"] for e in chain.granted(conn, run_id, plan_hash)
             if chain.out_of_place(conn, e) is None}))


class LockStore:
    """Leases on keys: one run at a time holds each."""

    def __init__(self, db: Journal) -> None:
        self._db = db

    def acquire(self, key: str, run_id: str, *, ttl: float) -> str | None:
        """Take the lease on ``key`` for ``run_id``; return the holder's run id if taken.

        A lease whose run has ended, whose owner died or whose expiry passed is free,
        unless a command of its run is still running (see :meth:`_lease_held`).
        """
        now = datetime.now(UTC)
        owner = self._db.owner
        with self._db._write(f"take lock {key!r}") as conn:
            row = conn.execute("SELECT l.run_id, l.owner, l.expires_at, l.pgroup, r.status "
                               "FROM locks l LEFT JOIN runs r ON r.id = l.run_id "
                               "WHERE l.key = ?", (key,)).fetchone()
            # The same run held by another live process counts as held too (two resumes).
            if row is not None and (row["run_id"] != run_id or row["owner"] != owner) \
                    and self._lease_held(conn, row, now):
                return str(row["run_id"])
            expires = datetime.fromtimestamp(now.timestamp() + ttl, UTC)
            # A lease taken over starts afresh: no group of the old holder's is kept.
            conn.execute("INSERT INTO locks (key, run_id, owner, acquired_at, expires_at) "
                         "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                         "run_id = excluded.run_id, owner = excluded.owner, "
                         "acquired_at = excluded.acquired_at, "
                         "expires_at = excluded.expires_at, pgroup = NULL",
                         (key, run_id, owner, now.isoformat(), expires.isoformat()))
        return None

    @staticmethod
    def _lease_held(conn: Any, row: Any, now: datetime) -> bool:
        """Whether a lease holds: its run goes on in a live process (within its expiry),
        or a command of its run outlived the run's process. Such a command holds the
        lease, whatever its expiry, until it is gone: recovery ends it (or, failing
        that, names its group on the lease)."""
        if row["pgroup"]:
            return any(group_members(g) != [] for g in row["pgroup"].split())
        if row["status"] is None or RunState(row["status"]).final:
            return False
        if owner_alive(row["owner"]) is not False:
            return datetime.fromisoformat(row["expires_at"]) > now
        groups = conn.execute("SELECT DISTINCT pgroup FROM steps WHERE run_id = ? AND "
                              "status = 'started' AND pgroup IS NOT NULL", (row["run_id"],))
        return any(group_members(g[0]) != [] for g in groups)

    def release(self, key: str, run_id: str) -> None:
        with self._db._write(f"release lock {key!r}") as conn:
            conn.execute("DELETE FROM locks WHERE key = ? AND run_id = ?", (key, run_id))
