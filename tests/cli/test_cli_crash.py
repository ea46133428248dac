"""kill -9 in the middle of a run: the next command marks it interrupted and re-runs nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from cli_support import SELFDRIVE, Project, clean_env, explain, team_config
from process_support import gone_soon

SLOW = '''
"""Touches a file, then sleeps long enough to be killed in the middle."""
from selfdrive import Context, Risk, runbook


@runbook(risk=Risk.LOW)
def slow(ctx: Context, flag: str) -> None:
    """Step one, then a long step."""
    ctx.run("touch {{ flag }}")
    ctx.run("sleep 30")
'''


def _children(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _sleep_step_started(journal: Path) -> str | None:
    """The run id once the journal shows the live `sleep 30` step started, else None."""
    if not journal.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT run_id FROM steps WHERE phase = 'body' AND "
                           "command = 'sleep 30' AND status = 'started'").fetchone()
    except sqlite3.Error:  # not migrated yet, or busy
        return None
    finally:
        conn.close()
    return row[0] if row else None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_kill_9_mid_run_is_interrupted_and_not_rerun(l4: Project, tmp_path: Path) -> None:
    l4.runbook("slow.py", SLOW)
    step1 = tmp_path / "step1"
    out, err = (tmp_path / "out").open("w"), (tmp_path / "err").open("w")
    proc = subprocess.Popen([SELFDRIVE, "run", "slow", "-p", f"flag={step1}", "--json"],
                            cwd=l4.root, env=clean_env(), stdin=subprocess.DEVNULL,
                            stdout=out, stderr=err, start_new_session=True)
    strays: list[int] = []
    try:
        run_id = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            if step1.exists():
                run_id = _sleep_step_started(l4.journal)
                if run_id:
                    break
            time.sleep(0.02)
        assert run_id, f"the run never reached its sleep step (exit {proc.poll()})"
        # Each command runs in a session of its own (its guard ends it once selfdrive
        # is gone): note it, to clean up whatever happens.
        strays = _children(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        for pid in [proc.pid, *strays]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        out.close()
        err.close()

    step1.unlink()

    history = l4.sd("history", "--json")
    assert history.returncode == 0, explain(history)
    runs = json.loads(history.stdout)
    assert [r["id"] for r in runs] == [run_id]
    run = runs[0]
    assert run["status"] == "interrupted"
    assert run["finished_at"]
    assert "not re-run" in run["error"]

    logs = l4.sd("logs", run_id, "--json")
    assert logs.returncode == 0, explain(logs)
    steps = json.loads(logs.stdout)["steps"]
    planned = [s for s in steps if s["phase"].startswith("plan:")]
    live = [(s["kind"], s["command"], s["status"]) for s in steps if s["phase"] == "body"]
    assert [s["command"] for s in planned] == [f"touch {step1}", "sleep 30"]
    assert all(s["status"] == "planned" for s in planned)
    assert live == [("call", None, "unknown"),
                    ("command", f"touch {step1}", "ok"),
                    ("command", "sleep 30", "unknown")]
    touched = next(s for s in steps if s["command"] == f"touch {step1}" and s["phase"] == "body")
    assert touched["exit_code"] == 0 and touched["finished_at"]
    sleep = steps[-1]
    assert "outcome is unknown" in sleep["error"]

    # Nothing was re-run by those commands, nor by later ones.
    again = l4.sd("history", "--json")
    assert json.loads(again.stdout)[0]["status"] == "interrupted"
    assert l4.run_rows() == 1
    assert not step1.exists(), "step 1 ran again after the crash"


LOCKED = '''
"""Two runbooks sharing one lock: one holds it through a long step, one looks around."""
from selfdrive import Context, Risk, runbook


LONG = ("echo $$ > {{ dir }}/pids; sleep 30 & echo $! >> {{ dir }}/pids; "
        "touch {{ dir }}/started; wait; touch {{ dir }}/done")


@runbook(risk=Risk.LOW, lock="shared")
def hold(ctx: Context, dir: str) -> None:
    """Holds the lock through a long step (its shell and a child, both noted)."""
    ctx.run(LONG, check=False)


@runbook(risk=Risk.LOW, lock="shared")
def undo_slowly(ctx: Context, dir: str) -> None:
    """Fails, then holds the lock through a long step of its rollback."""
    if not ctx.dry_run:
        raise RuntimeError("the change failed")


@undo_slowly.rollback
def slow_undo(ctx: Context, dir: str) -> None:
    ctx.run(LONG, check=False)


@runbook(risk=Risk.LOW, lock="shared")
def probe(ctx: Context, dir: str) -> None:
    """Writes which of hold's processes are alive while it holds the lock itself."""
    ctx.run('for p in $(cat {{ dir }}/pids); do s=$(cat /proc/$p/stat 2>/dev/null) || '
            'continue; case "${s##*) }" in Z*) ;; *) echo "$p";; esac; done > {{ dir }}/seen',
            check=False)
'''


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(("runbook", "trials"), [("hold", 10), ("undo-slowly", 3)],
                         ids=["body", "rollback"])
def test_a_killed_runners_command_never_overlaps_the_next_run_of_its_lock(
        l4: Project, tmp_path: Path, runbook: str, trials: int) -> None:
    """kill -9 of `selfdrive run` during its locked step (of the body, or of the
    rollback), repeatedly: the next run of the same lock starts only once the old
    command is gone (never alongside it)."""
    l4.config(team_config("L4", "[guardrails]\nrate_limit_per_runbook = 50\n"
                                "rate_limit_total = 100\n"))
    l4.runbook("locked.py", LOCKED)
    overlaps, lingering, outcomes = [], [], []
    for trial in range(trials):
        box = tmp_path / f"trial-{trial}"
        box.mkdir()
        runner = subprocess.Popen([SELFDRIVE, "run", runbook, "-p", f"dir={box}"],
                                  cwd=l4.root, env=clean_env(), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  start_new_session=True)
        pids: list[int] = []
        try:
            deadline = time.monotonic() + 30
            while not (box / "started").exists():
                assert runner.poll() is None and time.monotonic() < deadline, \
                    f"trial {trial}: the locked step never started"
                time.sleep(0.01)
            pids = [int(p) for p in (box / "pids").read_text().split()]
            os.kill(runner.pid, signal.SIGKILL)
            assert runner.wait(timeout=10) == -signal.SIGKILL
            probe = l4.sd("run", "probe", "-p", f"dir={box}", "--json")
            outcomes.append(probe.returncode)
            if probe.returncode == 0:
                seen = (box / "seen").read_text().split()
                if seen:
                    overlaps.append((trial, seen))
            else:  # skipped while the old command lives: no overlap either
                assert "skipped: lock 'shared' is held" in probe.stderr + probe.stdout, \
                    explain(probe)
            if not all(gone_soon(p, 5) for p in pids):
                lingering.append((trial, pids))
            assert not (box / "done").exists()
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if runner.poll() is None:
                runner.kill()
                runner.wait(10)
    assert overlaps == [], f"the next run ran alongside the old command: {overlaps}"
    assert lingering == [], f"the old command outlived the next run: {lingering}"
    runs = {r["runbook"]: r for r in json.loads(l4.sd("history", "--json").stdout)}
    assert runs[runbook]["status"] == "interrupted"
    assert outcomes.count(0) >= 1, outcomes  # the probe did get the lock
