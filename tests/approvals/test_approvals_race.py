"""Two people resume the same approved run at the same moment: it runs once.

Both ``selfdrive resume`` processes pass the "is it approved?" check, then meet at a
barrier inside the runbook's read-only planning step (each touches a "ready" file
and waits for a "go" file), so both go on to start it at the same moment.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from approvals_support import Team, clean_env

BARRIER = '''
"""A HIGH-risk change whose planning waits at a barrier (read-only, so it runs in plans)."""
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.HIGH)
def barrier_change(ctx: Context, marker: str, ready: str, go: str) -> None:
    """Append one line to a marker file."""
    ctx.run("touch {{ ready }}-$PPID; while [ ! -e {{ go }} ]; do sleep 0.005; done",
            readonly=True)
    ctx.run("echo ran >> {{ marker }}")
'''


@dataclass
class Race:
    run_id: str
    marker: Path
    codes: dict[str, int]
    stderr: dict[str, str]


def resume_twice_at_once(team: Team, tmp_path: Path) -> Race:
    team.config("L4")
    team.runbook("barrier.py", BARRIER)
    marker, ready, go = tmp_path / "marker", tmp_path / "ready", tmp_path / "go"
    go.touch()  # open while alice plans her request
    run_id = team.request("barrier-change", f"marker={marker}", f"ready={ready}", f"go={go}",
                          who="alice", code=3)["run"]["id"]
    assert team.sd("approve", run_id, who="bob").returncode == 0
    go.unlink()
    for old in tmp_path.glob("ready-*"):
        old.unlink()
    procs = {who: subprocess.Popen(team.command("resume", run_id, who=who), cwd=team.root,
                                   env=clean_env(), stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for who in ("carol", "dave")}
    try:
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob("ready-*"))) < 2:
            assert all(p.poll() is None for p in procs.values()), "a resume ended early"
            assert time.monotonic() < deadline, "barrier never reached"
            time.sleep(0.005)
        go.touch()
        streams = {who: p.communicate(timeout=30) for who, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    return Race(run_id, marker, {who: p.returncode for who, p in procs.items()},
                {who: err for who, (_, err) in streams.items()})


def test_concurrent_resumes_run_it_exactly_once(team: Team, tmp_path: Path) -> None:
    race = resume_twice_at_once(team, tmp_path)
    assert race.marker.read_text() == "ran\n"
    assert sorted(race.codes.values())[0] == 0, race
    assert sorted(race.codes.values())[1] != 0, race
    assert team.status(race.run_id) == "succeeded"
    [running] = team.events("run.running", race.run_id)
    winner = next(who for who, code in race.codes.items() if code == 0)
    assert running["actor"] == winner


def test_the_losing_resume_is_refused_and_not_journaled(team: Team, tmp_path: Path) -> None:
    race = resume_twice_at_once(team, tmp_path)
    assert race.marker.read_text() == "ran\n"
    assert sorted(race.codes.values()) == [0, 2], race
    assert len(team.events("run.resumed", race.run_id)) == 1
