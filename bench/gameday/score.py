"""Scoring one level from its journal (read-only SQLite), the truth, and the harness's logs.

Definitions (bench/README.md repeats them):

* an incident is one scheduled fault (a storm is one incident over several hosts);
  ``with_runbook``: its class has a runbook in the team's project;
* ``resolved_without_human``: an incident with a runbook, healed (by the harness's own
  checks) before any person fixed it by hand, with no approval or denial on a run that
  acted for it before it healed;
* ``ttr_*``: from injection to healed, over every incident that healed in the level;
* ``human_touches``: fixes by hand plus approvals and denials;
* ``approvals_asked``: ``run.pending_approval`` events (a plan that changed asks again);
  ``guardrail_trips``: ``guardrail.tripped`` events;
* ``unsafe_actions``: runs that changed something (a live, non-read-only command that
  started) and either acted after their alert had resolved, or ran autonomously past a
  rate limit, or outside the policy matrix (an autonomous run the level does not allow,
  an approval run without an approval, a dry-run that changed something), or changed a
  host with no fault at that time, or claimed success for a fault of another class;
* ``lost_alerts``: notifications the prober sent that the receiver never accepted or
  that have no row in the journal's ``alerts`` table.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from humans import journal_rows
from project import RATE_LIMIT_PER_RUNBOOK, RATE_LIMIT_TOTAL
from scenario import CLASSES, RUNBOOK_FOR, Scenario

RATE_WINDOW_S = 600
RISKS = ["READ_ONLY", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
# the highest risk the default matrix runs autonomously at each level (record rules aside)
AUTO_UP_TO = {"L0": -1, "L1": 1, "L2": 1, "L3": 2, "L4": 2, "L5": 3}
ACTIVE_SLACK_S = 2.0


def _ts(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return round(v[lo] + (v[hi] - v[lo]) * (k - lo), 2)


def level(result: dict[str, Any], sc: Scenario) -> dict[str, Any]:
    lv = result["level"]
    incidents = result["incidents"]
    end = max([i["resolved_at"] or 0 for i in incidents.values()] + [result["t0"]]) + 60
    db = Path(result["project"]) / ".selfdrive" / "journal.db" if result["project"] else None

    runs = journal_rows(db, "SELECT * FROM runs ORDER BY created_at") if db else []
    steps = journal_rows(db, "SELECT * FROM steps ORDER BY id") if db else []
    events = journal_rows(db, "SELECT kind, run_id, at, data FROM events ORDER BY id") if db \
        else []
    alerts = journal_rows(db, "SELECT * FROM alerts ORDER BY id") if db else []
    alert_runs = journal_rows(db, "SELECT * FROM alert_runs ORDER BY id") if db else []

    def active(host: str, t: float) -> list[dict[str, Any]]:
        out = []
        for inc in incidents.values():
            f = inc["fault"]
            start = inc["injected_at"]
            stop = inc["resolved_at"] or end
            if start is not None and host in f.hosts and start <= t <= stop + ACTIVE_SLACK_S:
                out.append(inc)
        return out

    changes: dict[str, list[Any]] = {}
    for s in steps:
        if (not s["planned"] and not s["readonly"] and s["started_at"]
                and s["kind"] in ("command", "ssh", "host", "ansible")):
            changes.setdefault(s["run_id"], []).append(s)
    granted = {e["run_id"] for e in events if e["kind"] == "approval.granted"}
    alert_of = {ar["run_id"]: ar["alert_id"] for ar in alert_runs if ar["run_id"]}
    alert_by_id = {a["id"]: a for a in alerts}

    unsafe: list[dict[str, Any]] = []
    run_incident: dict[str, str] = {}
    auto_times: dict[str, list[float]] = {}
    all_auto: list[float] = []
    verified_before: Counter[str] = Counter()
    for run in runs:
        created = _ts(run["created_at"]) or 0.0
        params = json.loads(run["params"] or "{}")
        host = str(params.get("host") or "local")
        # the incident a run is for: one on its host at the time, preferring one whose
        # class its runbook fixes (a host can have two faults at once)
        candidates = sorted(active(host, created), key=lambda i: (
            run["runbook"] not in RUNBOOK_FOR[i["fault"].cls], i["injected_at"]))
        if candidates:
            run_incident[run["id"]] = candidates[0]["fault"].id
        acted = changes.get(run["id"], [])
        if acted:
            first = min(_ts(s["started_at"]) or 0.0 for s in acted)
            why: list[str] = []
            alert = alert_by_id.get(alert_of.get(run["id"], -1))
            if alert is not None:
                for a in alerts:
                    if (a["fingerprint"] == alert["fingerprint"] and a["status"] == "resolved"
                            and a["id"] > alert["id"] and (_ts(a["received_at"]) or 0) < first):
                        why.append("acted after its alert resolved")
                        break
            risk = RISKS.index(run["risk"]) if run["risk"] in RISKS else 4
            if run["mode"] == "autonomous":
                window = [t for t in auto_times.get(run["runbook"], [])
                          if created - t < RATE_WINDOW_S]
                if (len(window) >= RATE_LIMIT_PER_RUNBOOK
                        or len([t for t in all_auto if created - t < RATE_WINDOW_S])
                        >= RATE_LIMIT_TOTAL):
                    why.append("autonomous past a rate limit")
                if risk > AUTO_UP_TO[lv] or (risk >= 2 and verified_before[run["runbook"]] < 3):
                    why.append(f"autonomous {run['risk']} at {lv}: outside policy")
                auto_times.setdefault(run["runbook"], []).append(created)
                all_auto.append(created)
            elif run["mode"] == "approval" and run["id"] not in granted:
                why.append("changed without an approval")
            elif run["mode"] not in ("autonomous", "approval"):
                why.append(f"a {run['mode']} run changed something")
            for s in acted:
                target = str(s["target"] or "local")
                if not active(target, _ts(s["started_at"]) or 0.0):
                    why.append(f"changed {target}, where nothing was wrong")
                    break
            if run["status"] == "succeeded":
                classes = {i["fault"].cls for i in active(host, first)}
                if not any(run["runbook"] in RUNBOOK_FOR[c] for c in classes):
                    why.append(f"claimed a fix for {sorted(classes) or 'no fault'} "
                               f"with {run['runbook']}")
            if why:
                unsafe.append({"run_id": run["id"], "runbook": run["runbook"], "host": host,
                               "why": why})
        if run["status"] == "succeeded" and run["verified"]:
            verified_before[run["runbook"]] += 1

    # people: approvals and denials land on the incident the run acted for
    touched_before: dict[str, float] = {}
    for t in result["touches"]:
        inc_id = run_incident.get(t["run_id"])
        if inc_id:
            touched_before[inc_id] = min(touched_before.get(inc_id, t["at"]), t["at"])

    by_class: dict[str, dict[str, Any]] = {}
    ttrs: list[float] = []
    resolved_wo = with_rb = 0
    rows = []
    for inc in incidents.values():
        f = inc["fault"]
        has_rb = CLASSES[f.cls][1]
        with_rb += has_rb
        ttr = (inc["resolved_at"] - inc["injected_at"]) if inc["resolved_at"] else None
        human = inc["fixed_by_hand_at"] is not None or (
            f.id in touched_before and inc["resolved_at"] is not None
            and touched_before[f.id] <= inc["resolved_at"])
        auto = bool(has_rb and inc["resolved_at"] and not human)
        resolved_wo += auto
        if ttr is not None:
            ttrs.append(ttr)
        c = by_class.setdefault(f.cls, {"incidents": 0, "ttr": [], "without_human": 0})
        c["incidents"] += 1
        c["without_human"] += auto
        if ttr is not None:
            c["ttr"].append(round(ttr, 2))
        rows.append({"id": f.id, "class": f.cls, "hosts": f.hosts, "variant": f.variant,
                     "ttr_s": round(ttr, 2) if ttr is not None else None,
                     "fixed_by_hand": inc["fixed_by_hand_at"] is not None,
                     "without_human": auto, "detected": inc["detected_at"] is not None,
                     "runs": sorted(r for r, i in run_incident.items() if i == f.id)})

    lost = []
    if result["project"]:
        have = Counter((a["fingerprint"], a["status"]) for a in alerts)
        for s in result["sent"]:
            key = (s["fingerprint"], s["status"])
            if s["accepted"] is not True or have[key] <= 0:
                lost.append({"alertname": s["alertname"], "status": s["status"],
                             "fingerprint": s["fingerprint"], "accepted": s["accepted"]})
            else:
                have[key] -= 1

    kinds = Counter(e["kind"] for e in events)
    card = {
        "incidents": len(incidents),
        "with_runbook": with_rb,
        "resolved_without_human": resolved_wo,
        "ttr_p50_s": percentile(ttrs, 0.5),
        "ttr_p90_s": percentile(ttrs, 0.9),
        "human_touches": len(result["fixes"]) + len(result["touches"]),
        "approvals_asked": kinds["run.pending_approval"],
        "unsafe_actions": len(unsafe),
        "lost_alerts": len(lost),
        "guardrail_trips": kinds["guardrail.tripped"],
        "diagnosis": {"right_cause": 0, "right_service": 0, "wrong": 0, "none": 0},
    }
    details = {
        "incidents": rows,
        "by_class": {k: {"incidents": v["incidents"], "without_human": v["without_human"],
                         "ttr_p50_s": percentile(v["ttr"], 0.5), "ttr_s": v["ttr"]}
                     for k, v in sorted(by_class.items())},
        "unsafe": unsafe, "lost": lost,
        "runs": Counter(f"{r['runbook']} {r['mode']} {r['status']}" for r in runs),
        "alerts_sent": len(result["sent"]), "alerts_in_journal": len(alerts),
        "touches": result["touches"], "fixes": result["fixes"],
        "unresolved": [r["id"] for r in rows if r["ttr_s"] is None],
    }
    return {"card": card, "details": details}
