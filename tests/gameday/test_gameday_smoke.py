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
import subprocess
import sys
from pathlib import Path

import pytest

GAMEDAY = Path(__file__).resolve().parents[2] / "bench" / "gameday"
sys.path.insert(0, str(GAMEDAY))

import scenario  # noqa: E402
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
