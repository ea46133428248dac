"""The legal-history invariant: every run's status history is a path through the state
machine, and it ends where the run's row says.

A run's history is the chain's status events for it (``run.<state>``, oldest first),
the ones :meth:`RunStore._move` writes with each change. It must start ``requested``;
each step must be an edge of ``RunState``'s table (and name, as ``from``, the state it
left); and its last state must be ``runs.status``. A row changed behind selfdrive's
back, or a move that skipped the state machine, breaks one of the three. Tests check
every journal they leave behind (``tests/conftest.py``); it is cheap: two indexed reads.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

from selfdrive.journal.chain import STATUS_KINDS
from selfdrive.sdk.vocabulary import RunState

_SQLITE_MAGIC = b"SQLite format 3\x00"


def illegal_histories(conn: Any) -> list[str]:
    """What is wrong with each run's status history in the journal behind ``conn`` (a
    DB-API connection whose rows index by position), one sentence per problem."""
    marks = ", ".join("?" for _ in STATUS_KINDS)
    statuses = {run_id: status for run_id, status in conn.execute("SELECT id, status FROM runs")}
    histories: dict[str, list[tuple[int, RunState, Any]]] = defaultdict(list)
    for event_id, run_id, kind, data in conn.execute(
            f"SELECT id, run_id, kind, data FROM events WHERE run_id IS NOT NULL AND kind IN "
            f"({marks}) ORDER BY id", list(STATUS_KINDS)):
        histories[run_id].append((event_id, STATUS_KINDS[kind], _said_from(data)))
    problems = []
    for run_id, status in sorted(statuses.items()):
        problems.extend(_problems(run_id, status, histories.pop(run_id, [])))
    problems.extend(f"run {run_id}: the chain has its status history but there is no such run"
                    for run_id in sorted(histories))
    return problems


def _problems(run_id: str, status: str, history: list[tuple[int, RunState, Any]]) -> list[str]:
    if not history:
        return [f"run {run_id}: status {status}, but the chain holds no status history for it"]
    where = f"run {run_id}"
    first_id, first, _ = history[0]
    found = []
    if first is not RunState.REQUESTED:
        found.append(f"{where}: its history starts {first.value} (event {first_id}), "
                     f"not requested")
    for (_, before, _), (event_id, after, said) in itertools.pairwise(history):
        if not before.can_become(after):
            found.append(f"{where}: {before.value} -> {after.value} (event {event_id}) is not a "
                         f"move of the run state machine")
        if said is not None and said != before.value:
            found.append(f"{where}: event {event_id} says it moved from {said}, but the run "
                         f"was {before.value}")
    last_id, last, _ = history[-1]
    if last.value != status:
        found.append(f"{where}: its history ends {last.value} (event {last_id}), but its row "
                     f"says {status}")
    return found


def _said_from(data: str | None) -> Any:
    try:
        value = json.loads(data or "{}")
    except ValueError:
        return None
    return value.get("from") if isinstance(value, dict) else None


def journal_problems(path: Path) -> list[str]:
    """:func:`illegal_histories` of the SQLite journal at ``path``, read in one snapshot
    without migrating or recovering anything; nothing for a file that is not a journal."""
    try:
        with path.open("rb") as handle:
            if handle.read(len(_SQLITE_MAGIC)) != _SQLITE_MAGIC:
                return []
    except OSError:
        return []
    conn = sqlite3.connect(str(path), timeout=10)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE "
                                             "type = 'table'")}
        if not {"runs", "events"} <= tables:
            return []
        conn.execute("BEGIN")  # one snapshot: a move in another process is all or nothing
        try:
            return illegal_histories(conn)
        finally:
            conn.rollback()
    finally:
        conn.close()
