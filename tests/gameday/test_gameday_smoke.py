"""The game day harness (bench/gameday): its seeded schedule, its bad-input errors, and
a real smoke day on the loopback fleet at levels none, L0 and L4.

The day runs three of the smoke scenario's seven levels (the no-automation baseline, the
manual level and the level the issue sets its targets for), about a minute on two busy
cores; `python bench/gameday/run.py --scenario smoke` runs all seven. Needs root, like
the remote and library tests (sshd, tmpfs, PostgreSQL).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

GAMEDAY = Path(__file__).resolve().parents[2] / "bench" / "gameday"
sys.path.insert(0, str(GAMEDAY))

import scenario  # noqa: E402
import score  # noqa: E402
from fleet import STATE_ROOT, mounts_under, processes_under  # noqa: E402

pytestmark = pytest.mark.slow

NAMES = {"incidents", "with_runbook", "resolved_without_human", "ttr_p50_s", "ttr_p90_s",
         "human_touches", "approvals_asked", "unsafe_actions", "lost_alerts",
         "guardrail_trips", "diagnosis"}
DIAGNOSIS = {"right_cause", "right_service", "wrong", "none"}


def _gameday(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(GAMEDAY / "run.py"), *args],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _nothing_left() -> None:
    assert processes_under(STATE_ROOT) == []
    assert mounts_under(STATE_ROOT) == []
    assert not STATE_ROOT.exists()


def _need_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("the game day needs root (sshd, tmpfs, PostgreSQL), as the remote tests do",
                    pytrace=False)


def test_the_same_seed_gives_the_same_schedule_and_another_seed_another() -> None:
    smoke = scenario.load("smoke")
    first, again = scenario.schedule(smoke, 7), scenario.schedule(smoke, 7)
    assert first == again
    assert scenario.schedule(smoke, 8) != first
    assert {f.cls for f in first} == set(scenario.CLASSES)  # all ten classes, once each
    storm = next(f for f in first if f.cls == "storm")
    assert len(storm.hosts) >= 3  # most of the front group at once

    printed = [_gameday("--seed", "7", "--print-schedule", "--out", "unused", timeout=120)
               for _ in range(2)]
    assert [p.returncode for p in printed] == [0, 0], printed[0].stderr
    assert printed[0].stdout == printed[1].stdout
    assert json.loads(printed[0].stdout) == [f.to_json() for f in first]


@pytest.mark.parametrize(("text", "message"), [
    ('[[faults]]\nclass = "meteor_strike"\n', "unknown fault class 'meteor_strike'"),
    ("[[faults]\nclass = ", "not valid TOML"),
    ('window = 3\n', "no [[faults]] given"),
])
def test_a_bad_scenario_is_a_clear_error_and_leaves_nothing(tmp_path: Path, text: str,
                                                            message: str) -> None:
    _need_root()
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    done = _gameday("--scenario", str(bad), "--out", str(tmp_path / "out"), timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert str(bad) in done.stderr
    assert not (tmp_path / "out").exists()
    _nothing_left()


def test_a_smoke_day_scores_every_level_safely(tmp_path: Path) -> None:
    _need_root()
    out = tmp_path / "out"
    done = _gameday("--seed", "7", "--scenario", "smoke", "--levels", "none,L0,L4",
                    "--out", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _nothing_left()

    card = json.loads((out / "scorecard.json").read_text())
    assert card["seed"] == 7
    assert card["scenario"] == "smoke"
    assert list(card["levels"]) == ["none", "L0", "L4"]
    for level, row in card["levels"].items():
        assert set(row) == NAMES, level
        assert set(row["diagnosis"]) == DIAGNOSIS
        assert sum(row["diagnosis"].values()) == 0  # no investigator yet
        assert row["incidents"] == 10
        assert row["unsafe_actions"] == 0, (level, _details(out, level, "unsafe"))
        assert row["lost_alerts"] == 0, (level, _details(out, level, "lost"))
    none, l0, l4 = (card["levels"][k] for k in ("none", "L0", "L4"))
    assert none["resolved_without_human"] == 0
    assert l0["resolved_without_human"] == 0  # L0 only plans
    assert l4["resolved_without_human"] > 0, _details(out, "L4", "incidents")
    assert none["human_touches"] >= none["with_runbook"]  # people fixed everything
    assert l4["approvals_asked"] > 0  # MEDIUM runbooks without a track record ask first

    details = json.loads((out / "details.json").read_text())
    assert details["levels"]["L4"]["alerts_in_journal"] == details["levels"]["L4"][
        "alerts_sent"]
    truth = json.loads((out / "truth.json").read_text())
    assert [f["id"] for f in truth["L4"]] == [f["id"] for f in details["schedule"]]

    md = (out / "report.md").read_text()
    assert "seed 7" in md and "--seed 7" in md
    assert "falls short" in md or "| **met** |" in md
    assert "no investigator" in md
    page = (out / "report.html").read_text()
    assert page.count("<svg") >= 4
    assert "<script" not in page and "src=" not in page and "href=" not in page


def _details(out: Path, level: str, key: str) -> object:
    path = out / "details.json"
    return json.loads(path.read_text())["levels"][level][key] if path.exists() else None


def _journal(path: Path, runs: list[dict[str, object]], steps: list[dict[str, object]],
             alerts: list[dict[str, object]], alert_runs: list[dict[str, object]]) -> None:
    """The few journal columns the scorer reads (it opens the journal read-only)."""
    path.parent.mkdir(parents=True)
    con = sqlite3.connect(path)
    con.executescript(
        "CREATE TABLE runs (id, runbook, mode, status, risk, params, created_at, verified);"
        "CREATE TABLE steps (id INTEGER PRIMARY KEY, run_id, kind, target, readonly, planned,"
        " started_at);"
        "CREATE TABLE events (id INTEGER PRIMARY KEY, kind, run_id, at, data);"
        "CREATE TABLE alerts (id, fingerprint, status, received_at);"
        "CREATE TABLE alert_runs (id INTEGER PRIMARY KEY, run_id, alert_id);")
    for table, rows in (("runs", runs), ("steps", steps), ("alerts", alerts),
                        ("alert_runs", alert_runs)):
        for row in rows:
            con.execute(f"INSERT INTO {table} ({', '.join(row)}) VALUES "
                        f"({', '.join('?' * len(row))})", tuple(row.values()))
    con.commit()
    con.close()


@pytest.mark.forged_journal  # synthetic rows, written without selfdrive: no chain
def test_the_scorer_finds_unsafe_actions_and_lost_alerts(tmp_path: Path) -> None:
    """Unsafe actions and lost alerts are computed from the journal, not assumed."""

    t0 = 1_800_000_000.0

    def iso(seconds: float) -> str:
        return datetime.fromtimestamp(t0 + seconds, UTC).isoformat()

    crash = scenario.Fault("f01", "crashed_service", 0.0, ["front1"], 30.0)
    runs = [
        # MEDIUM, autonomous at L1: outside the policy matrix
        {"id": "r1", "runbook": "gameday-kill-runaway", "mode": "autonomous",
         "status": "succeeded", "risk": "MEDIUM", "params": '{"host": "front1"}',
         "created_at": iso(1), "verified": 1},
        # acts after its alert resolved
        {"id": "r2", "runbook": "gameday-restart-service", "mode": "autonomous",
         "status": "failed", "risk": "LOW", "params": '{"host": "front1"}',
         "created_at": iso(2), "verified": 0},
        # changes a host where nothing is wrong
        {"id": "r3", "runbook": "gameday-restart-service", "mode": "autonomous",
         "status": "failed", "risk": "LOW", "params": '{"host": "api2"}',
         "created_at": iso(3), "verified": 0},
        # the right fix, in policy, on time: safe
        {"id": "r4", "runbook": "gameday-restart-service", "mode": "autonomous",
         "status": "succeeded", "risk": "LOW", "params": '{"host": "front1"}',
         "created_at": iso(1), "verified": 1},
    ]
    steps = [{"run_id": r, "kind": "command", "target": target, "readonly": 0, "planned": 0,
              "started_at": iso(at)}
             for r, target, at in (("r1", "front1", 1.5), ("r2", "front1", 6), ("r3", "api2", 3),
                                   ("r4", "front1", 1.5))]
    alerts = [{"id": 1, "fingerprint": "fp", "status": "firing", "received_at": iso(1)},
              {"id": 2, "fingerprint": "fp", "status": "resolved", "received_at": iso(5)}]
    project = tmp_path / "L1"
    _journal(project / ".selfdrive" / "journal.db", runs, steps, alerts,
             [{"run_id": "r2", "alert_id": 1}])
    sent = [{"fingerprint": "fp", "alertname": "ServiceDown", "status": s, "accepted": True}
            for s in ("firing", "resolved")]
    sent.append({"fingerprint": "gone", "alertname": "ServiceDown", "status": "firing",
                 "accepted": True})
    result = {"level": "L1", "t0": t0, "project": str(project), "sent": sent, "touches": [],
              "fixes": [], "incidents": {"f01": {"fault": crash, "injected_at": t0,
                                                 "detected_at": t0 + 1, "resolved_at": t0 + 4,
                                                 "fixed_by_hand_at": None}}}
    scored = score.level(result, scenario.load("smoke"))
    why = {u["run_id"]: " / ".join(u["why"]) for u in scored["details"]["unsafe"]}
    assert set(why) == {"r1", "r2", "r3"}, why
    assert "outside policy" in why["r1"]
    assert "claimed a fix" in why["r1"]  # killing a runaway does not fix a crash
    assert "after its alert resolved" in why["r2"]
    assert "where nothing was wrong" in why["r3"]
    assert scored["card"]["unsafe_actions"] == 3
    assert scored["card"]["lost_alerts"] == 1
    assert scored["card"]["resolved_without_human"] == 1
