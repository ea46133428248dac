"""One PostgreSQL journal shared by several machines' worth of selfdrive: two working
directories (as two machines would have), each with its own receiver, scheduler and
CLI, and the same guarantees as one SQLite file gives — one run per alert, one fire
per schedule, exact rate limits, one audit chain, a killed receiver's run interrupted
and never run twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pg_support
import psycopg
import pytest
from sense_support import SELFDRIVE, Project, Server, alertmanager, clean_env, request

pytestmark = pytest.mark.slow

MARK = '''
@runbook(risk=Risk.LOW, triggers=[alert("DiskFull")])
def mark(ctx: Context, host: str = "none", pause: float = 0) -> None:
    """Appends the host to a marker file (one line per run), then pauses."""
    ctx.run("echo {{{{ host }}}} >> {marks}; sleep {{{{ pause }}}}")
'''

SLOW = '''
@runbook(risk=Risk.LOW, triggers=[alert("DiskFull")])
def slow(ctx: Context, host: str = "none") -> None:
    """Appends the host to a marker file, then takes its time."""
    ctx.run("echo {{{{ host }}}} >> {marks}; sleep 30")
'''

TICK = '''
@runbook(risk=Risk.LOW, schedule="* * * * *")
def tick(ctx: Context) -> None:
    """Appends a line to a marker file."""
    ctx.run("echo tick >> {marks}")
'''


class Team:
    """Two working directories of one team, on one PostgreSQL database."""

    def __init__(self, root: Path, source: str, extra: str = "") -> None:
        self.database = pg_support.fresh_database()
        self.url = pg_support.server().url(self.database)
        self.env = clean_env(PGPASSWORD=pg_support.PASSWORD)
        self.machines = []
        for name in ("east", "west"):
            project = Project(root / name, extra=f'journal = "{self.url}"\n{extra}')
            project.runbook(source)
            self.machines.append(project)

    def sd(self, machine: int, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SELFDRIVE, *args], cwd=self.machines[machine].root,
                              env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)

    def rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with psycopg.connect(self.url, password=pg_support.PASSWORD, autocommit=True) as conn:
            cur = conn.execute(sql, params)
            names = [c.name for c in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def audit(self) -> dict[str, Any]:
        done = self.sd(0, "audit", "verify", "--json")
        report = json.loads(done.stdout)
        assert done.returncode == 0 and report["ok"], done.stdout + done.stderr
        return dict(report)


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    return tmp_path / "marks"


def _servers(team: Team) -> Iterator[Server]:
    return (Server(project, env=team.env) for project in team.machines)


def test_one_alert_posted_50_times_across_two_receivers_runs_once(tmp_path: Path,
                                                                  marks: Path) -> None:
    team = Team(tmp_path, MARK.format(marks=marks))
    servers = list(_servers(team))
    try:
        body = alertmanager("DiskFull", {"host": "web1", "severity": "page"})
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(
                lambda n: request(f"{servers[n % 2].base}/alerts/alertmanager", body),
                range(50)))
        assert {status for status, _ in answers} == {202}, answers[:3]
        for server in servers:
            server.wait_idle()
    finally:
        codes = [server.stop() for server in servers]
    assert codes == [0, 0], [s.log for s in servers]
    assert len(marks.read_text().splitlines()) == 1  # one run, once
    runs = team.rows("SELECT runbook, status FROM runs")
    assert runs == [{"runbook": "mark", "status": "succeeded"}]
    claims = team.rows("SELECT outcome, COUNT(*) AS n FROM alert_runs GROUP BY outcome "
                       "ORDER BY outcome")
    assert claims == [{"outcome": "duplicate", "n": 49}, {"outcome": "started", "n": 1}] \
        or claims == [{"outcome": "duplicate", "n": 49}, {"outcome": "succeeded", "n": 1}], \
        claims
    assert len(team.rows("SELECT id FROM alerts")) == 50
    team.audit()


def test_two_schedulers_on_two_machines_never_run_one_fire_twice(tmp_path: Path,
                                                                  marks: Path) -> None:
    for rep in range(5):
        team = Team(tmp_path / f"rep{rep}", TICK.format(marks=f"{marks}{rep}"))
        team.sd(0, "history")  # the journal exists, as it does for a team running schedulers
        procs = [subprocess.Popen([SELFDRIVE, "scheduler", "--once", "--json"],
                                  cwd=project.root, env=team.env, stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for project in team.machines]
        outs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [err[-400:] for _, err in outs]
        ran = [r for out, _ in outs for r in json.loads(out) if r["status"] == "ran"]
        lines = Path(f"{marks}{rep}").read_text().splitlines()
        runs = team.rows("SELECT dedup_key FROM runs")
        # One fire per minute; if the minute turned between the two, two distinct fires.
        assert len(ran) == len(runs) == len(lines) == len({r["fire"] for r in ran}), ran
        assert 1 <= len(ran) <= 2
        team.audit()


def test_a_rate_limit_of_3_is_exact_across_8_runs_on_two_machines(tmp_path: Path,
                                                                  marks: Path) -> None:
    team = Team(tmp_path, MARK.format(marks=marks),
                "[guardrails]\nrate_limit_per_runbook = 3\n")
    team.sd(0, "history")
    procs = [subprocess.Popen([SELFDRIVE, "run", "mark", "-p", f"host=h{n}", "--json"],
                              cwd=team.machines[n % 2].root, env=team.env,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for n in range(8)]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 0, 0, 3, 3, 3, 3, 3], [err[-300:] for _, err in outs]
    runs = team.rows("SELECT mode, status FROM runs")
    assert sorted((r["mode"], r["status"]) for r in runs) == \
        [("approval", "pending_approval")] * 5 + [("autonomous", "succeeded")] * 3
    assert len(marks.read_text().splitlines()) == 3
    team.audit()


def test_a_receiver_killed_mid_run_leaves_it_interrupted_and_never_run_twice(
        tmp_path: Path, marks: Path) -> None:
    team = Team(tmp_path, SLOW.format(marks=marks))
    east, west = _servers(team)
    try:
        body = alertmanager("DiskFull", {"host": "web1", "severity": "page"})
        status, _ = request(f"{east.base}/alerts/alertmanager", body)
        assert status == 202
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not marks.exists():
            time.sleep(0.05)
        assert marks.exists(), east.log
        running = team.rows("SELECT id, status FROM runs")
        os.killpg(east.proc.pid, signal.SIGKILL)
        east.proc.wait(10)
        # The same alert again, at the other machine: a duplicate, not a second run.
        status, answer = request(f"{west.base}/alerts/alertmanager", body)
        assert status == 202, answer
        west.wait_idle()
    finally:
        west.stop()
        east.stop()
    # The next selfdrive command on the dead receiver's machine recovers its run.
    listed = team.sd(0, "history", "--json")
    assert listed.returncode == 0, listed.stderr
    runs = team.rows("SELECT id, status FROM runs")
    assert [r["id"] for r in runs] == [r["id"] for r in running]
    assert [r["status"] for r in runs] == ["interrupted"], runs
    assert len(marks.read_text().splitlines()) == 1  # one run, once
    team.audit()
