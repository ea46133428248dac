"""What the audit chain says about runs and approvals, and the rows that disagree with it.

The ``runs`` and ``approvals`` tables are what selfdrive reads quickly; the
hash-chained ``events`` are what can be proven. Anyone who can write the file can
change a row with sqlite3 and leave the chain intact, so the executor takes a run's
status and its approvals from the chain before it acts on them, and ``audit verify``
names every row that disagrees with the chain. Every status change and every approval
or denial is written with its event in one transaction, so the two never legitimately
differ.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from selfdrive.sdk.vocabulary import RunState

#: Event kinds that record a run's status: ``run.<state>``, one per state change.
STATUS_KINDS: dict[str, RunState] = {f"run.{state.value}": state for state in RunState}
_KIND_MARKS = ", ".join("?" for _ in STATUS_KINDS)
#: The event an approval row is written with, by its decision.
APPROVAL_KINDS = {"approve": "approval.granted", "deny": "run.denied"}


@dataclass(frozen=True)
class Disagreement:
    """A row that the chain does not back, named by its table and id."""

    table: str
    row: str
    run_id: str
    what: str

    def __str__(self) -> str:
        return f"{self.table} row {self.row}: {self.what}"


def last_status(conn: sqlite3.Connection, run_id: str) -> sqlite3.Row | None:
    """The run's latest status event (``run.<state>``), or None if the chain has none."""
    row: sqlite3.Row | None = conn.execute(
        f"SELECT * FROM events WHERE run_id = ? AND kind IN ({_KIND_MARKS}) "
        f"ORDER BY id DESC LIMIT 1", (run_id, *STATUS_KINDS)).fetchone()
    return row


def status_of(conn: sqlite3.Connection, run_id: str, row_status: str) -> str | None:
    """Why the run's row status is not the one its chain ends on (None when it is)."""
    event = last_status(conn, run_id)
    problem = _status_problem(row_status, None if event is None else event["id"],
                              None if event is None else event["kind"])
    return None if problem is None else f"run {run_id}: {problem}"


def _status_problem(status: str, event_id: int | None, kind: str | None) -> str | None:
    if event_id is None or kind is None:
        return f"status {status}, but the audit chain has no status event for it"
    said = STATUS_KINDS[kind].value
    if said != status:
        return (f"status {status}, but its last status event in the audit chain (event "
                f"{event_id}, {kind}) says {said}")
    return None


def granted(conn: sqlite3.Connection, run_id: str, plan_hash: str) -> list[sqlite3.Row]:
    """The chain's ``approval.granted`` events for this run and plan, oldest first (an
    event whose data is not JSON counts for nothing)."""
    return [e for e in conn.execute("SELECT * FROM events WHERE run_id = ? AND "
                                    "kind = 'approval.granted' ORDER BY id", (run_id,))
            if _data(e["data"]).get("plan_hash") == plan_hash]


def out_of_place(conn: sqlite3.Connection, event: sqlite3.Row) -> str | None:
    """Why ``event`` is not a link of the chain where it stands (None when it is): its
    digest, its link to the event before it and the next event's link to it."""
    from selfdrive.journal.core import GENESIS, event_digest

    where = f"event {event['id']} ({event['kind']})"
    try:
        digest = event_digest(event["prev_hash"], event["at"], event["kind"], event["actor"],
                              event["run_id"], event["data"])
    except (TypeError, ValueError):
        digest = ""
    if digest != event["hash"]:
        return f"{where}: its content does not match its digest"
    before = conn.execute("SELECT hash FROM events WHERE id < ? ORDER BY id DESC LIMIT 1",
                          (event["id"],)).fetchone()
    if (before[0] if before else GENESIS) != event["prev_hash"]:
        return f"{where}: does not link to the event before it"
    after = conn.execute("SELECT prev_hash FROM events WHERE id > ? ORDER BY id LIMIT 1",
                         (event["id"],)).fetchone()
    if after is not None and after[0] != event["hash"]:
        return f"{where}: the event after it does not link to it"
    return None


def disagreements(conn: sqlite3.Connection, run_id: str | None = None) -> list[Disagreement]:
    """Rows of ``runs`` and ``approvals`` (all, or one run's) that the chain does not back.

    A run's status must be the one its last status event records (and an approved run's
    plan hash and window the ones its approval recorded); each approval or denial row
    must have its event. For one run, about to be acted on, the events relied on must
    also be links of the chain where they stand; for the whole journal ``audit verify``
    walks every link anyway.
    """
    where, params = ("WHERE r.id = ?", (run_id,)) if run_id is not None else ("", ())
    found: list[Disagreement] = []
    for row in conn.execute(
            f"SELECT r.id, r.status, r.plan_hash, r.expires_at, e.id AS event_id, e.kind, "
            f"e.data FROM runs r LEFT JOIN events e ON e.id = (SELECT id FROM events WHERE "
            f"run_id = r.id AND kind IN ({_KIND_MARKS}) ORDER BY id DESC LIMIT 1) {where} "
            f"ORDER BY r.created_at, r.id", (*STATUS_KINDS, *params)):
        found.extend(Disagreement("runs", row["id"], row["id"], what)
                     for what in _run_problems(row))
    found.extend(_approval_problems(conn, run_id))
    if run_id is not None:
        found.extend(_unchained(conn, run_id))
    return found


def _run_problems(row: sqlite3.Row) -> list[str]:
    problem = _status_problem(row["status"], row["event_id"], row["kind"])
    if problem is not None:
        return [problem]
    if row["status"] != RunState.APPROVED.value:
        return []
    data = _data(row["data"])
    problems = []
    if "plan_hash" in data and data["plan_hash"] != row["plan_hash"]:
        problems.append(f"plan {str(row['plan_hash'])[:12]}, but the audit chain approved "
                        f"plan {str(data['plan_hash'])[:12]} (event {row['event_id']})")
    if "expires_at" in data and data["expires_at"] != row["expires_at"]:
        problems.append(f"approved until {row['expires_at']}, but the audit chain says "
                        f"until {data['expires_at']} (event {row['event_id']})")
    return problems


def _approval_problems(conn: sqlite3.Connection, run_id: str | None) -> list[Disagreement]:
    """Approval and denial rows with no event to match; each event backs one row.

    A row is matched to an event of the same run, decision, actor, OS user, plan and
    reason, and the same time where both were written together (journals written before
    they shared it are matched without it).
    """
    where, params = ("AND run_id = ?", (run_id,)) if run_id is not None else ("", ())
    timed: Counter[tuple[Any, ...]] = Counter()
    for event in conn.execute(f"SELECT kind, actor, run_id, data, at FROM events WHERE kind "
                              f"IN ('approval.granted', 'run.denied') {where}", params):
        data = _data(event["data"])
        timed[(event["run_id"], event["kind"], event["actor"], data.get("os_user"),
               data.get("plan_hash"), data.get("reason"), event["at"])] += 1
    rows = list(conn.execute(f"SELECT * FROM approvals WHERE 1 = 1 {where} ORDER BY id",
                             params))
    keys = {row["id"]: (row["run_id"], APPROVAL_KINDS.get(row["decision"], ""), row["actor"],
                        row["os_user"], row["plan_hash"], row["reason"]) for row in rows}
    left = []
    for row in rows:  # first the rows written with their event
        if timed[(*keys[row["id"]], row["at"])] > 0:
            timed[(*keys[row["id"]], row["at"])] -= 1
        else:
            left.append(row)
    untimed: Counter[tuple[Any, ...]] = Counter()
    for key, n in timed.items():
        untimed[key[:-1]] += n
    found = []
    for row in left:
        if untimed[keys[row["id"]]] > 0:
            untimed[keys[row["id"]]] -= 1
            continue
        kind = keys[row["id"]][1]
        what = "approval" if row["decision"] == "approve" else "denial"
        found.append(Disagreement(
            "approvals", str(row["id"]), row["run_id"],
            f"{what} of run {row['run_id']} by {row['actor']} for plan "
            f"{str(row['plan_hash'])[:12]} has no {kind or 'matching'} event in the audit "
            f"chain"))
    return found


def _unchained(conn: sqlite3.Connection, run_id: str) -> list[Disagreement]:
    """The events the executor would act on, checked as links of the chain."""
    status = last_status(conn, run_id)
    if status is None:
        return []
    relied: Sequence[sqlite3.Row] = [status]
    plan_hash = _data(status["data"]).get("plan_hash")
    if isinstance(plan_hash, str):
        relied = [status, *granted(conn, run_id, plan_hash)]
    return [Disagreement("events", str(event["id"]), run_id, why)
            for event in relied if (why := out_of_place(conn, event)) is not None]


def _data(text: str | None) -> dict[str, Any]:
    try:
        data = json.loads(text or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
