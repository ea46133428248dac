"""Alerts and schedules: what the triggers record, and the claims that keep one run per
alert and one fire per schedule across threads, processes and machines.

The stores offer the atomic claim; the rules stay with the triggers
(:mod:`selfdrive.triggers.rules`). Each claim reads what holds its key inside the
write transaction and asks the rule about it there, so the rule's answer and the claim
it allows are one indivisible step: two receivers (or schedulers) never both win.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from selfdrive.journal.core import before, canonical, not_after, utcnow

if TYPE_CHECKING:
    from selfdrive.journal.core import Journal

#: Asked about the latest claim on a key (``alert_id``, ``claimed_at``, ``run_id``, and
#: ``status``: its run's, or None while no run is recorded) at journal time ``now``:
#: why a new claim on that key is a duplicate of it, or None when it is not.
DuplicateRule = Callable[[dict[str, Any], str], "str | None"]
#: Asked about a schedule's earlier fire still marked claimed (``fire_time``, ``owner``,
#: ``claimed_at``) at journal time ``now``: why it is still in progress (then a new
#: fire would overlap it and is skipped), or None when it is over (it was interrupted).
OverlapRule = Callable[[dict[str, Any], str], "str | None"]


class AlertStore:
    """Alerts received, refused requests sampled, and the claims alerts make on runs."""

    def __init__(self, db: Journal) -> None:
        self._db = db

    _ALERT_JSON = ("labels", "annotations", "matched")

    def record(self, alerts: Sequence[dict[str, Any]], *, duplicate: DuplicateRule,
               replay_window: float = 0.0) -> list[dict[str, Any]]:
        """Journal received alerts and claim the runs they start, in one transaction.

        Each alert is a dict of ``alerts`` columns plus ``claims``: dicts with
        ``runbook``, ``outcome`` ("claim" or "error"), ``dedup_key``, ``detail`` and
        ``diagnostic``. A claim is on the key (runbook, fingerprint): it becomes ``queued``
        unless the ``duplicate`` rule says the latest claim on that key still holds;
        then it is a ``duplicate`` naming that claim's run, with the rule's words.
        Asking inside the write transaction is what makes dedup hold across threads
        and processes. Returns, per alert, its ``id``, ``status``, ``reason`` and its
        claim rows.

        Within ``replay_window`` seconds two more things are remembered. An alert whose
        ``deliveries`` (the sender's ids for a delivery) were seen before is a replay:
        nothing new is written but a count on the alert it repeats, and it comes back
        with ``replay`` true and that alert's id. A firing alert that began no later
        than the latest resolution of its fingerprint (same source) replays something
        already over: it is journaled as ``ignored`` and claims nothing.
        """
        out: list[dict[str, Any]] = []
        with self._db._write(f"record {len(alerts)} alert(s)") as conn:
            for alert in alerts:
                fields = {k: v for k, v in alert.items() if k not in ("claims", "deliveries")}
                fields.setdefault("received_at", utcnow())
                now = fields["received_at"]
                since = before(now, replay_window)
                keys = list(alert.get("deliveries") or ())
                replayed = self._replayed(conn, keys, now, since) if keys and since else None
                if replayed is not None:
                    out.append(replayed)
                    continue
                claims_asked = list(alert.get("claims", ()))
                over = self._resolved_before(conn, fields, since) if since else None
                if over is not None:
                    fields["status"] = "ignored"
                    fields["reason"] = over
                    claims_asked = []
                row = {k: (canonical(v) if k in self._ALERT_JSON else v)
                       for k, v in fields.items()}
                cols = ", ".join(row)
                marks = ", ".join("?" for _ in row)
                alert_id = int(conn.execute(
                    f"INSERT INTO alerts ({cols}) VALUES ({marks}) RETURNING id",
                    list(row.values())).fetchall()[0][0])
                for key in keys:
                    conn.execute("INSERT INTO alert_deliveries (key, alert_id, seen_at) "
                                 "VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                                 "alert_id = excluded.alert_id, seen_at = excluded.seen_at",
                                 (key, alert_id, now))
                claims = [self._claim_run(conn, alert_id, fields, claim, now, duplicate)
                          for claim in claims_asked]
                out.append({"id": alert_id, "status": fields.get("status"),
                            "reason": fields.get("reason"), "replay": False,
                            "claims": claims})
            if replay_window and any(alert.get("deliveries") for alert in alerts):
                # Forget what no replay can be checked against any more: bounded storage.
                conn.execute("DELETE FROM alert_deliveries WHERE seen_at < ?",
                             (before(utcnow(), replay_window),))
        return out

    @staticmethod
    def _replayed(conn: Any, keys: list[str], now: str,
                  since: str) -> dict[str, Any] | None:
        """A delivery seen before: count it on the alert it repeats, record nothing else."""
        marks = ", ".join("?" for _ in keys)
        seen = conn.execute(f"SELECT d.alert_id, a.status FROM alert_deliveries d "
                            f"JOIN alerts a ON a.id = d.alert_id "
                            f"WHERE d.key IN ({marks}) AND d.seen_at >= ? "
                            f"ORDER BY d.seen_at LIMIT 1", [*keys, since]).fetchone()
        if seen is None:
            return None
        conn.execute("UPDATE alerts SET requests = COALESCE(requests, 1) + 1, last_at = ? "
                     "WHERE id = ?", (now, seen["alert_id"]))
        return {"id": seen["alert_id"], "status": seen["status"], "replay": True,
                "reason": f"a replay of the delivery journaled as alert #{seen['alert_id']}",
                "claims": []}

    @staticmethod
    def _resolved_before(conn: Any, alert: dict[str, Any],
                         since: str) -> str | None:
        """Why a firing alert repeats one already resolved, or None if it does not."""
        began = alert.get("starts_at")
        if alert.get("status") != "firing" or not began:
            return None
        row = conn.execute("SELECT id, starts_at FROM alerts WHERE status = 'resolved' AND "
                           "fingerprint = ? AND source = ? AND received_at >= ? "
                           "ORDER BY id DESC LIMIT 1",
                           (alert.get("fingerprint"), alert.get("source"), since)).fetchone()
        if row is None or not not_after(began, row["starts_at"]):
            return None
        return (f"a replay: it began at {began}, not after alert #{row['id']} resolved this "
                f"fingerprint ({row['starts_at']}); starts nothing")

    def _claim_run(self, conn: Any, alert_id: int, alert: dict[str, Any],
                   claim: dict[str, Any], now: str, duplicate: DuplicateRule) -> dict[str, Any]:
        runbook, fingerprint = claim["runbook"], alert.get("fingerprint")
        outcome, detail, key, run_id = claim["outcome"], claim.get("detail"), None, None
        if outcome == "claim":
            outcome, key = "queued", claim["dedup_key"]
            row = conn.execute(
                "SELECT a.alert_id, a.claimed_at, COALESCE(r.id, a.run_id) AS run_id, "
                "r.status FROM alert_runs a LEFT JOIN runs r ON r.dedup_key = a.dedup_key "
                "WHERE a.runbook = ? AND a.fingerprint = ? AND a.dedup_key IS NOT NULL "
                "ORDER BY a.id DESC LIMIT 1", (runbook, fingerprint)).fetchone()
            why = None if row is None else duplicate(dict(row), now)
            if why is not None:
                outcome, key, run_id, detail = "duplicate", None, row["run_id"], why
        claim_id = conn.execute(
            "INSERT INTO alert_runs (alert_id, runbook, fingerprint, dedup_key, run_id, "
            "outcome, detail, diagnostic, owner, claimed_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (alert_id, runbook, fingerprint, key, run_id, outcome, detail,
             int(bool(claim.get("diagnostic"))), self._db.owner, now, now)).fetchall()[0][0]
        return {"id": int(claim_id), "alert_id": alert_id, "runbook": runbook,
                "fingerprint": fingerprint, "dedup_key": key, "run_id": run_id,
                "outcome": outcome, "detail": detail,
                "diagnostic": bool(claim.get("diagnostic")), "claimed_at": now}

    def record_refusals(self, refusals: Sequence[dict[str, Any]]) -> list[int]:
        """Journal refused requests (never their body or credentials), sampled.

        A dict with an ``id`` adds ``requests`` more refusals to that row; one without
        is a new row with ``source``, ``reason``, ``http_status``, ``remote``,
        ``received_at`` and ``requests``. ``last_at`` is when the latest arrived.
        Returns the row ids, in order, all written in one transaction.
        """
        ids: list[int] = []
        with self._db._write(f"record {len(refusals)} sample(s) of refused requests") as conn:
            for r in refusals:
                if r.get("id") is not None:
                    conn.execute("UPDATE alerts SET requests = COALESCE(requests, 1) + ?, "
                                 "last_at = ? WHERE id = ?",
                                 (r["requests"], r["last_at"], r["id"]))
                    ids.append(int(r["id"]))
                    continue
                ids.append(int(conn.execute(
                    "INSERT INTO alerts (received_at, source, status, reason, http_status, "
                    "remote, requests, last_at) VALUES (?, ?, 'refused', ?, ?, ?, ?, ?) "
                    "RETURNING id",
                    (r.get("received_at") or utcnow(), r["source"], r["reason"],
                     r["http_status"], r.get("remote"), r.get("requests", 1),
                     r.get("last_at"))).fetchall()[0][0]))
        return ids

    def update_claim(self, claim_id: int, *, outcome: str, run_id: str | None = None,
                           detail: str | None = None) -> None:
        with self._db._write(f"record the outcome of alert claim {claim_id}") as conn:
            conn.execute("UPDATE alert_runs SET outcome = ?, run_id = COALESCE(?, run_id), "
                         "detail = COALESCE(?, detail), updated_at = ? WHERE id = ?",
                         (outcome, run_id, detail, utcnow(), claim_id))

    def set_brief(self, alert_id: int, brief: str) -> None:
        with self._db._write(f"store the brief of alert {alert_id}") as conn:
            conn.execute("UPDATE alerts SET brief = ? WHERE id = ?", (brief, alert_id))

    def _alert_row(self, row: dict[str, Any]) -> dict[str, Any]:
        for key in self._ALERT_JSON:
            row[key] = json.loads(row[key]) if row.get(key) else ({} if key != "matched"
                                                                   else [])
        return row

    def find(self, *, limit: int = 50, name: str | None = None) -> list[dict[str, Any]]:
        """Received alerts, newest first, each with its claims (runbook, outcome, run)."""
        sql, params = "SELECT * FROM alerts", list[Any]()
        if name is not None:
            sql += " WHERE name = ?"
            params.append(name)
        rows = self._db._read(sql + " ORDER BY id DESC LIMIT ?", [*params, limit])
        if not rows:
            return []
        ids = [r["id"] for r in rows]
        claims: dict[int, list[dict[str, Any]]] = {}
        marks = ", ".join("?" for _ in ids)
        for claim in self._db._read(f"SELECT a.*, r.status AS run_status FROM alert_runs a "
                                f"LEFT JOIN runs r ON r.id = a.run_id "
                                f"WHERE a.alert_id IN ({marks}) ORDER BY a.id", ids):
            claim["diagnostic"] = bool(claim["diagnostic"])
            claims.setdefault(claim["alert_id"], []).append(claim)
        return [self._with_claims(r, claims.get(r["id"], [])) for r in rows]

    def get(self, alert_id: int) -> dict[str, Any] | None:
        rows = self._db._read("SELECT * FROM alerts WHERE id = ?", (alert_id,))
        if not rows:
            return None
        return self._with_claims(rows[0], self.claims(alert_id=alert_id))

    def _with_claims(self, row: dict[str, Any], claims: list[dict[str, Any]]) -> dict[str, Any]:
        """The alert with its claims and ``run_ids``: the runs its own claims started (a
        duplicate claim only points at another alert's run, and has no dedup key)."""
        runs = [c["run_id"] for c in claims if c["run_id"] and c["dedup_key"]]
        return {**self._alert_row(row), "claims": claims, "run_ids": list(dict.fromkeys(runs))}

    def run_alert_ids(self, run_ids: Sequence[str]) -> dict[str, int]:
        """The alert that started each run, for the runs an alert started."""
        if not run_ids:
            return {}
        marks = ", ".join("?" for _ in run_ids)
        rows = self._db._read(f"SELECT r.id AS run_id, a.alert_id FROM runs r "
                          f"JOIN alert_runs a ON a.dedup_key = r.dedup_key "
                          f"WHERE r.id IN ({marks}) AND r.dedup_key LIKE 'alert:%'",
                          list(run_ids))
        return {r["run_id"]: int(r["alert_id"]) for r in rows}

    def claims(self, *, alert_id: int | None = None,
                     outcome: str | None = None) -> list[dict[str, Any]]:
        where: list[str] = []
        params: list[Any] = []
        if alert_id is not None:
            where.append("a.alert_id = ?")
            params.append(alert_id)
        if outcome is not None:
            where.append("a.outcome = ?")
            params.append(outcome)
        sql = ("SELECT a.*, r.status AS run_status FROM alert_runs a "
               "LEFT JOIN runs r ON r.id = a.run_id"
               + (" WHERE " + " AND ".join(where) if where else ""))
        rows = self._db._read(sql + " ORDER BY a.id", params)
        for row in rows:
            row["diagnostic"] = bool(row["diagnostic"])
        return rows


class ScheduleStore:
    """The latest fire handled per schedule, and each fire claimed, missed or skipped."""

    def __init__(self, db: Journal) -> None:
        self._db = db

    def last_fire(self, schedule_id: str) -> str | None:
        rows = self._db._read("SELECT last_fire FROM schedules WHERE id = ?", (schedule_id,))
        return rows[0]["last_fire"] if rows else None

    def claim_fire(self, schedule_id: str, *, fire_time: str | None,
                   missed: Sequence[str] = (), missed_total: int | None = None,
                   overlaps: OverlapRule, seen: str | None = None) -> dict[str, Any]:
        """Claim one fire of a schedule (and journal the fires it missed), atomically.

        Fire times are UTC ISO strings. Nothing is claimed when the schedule's latest
        handled fire is at or after ``fire_time`` (another scheduler got there first),
        or when the ``overlaps`` rule says an earlier fire of it, still marked claimed,
        is in progress (this one is recorded ``skipped``, with the rule's words); an
        earlier fire the rule calls over is recorded ``interrupted``. ``seen`` is a
        fire time to remember as handled without running it (a schedule's first sight).
        """
        now = utcnow()
        newest = max([t for t in (fire_time, seen, *missed) if t], default=None)
        with self._db._write(f"claim a fire of schedule {schedule_id!r}") as conn:
            row = conn.execute("SELECT last_fire FROM schedules WHERE id = ?",
                               (schedule_id,)).fetchone()
            last = row["last_fire"] if row else None
            if last is not None and newest is not None and last >= newest:
                return {"claimed": False, "status": "taken", "missed": 0,
                        "detail": f"fire {newest} was already handled (latest handled: {last})"}
            fresh = [t for t in missed if last is None or t > last]
            for at in fresh:
                conn.execute("INSERT INTO schedule_fires (schedule_id, fire_time, status, "
                             "owner, claimed_at, detail) VALUES (?, ?, 'missed', ?, ?, ?) "
                             "ON CONFLICT (schedule_id, fire_time) DO NOTHING",
                             (schedule_id, at, self._db.owner, now,
                              "the scheduler was not running within the grace period"))
            total = len(fresh) if missed_total is None else max(missed_total, len(fresh))
            if total:
                self._db._append_event(conn, "schedule.missed", "scheduler", None,
                                       {"schedule": schedule_id, "count": total,
                                        "first": min(fresh) if fresh else None,
                                        "last": max(fresh) if fresh else None})
            result: dict[str, Any] = {"claimed": False, "status": "missed", "missed": total,
                                      "detail": None}
            if fire_time is not None:
                result = {**self._claim(conn, schedule_id, fire_time, now, overlaps),
                          "missed": total}
            if newest is not None:
                conn.execute("INSERT INTO schedules (id, last_fire, updated_at) VALUES (?, ?, ?) "
                             "ON CONFLICT (id) DO UPDATE SET last_fire = excluded.last_fire, "
                             "updated_at = excluded.updated_at", (schedule_id, newest, now))
        return result

    def _claim(self, conn: Any, schedule_id: str, fire_time: str, now: str,
               overlaps: OverlapRule) -> dict[str, Any]:
        busy = conn.execute("SELECT fire_time, owner, claimed_at FROM schedule_fires WHERE "
                            "schedule_id = ? AND status = 'claimed' AND fire_time != ? "
                            "ORDER BY fire_time DESC LIMIT 1",
                            (schedule_id, fire_time)).fetchone()
        if busy is not None:
            detail = overlaps(dict(busy), now)
            if detail is not None:
                conn.execute("INSERT INTO schedule_fires (schedule_id, fire_time, status, "
                             "owner, claimed_at, finished_at, detail) "
                             "VALUES (?, ?, 'skipped', ?, ?, ?, ?) "
                             "ON CONFLICT (schedule_id, fire_time) DO NOTHING",
                             (schedule_id, fire_time, self._db.owner, now, now, detail))
                return {"claimed": False, "status": "skipped", "detail": detail}
            conn.execute("UPDATE schedule_fires SET status = 'interrupted', finished_at = ?, "
                         "detail = ? WHERE schedule_id = ? AND fire_time = ?",
                         (now, f"scheduler {busy['owner']} went away during this fire",
                          schedule_id, busy["fire_time"]))
        claimed = conn.execute("INSERT INTO schedule_fires (schedule_id, fire_time, status, "
                               "owner, claimed_at) VALUES (?, ?, 'claimed', ?, ?) "
                               "ON CONFLICT (schedule_id, fire_time) DO NOTHING RETURNING id",
                               (schedule_id, fire_time, self._db.owner, now)).fetchone()
        if claimed is None:
            return {"claimed": False, "status": "taken",
                    "detail": f"fire {fire_time} was claimed by another scheduler"}
        return {"claimed": True, "status": "claimed", "detail": None}

    def finish_fire(self, schedule_id: str, fire_time: str, *, status: str,
                    run_id: str | None = None, detail: str | None = None) -> None:
        with self._db._write(f"record the end of a fire of schedule {schedule_id!r}") as conn:
            conn.execute("UPDATE schedule_fires SET status = ?, run_id = ?, detail = ?, "
                         "finished_at = ? WHERE schedule_id = ? AND fire_time = ?",
                         (status, run_id, detail, utcnow(), schedule_id, fire_time))

    def fires(self, schedule_id: str | None = None, *,
              limit: int = 100) -> list[dict[str, Any]]:
        """Fires claimed, missed or skipped, newest first."""
        if schedule_id is None:
            return self._db._read("SELECT * FROM schedule_fires "
                                  "ORDER BY fire_time DESC, id DESC LIMIT ?", (limit,))
        return self._db._read("SELECT * FROM schedule_fires WHERE schedule_id = ? "
                              "ORDER BY fire_time DESC, id DESC LIMIT ?", (schedule_id, limit))
