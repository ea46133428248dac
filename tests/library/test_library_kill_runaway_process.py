"""kill-runaway-process: real busy processes, one allow-listed; and with fakes, the
processes it must never touch (PID 1, its own ancestry, kernel threads, selfdrive)."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest
from kit_support import Team

from selfdrive.library.kill_runaway_process import ARGS as PS_ARGS
from selfdrive.library.kill_runaway_process import PS as PS_LIST
from selfdrive.library.kill_runaway_process import STOP, kill_runaway_process
from selfdrive.sdk import RunState
from selfdrive.sdk.command import render_command
from selfdrive.testing import FakeContext, plan_of, simulate


def _cpu(pid: int) -> float:
    out = subprocess.run(["ps", "-o", "pcpu=", "-p", str(pid)], capture_output=True,
                         text=True).stdout.strip()
    return float(out or 0)


def test_a_real_busy_process_is_stopped_and_an_allow_listed_one_is_not(team: Team) -> None:
    marker = f"sd-burner-{uuid.uuid4().hex[:8]}"
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass", marker])
    allowed = subprocess.Popen(["bash", "-c", "while :; do :; done", marker])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and min(_cpu(burner.pid), _cpu(allowed.pid)) < 20:
            time.sleep(0.2)
        outcome = team.run("kill-runaway-process", match=marker, min_cpu_percent=20,
                           allow=["bash"], max_kills=2, grace_seconds=3)
        assert outcome.run.status is RunState.SUCCEEDED, outcome.message
        assert burner.wait(timeout=10) == -15  # SIGTERM was enough
        assert allowed.poll() is None  # allow-listed: still spinning
        [change] = outcome.plan.changes
        assert f"kill -TERM {burner.pid}" in change.command
    finally:
        for proc in (burner, allowed):
            proc.kill()
            proc.wait()


def test_a_long_non_ascii_command_line_is_seen_whatever_columns_and_locale_say(
        team: Team, monkeypatch: pytest.MonkeyPatch) -> None:
    # What cron and CI shells look like: 80 columns (here 40) and the C locale, with a
    # checkout path longer than 60 characters in front of what `match` looks for.
    with (team.root / "selfdrive.toml").open("a") as config:
        config.write('[executor]\nenv_allow = ["PATH", "HOME", "COLUMNS", "LC_*"]\n')
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("LC_ALL", "C")
    long_path = "/srv/" + "a-rather-long-checkout-folder/" * 3 + "app.py"
    marker = f"sd-schlüssel-{uuid.uuid4().hex[:8]}"
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass", long_path, marker])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _cpu(burner.pid) < 20:
            time.sleep(0.2)
        outcome = team.run("kill-runaway-process", match=marker, min_cpu_percent=20,
                           grace_seconds=3)
        assert outcome.run.status is RunState.SUCCEEDED, outcome.message
        assert burner.wait(timeout=10) == -15
    finally:
        burner.kill()
        burner.wait()


def test_nothing_over_the_thresholds_stops_before_any_change(team: Team) -> None:
    outcome = team.run("kill-runaway-process", match=f"no-such-{uuid.uuid4().hex}")
    assert outcome.run.status is RunState.PRECONDITION_FAILED and outcome.exit_code == 4


SHELL = 4242  # the shell that ran ps; its ancestors are selfdrive and whoever started it
PS = f"""{SHELL}
    1     0 99.0  9000 Ss   Tue Nov 25 20:00:00 2026 systemd
    2     0 99.0     0 S    Tue Nov 25 20:00:00 2026 kthreadd
   77     2 99.0     0 I    Tue Nov 25 20:00:00 2026 kworker/0:1-events
  900     1 95.0  9000 Ss   Tue Nov 25 20:01:00 2026 sshd
 3000     1 97.0 80000 S    Tue Nov 25 20:02:00 2026 python3
 4000  3000 98.0 80000 S    Tue Nov 25 20:03:00 2026 bash
 {SHELL}  4000 96.0  3000 S    Tue Nov  5 20:04:00 2026 bash
 5000     1 99.0 90000 R    Tue Nov 25 20:05:00 2026 java
 5001     1 99.5 90000 Z    Tue Nov 25 20:05:00 2026 java
 5002     1 99.0 90000 R    Tue Nov 25 20:05:30 2026 java
 6000     1 91.0 70000 R    Tue Nov 25 20:06:00 2026 python3
 7000     1 40.0 70000 R    Tue Nov 25 20:07:00 2026 java
"""
ARGS = f"""    1 /sbin/init
    2 [kthreadd]
   77 [kworker/0:1-events]
  900 sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups
 3000 /opt/venv/bin/python /opt/venv/bin/selfdrive run kill-runaway-process -p match=java
 4000 /bin/bash -c echo selfdrive java
 {SHELL} bash -c echo $$; ps java
 5000 java -jar /srv/app.jar --spin
 5001 [java] <defunct>
 5002 java -jar /srv/batch.jar
 6000 /opt/venv/bin/python /opt/venv/bin/selfdrive serve --port 8080 java
 7000 java -jar /srv/idle.jar
"""


def _ps(fake: FakeContext) -> FakeContext:
    fake.on(PS_LIST, stdout=PS)
    fake.on(PS_ARGS, stdout=ARGS)
    return fake


def test_only_real_candidates_are_chosen_hungriest_first() -> None:
    plan = plan_of(kill_runaway_process, _ps(FakeContext()), match="java", max_kills=5)
    expected = [render_command(STOP, {"pid": pid, "lstart": f"Tue Nov 25 {t} 2026",
                                      "grace": 10}).masked
                for pid, t in ((5000, "20:05:00"), (5002, "20:05:30"))]
    assert [c.command for c in plan.changes] == expected  # not 1, 2, 77, 900, 3000, 4000,
    # 4242 (ancestry), 5001 (zombie), 6000 (selfdrive serve), 7000 (under 90 %)


def test_the_allow_list_max_kills_and_memory_threshold() -> None:
    assert plan_of(kill_runaway_process, _ps(FakeContext()), match="java",
                   allow=["java"]).changes == ()
    one = plan_of(kill_runaway_process, _ps(FakeContext()), match="jar", max_kills=1)
    assert len(one.changes) == 1 and "kill -TERM 5000" in one.changes[0].command
    hungry = plan_of(kill_runaway_process, _ps(FakeContext()), match=".", min_cpu_percent=0,
                     min_rss_mb=80, max_kills=10)
    assert [c.command.count("kill -TERM 5000") + c.command.count("kill -TERM 5002")
            for c in hungry.changes] == [1, 1]


def test_a_process_that_keeps_spinning_fails_verification_without_rollback() -> None:
    fake = _ps(FakeContext(default_ok=True))  # the same ps output every time: still there
    sim = simulate(kill_runaway_process, fake, match="app.jar")
    assert sim.status is RunState.VERIFICATION_FAILED and sim.exit_code == 5
    assert sim.attempts("no_runaway_is_left") == 3 and sim.waited == (2.0, 2.0)
