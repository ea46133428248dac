"""Locks are leases in the journal: two processes, one key, exactly one runs.

Both ``selfdrive run`` processes plan first and then wait at a barrier inside the
runbook's read-only planning step (each touches a "ready" file, then waits for a
"go" file), so their lock attempts land at the same moment every time, whatever
their start-up times were.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from approvals_support import Team, clean_env

ROUNDS = 20

LOCKED = '''
"""A locked LOW-risk change: autonomous at L4, one at a time per key."""
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW, lock="{{ key }}")
def locked_change(ctx: Context, key: str, ready: str, go: str, log: str) -> None:
    """Record that this run held the lock."""
    # Read-only, so it also runs while planning: the barrier both processes meet at.
    ctx.run("touch {{ ready }}; while [ ! -e {{ go }} ]; do sleep 0.005; done",
            readonly=True)
    ctx.run("echo $$ >> {{ log }}; sleep 0.3")


@locked_change.verify()
def logged(ctx: Context, log: str) -> bool:
    return ctx.run("test -s {{ log }}", readonly=True, check=False).ok
'''


def _wait_for(paths: list[Path], procs: list[subprocess.Popen[str]], limit: float) -> None:
    deadline = time.monotonic() + limit
    while not all(p.exists() for p in paths):
        for proc in procs:
            assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"barrier never reached: {paths}"
        time.sleep(0.005)


def test_two_processes_one_lock(team: Team, tmp_path: Path) -> None:
    team.config("L4", "[guardrails]\nrate_limit_per_runbook = 1000\n"
                      "rate_limit_total = 1000\n")
    team.runbook("locked.py", LOCKED)
    work = tmp_path / "work"
    work.mkdir()
    env = clean_env()
    for i in range(ROUNDS):
        go, log = work / f"go-{i}", work / f"log-{i}"
        readies = [work / f"ready-{i}-{n}" for n in (0, 1)]
        procs = [subprocess.Popen(
            team.command("run", "locked-change", "-p", "key=db1", "-p", f"ready={ready}",
                         "-p", f"go={go}", "-p", f"log={log}", "--json", who=f"p{n}"),
            cwd=team.root, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True) for n, ready in enumerate(readies)]
        try:
            _wait_for(readies, procs, limit=30)
            go.touch()
            results = []
            for proc in procs:
                streams = proc.communicate(timeout=30)
                results.append((proc.returncode, streams))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        outcomes = {}
        for code, (stdout, stderr) in results:
            out = json.loads(stdout)
            assert out["exit_code"] == code, (stdout, stderr)
            outcomes[out["run"]["status"]] = (code, out["run"])
        assert sorted(outcomes) == ["skipped", "succeeded"], (i, results)
        won_code, winner = outcomes["succeeded"]
        lost_code, loser = outcomes["skipped"]
        assert (won_code, lost_code) == (0, 1), i
        assert winner["mode"] == loser["mode"] == "autonomous"
        assert f"lock 'db1' is held by run {winner['id']}" in loser["error"], loser
        assert loser["started_at"] is None
        assert len(log.read_text().splitlines()) == 1, (i, log.read_text())
    runs = team.rows("SELECT status, COUNT(*) AS n FROM runs GROUP BY status")
    assert {r["status"]: r["n"] for r in runs} == {"succeeded": ROUNDS, "skipped": ROUNDS}
    assert team.rows("SELECT * FROM locks") == []
