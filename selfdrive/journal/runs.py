"""Runs and their steps, and the one move that changes a run's status.

:meth:`RunStore._move` is the only code that writes ``runs.status`` after a run is
created: a normal transition, an approval, a denial, an interrupt and crash recovery
all go through it. It refuses any move that ``RunState``'s table
(:data:`selfdrive.sdk.vocabulary.TRANSITIONS`) does not hold, inside the write, so an
illegal move leaves the run and its history exactly as they were; and it writes the
status event of the chain in the same transaction, so the chain is a run's whole
status history (:mod:`selfdrive.journal.history` checks that it is a legal path).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from selfdrive.journal.core import encode, halt_reasons, utcnow
from selfdrive.journal.processes import end_group, owner_alive
from selfdrive.journal.records import RunRecord, StepRecord
from selfdrive.sdk.errors import (
    AuditMismatchError,
    DuplicateRunError,
    IllegalTransitionError,
    JournalError,
)
from selfdrive.sdk.vocabulary import RunState

if TYPE_CHECKING:
    from selfdrive.journal.core import Journal

#: States in which a run belongs to a live process; recovery checks those owners.
OWNED_STATES = (RunState.REQUESTED, RunState.DECIDED, RunState.APPROVED, RunState.RUNNING,
                RunState.ROLLING_BACK)
#: States in which a run may record steps.
STEPPING_STATES = (RunState.DECIDED, RunState.RUNNING, RunState.ROLLING_BACK)


def illegal_move(run_id: str, current: str, to: str, *,
                 why: str = "no such move in the run state machine") -> IllegalTransitionError:
    return IllegalTransitionError(f"run {run_id} is {current}; it cannot become {to} ({why})",
                                  run_id=run_id, current=current, to=to)


class RunStore:
    """Runs, their steps and plans, and what learning and policy read of them."""

    def __init__(self, db: Journal) -> None:
        self._db = db

    # -- the state machine ----------------------------------------------------------

    def _move(self, conn: Any, run_id: str, to: RunState, *, actor: str,
              data: dict[str, Any] | None = None, fields: dict[str, Any] | None = None,
              at: str | None = None, owned: bool = True) -> RunRecord:
        """Move the run to ``to`` and chain its status event, inside the caller's write.

        Refused, before anything is written: a move the table does not hold
        (:class:`IllegalTransitionError`), a run whose row disagrees with its chain, and
        (with ``owned``) a run that a live process other than this one owns.
        """
        row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise JournalError(f"no run {run_id}")
        current = RunState(row["status"])
        if not current.can_become(to):
            raise illegal_move(run_id, current.value, to.value)
        self._db._check_chain(conn, run_id, current.value)
        if owned and row["owner"] not in (None, self._db.owner) and current in OWNED_STATES:
            raise JournalError(f"run {run_id} is owned by {row['owner']}, not this process")
        now = at or utcnow()
        asked = fields or {}
        values = encode({"status": to, "updated_at": now, **asked})
        if to is RunState.RUNNING and "started_at" not in asked:
            values["started_at"] = now
        if to.final and "finished_at" not in asked:
            values["finished_at"] = now
        sets = ", ".join(f"{k} = ?" for k in values)
        conn.execute(f"UPDATE runs SET {sets} WHERE id = ? AND status = ?",
                     [*values.values(), run_id, current.value])
        self._db._append_event(conn, f"run.{to.value}", actor, run_id,
                               {"from": current.value, **(data or {})}, at=at)
        # The row as written: what reading it back would give, without the read.
        return RunRecord.from_row({**dict(row), **values})

    def transition(self, run_id: str, to: RunState, *, actor: str,
                   data: dict[str, Any] | None = None, **fields: Any) -> RunRecord:
        """Move a run this process owns (or that no process owns) to ``to``."""
        with self._db._write(f"move run {run_id} to {to.value}") as conn:
            return self._move(conn, run_id, to, actor=actor, data=data, fields=fields)

    # -- runs -----------------------------------------------------------------------

    def create(self, fields: dict[str, Any], *, actor: str) -> RunRecord:
        """Record a run request; it starts ``requested``, owned by this process."""
        if fields.get("status", RunState.REQUESTED) != RunState.REQUESTED:
            raise illegal_move(str(fields.get("id")), "nothing", str(fields["status"]),
                               why="every run starts requested")
        now = utcnow()
        row = encode({"status": RunState.REQUESTED, "owner": self._db.owner,
                      "created_at": now, "updated_at": now, **fields})
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self._db._write("record the run request") as conn:
            # A key someone holds (the run id, the dedup key) inserts nothing: no error
            # to catch, which would end the whole transaction on PostgreSQL.
            inserted = conn.execute(f"INSERT INTO runs ({cols}) VALUES ({marks}) "
                                    f"ON CONFLICT DO NOTHING RETURNING id",
                                    list(row.values())).fetchone()
            if inserted is None:
                key = fields.get("dedup_key")
                held = key and conn.execute("SELECT id, status FROM runs WHERE dedup_key = ?",
                                            (key,)).fetchone()
                if held:
                    raise DuplicateRunError(
                        f"run {fields.get('id')} not recorded: run {held['id']} "
                        f"({held['status']}) already holds dedup key {key!r}",
                        run_id=held["id"]) from None
                raise JournalError(f"run {fields.get('id')} not recorded: a run with that id "
                                   f"is in the journal already")
            self._db._append_event(conn, "run.requested", actor, row["id"],
                                   {"runbook": row["runbook"],
                                    "params": fields.get("params", {})})
            return RunRecord.from_row({**dict.fromkeys(self._db._columns(conn, "runs")),
                                       **row})

    def get(self, run_id: str) -> RunRecord:
        """The run with this id, or the one run whose id starts with it."""
        rows = self._db._read("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            rows = self._db._read("SELECT * FROM runs WHERE id LIKE ? ORDER BY created_at DESC "
                                  "LIMIT 2", (run_id.replace("%", "") + "%",))
            if len(rows) != 1:
                from selfdrive.sdk.errors import UsageError

                what = "no run" if not rows else "more than one run starts with"
                raise UsageError(f"{what} {run_id!r} in {self._db.name}")
        return RunRecord.from_row(rows[0])

    def find(self, *, runbook: str | None = None, status: Sequence[str] = (),
             limit: int = 50) -> list[RunRecord]:
        """Runs newest first, of one runbook and in some states if asked."""
        where, params = [], []
        if runbook:
            where.append("runbook = ?")
            params.append(runbook)
        if status:
            where.append(f"status IN ({', '.join('?' for _ in status)})")
            params.extend(status)
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        return [RunRecord.from_row(r) for r in self._db._read(sql, [*params, limit])]

    def for_dedup_key(self, key: str) -> RunRecord | None:
        rows = self._db._read("SELECT * FROM runs WHERE dedup_key = ?", (key,))
        return RunRecord.from_row(rows[0]) if rows else None

    # -- steps ----------------------------------------------------------------------

    def begin_step(self, run_id: str, *, phase: str, kind: str, fence_halt: bool = False,
                   **fields: Any) -> int:
        """Write a step's intent. Fenced: the run must still be ours and stepping."""
        with self._db._write("record a step before it runs") as conn:
            row = conn.execute("SELECT status, owner FROM runs WHERE id = ?",
                               (run_id,)).fetchone()
            if row is None:
                raise JournalError(f"no run {run_id}")
            if row["status"] not in STEPPING_STATES or row["owner"] != self._db.owner:
                raise JournalError(f"run {run_id} is {row['status']} and owned by "
                                   f"{row['owner']}; this process may not act for it")
            if fence_halt and (reasons := halt_reasons(conn)) is not None:
                from selfdrive.sdk.errors import HaltedError

                raise HaltedError(f"autonomy was halted while the run was going: "
                                  f"{'; '.join(reasons)}")
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE run_id = ?",
                               (run_id,)).fetchone()[0]
            values = encode({"run_id": run_id, "seq": seq, "phase": phase, "kind": kind,
                             "status": "started", "started_at": utcnow(), **fields})
            cols = ", ".join(values)
            marks = ", ".join("?" for _ in values)
            cur = conn.execute(f"INSERT INTO steps ({cols}) VALUES ({marks}) RETURNING id",
                               list(values.values()))
            return int(cur.fetchall()[0][0])

    def finish_step(self, step_id: int, *, status: str, **fields: Any) -> None:
        """Write a step's result; a step that an interruption already settled stays so."""
        values = encode({"status": status, "finished_at": utcnow(), **fields})
        sets = ", ".join(f"{k} = ?" for k in values)
        with self._db._write("record a step's result") as conn:
            conn.execute(f"UPDATE steps SET {sets} WHERE id = ? AND status = 'started'",
                         [*values.values(), step_id])

    def add_plan_steps(self, run_id: str, plan_hash: str,
                       steps: Sequence[dict[str, Any]]) -> None:
        """Record what a plan saw and would change, in one transaction (not effects)."""
        with self._db._write(f"record the plan of run {run_id}") as conn:
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM steps WHERE run_id = ?",
                               (run_id,)).fetchone()[0]
            now = utcnow()
            for step in steps:
                seq += 1
                values = encode({"run_id": run_id, "seq": seq, "plan_hash": plan_hash,
                                 "started_at": now, "finished_at": now, **step})
                cols = ", ".join(values)
                marks = ", ".join("?" for _ in values)
                conn.execute(f"INSERT INTO steps ({cols}) VALUES ({marks})",
                             list(values.values()))

    def steps(self, run_id: str) -> list[StepRecord]:
        rows = self._db._read("SELECT * FROM steps WHERE run_id = ? ORDER BY seq", (run_id,))
        return [StepRecord.from_row(r) for r in rows]

    # -- what learning and policy read --------------------------------------------------

    def recent_outcomes(self, runbook: str, limit: int) -> list[tuple[str, bool | None]]:
        """(status, verified) of the latest finished live runs, newest first.

        ``verified`` is True when verification passed, False when it failed, None when
        no verification ran.
        """
        rows = self._db._read(
            "SELECT status, verified FROM runs WHERE runbook = ? AND mode != 'dry-run' "
            "AND status IN ('succeeded', 'failed', 'verification_failed', 'rolled_back', "
            "'rollback_failed', 'interrupted') ORDER BY created_at DESC LIMIT ?",
            (runbook, limit))
        return [(r["status"], None if r["verified"] is None else bool(r["verified"]))
                for r in rows]

    def verified_successes(self, runbook: str) -> int:
        rows = self._db._read("SELECT COUNT(*) AS n FROM runs WHERE runbook = ? AND "
                              "status = 'succeeded' AND verified = 1 AND mode != 'dry-run'",
                              (runbook,))
        return int(rows[0]["n"])

    def count(self, *, since: str, mode: str, runbook: str | None = None) -> int:
        sql = "SELECT COUNT(*) AS n FROM runs WHERE mode = ? AND created_at >= ?"
        params: list[Any] = [mode, since]
        if runbook is not None:
            sql += " AND runbook = ?"
            params.append(runbook)
        return int(self._db._read(sql, params)[0]["n"])

    def rate_counts(self, *, since: str, mode: str, runbook: str) -> tuple[int, int]:
        """(runs of ``runbook``, runs in all) in ``mode`` created since ``since``.

        What rate limits read at every decision: one range scan of the window index
        (migration 0005) answers both, without visiting the runs table.
        """
        rows = self._db._read(
            f"SELECT COUNT(*) AS total, "
            f"COALESCE(SUM(CASE WHEN runbook = ? THEN 1 ELSE 0 END), 0) AS own "
            f"FROM runs {self._db._hint('idx_runs_window')} "
            f"WHERE created_at >= ? AND mode = ?", (runbook, since, mode))
        return int(rows[0]["own"]), int(rows[0]["total"])

    # -- interruption and crash recovery ------------------------------------------------

    def interrupt(self, run_id: str, *, actor: str, reason: str) -> RunRecord:
        """Mark this process's own unfinished run ``interrupted`` (a stop was forced).

        Like crash recovery, but for a run that is still ours: marked first (the run's
        own thread can record nothing more), then its command in flight is killed; its
        step's outcome becomes ``unknown``; nothing is re-run; its lock goes once
        nothing of that command is left.
        """
        with self._db._write(f"mark run {run_id} interrupted") as conn:
            row = conn.execute("SELECT status, owner FROM runs WHERE id = ?",
                               (run_id,)).fetchone()
            if row is None:
                raise JournalError(f"no run {run_id}")
            current = RunState(row["status"])
            if not current.can_become(RunState.INTERRUPTED) or row["owner"] != self._db.owner:
                return RunRecord.from_row(dict(conn.execute(
                    "SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()))
            groups = self._mark_interrupted(
                conn, run_id, actor=actor, owned=True,
                step_error=f"stopped during this step ({reason}); its outcome is unknown",
                error=f"{reason} while the run was {current.value}; not re-run",
                data={"reason": reason})
        self._end_commands(run_id, groups)
        return self.get(run_id)

    def recover(self) -> list[str]:
        """Mark runs whose owning process died as ``interrupted``; never re-run them.

        Then the command each one was running is ended: its process group (recorded
        with the step's intent) is killed, on this host, as far as this user may. A
        run's lock is released only once nothing of that group is left; otherwise the
        lock stays, naming the group, until a later recovery finds it gone. A run whose
        row disagrees with its chain is left alone: ``audit verify`` names it.
        """
        owned = [s.value for s in OWNED_STATES]
        marks = ", ".join("?" for _ in owned)
        candidates = self._db._read(f"SELECT id, owner FROM runs WHERE status IN ({marks})",
                                    owned)
        dead = [r["id"] for r in candidates
                if r["owner"] and r["owner"] != self._db.owner
                and owner_alive(r["owner"]) is False]
        recovered = []
        for run_id in dead:
            try:
                with self._db._write(f"mark run {run_id} interrupted") as conn:
                    row = conn.execute("SELECT status, owner FROM runs WHERE id = ?",
                                       (run_id,)).fetchone()
                    if row is None or row["status"] not in owned \
                            or owner_alive(row["owner"]) is not False:
                        continue
                    groups = self._mark_interrupted(
                        conn, run_id, actor="selfdrive", owned=False,
                        step_error="the process died during this step; its outcome is unknown",
                        error=(f"process {row['owner']} died while the run was "
                               f"{row['status']}; not re-run"),
                        data={"dead_owner": row["owner"]})
            except AuditMismatchError:
                continue
            self._end_commands(run_id, groups)
            recovered.append(run_id)
        self._release_kept_locks()
        return recovered

    def _mark_interrupted(self, conn: Any, run_id: str, *, actor: str, owned: bool,
                          step_error: str, error: str, data: dict[str, Any]) -> list[str]:
        """Mark the run interrupted and its steps in flight ``unknown``. Returns the process
        groups of those steps; the run's lock now holds exactly while they live."""
        groups = [r[0] for r in conn.execute(
            "SELECT DISTINCT pgroup FROM steps WHERE run_id = ? AND status = 'started' "
            "AND pgroup IS NOT NULL ORDER BY pgroup", (run_id,))]
        now = utcnow()
        unknown = conn.execute(
            "UPDATE steps SET status = 'unknown', finished_at = ?, error = ? "
            "WHERE run_id = ? AND status = 'started'", (now, step_error, run_id)).rowcount
        self._move(conn, run_id, RunState.INTERRUPTED, actor=actor, owned=owned,
                   fields={"finished_at": now, "updated_at": now, "error": error},
                   data={**data, "steps_outcome_unknown": unknown})
        if groups:
            conn.execute("UPDATE locks SET pgroup = ? WHERE run_id = ?",
                         (" ".join(groups), run_id))
        else:
            conn.execute("DELETE FROM locks WHERE run_id = ?", (run_id,))
        return groups

    def _end_commands(self, run_id: str, groups: list[str]) -> None:
        """Kill the process groups of an interrupted run's commands, then release its
        lock; what cannot be killed keeps the lock, and the run's error says so."""
        if not groups:
            return
        left = {g: pids for g in groups if (pids := end_group(g)) != []}
        with self._db._write(f"release the lock of run {run_id}") as conn:
            held = conn.execute("SELECT key FROM locks WHERE run_id = ?", (run_id,)).fetchone()
            if not left:
                conn.execute("DELETE FROM locks WHERE run_id = ?", (run_id,))
                return
            conn.execute("UPDATE locks SET pgroup = ? WHERE run_id = ?", (" ".join(left), run_id))
            why = "; ".join(
                f"process group {g} outlived it ("
                + (f"processes {', '.join(map(str, pids))} could not be stopped" if pids
                   else "it lives on another host") + ")" for g, pids in left.items())
            lock = f"; lock {held['key']!r} stays held until they end" if held else ""
            conn.execute("UPDATE runs SET error = error || ? WHERE id = ?",
                         (f"; its command's {why}{lock}", run_id))
            self._db._append_event(conn, "lock.kept", "selfdrive", run_id,
                                   {"key": held["key"] if held else None,
                                    "processes_left": left})

    def _release_kept_locks(self) -> None:
        """Locks kept for groups that outlived their run: try to end them again; release
        each lock once its groups are gone."""
        for row in self._db._read("SELECT key, run_id, pgroup FROM locks "
                                  "WHERE pgroup IS NOT NULL"):
            if any(end_group(g) != [] for g in row["pgroup"].split()):
                continue
            with self._db._write(f"release lock {row['key']!r}") as conn:
                gone = conn.execute("DELETE FROM locks WHERE key = ? AND run_id = ? AND "
                                    "pgroup = ?", (row["key"], row["run_id"], row["pgroup"]))
                if gone.rowcount:
                    self._db._append_event(conn, "lock.released", "selfdrive", row["run_id"],
                                           {"key": row["key"], "pgroup": row["pgroup"],
                                            "why": "the processes that kept it are gone"})

